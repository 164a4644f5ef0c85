//! The EAS protocol on `POST /api/predict/{name}`, as the official Python
//! SDK (`eas-prediction`) speaks it:
//!
//! - auth: the raw token, or the SDK's signed form (`signing`);
//! - bodies: `StringRequest` bytes, which here are KServe v2 JSON (handled by
//!   `predict::run`), or the protobuf bodies of `TFRequest` (`tf`) and
//!   `TorchRequest` (`torch`), the latter optionally snappy-compressed.
//!
//! The SDK sends every body as `application/octet-stream` and does not say
//! which message it is, nor whether a TorchRequest is compressed
//! (`TorchRequest(flag=True)` just snappy-compresses the bytes). So the kind
//! is found from the bytes: JSON when the body is a JSON object, else the
//! protobuf message that decodes to a well-formed request (see [`decode`]).

pub mod proto;
pub mod signing;

mod array;
mod tf;
mod torch;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use prost::Message;
use shared::api::ModelSignature;

use crate::serving::instances::ServicePool;
use crate::serving::ServingError;
use proto::{TfPredictRequest, TorchPredictRequest};

/// The largest decompressed TorchRequest accepted: the same as the largest
/// body (`predict::routes`), so compression cannot be used to exceed it.
const MAX_DECOMPRESSED: usize = 256 << 20;

/// Whether an EAS body is KServe v2 JSON (else it is protobuf). An explicit
/// JSON or protobuf `Content-Type` decides; otherwise (the SDK always says
/// `application/octet-stream`) a body whose first non-blank byte is `{` is
/// JSON. No TF/Torch message starts with `{` (it would be field 15, which
/// neither has), but a snappy stream of 123 bytes does, and a protobuf can
/// start with `\n`; only in those rare cases is the JSON parsed here first.
pub fn is_json_body(headers: &HeaderMap, body: &[u8]) -> bool {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = ct.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json") {
        return true;
    }
    if [
        "application/x-protobuf",
        "application/protobuf",
        "application/vnd.google.protobuf",
    ]
    .iter()
    .any(|p| essence.eq_ignore_ascii_case(p))
    {
        return false;
    }
    if !body.trim_ascii_start().starts_with(b"{") {
        return false;
    }
    let unambiguous =
        body.first() == Some(&b'{') && snap::raw::Decoder::new().decompress_vec(body).is_err();
    unambiguous || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// A decoded protobuf request.
#[derive(Debug)]
enum Decoded {
    Tf(tf::Plan),
    Torch(torch::Plan),
}

impl Decoded {
    fn take_inputs(&mut self) -> Vec<(String, optimizer::tensor::Tensor)> {
        match self {
            Decoded::Tf(p) => std::mem::take(&mut p.inputs),
            Decoded::Torch(p) => std::mem::take(&mut p.inputs),
        }
    }
}

/// One try at reading bytes as a TF or Torch request.
enum Attempt {
    Found(Decoded),
    /// It is one of the messages, but its content is wrong (400 as is).
    Invalid(ServingError),
    /// Neither message: why not.
    Neither(String),
}

fn attempt(sig: &ModelSignature, bytes: &[u8]) -> Attempt {
    // Both decodes are cheap next to inference; a message "is" a kind when it
    // decodes and carries inputs, since the two share field numbers 1–3.
    let tf = TfPredictRequest::decode(bytes);
    let torch = TorchPredictRequest::decode(bytes);
    let tf = match tf {
        Ok(r) if !r.inputs.is_empty() => Ok(r),
        Ok(_) => Err("it carries no inputs".to_string()),
        Err(e) => Err(e.to_string()),
    };
    let torch = match torch {
        Ok(r) if !r.inputs.is_empty() || !r.map_inputs.is_empty() => Some(r),
        _ => None,
    };
    match (tf, torch) {
        (Ok(t), None) => match tf::plan(t, sig) {
            Ok(p) => Attempt::Found(Decoded::Tf(p)),
            Err(e) => Attempt::Invalid(e),
        },
        (Err(_), Some(p)) => match torch::plan(p, sig) {
            Ok(p) => Attempt::Found(Decoded::Torch(p)),
            Err(e) => Attempt::Invalid(e),
        },
        // Both read: the one whose arrays are well-formed wins (a stray
        // decode has DT_INVALID arrays or counts that do not fit).
        (Ok(t), Some(p)) => match tf::plan(t, sig) {
            Ok(t) => Attempt::Found(Decoded::Tf(t)),
            Err(tf_err) => match torch::plan(p, sig) {
                Ok(p) => Attempt::Found(Decoded::Torch(p)),
                Err(_) => Attempt::Invalid(tf_err),
            },
        },
        (Err(why), None) => Attempt::Neither(why),
    }
}

/// Reads a protobuf body: plain first, then snappy-compressed.
fn decode(sig: &ModelSignature, body: &[u8]) -> Result<Decoded, ServingError> {
    if body.is_empty() {
        return Err(ServingError::BadRequest(
            "empty body: expected a KServe v2 JSON request, or an EAS TFRequest or TorchRequest protobuf".into(),
        ));
    }
    // Err: it was one of the messages but wrong; Ok: why it was neither.
    let plain: Result<String, ServingError> = match attempt(sig, body) {
        Attempt::Found(d) => return Ok(d),
        Attempt::Invalid(e) => Err(e),
        Attempt::Neither(why) => Ok(why),
    };
    // The decoder allocates the length the stream claims before checking
    // it, so a claim no real stream of this size can make is not tried:
    // snappy's densest element (a 3-byte copy of 64 bytes) expands 21⅓ times.
    let possible = body.len().saturating_mul(22).saturating_add(64);
    let unsnapped = match snap::raw::decompress_len(body) {
        Ok(n) if n <= MAX_DECOMPRESSED && n <= possible => snap::raw::Decoder::new()
            .decompress_vec(body)
            .ok()
            .map(|bytes| attempt(sig, &bytes)),
        _ => None,
    };
    match (plain, unsnapped) {
        (_, Some(Attempt::Found(d))) => Ok(d),
        (Err(e), _) => Err(e),
        (Ok(_), Some(Attempt::Invalid(e))) => Err(e),
        (Ok(why), _) => Err(ServingError::BadRequest(format!(
            "body: not a KServe v2 JSON request, nor an EAS TFRequest or TorchRequest protobuf (plain or snappy-compressed): {why}"
        ))),
    }
}

/// The inputs a TFRequest or TorchRequest body (plain or snappy) asks a
/// model of signature `sig` to run on, checked as a prediction checks them,
/// without running anything: what the fuzz target `eas_protobuf` drives.
pub fn decode_inputs(
    sig: &ModelSignature,
    body: &[u8],
) -> Result<Vec<(String, optimizer::tensor::Tensor)>, ServingError> {
    Ok(decode(sig, body)?.take_inputs())
}

/// One prediction from a TFRequest or TorchRequest body; the answer is the
/// matching `PredictResponse`.
pub async fn predict_protobuf(
    pool: Arc<ServicePool>,
    body: bytes::Bytes,
) -> Result<(Response, Duration), ServingError> {
    let sig = pool.signature.clone();
    let mut decoded = crate::serving::decode_body(body, move |b| decode(&sig, b)).await?;
    let inputs = decoded.take_inputs();
    let (outputs, engine) = crate::serving::execute::execute(pool.clone(), inputs).await?;
    let bytes = match &decoded {
        Decoded::Tf(p) => tf::answer(outputs, &p.output_filter),
        Decoded::Torch(p) => torch::answer(outputs, p, &pool.signature)?,
    };
    let response = ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response();
    Ok((response, engine))
}

#[cfg(test)]
mod tests;
