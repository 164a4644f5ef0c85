//! KServe v2 (Open Inference Protocol): over HTTP, the JSON codec and the
//! binary tensor extension; over gRPC, the generated service's messages.

pub mod binary;
pub mod grpc;
pub mod json;

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::Response;

use crate::serving::instances::ServicePool;
use crate::serving::ServingError;

/// Each service serves exactly one model version.
pub const MODEL_VERSION: &str = "1";

/// A KServe v2 inference: requests using the binary tensor extension (or a
/// compressed body) go to `binary`, plain JSON to `json`. Returns the
/// response and the time spent in the engine.
pub async fn infer(
    pool: Arc<ServicePool>,
    name: &str,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<(Response, Duration), ServingError> {
    if binary::applies(headers, &body) {
        return binary::infer(pool, name, MODEL_VERSION, headers, body).await;
    }
    json::infer(pool, name, Some(MODEL_VERSION), body).await
}

/// A JSON body as text.
pub fn utf8(body: &[u8]) -> Result<&str, ServingError> {
    std::str::from_utf8(body)
        .map_err(|e| ServingError::BadRequest(format!("body: a JSON request must be UTF-8: {e}")))
}
