//! The error type of the HTTP edge. Each variant maps to one HTTP status;
//! user mistakes are 4xx with a message that says what was expected. The
//! layers below have their own errors (`StoreError`, `DeployError`,
//! `ServingError`); they become statuses only here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shared::api::ApiError;
use shared::ValidationError;

use crate::control::StoreError;
use crate::deploy::DeployError;
use crate::serving::ServingError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the service config has {} problem(s)", .0.len())]
    Invalid(Vec<ValidationError>),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    Unavailable(String),
    /// A service's request queue is full (`metadata.rpc.max_queue_size`).
    #[error("{0}")]
    TooManyRequests(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn invalid(path: &str, message: impl Into<String>) -> AppError {
        AppError::Invalid(vec![ValidationError {
            path: path.to_string(),
            message: message.into(),
        }])
    }

    /// The error another node answered with `status` and `message` (a
    /// forwarded prediction's).
    pub fn of_status(status: StatusCode, message: String) -> AppError {
        match status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                AppError::BadRequest(message)
            }
            StatusCode::UNAUTHORIZED => AppError::Unauthorized(message),
            StatusCode::FORBIDDEN => AppError::Forbidden(message),
            StatusCode::NOT_FOUND => AppError::NotFound(message),
            StatusCode::CONFLICT => AppError::Conflict(message),
            StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge(message),
            StatusCode::REQUEST_TIMEOUT => AppError::RequestTimeout(message),
            StatusCode::TOO_MANY_REQUESTS => AppError::TooManyRequests(message),
            StatusCode::SERVICE_UNAVAILABLE => AppError::Unavailable(message),
            _ => AppError::Internal(message),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => AppError::Conflict(m),
            StoreError::NotFound(m) => AppError::NotFound(m),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<DeployError> for AppError {
    fn from(e: DeployError) -> Self {
        match e {
            DeployError::BadRequest(m) => AppError::BadRequest(m),
            DeployError::Invalid(v) => AppError::Invalid(v),
            DeployError::NotFound(m) => AppError::NotFound(m),
            DeployError::Conflict(m) => AppError::Conflict(m),
            DeployError::Unavailable(m) => AppError::Unavailable(m),
            DeployError::Store(e) => e.into(),
            DeployError::Serving(e) => e.into(),
            // The shared store is down or refuses: not the caller's doing,
            // and worth a retry once it is back.
            DeployError::Objects(e) => AppError::Unavailable(e.to_string()),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<ServingError> for AppError {
    fn from(e: ServingError) -> Self {
        match e {
            ServingError::BadRequest(m) => AppError::BadRequest(m),
            ServingError::Unauthorized(m) => AppError::Unauthorized(m),
            ServingError::PayloadTooLarge(m) => AppError::PayloadTooLarge(m),
            ServingError::TooManyRequests(m) => AppError::TooManyRequests(m),
            ServingError::Unavailable(m) => AppError::Unavailable(m),
            ServingError::Internal(m) => AppError::Internal(m),
        }
    }
}

impl From<std::io::Error> for AppError {
    fn from(e: std::io::Error) -> Self {
        AppError::Internal(format!("i/o: {e}"))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("{self}");
        }
        let errors = match &self {
            AppError::Invalid(v) => v.clone(),
            _ => vec![],
        };
        (
            status,
            Json(ApiError {
                error: self.to_string(),
                errors,
            }),
        )
            .into_response()
    }
}

/// Middleware: an answer made before a handler ran — axum's refusal of a
/// path, query or JSON body it could not read (plain text) — becomes an
/// `ApiError` like every other error, so clients parse one error shape.
pub async fn json_rejections(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let resp = next.run(req).await;
    let plain = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    if !(resp.status().is_client_error() && plain) {
        return resp;
    }
    let status = resp.status();
    // Rejection messages are a line or two.
    let text = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    (
        status,
        Json(ApiError {
            error: text,
            errors: vec![],
        }),
    )
        .into_response()
}
