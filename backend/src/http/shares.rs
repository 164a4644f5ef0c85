//! Read-only share links: `/s/{token}` in the console shows one
//! deployment's status, log and report to anyone holding the link, without
//! signing in. Deployers of the service's team create and revoke links; a
//! revoked (or unknown) link answers 404 everywhere.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get};
use axum::{Json, Router};
use shared::api::{LogPage, Role, ShareLink, SharedService};

use crate::control::store::ServiceRow;
use crate::http::api::{detail_of, log_page, service_for, upgrade_log_stream, LogQuery};
use crate::http::auth::{new_token, Caller};
use crate::http::error::AppError;
use crate::http::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/services/{name}/shares", get(list).post(create))
        .route("/api/v2/services/{name}/shares/{token}", delete(revoke))
        .route("/api/v2/shared/{token}", get(shared))
        .route("/api/v2/shared/{token}/logs", get(shared_logs))
        .route("/api/v2/shared/{token}/logs/stream", get(shared_stream))
}

async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ShareLink>>, AppError> {
    let row = service_for(&state, &caller, &name, Role::Viewer, "listing share links").await?;
    if !crate::http::api::sees_secrets(&state, &caller, &row.team).await? {
        return Err(AppError::Forbidden(format!(
            "the share links of '{name}' are shown to deployers of team '{}' (its admins may let viewers see them: viewers_see_secrets)",
            row.team
        )));
    }
    Ok(Json(state.store.shares(&name).await?))
}

async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<ShareLink>), AppError> {
    service_for(&state, &caller, &name, Role::Deployer, "sharing a service").await?;
    let link = state
        .store
        .create_share(&new_token("s_"), &name, &caller.user.name)
        .await?;
    Ok((StatusCode::CREATED, Json(link)))
}

async fn revoke(
    caller: Caller,
    State(state): State<AppState>,
    Path((name, token)): Path<(String, String)>,
) -> Result<StatusCode, AppError> {
    service_for(
        &state,
        &caller,
        &name,
        Role::Deployer,
        "revoking a share link",
    )
    .await?;
    if state.store.revoke_share(&name, &token).await? {
        state.revoke();
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(AppError::NotFound(format!(
            "service '{name}' has no live share link '{token}'"
        )))
    }
}

/// The service a live link shows; one message for unknown, revoked and
/// deleted, so a link reveals nothing once it stops working.
async fn linked(state: &AppState, token: &str) -> Result<ServiceRow, AppError> {
    let gone = || AppError::NotFound("this share link does not exist or was revoked".into());
    let name = state.store.shared_service(token).await?.ok_or_else(gone)?;
    state.store.get_service(&name).await?.ok_or_else(gone)
}

async fn shared(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Json<SharedService>, AppError> {
    let row = linked(&state, &token).await?;
    let d = detail_of(&state, row).await?;
    Ok(Json(SharedService {
        summary: d.summary,
        stage: d.stage,
        message: d.message,
        report: d.report,
    }))
}

async fn shared_logs(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<LogPage>, AppError> {
    let row = linked(&state, &token).await?;
    Ok(Json(log_page(&state, &row.name, q).await?))
}

async fn shared_stream(
    State(state): State<AppState>,
    Path(token): Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, AppError> {
    let row = linked(&state, &token).await?;
    let access = crate::http::api::Access::Share(token);
    Ok(upgrade_log_stream(state, row.name, ws, access))
}
