//! `GET /api/v2/resource-groups`: the configured groups and the GPUs found
//! at start, read-only.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use crate::control::resources::ResourceGroupsInfo;
use crate::http::auth::Caller;
use crate::http::error::AppError;
use crate::http::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v2/resource-groups", get(list))
}

/// The configured groups and the GPUs found at start; any signed-in caller.
async fn list(
    _caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<ResourceGroupsInfo>, AppError> {
    Ok(Json(state.resources.info()))
}
