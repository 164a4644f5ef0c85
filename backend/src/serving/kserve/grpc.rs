//! KServe v2 over gRPC: the messages and service generated from
//! `proto/kserve_v2.proto`, and the codec between an inference request or
//! answer and engine tensors. The front door (auth, metrics, status codes)
//! is `http::grpc`.
//!
//! An input carries its elements either typed, in `contents` (the list of
//! its datatype: `fp32_contents` for FP32, `int_contents` for INT32 and
//! INT8, `uint_contents` for UINT8, …), or raw, in `raw_input_contents` (one
//! entry per input, in input order, little-endian, as Triton's clients send
//! them); a request uses one form for all its inputs. Outputs are answered
//! raw in `raw_output_contents`, as Triton answers.

use optimizer::tensor::{DType, Tensor, TensorData};
use shared::api::ModelSignature;

use crate::serving::ServingError;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::model_infer_request::InferInputTensor;
use proto::{InferTensorContents, ModelInferRequest, ModelInferResponse};

fn bad(msg: String) -> ServingError {
    ServingError::BadRequest(msg)
}

/// A decoded request: its id, the inputs as tensors, and the outputs to
/// answer with, in order.
#[derive(Debug)]
pub struct Parsed {
    pub id: String,
    pub inputs: Vec<(String, Tensor)>,
    pub outputs: Vec<String>,
}

/// Decodes `req` for a model of signature `sig`: the inputs' elements
/// checked against their shapes and datatypes (the engine then checks them
/// against the model), the requested outputs against the model's.
pub fn parse(req: ModelInferRequest, sig: &ModelSignature) -> Result<Parsed, ServingError> {
    let names: Vec<&str> = req.outputs.iter().map(|o| o.name.as_str()).collect();
    super::json::check_requested_outputs(&names, sig.outputs.len()).map_err(bad)?;
    let mut outputs = Vec::with_capacity(req.outputs.len());
    for o in &req.outputs {
        if !sig.outputs.iter().any(|s| s.name == o.name) {
            return Err(bad(format!(
                "output '{}': the model has no such output; its outputs are {}",
                o.name,
                quoted(sig.outputs.iter().map(|s| s.name.as_str()))
            )));
        }
        if o.parameters.contains_key("classification") {
            return Err(bad(format!(
                "output '{}': the classification extension is not supported",
                o.name
            )));
        }
        outputs.push(o.name.clone());
    }
    if outputs.is_empty() {
        outputs = sig.outputs.iter().map(|s| s.name.clone()).collect();
    }

    check_forms(&req)?;
    let raw = req.raw_input_contents;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (i, inp) in req.inputs.into_iter().enumerate() {
        let tensor = match raw.get(i) {
            Some(bytes) => super::binary::from_raw(&inp.name, &inp.datatype, &inp.shape, bytes)?,
            None => typed(&inp)?,
        };
        inputs.push((inp.name, tensor));
    }
    Ok(Parsed {
        id: req.id,
        inputs,
        outputs,
    })
}

/// A request sends its inputs' elements one way: all raw, one entry of
/// `raw_input_contents` per input, or all typed in `contents`.
fn check_forms(req: &ModelInferRequest) -> Result<(), ServingError> {
    let raw = &req.raw_input_contents;
    if raw.is_empty() {
        return Ok(());
    }
    if raw.len() != req.inputs.len() {
        return Err(bad(format!(
            "raw_input_contents has {} entries for {} inputs: send one per input, in input order, or none",
            raw.len(),
            req.inputs.len()
        )));
    }
    match req.inputs.iter().find(|i| i.contents.is_some()) {
        Some(inp) => Err(bad(format!(
            "input '{}': has contents while the request sends raw_input_contents; a request uses one form for all its inputs",
            inp.name
        ))),
        None => Ok(()),
    }
}

fn quoted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An input's typed `contents` as a tensor of its datatype.
fn typed(inp: &InferInputTensor) -> Result<Tensor, ServingError> {
    let what = format!("input '{}'", inp.name);
    let (dtype, dims, n) = super::binary::declared(&what, &inp.datatype, &inp.shape)?;
    let empty = InferTensorContents::default();
    let c = inp.contents.as_ref().unwrap_or(&empty);
    let count = |field: &str, len: usize| {
        if len == n {
            Ok(())
        } else {
            Err(bad(format!(
                "{what}: shape {:?} of {} needs {n} elements in contents.{field}, got {len}{}",
                inp.shape,
                inp.datatype,
                if inp.contents.is_none() {
                    " (the input has neither contents nor raw_input_contents)"
                } else {
                    ""
                }
            )))
        }
    };
    // INT8 and UINT8 travel in the 32-bit lists: each element must fit.
    let narrow = |field: &str, v: Vec<i64>, lo: i64, hi: i64| -> Result<Vec<i64>, ServingError> {
        match v.iter().position(|x| !(lo..=hi).contains(x)) {
            None => Ok(v),
            Some(i) => Err(bad(format!(
                "{what}: contents.{field}[{i}] = {} is out of range for {}",
                v[i], inp.datatype
            ))),
        }
    };
    let data = match dtype {
        DType::F32 => {
            count("fp32_contents", c.fp32_contents.len())?;
            TensorData::F32(c.fp32_contents.clone())
        }
        DType::F64 => {
            count("fp64_contents", c.fp64_contents.len())?;
            TensorData::F64(c.fp64_contents.clone())
        }
        DType::I64 => {
            count("int64_contents", c.int64_contents.len())?;
            TensorData::I64(c.int64_contents.clone())
        }
        DType::I32 => {
            count("int_contents", c.int_contents.len())?;
            TensorData::I32(c.int_contents.clone())
        }
        DType::I8 => {
            count("int_contents", c.int_contents.len())?;
            let v = c.int_contents.iter().map(|&x| i64::from(x)).collect();
            let v = narrow("int_contents", v, i8::MIN.into(), i8::MAX.into())?;
            TensorData::I8(v.into_iter().map(|x| x as i8).collect())
        }
        DType::U8 => {
            count("uint_contents", c.uint_contents.len())?;
            let v = c.uint_contents.iter().map(|&x| i64::from(x)).collect();
            let v = narrow("uint_contents", v, 0, u8::MAX.into())?;
            TensorData::U8(v.into_iter().map(|x| x as u8).collect())
        }
        DType::Bool => {
            count("bool_contents", c.bool_contents.len())?;
            TensorData::Bool(c.bool_contents.clone())
        }
    };
    Tensor::new(dims, data).map_err(|e| bad(format!("{what}: {e}")))
}

/// The answer to a request of model `name`: the `wanted` outputs, in order,
/// raw.
pub fn answer(
    name: &str,
    version: &str,
    id: String,
    wanted: &[String],
    outputs: Vec<(String, Tensor)>,
) -> Result<ModelInferResponse, ServingError> {
    let mut tensors = Vec::with_capacity(wanted.len());
    let mut raw = Vec::with_capacity(wanted.len());
    // (An output asked for twice is answered twice.)
    for oname in wanted {
        let t = outputs
            .iter()
            .find(|(n, _)| n == oname)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                ServingError::Internal(format!("the engine returned no output '{oname}'"))
            })?;
        tensors.push(proto::model_infer_response::InferOutputTensor {
            name: oname.clone(),
            datatype: t.dtype().kserve_name().to_string(),
            shape: t.shape.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
        raw.push(bytes::Bytes::from(super::binary::to_raw(t)));
    }
    Ok(ModelInferResponse {
        model_name: name.to_string(),
        model_version: version.to_string(),
        id,
        outputs: tensors,
        raw_output_contents: raw,
        ..Default::default()
    })
}

/// Triton's model configuration (what perf_analyzer reads first), as
/// `binary::model_config` answers it over HTTP.
pub fn model_config(name: &str, sig: &ModelSignature) -> proto::ModelConfig {
    let data_type = |d: &str| {
        proto::DataType::from_str_name(&format!("TYPE_{d}")).unwrap_or(proto::DataType::TypeInvalid)
            as i32
    };
    proto::ModelConfig {
        name: name.to_string(),
        platform: "onnxruntime_onnx".into(),
        backend: "onnxruntime".into(),
        max_batch_size: 0,
        input: sig
            .inputs
            .iter()
            .map(|t| proto::ModelInput {
                name: t.name.clone(),
                data_type: data_type(&t.datatype),
                dims: t.shape.clone(),
            })
            .collect(),
        output: sig
            .outputs
            .iter()
            .map(|t| proto::ModelOutput {
                name: t.name.clone(),
                data_type: data_type(&t.datatype),
                dims: t.shape.clone(),
            })
            .collect(),
    }
}

/// A model's metadata (`ModelMetadata`).
pub fn model_metadata(
    name: &str,
    version: &str,
    sig: &ModelSignature,
) -> proto::ModelMetadataResponse {
    let spec = |t: &shared::api::TensorSpec| proto::model_metadata_response::TensorMetadata {
        name: t.name.clone(),
        datatype: t.datatype.clone(),
        shape: t.shape.clone(),
    };
    proto::ModelMetadataResponse {
        name: name.to_string(),
        versions: vec![version.to_string()],
        platform: "onnxruntime_onnx".into(),
        inputs: sig.inputs.iter().map(spec).collect(),
        outputs: sig.outputs.iter().map(spec).collect(),
    }
}

/// `req` as a KServe v2 request with the binary tensor extension, every
/// input raw and every output asked for raw: how a node hands a gRPC
/// prediction to the node that serves it. Returns the body and the length
/// of its JSON header (`Inference-Header-Content-Length`).
pub fn to_binary_request(req: &ModelInferRequest) -> Result<(Vec<u8>, usize), ServingError> {
    check_forms(req)?;
    let mut raw = Vec::with_capacity(req.inputs.len());
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (i, inp) in req.inputs.iter().enumerate() {
        let bytes = match req.raw_input_contents.get(i) {
            Some(b) => b.clone(),
            None => bytes::Bytes::from(super::binary::to_raw(&typed(inp)?)),
        };
        inputs.push(serde_json::json!({
            "name": inp.name, "datatype": inp.datatype, "shape": inp.shape,
            "parameters": { "binary_data_size": bytes.len() },
        }));
        raw.push(bytes);
    }
    let mut head = serde_json::json!({
        "inputs": inputs,
        "parameters": { "binary_data_output": true },
    });
    if !req.id.is_empty() {
        head["id"] = req.id.clone().into();
    }
    if !req.outputs.is_empty() {
        head["outputs"] = req
            .outputs
            .iter()
            .map(|o| serde_json::json!({ "name": o.name, "parameters": { "binary_data": true } }))
            .collect();
    }
    let mut body = serde_json::to_vec(&head).map_err(|e| ServingError::Internal(e.to_string()))?;
    let head_len = body.len();
    for b in raw {
        body.extend_from_slice(&b);
    }
    Ok((body, head_len))
}

/// The answer of [`to_binary_request`]'s request (`head_len`: its
/// `Inference-Header-Content-Length`) as a gRPC answer.
pub fn from_binary_answer(
    body: bytes::Bytes,
    head_len: usize,
) -> Result<ModelInferResponse, String> {
    #[derive(serde::Deserialize)]
    struct Head {
        model_name: String,
        #[serde(default)]
        model_version: String,
        #[serde(default)]
        id: String,
        outputs: Vec<Out>,
    }
    #[derive(serde::Deserialize)]
    struct Out {
        name: String,
        datatype: String,
        shape: Vec<i64>,
        parameters: serde_json::Map<String, serde_json::Value>,
    }
    let head: Head = serde_json::from_slice(
        body.get(..head_len)
            .ok_or("answer shorter than its header")?,
    )
    .map_err(|e| format!("answer header: {e}"))?;
    let mut at = head_len;
    let mut outputs = Vec::with_capacity(head.outputs.len());
    let mut raw = Vec::with_capacity(head.outputs.len());
    for o in head.outputs {
        let n = o
            .parameters
            .get("binary_data_size")
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("output '{}' is not raw", o.name))?;
        let end = at
            .checked_add(n)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| format!("output '{}' runs past the answer", o.name))?;
        raw.push(body.slice(at..end));
        at = end;
        outputs.push(proto::model_infer_response::InferOutputTensor {
            name: o.name,
            datatype: o.datatype,
            shape: o.shape,
            ..Default::default()
        });
    }
    Ok(ModelInferResponse {
        model_name: head.model_name,
        model_version: head.model_version,
        id: head.id,
        outputs,
        raw_output_contents: raw,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
