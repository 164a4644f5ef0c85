//! `TFRequest`: inputs by name in a map, `output_filter` by name; the answer
//! is a `PredictResponse` map of output name → array. `signature_name` is
//! accepted and not used: a served ONNX model has exactly one signature.

use optimizer::tensor::Tensor;
use prost::Message;
use shared::api::ModelSignature;

use super::array::{self, Flavor};
use super::proto::{TfPredictRequest, TfPredictResponse};
use crate::serving::ServingError;

/// A decoded request: engine inputs, and the outputs to answer with.
#[derive(Debug)]
pub struct Plan {
    pub inputs: Vec<(String, Tensor)>,
    /// Empty: every output.
    pub output_filter: Vec<String>,
}

pub fn plan(req: TfPredictRequest, sig: &ModelSignature) -> Result<Plan, ServingError> {
    for o in &req.output_filter {
        if !sig.outputs.iter().any(|s| &s.name == o) {
            return Err(ServingError::BadRequest(format!(
                "output_filter: the model has no output '{o}'; its outputs are {}",
                names(sig)
            )));
        }
    }
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (name, a) in req.inputs {
        let t = array::to_tensor(a, &format!("input '{name}'"))?;
        inputs.push((name, t));
    }
    Ok(Plan {
        inputs,
        output_filter: req.output_filter,
    })
}

/// The encoded `PredictResponse`.
pub fn answer(outputs: Vec<(String, Tensor)>, output_filter: &[String]) -> Vec<u8> {
    let outputs = outputs
        .into_iter()
        .filter(|(n, _)| output_filter.is_empty() || output_filter.contains(n))
        .map(|(n, t)| (n, array::from_tensor(t, Flavor::Tf)))
        .collect();
    TfPredictResponse { outputs }.encode_to_vec()
}

fn names(sig: &ModelSignature) -> String {
    sig.outputs
        .iter()
        .map(|s| format!("'{}'", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}
