//! `TorchRequest`: `inputs` by position, `map_inputs` by name, and
//! `output_filter` by output position. Position i is the model's i-th input
//! (or output) in its signature order, which is the ONNX graph's order — the
//! order a traced module's positional arguments were exported in.
//!
//! The answer mirrors how the request addressed inputs: positional `outputs`
//! for `inputs`, `map_outputs` by name for `map_inputs` (both when both were
//! used), holding the filtered outputs in filter order, else all in order.

use std::collections::HashMap;

use optimizer::tensor::Tensor;
use prost::Message;
use shared::api::ModelSignature;

use super::array::{self, Flavor};
use super::proto::{TorchPredictRequest, TorchPredictResponse};
use crate::serving::ServingError;

#[derive(Debug)]
pub struct Plan {
    pub inputs: Vec<(String, Tensor)>,
    /// Output positions to answer with, in order; empty: every output.
    pub output_filter: Vec<usize>,
    pub by_index: bool,
    pub by_name: bool,
}

pub fn plan(req: TorchPredictRequest, sig: &ModelSignature) -> Result<Plan, ServingError> {
    // A module whose inputs are not declared (a plain PyTorch deploy) takes
    // `inputs` by position as given and judges them itself; its outputs are
    // known only once it ran, so `answer` checks `output_filter` then.
    let open = sig.open_inputs();
    if !open && req.inputs.len() > sig.inputs.len() {
        return Err(ServingError::BadRequest(format!(
            "inputs: {} given by index, but the model takes {}: {}",
            req.inputs.len(),
            sig.inputs.len(),
            listing(sig.inputs.iter().map(|s| s.name.as_str()))
        )));
    }
    let mut output_filter = Vec::with_capacity(req.output_filter.len());
    for &i in &req.output_filter {
        match usize::try_from(i) {
            Ok(p) if open || p < sig.outputs.len() => output_filter.push(p),
            _ if open => {
                return Err(ServingError::BadRequest(format!(
                    "output_filter: no output at index {i}"
                )))
            }
            _ => {
                return Err(ServingError::BadRequest(format!(
                    "output_filter: no output at index {i}; the model's outputs are {}",
                    listing(sig.outputs.iter().map(|s| s.name.as_str()))
                )))
            }
        }
    }
    let by_index = !req.inputs.is_empty();
    let by_name = !req.map_inputs.is_empty();
    let mut inputs = Vec::with_capacity(req.inputs.len() + req.map_inputs.len());
    for (i, a) in req.inputs.into_iter().enumerate() {
        let (name, at) = match open {
            true => (optimizer::data::positional_name(i), format!("inputs[{i}]")),
            false => {
                let name = sig.inputs[i].name.clone();
                let at = format!("inputs[{i}] ('{name}')");
                (name, at)
            }
        };
        inputs.push((name, array::to_tensor(a, &at)?));
    }
    // In the order of their names: an open module takes them by position.
    let mut named: Vec<_> = req.map_inputs.into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, a) in named {
        let t = array::to_tensor(a, &format!("map_inputs['{name}']"))?;
        inputs.push((name, t));
    }
    Ok(Plan {
        inputs,
        output_filter,
        by_index,
        by_name,
    })
}

/// The encoded `PredictResponse`.
pub fn answer(
    outputs: Vec<(String, Tensor)>,
    plan: &Plan,
    sig: &ModelSignature,
) -> Result<Vec<u8>, ServingError> {
    // Undeclared outputs: those the module returned, in order.
    let names: Vec<String> = if sig.open_inputs() {
        outputs.iter().map(|(n, _)| n.clone()).collect()
    } else {
        sig.outputs.iter().map(|s| s.name.clone()).collect()
    };
    if let Some(&p) = plan.output_filter.iter().find(|&&p| p >= names.len()) {
        return Err(ServingError::BadRequest(format!(
            "output_filter: no output at index {p}; the module returned {}",
            names.len()
        )));
    }
    let positions: Vec<usize> = if plan.output_filter.is_empty() {
        (0..names.len()).collect()
    } else {
        plan.output_filter.clone()
    };
    let mut outs: HashMap<String, Tensor> = outputs.into_iter().collect();
    let mut resp = TorchPredictResponse::default();
    for (k, &p) in positions.iter().enumerate() {
        let name = &names[p];
        // Move a tensor out on its last use; copy only for a repeated index.
        let t = if positions[k + 1..].contains(&p) {
            outs.get(name).cloned()
        } else {
            outs.remove(name)
        }
        .ok_or_else(|| ServingError::Internal(format!("the engine returned no output '{name}'")))?;
        match (plan.by_index, plan.by_name) {
            (true, true) => {
                let copy = array::from_tensor(t.clone(), Flavor::Torch);
                resp.map_outputs.insert(name.clone(), copy);
                resp.outputs.push(array::from_tensor(t, Flavor::Torch));
            }
            (false, true) => {
                resp.map_outputs
                    .insert(name.clone(), array::from_tensor(t, Flavor::Torch));
            }
            _ => resp.outputs.push(array::from_tensor(t, Flavor::Torch)),
        }
    }
    Ok(resp.encode_to_vec())
}

fn listing<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .enumerate()
        .map(|(i, n)| format!("{i} = '{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}
