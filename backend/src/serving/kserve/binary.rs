//! The KServe v2 binary tensor data extension (`binary_tensor_data`, as
//! Triton's clients and perf_analyzer use it) on `/v2/models/{name}/infer`:
//!
//! - request: the first `Inference-Header-Content-Length` bytes of the body
//!   are the JSON inference request; an input with
//!   `parameters.binary_data_size` has no `data` and takes that many raw
//!   little-endian bytes from what follows, in input order;
//! - outputs are answered raw when requested with `parameters.binary_data`,
//!   or by default with the request parameter `binary_data_output`; the
//!   answer is then the JSON header (its length in
//!   `Inference-Header-Content-Length`, each raw output with its
//!   `binary_data_size`) followed by the raw outputs in order;
//! - a `Content-Encoding: gzip`/`deflate` request body is inflated first.
//!
//! Plain JSON requests that use none of this stay on `predict::run`.
//! `BYTES` tensors are refused: no served model has string inputs or
//! outputs, and the engine tensor type has none.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use optimizer::tensor::{DType, Tensor};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use shared::api::{InferTensor, ModelSignature};

use crate::serving::instances::ServicePool;
use crate::serving::ServingError;

pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// The largest inflated body accepted: the same as the largest body
/// (`predict::routes`), so compression cannot be used to exceed it.
const MAX_INFLATED: u64 = 256 << 20;

/// Whether a request needs this module: binary input data, a compressed
/// body, or any binary-data parameter (requested outputs may be raw even
/// when every input is JSON, and Triton's Python client asks for that by
/// default). The scan is a SIMD substring search, far cheaper than the
/// JSON parse that follows either way.
pub fn applies(headers: &HeaderMap, body: &[u8]) -> bool {
    headers.contains_key(HEADER_LENGTH)
        || encoding(headers).is_some()
        || memchr::memmem::find(body, b"\"binary_data").is_some()
}

/// A `Content-Encoding` other than identity.
fn encoding(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("identity"))
}

fn bad(msg: String) -> ServingError {
    ServingError::BadRequest(msg)
}

#[derive(Debug, Deserialize)]
struct Request {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<Input>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Deserialize)]
struct Input {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// A parsed request: engine inputs and the outputs to answer with (name,
/// raw or not), in answer order.
#[derive(Debug, PartialEq)]
pub struct Parsed {
    pub id: Option<String>,
    pub inputs: Vec<(String, Tensor)>,
    pub outputs: Vec<(String, bool)>,
}

fn flag(params: &Map<String, Value>, key: &str, what: &str) -> Result<Option<bool>, ServingError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(bad(format!(
            "{what}: parameters.{key} must be true or false, got {other}"
        ))),
    }
}

fn inflate(headers: &HeaderMap, body: &[u8]) -> Result<Option<Vec<u8>>, ServingError> {
    let Some(enc) = encoding(headers) else {
        return Ok(None);
    };
    let reader: Box<dyn Read + '_> = if enc.eq_ignore_ascii_case("gzip") {
        Box::new(flate2::read::GzDecoder::new(body))
    } else if enc.eq_ignore_ascii_case("deflate") {
        // HTTP's "deflate" is the zlib format (RFC 9110 8.4.1.2).
        Box::new(flate2::read::ZlibDecoder::new(body))
    } else {
        return Err(bad(format!(
            "Content-Encoding '{enc}' is not supported; send gzip, deflate or none"
        )));
    };
    let mut out = Vec::new();
    reader
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(format!("body: Content-Encoding {enc}: {e}")))?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(ServingError::PayloadTooLarge(format!(
            "body inflates past {} MiB",
            MAX_INFLATED >> 20
        )));
    }
    Ok(Some(out))
}

/// Splits and parses a request body against the model's signature.
pub fn parse(
    headers: &HeaderMap,
    body: &[u8],
    sig: &ModelSignature,
) -> Result<Parsed, ServingError> {
    let inflated = inflate(headers, body)?;
    let body = inflated.as_deref().unwrap_or(body);
    let json_len = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n <= body.len())
            .ok_or_else(|| {
                bad(format!(
                    "Inference-Header-Content-Length {v:?} is not a length within the {}-byte body",
                    body.len()
                ))
            })?,
    };
    let (head, mut binary) = body.split_at(json_len);
    let req: Request = serde_json::from_slice(head).map_err(|e| {
        bad(format!(
            "body: expected a KServe v2 inference request {{\"inputs\":[{{\"name\",\"shape\",\"datatype\",\"data\" or \"parameters\":{{\"binary_data_size\"}}}}]}}: {e}"
        ))
    })?;
    // Before any per-input or per-output work: each requested output costs
    // a conversion and a copy in the answer, so a list naming one output
    // thousands of times would cost seconds and gigabytes.
    if let Some(wanted) = &req.outputs {
        let names: Vec<&str> = wanted.iter().map(|o| o.name.as_str()).collect();
        super::json::check_requested_outputs(&names, sig.outputs.len()).map_err(bad)?;
    }

    let mut inputs = Vec::with_capacity(req.inputs.len());
    for inp in req.inputs {
        let what = format!("input '{}'", inp.name);
        let size = match inp.parameters.get("binary_data_size") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "{what}: parameters.binary_data_size must be a byte count, got {v}"
                        ))
                    })?,
            ),
        };
        let tensor = match (size, inp.data) {
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "{what}: has both data and parameters.binary_data_size; send one"
                )))
            }
            (Some(n), None) => {
                if n > binary.len() {
                    return Err(bad(format!(
                        "{what}: binary_data_size {n} but only {} bytes of binary data are left",
                        binary.len()
                    )));
                }
                let (raw, rest) = binary.split_at(n);
                binary = rest;
                from_raw(&inp.name, &inp.datatype, &inp.shape, raw)?
            }
            (None, Some(data)) => crate::serving::kserve::json::to_tensor(&InferTensor {
                name: inp.name.clone(),
                shape: inp.shape,
                datatype: inp.datatype,
                data,
            })?,
            (None, None) => {
                return Err(bad(format!(
                    "{what}: has neither data nor parameters.binary_data_size"
                )))
            }
        };
        inputs.push((inp.name, tensor));
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} bytes of binary data are left over after the inputs' binary_data_size",
            binary.len()
        )));
    }

    let all_raw = flag(&req.parameters, "binary_data_output", "request")?.unwrap_or(false);
    let outputs = match req.outputs {
        None => sig
            .outputs
            .iter()
            .map(|s| (s.name.clone(), all_raw))
            .collect(),
        Some(wanted) => {
            let mut outs = Vec::with_capacity(wanted.len());
            for o in wanted {
                let what = format!("output '{}'", o.name);
                if !sig.outputs.iter().any(|s| s.name == o.name) {
                    return Err(bad(format!(
                        "{what}: the model has no such output; its outputs are {}",
                        sig.outputs
                            .iter()
                            .map(|s| format!("'{}'", s.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                if o.parameters
                    .get("classification")
                    .is_some_and(|v| v.as_u64() != Some(0))
                {
                    return Err(bad(format!(
                        "{what}: the classification extension is not supported"
                    )));
                }
                let raw = flag(&o.parameters, "binary_data", &what)?.unwrap_or(all_raw);
                outs.push((o.name, raw));
            }
            outs
        }
    };
    Ok(Parsed {
        id: req.id,
        inputs,
        outputs,
    })
}

/// An input's declared datatype and shape (`what` names it in errors):
/// the element type, the dimensions and their product. Any protocol's
/// tensors are declared this way (this extension's, gRPC's).
pub fn declared(
    what: &str,
    datatype: &str,
    shape: &[i64],
) -> Result<(DType, Vec<usize>, usize), ServingError> {
    if datatype == "BYTES" {
        return Err(bad(format!(
            "{what}: BYTES tensors are not supported; the served models take numeric tensors"
        )));
    }
    let dtype = DType::from_kserve_name(datatype).ok_or_else(|| {
        bad(format!(
            "{what}: unsupported datatype '{datatype}'; expected one of FP32, FP64, INT64, INT32, INT8, UINT8, BOOL"
        ))
    })?;
    let mut dims = Vec::with_capacity(shape.len());
    let mut n: usize = 1;
    for &d in shape {
        let d = usize::try_from(d)
            .map_err(|_| bad(format!("{what}: shape {shape:?} has a negative dimension")))?;
        n = n
            .checked_mul(d)
            .ok_or_else(|| bad(format!("{what}: shape {shape:?} is too large")))?;
        dims.push(d);
    }
    Ok((dtype, dims, n))
}

/// Raw little-endian elements of `datatype`, checked against `shape`.
pub fn from_raw(
    name: &str,
    datatype: &str,
    shape: &[i64],
    raw: &[u8],
) -> Result<Tensor, ServingError> {
    let what = format!("input '{name}'");
    let (dtype, dims, n) = declared(&what, datatype, shape)?;
    let width = dtype.size();
    if n.checked_mul(width) != Some(raw.len()) {
        return Err(bad(format!(
            "{what}: shape {shape:?} of {datatype} needs {n} × {width} bytes, binary_data_size is {}",
            raw.len()
        )));
    }
    Tensor::from_le_bytes(dtype, dims, raw).map_err(|e| bad(format!("{what}: {e}")))
}

/// A tensor's elements as raw little-endian bytes (BOOL as one 0/1 byte).
pub fn to_raw(t: &Tensor) -> Vec<u8> {
    let mut out = Vec::new();
    t.data.write_le(&mut out);
    out
}

/// The answer: JSON alone when no output is raw, else the JSON header
/// followed by the raw outputs, with its length in the header field.
pub fn answer(
    name: &str,
    version: &str,
    id: Option<&str>,
    wanted: &[(String, bool)],
    outputs: Vec<(String, Tensor)>,
) -> Result<Response, ServingError> {
    let mut json_outputs = Vec::with_capacity(wanted.len());
    let mut raw = Vec::new();
    for (oname, binary) in wanted {
        let t = outputs
            .iter()
            .find(|(n, _)| n == oname)
            .map(|(_, t)| t)
            .ok_or_else(|| {
                ServingError::Internal(format!("the engine returned no output '{oname}'"))
            })?;
        let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
        let datatype = t.dtype().kserve_name();
        if *binary {
            let bytes = to_raw(t);
            json_outputs.push(json!({
                "name": oname, "datatype": datatype, "shape": shape,
                "parameters": { "binary_data_size": bytes.len() },
            }));
            raw.extend_from_slice(&bytes);
        } else {
            let data = t.to_infer_tensor(oname.clone()).data;
            json_outputs
                .push(json!({ "name": oname, "datatype": datatype, "shape": shape, "data": data }));
        }
    }
    let mut head = json!({ "model_name": name, "model_version": version, "outputs": json_outputs });
    if let Some(id) = id {
        head["id"] = Value::String(id.to_string());
    }
    let head = serde_json::to_vec(&head).map_err(|e| ServingError::Internal(e.to_string()))?;
    if !wanted.iter().any(|(_, b)| *b) {
        return Ok(([(header::CONTENT_TYPE, "application/json")], head).into_response());
    }
    let head_len = head.len();
    let mut body = head;
    body.extend_from_slice(&raw);
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                HeaderName::from_static(HEADER_LENGTH),
                HeaderValue::from(head_len),
            ),
        ],
        body,
    )
        .into_response())
}

/// One inference through the extension on `pool`.
pub async fn infer(
    pool: Arc<ServicePool>,
    name: &str,
    version: &str,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<(Response, Duration), ServingError> {
    let (headers_owned, sig) = (headers.clone(), pool.signature.clone());
    let parsed = crate::serving::decode_body(body, move |b| parse(&headers_owned, b, &sig)).await?;
    let (outputs, engine) = crate::serving::execute::execute(pool, parsed.inputs).await?;
    let response = answer(
        name,
        version,
        parsed.id.as_deref(),
        &parsed.outputs,
        outputs,
    )?;
    Ok((response, engine))
}

/// The Triton model configuration (`GET /v2/models/{name}/config`), which
/// perf_analyzer reads before it sends anything. `max_batch_size` 0: the
/// shapes listed are the full shapes a request carries.
pub fn model_config(name: &str, sig: &ModelSignature) -> Value {
    let io = |t: &shared::api::TensorSpec| json!({ "name": t.name, "data_type": format!("TYPE_{}", t.datatype), "dims": t.shape });
    json!({
        "name": name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": 0,
        "input": sig.inputs.iter().map(io).collect::<Vec<_>>(),
        "output": sig.outputs.iter().map(io).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests;
