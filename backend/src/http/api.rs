//! The management API under `/api/v2`: services, logs (paged and streamed),
//! uploads.

use std::path::PathBuf;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use sha2::Digest;
use shared::api::{
    LogEvent, LogPage, ServiceDetail, ServiceStatus, ServiceSummary, UploadResponse,
};
use shared::{parse_and_validate, ServiceConfig};
use tokio::io::AsyncWriteExt;

use crate::control::resources::job_kind;
use crate::control::store::{canary_key, ServiceRow, VersionChange, Weights};
use crate::control::tokens::new_token;
use crate::deploy::resolve;
use crate::http::auth::Caller;
use crate::http::error::AppError;
use crate::http::state::AppState;
use shared::api::Role;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v2/services", get(list).post(create))
        .route(
            "/api/v2/services/{name}",
            get(describe).put(modify).delete(delete),
        )
        .route("/api/v2/services/check", post(check))
        .route("/api/v2/services/{name}/scale", post(scale))
        .route("/api/v2/services/{name}/stop", post(stop))
        .route("/api/v2/services/{name}/start", post(start))
        .route("/api/v2/services/{name}/versions", get(versions))
        .route("/api/v2/services/{name}/rollback", post(rollback))
        .route(
            "/api/v2/services/{name}/traffic",
            get(traffic).put(split_traffic),
        )
        .route("/api/v2/services/{name}/promote", post(promote))
        .route("/api/v2/services/{name}/token", post(rotate_token))
        .route("/api/v2/services/{name}/requests", get(requests))
        .route("/api/v2/services/{name}/artifact", get(artifact))
        .route("/api/v2/services/{name}/metrics", get(minute_metrics))
        .route("/api/v2/services/{name}/logs", get(logs))
        .route("/api/v2/services/{name}/logs/stream", get(log_stream))
        .route("/api/v2/uploads", post(upload))
        .route("/api/v2/gc", post(collect))
        .route("/api/v2/uploads/example", post(upload_example))
        .route("/api/v2/schema", get(schema))
        .route(
            "/api/openapi.json",
            get(|| async { Json(crate::http::openapi::document()) }),
        )
}

async fn schema() -> Json<serde_json::Value> {
    Json(shared::config::json_schema())
}

fn summary(row: &ServiceRow, speedup: Option<f64>) -> ServiceSummary {
    ServiceSummary {
        name: row.name.clone(),
        status: row.status,
        processor: row.config.processor.clone(),
        instances: row.instances,
        running_instances: row.running,
        optimization_level: row.config.model_info().map(|(_, i)| match i.level() {
            shared::config::OptimizationLevel::O1 => "o1".to_string(),
            shared::config::OptimizationLevel::O2 => "o2".to_string(),
        }),
        speedup,
        created_at: row.created_at.clone(),
        updated_at: row.updated_at.clone(),
        team: row.team.clone(),
    }
}

/// The optimization report of the service's artifact, if it has one.
async fn report_of(
    state: &AppState,
    row: &ServiceRow,
) -> Result<Option<shared::api::OptimizationReport>, AppError> {
    Ok(match &row.artifact {
        Some(key) => state
            .store
            .get_artifact(key)
            .await?
            .and_then(|a| a.report)
            .and_then(|r| serde_json::from_str(&r).ok()),
        None => None,
    })
}

async fn detail(state: &AppState, row: ServiceRow) -> Result<ServiceDetail, AppError> {
    let config = row.config.clone();
    let report = report_of(state, &row).await?;
    let speedup = report.as_ref().map(|r| r.headline().speedup);
    let placements = state
        .store
        .placements(&row.name)
        .await?
        .into_iter()
        .map(|p| shared::api::InstancePlacement {
            instance: p.slot,
            node: p.node,
            state: p.state,
            error: p.error,
        })
        .collect();
    let latest_version = state.store.latest_version(&row.name).await?;
    Ok(ServiceDetail {
        current_version: u32::try_from(row.current_version).unwrap_or(0),
        latest_version: u32::try_from(latest_version).unwrap_or(0),
        summary: summary(&row, speedup),
        endpoint: format!("/api/predict/{}", row.name),
        token: row.token.clone(),
        stage: row.stage.clone(),
        message: row.message.clone(),
        signature: row.signature.clone(),
        artifact: row.artifact.clone(),
        report,
        config,
        runners: state
            .instances
            .get(&row.name)
            .map(|p| p.runner_states())
            .unwrap_or_default(),
        placements,
    })
}

/// The list row of a service, with the speedup from its report.
pub(crate) async fn summary_of(
    state: &AppState,
    row: ServiceRow,
) -> Result<ServiceSummary, AppError> {
    let speedup = report_of(state, &row).await?.map(|r| r.headline().speedup);
    Ok(summary(&row, speedup))
}

pub(crate) async fn detail_of(
    state: &AppState,
    row: ServiceRow,
) -> Result<ServiceDetail, AppError> {
    detail(state, row).await
}

async fn service_or_404(state: &AppState, name: &str) -> Result<ServiceRow, AppError> {
    state
        .store
        .get_service(name)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no service named '{name}'")))
}

/// The service `name` if the caller's role in its team allows `action`.
/// Outside the team it does not exist (404), so names do not leak.
pub(crate) async fn service_for(
    state: &AppState,
    caller: &Caller,
    name: &str,
    need: Role,
    action: &str,
) -> Result<ServiceRow, AppError> {
    let row = service_or_404(state, name).await?;
    caller.require(
        &row.team,
        need,
        action,
        &format!("no service named '{name}'"),
    )?;
    Ok(row)
}

#[derive(Deserialize)]
struct TeamQuery {
    team: Option<String>,
}

/// The services of the caller's teams (of one team with `?team=`).
async fn list(
    caller: Caller,
    State(state): State<AppState>,
    Query(q): Query<TeamQuery>,
) -> Result<Json<Vec<ServiceSummary>>, AppError> {
    if let Some(team) = &q.team {
        caller.require(
            team,
            Role::Viewer,
            "listing services",
            &format!("no team named '{team}'"),
        )?;
    }
    let mut out = Vec::new();
    for row in state.store.list_services().await? {
        let visible =
            caller.role_in(&row.team).is_some() && q.team.as_ref().is_none_or(|t| *t == row.team);
        if visible {
            out.push(detail(&state, row).await?.summary);
        }
    }
    Ok(Json(out))
}

async fn describe(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceDetail>, AppError> {
    let row = service_for(&state, &caller, &name, Role::Viewer, "viewing a service").await?;
    let secrets = sees_secrets(&state, &caller, &row.team).await?;
    let mut d = detail(&state, row).await?;
    // (A config's own `token` is not stored: `store::config_json`.)
    if !secrets {
        d.token = String::new();
    }
    Ok(Json(d))
}

/// Whether the caller sees a service's secrets (its prediction token, its
/// share links): deployers and admins of its team
/// do; viewers when the team lets them (`viewers_see_secrets`).
pub(crate) async fn sees_secrets(
    state: &AppState,
    caller: &Caller,
    team: &str,
) -> Result<bool, AppError> {
    Ok(match caller.role_in(team) {
        Some(r) if r >= Role::Deployer => true,
        Some(_) => state.store.viewers_see_secrets(team).await?,
        None => false,
    })
}

fn parse_config(body: &str) -> Result<ServiceConfig, AppError> {
    parse_and_validate(body).map_err(AppError::Invalid)
}

/// The team a new service goes to: `?team=`, else the caller's first team
/// where they may deploy.
fn target_team(caller: &Caller, asked: Option<String>) -> Result<String, AppError> {
    let team = match asked {
        Some(t) => t,
        None => caller
            .teams
            .iter()
            .find(|t| t.role.can_deploy())
            .map(|t| t.team.clone())
            .or_else(|| caller.user.site_admin.then(|| "default".to_string()))
            .ok_or_else(|| {
                AppError::Forbidden(
                    "deploying needs the deployer role in a team; you have none".into(),
                )
            })?,
    };
    caller.require(
        &team,
        Role::Deployer,
        "deploying",
        &format!("no team named '{team}'"),
    )?;
    Ok(team)
}

/// The model of `cfg` resolved and checked as a deploy will need it (the
/// checks both create and modify make before anything is stored).
async fn check_deployable(
    state: &AppState,
    cfg: &shared::ServiceConfig,
) -> Result<crate::control::store::ResolvedModel, AppError> {
    Ok(crate::deploy::check_deployable(
        &state.settings,
        &state.resources,
        state.objects.as_ref(),
        cfg,
    )
    .await?)
}

/// Refuses (413) a create or modify that would take `team` past its
/// storage quota (`--team-quota-mib`): the models and artifacts of all its
/// services' versions, and the new model.
async fn check_quota(
    state: &AppState,
    team: &str,
    model: &crate::control::store::ResolvedModel,
) -> Result<(), AppError> {
    let Some(quota) = state.settings.team_quota_bytes else {
        return Ok(());
    };
    let mut held = state.store.team_storage(team).await?;
    held.model_dirs.insert(model.dir.clone());
    let artifacts = state.settings.artifacts_dir();
    let used = tokio::task::spawn_blocking(move || {
        let models: u64 = held
            .model_dirs
            .iter()
            .map(|d| crate::deploy::gc::size_of(std::path::Path::new(d)))
            .sum();
        let built: u64 = held
            .artifacts
            .iter()
            .map(|k| crate::deploy::gc::size_of(&artifacts.join(k)))
            .sum();
        models + built
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?;
    if used > quota {
        let mib = |b: u64| b.div_ceil(1 << 20);
        return Err(AppError::PayloadTooLarge(format!(
            "team '{team}' would keep {} MiB of models and artifacts with this deploy, over its quota of {} MiB: delete services it no longer needs (every version's model and artifact counts)",
            mib(used),
            mib(quota)
        )));
    }
    Ok(())
}

/// `POST /api/v2/gc`: collects what nothing uses now (site admins), with
/// `?grace=` instead of the server's `--gc-grace` if given.
async fn collect(
    caller: Caller,
    State(state): State<AppState>,
    Query(q): Query<GcQuery>,
) -> Result<Json<shared::api::GcReport>, AppError> {
    caller.require_site_admin("collecting unused files")?;
    let mut policy = state.settings.gc;
    if let Some(g) = &q.grace {
        policy.grace = humantime::parse_duration(g).map_err(|e| {
            AppError::BadRequest(format!(
                "grace: expected a duration like 10m or 1h, got {g:?}: {e}"
            ))
        })?;
    }
    Ok(Json(
        crate::deploy::gc::collect(&state.deployer(), policy).await?,
    ))
}

#[derive(Deserialize)]
pub(crate) struct GcQuery {
    grace: Option<String>,
}

async fn create(
    caller: Caller,
    State(state): State<AppState>,
    Query(q): Query<TeamQuery>,
    body: String,
) -> Result<(StatusCode, Json<ServiceDetail>), AppError> {
    let team = target_team(&caller, q.team)?;
    if state.store.team(&team).await?.is_none() {
        return Err(AppError::NotFound(format!("no team named '{team}'")));
    }
    let cfg = parse_config(&body)?;
    if state.store.get_service(&cfg.name).await?.is_some() {
        return Err(AppError::Conflict(format!(
            "a service named '{}' already exists; use `whet modify` to redeploy it",
            cfg.name
        )));
    }
    let model = check_deployable(&state, &cfg).await?;
    check_quota(&state, &team, &model).await?;
    let token = cfg.token.clone().unwrap_or_else(|| new_token(""));
    let job = state
        .store
        .create_service(
            &cfg,
            &job_kind(&cfg),
            &token,
            &model,
            &team,
            &caller.user.name,
        )
        .await?;
    state
        .logs
        .line(&cfg.name, Some(job), "[OK] Service is being created")
        .await?;
    state.jobs_ready.notify_waiters();
    let row = service_or_404(&state, &cfg.name).await?;
    Ok((StatusCode::CREATED, Json(detail(&state, row).await?)))
}

async fn modify(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: String,
) -> Result<Json<ServiceDetail>, AppError> {
    let row = service_for(
        &state,
        &caller,
        &name,
        Role::Deployer,
        "modifying a service",
    )
    .await?;
    let cfg = parse_config(&body)?;
    if cfg.name != name {
        return Err(AppError::invalid("name", format!("the config names '{}' but the request is for '{name}'; a service cannot be renamed", cfg.name)));
    }
    let model = check_deployable(&state, &cfg).await?;
    check_quota(&state, &row.team, &model).await?;
    crate::deploy::cancel_and_wait(
        &state.deployer(),
        &name,
        "the service was modified; the new config is deployed next",
    )
    .await?;
    // A token in the config is the service's from now on (EAS's modify):
    // the old one is refused at once, the instances need not restart.
    if let Some(token) = cfg.token.as_deref() {
        set_token(&state, &name, token).await?;
    }
    redeploy(
        &state,
        &name,
        &cfg,
        Some(&model),
        VersionChange::New {
            author: &caller.user.name,
        },
        "[OK] Service is being updated",
    )
    .await
}

/// A new prediction token for the service, shown once here; the old one is
/// refused from this answer on, on every node (the others take it at their
/// next look at their placements, which this rotation sets off).
async fn rotate_token(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<shared::api::RotatedToken>, AppError> {
    service_for(
        &state,
        &caller,
        &name,
        Role::Deployer,
        "rotating a service's token",
    )
    .await?;
    let token = new_token("");
    set_token(&state, &name, &token).await?;
    Ok(Json(shared::api::RotatedToken { token }))
}

async fn set_token(state: &AppState, name: &str, token: &str) -> Result<(), AppError> {
    if !state.store.set_service_token(name, token).await? {
        return Err(AppError::NotFound(format!("no service named '{name}'")));
    }
    state.instances.set_token(name, token);
    Ok(())
}

async fn scale(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(req): Json<shared::api::ScaleRequest>,
) -> Result<Json<ServiceDetail>, AppError> {
    let row = service_for(&state, &caller, &name, Role::Deployer, "scaling a service").await?;
    let mut cfg = row.config;
    cfg.metadata.instance = req.instances;
    let errors: Vec<_> = shared::validate(&cfg)
        .into_iter()
        .filter(|e| e.path.starts_with("metadata.instance"))
        .collect();
    if !errors.is_empty() {
        return Err(AppError::Invalid(
            errors
                .into_iter()
                .map(|mut e| {
                    e.path = "instances".into();
                    e
                })
                .collect(),
        ));
    }
    // The groups and GPUs may have changed since the deploy (a restart).
    state.resources.check(&cfg).map_err(AppError::Invalid)?;
    redeploy(
        &state,
        &name,
        &cfg,
        None,
        VersionChange::Same,
        &format!("[OK] Scaling service to {} instance(s)", req.instances),
    )
    .await
}

async fn stop(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceDetail>, AppError> {
    service_for(&state, &caller, &name, Role::Deployer, "stopping a service").await?;
    crate::deploy::cancel_and_wait(&state.deployer(), &name, "the service was stopped").await?;
    if state.store.has_pending_job(&name).await? {
        return Err(AppError::Conflict(format!(
            "a deploy of '{name}' is in progress; stop it after it finishes"
        )));
    }
    // Every node drops the service's instances (this one before answering),
    // those of the versions beside them too.
    crate::deploy::traffic::end(&state.deployer(), &name).await?;
    state.store.unplace(&name).await?;
    state.instances.remove(&name);
    state.hosting.wake();
    state
        .store
        .set_status(&name, ServiceStatus::Stopped, None, None)
        .await?;
    state
        .logs
        .line(&name, None, "[OK] Service is stopped")
        .await?;
    Ok(Json(
        detail(&state, service_or_404(&state, &name).await?).await?,
    ))
}

async fn start(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceDetail>, AppError> {
    let row = service_for(&state, &caller, &name, Role::Deployer, "starting a service").await?;
    if row.status == ServiceStatus::Running {
        return Err(AppError::Conflict(format!(
            "service '{name}' is already running"
        )));
    }
    // A GPU service restarted on a server that has lost its GPUs (or its
    // group) is refused here rather than queued for no worker.
    let cfg = &row.config;
    state.resources.check(cfg).map_err(AppError::Invalid)?;
    redeploy(
        &state,
        &name,
        cfg,
        None,
        VersionChange::Same,
        "[OK] Service is being started",
    )
    .await
}

/// Queues a redeploy of `name` with `cfg` (see `Store::queue_redeploy`),
/// logs `line` on it, wakes the workers and answers the service.
async fn redeploy(
    state: &AppState,
    name: &str,
    cfg: &ServiceConfig,
    model: Option<&crate::control::store::ResolvedModel>,
    version: VersionChange<'_>,
    line: &str,
) -> Result<Json<ServiceDetail>, AppError> {
    // A new version served ends a traffic split, but for a promote (the
    // version that has all the traffic becomes current; its deploy ends it).
    let ends_split = match version {
        VersionChange::Same => false,
        VersionChange::New { .. } => true,
        VersionChange::Switch(v) => {
            state.store.traffic(name).await?
                != Weights::from([(u32::try_from(v).unwrap_or(0), 100)])
        }
    };
    let job = state
        .store
        .queue_redeploy(name, cfg, &job_kind(cfg), model, version)
        .await?;
    state.logs.line(name, Some(job), line).await?;
    if ends_split {
        crate::deploy::traffic::end(&state.deployer(), name).await?;
    }
    state.jobs_ready.notify_waiters();
    Ok(Json(
        detail(state, service_or_404(state, name).await?).await?,
    ))
}

async fn versions(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<shared::api::ServiceVersion>>, AppError> {
    let row = service_for(&state, &caller, &name, Role::Viewer, "viewing a service").await?;
    let versions = state.store.versions(&name).await?;
    Ok(Json(
        versions
            .into_iter()
            .map(|v| shared::api::ServiceVersion {
                version: u32::try_from(v.version).unwrap_or(0),
                current: v.version == row.current_version,
                author: v.author,
                created_at: v.created_at,
                artifact: v.artifact,
                config: v.config,
            })
            .collect(),
    ))
}

/// A `{"version": N}` body, or its default when the body is empty.
fn version_request<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| AppError::invalid("version", format!("expected {{\"version\": N}}: {e}")))
}

/// Serves an earlier (or, after a rollback, a later) version again: its
/// config and model, so its deploy finds its artifact by key and optimizes
/// nothing (unless the artifact was removed since).
async fn rollback(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ServiceDetail>, AppError> {
    let row = service_for(
        &state,
        &caller,
        &name,
        Role::Deployer,
        "rolling back a service",
    )
    .await?;
    // An empty body asks for the version before the current one.
    let req: shared::api::RollbackRequest = version_request(&body)?;
    let target = match req.version {
        Some(v) => i64::from(v),
        None if row.current_version > 1 => row.current_version - 1,
        None => {
            return Err(AppError::Conflict(format!(
                "service '{name}' serves version 1; there is no earlier version to roll back to"
            )))
        }
    };
    if target == row.current_version {
        return Err(AppError::Conflict(format!(
            "service '{name}' already serves version {target}"
        )));
    }
    serve_version(&state, &name, target, "Rolling back to").await
}

/// Queues a redeploy that serves version `target` of `name` (its config
/// and model), logging "[OK] {what} version N of M (made by …)".
async fn serve_version(
    state: &AppState,
    name: &str,
    target: i64,
    what: &str,
) -> Result<Json<ServiceDetail>, AppError> {
    let latest = state.store.latest_version(name).await?;
    let Some(v) = state.store.version(name, target).await? else {
        return Err(AppError::invalid(
            "version",
            format!("service '{name}' has versions 1 to {latest}; there is no version {target}"),
        ));
    };
    let Some(model) = v.model.clone() else {
        return Err(AppError::Conflict(format!(
            "version {target} of '{name}' records no model to serve"
        )));
    };
    // The groups and GPUs may have changed since that version ran.
    state
        .resources
        .check(&v.config)
        .map_err(AppError::Invalid)?;
    crate::deploy::cancel_and_wait(
        &state.deployer(),
        name,
        &format!("the service was switched to version {target}"),
    )
    .await?;
    redeploy(
        state,
        name,
        &v.config,
        Some(&model),
        VersionChange::Switch(target),
        &format!(
            "[OK] {what} version {target} of {latest} (made by {} at {})",
            v.author, v.created_at
        ),
    )
    .await
}

/// The artifact the service serves, as a tar stream of its sealed folder
/// (the model, `artifact.json`, the report, the seal): what runs, to keep
/// or to inspect. Written as it is read, so memory stays small.
async fn artifact(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let row = service_for(&state, &caller, &name, Role::Viewer, "viewing a service").await?;
    let Some(key) = row.artifact.clone() else {
        return Err(AppError::NotFound(format!(
            "service '{name}' has no artifact yet (its first deploy has not finished)"
        )));
    };
    let dir = crate::deploy::artifacts::local(&state.deployer(), &key)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("artifact {key} is no longer stored")))?;
    let (reader, writer) = tokio::io::duplex(1 << 16);
    let folder = format!("{name}-{}", &key[..12.min(key.len())]);
    let inner = folder.clone();
    tokio::task::spawn_blocking(move || {
        let mut tar = tar::Builder::new(tokio_util::io::SyncIoBridge::new(writer));
        tar.follow_symlinks(false);
        // A reader that goes away ends the copy with an error; nothing to tell.
        if let Err(e) = tar.append_dir_all(&inner, &dir).and_then(|()| tar.finish()) {
            tracing::debug!("streaming artifact {}: {e}", dir.display());
        }
    });
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/x-tar".to_string(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{folder}.tar\""),
            ),
        ],
        Body::from_stream(tokio_util::io::ReaderStream::new(reader)),
    )
        .into_response())
}

/// What a deploy of the config in the body would meet, told without
/// touching the model (see `deploy::preflight`): always 200, the problems
/// with their paths (none: it can be deployed as far as can be told).
async fn check(
    _caller: Caller,
    State(state): State<AppState>,
    body: String,
) -> Json<shared::api::ConfigCheck> {
    let problems = crate::deploy::preflight(
        &state.settings,
        &state.resources,
        state.objects.is_some(),
        &body,
    );
    Json(shared::api::ConfigCheck { problems })
}

/// The service's last hour on this node, minute by minute: requests,
/// errors, p50/p99 and the longest queue.
async fn minute_metrics(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<shared::api::MinuteStats>>, AppError> {
    service_for(&state, &caller, &name, Role::Viewer, "viewing a service").await?;
    Ok(Json(crate::control::recent::per_minute(&name)))
}

/// The service's request log on this node: sampled predictions and every
/// failed one, newest first.
async fn requests(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<shared::api::RequestSample>>, AppError> {
    service_for(&state, &caller, &name, Role::Viewer, "viewing a service").await?;
    Ok(Json(crate::control::requests::of(&name)))
}

/// The traffic split of a service and how each version has done.
async fn traffic(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<shared::api::TrafficSplit>, AppError> {
    let row = service_for(&state, &caller, &name, Role::Viewer, "viewing a service").await?;
    Ok(Json(split_of(&state, &row).await?))
}

async fn split_of(
    state: &AppState,
    row: &ServiceRow,
) -> Result<shared::api::TrafficSplit, AppError> {
    let name = &row.name;
    let current = u32::try_from(row.current_version).unwrap_or(0);
    let mut weights = state.store.traffic(name).await?;
    if weights.is_empty() {
        weights.insert(current, 100);
    }
    weights.entry(current).or_insert(0);
    let mut versions = Vec::new();
    for (&v, &weight) in &weights {
        let (instances, running, error) = if v == current {
            (row.instances, row.running, None)
        } else {
            let placed = state.store.placements(&canary_key(name, v)).await?;
            let up = placed.iter().filter(|p| p.state == "running").count();
            let error = placed.iter().find_map(|p| p.error.clone());
            (placed.len() as u32, up as u32, error)
        };
        let t = crate::control::recent::last_hour(&[&canary_key(name, v)]);
        versions.push(shared::api::TrafficVersion {
            version: v,
            weight,
            current: v == current,
            instances,
            running,
            requests: t.requests,
            errors: t.errors,
            p50_ms: t.p50_ms,
            p99_ms: t.p99_ms,
            error,
        });
    }
    Ok(shared::api::TrafficSplit {
        service: name.clone(),
        current_version: current,
        versions,
    })
}

/// Splits a running service's traffic between its versions.
async fn split_traffic(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<shared::api::TrafficSplit>, AppError> {
    let row = service_for(&state, &caller, &name, Role::Deployer, "splitting traffic").await?;
    let req: shared::api::TrafficRequest = serde_json::from_slice(&body).map_err(|e| {
        AppError::invalid(
            "weights",
            format!("expected {{\"weights\": {{\"<version>\": <per cent>, …}}}}: {e}"),
        )
    })?;
    let weights = check_weights(&state, &row, &req.weights).await?;
    if row.status != ServiceStatus::Running {
        return Err(AppError::Conflict(format!(
            "service '{name}' is {}; its traffic can be split while it runs",
            row.status.as_str()
        )));
    }
    if state.store.has_pending_job(&name).await? {
        return Err(AppError::Conflict(format!(
            "a deploy of '{name}' is in progress; split its traffic after it finishes"
        )));
    }
    crate::deploy::traffic::set(&state.deployer(), &name, &weights).await?;
    Ok(Json(
        split_of(&state, &service_or_404(&state, &name).await?).await?,
    ))
}

/// Shares in per cent that sum to 100, of versions that exist and, but
/// for the current one, have an artifact to serve and a place to run.
async fn check_weights(
    state: &AppState,
    row: &ServiceRow,
    asked: &std::collections::BTreeMap<u32, u32>,
) -> Result<Weights, AppError> {
    let name = &row.name;
    if asked.is_empty() {
        return Err(AppError::invalid(
            "weights",
            "expected at least one version with its share in per cent",
        ));
    }
    let sum: u64 = asked.values().map(|&w| u64::from(w)).sum();
    if sum != 100 {
        return Err(AppError::invalid(
            "weights",
            format!("expected shares in per cent that sum to 100, got {sum}"),
        ));
    }
    let latest = state.store.latest_version(name).await?;
    for (&v, &w) in asked {
        let Some(version) = state.store.version(name, i64::from(v)).await? else {
            return Err(AppError::invalid(
                &format!("weights.{v}"),
                format!("service '{name}' has versions 1 to {latest}; there is no version {v}"),
            ));
        };
        if i64::from(v) == row.current_version || w == 0 {
            continue;
        }
        if version.artifact.is_none() {
            return Err(AppError::Conflict(format!(
                "version {v} of '{name}' was never deployed (it has no artifact); roll back to it once to build it"
            )));
        }
        state
            .resources
            .check(&version.config)
            .map_err(AppError::Invalid)?;
    }
    Ok(asked.clone())
}

/// Gives one version of the split all the traffic and makes it current
/// (a redeploy that finds its artifact); the split ends when it is done.
async fn promote(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ServiceDetail>, AppError> {
    let row = service_for(
        &state,
        &caller,
        &name,
        Role::Deployer,
        "promoting a version",
    )
    .await?;
    let req: shared::api::PromoteRequest = version_request(&body)?;
    let current = u32::try_from(row.current_version).unwrap_or(0);
    let split = state.store.traffic(&name).await?;
    let target = match req.version {
        Some(v) => v,
        None => split
            .iter()
            .filter(|(&v, &w)| v != current && w > 0)
            .max_by_key(|(&v, &w)| (w, v))
            .map(|(&v, _)| v)
            .ok_or_else(|| {
                AppError::Conflict(format!(
                    "service '{name}' has no traffic split to promote a version of; use rollback to serve another version"
                ))
            })?,
    };
    if target == current {
        // The current version keeps serving; the others stop.
        crate::deploy::traffic::end(&state.deployer(), &name).await?;
        return Ok(Json(
            detail(&state, service_or_404(&state, &name).await?).await?,
        ));
    }
    if split.get(&target).copied().unwrap_or(0) == 0 {
        return Err(AppError::Conflict(format!(
            "version {target} of '{name}' has no share of the traffic; split some to it first, or roll back to it"
        )));
    }
    if state.store.has_pending_job(&name).await? {
        return Err(AppError::Conflict(format!(
            "a deploy of '{name}' is in progress; promote after it finishes"
        )));
    }
    // Its instances (running, since it has a share) take every request
    // while the service's own are redeployed with it.
    let deployer = state.deployer();
    crate::deploy::traffic::set(&deployer, &name, &Weights::from([(target, 100)])).await?;
    match serve_version(&state, &name, i64::from(target), "Promoting").await {
        Ok(d) => Ok(d),
        Err(e) => {
            crate::deploy::traffic::set(&deployer, &name, &split).await?;
            Err(e)
        }
    }
}

async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    service_for(&state, &caller, &name, Role::Deployer, "deleting a service").await?;
    crate::deploy::cancel_and_wait(&state.deployer(), &name, "the service was deleted").await?;
    // Refused (409) if a worker claimed a queued deploy since: the look and
    // the delete are one transaction.
    state.store.delete_service(&name).await?;
    // No slots are left; this tells the other nodes to drop theirs.
    state.store.unplace(&name).await?;
    state.instances.remove(&name);
    state.instances.set_split(&name, Weights::new());
    state.hosting.wake();
    crate::control::recent::forget(&name);
    crate::control::requests::forget(&name);
    state
        .logs
        .end(&name, ServiceStatus::Stopped, Some("deleted".into()));
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct LogQuery {
    #[serde(default)]
    after: i64,
    limit: Option<i64>,
}

async fn logs(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<LogPage>, AppError> {
    service_for(&state, &caller, &name, Role::Viewer, "reading a log").await?;
    Ok(Json(log_page(&state, &name, q).await?))
}

pub(crate) async fn log_page(
    state: &AppState,
    name: &str,
    q: LogQuery,
) -> Result<LogPage, AppError> {
    let limit = q.limit.unwrap_or(500).clamp(1, 5000);
    let lines = state.store.logs_after(name, q.after, limit).await?;
    let next = (lines.len() as i64 == limit)
        .then(|| lines.last().map(|l| l.id))
        .flatten();
    Ok(LogPage { lines, next })
}

/// Replays the stored log, then streams new lines until the deploy ends.
async fn log_stream(
    caller: Caller,
    State(state): State<AppState>,
    Path(name): Path<String>,
    ws: WebSocketUpgrade,
) -> Result<Response, AppError> {
    let row = service_for(&state, &caller, &name, Role::Viewer, "reading a log").await?;
    let access = Access::Token {
        hash: caller.token_hash,
        team: row.team,
    };
    Ok(upgrade_log_stream(state, name, ws, access))
}

/// What let a log stream open, looked at again while it runs: a stream ends
/// when its token or share link is revoked, or its user leaves the team.
pub(crate) enum Access {
    /// An API token of a member of `team` (or of a site admin).
    Token { hash: String, team: String },
    /// A share link of the service.
    Share(String),
}

/// How often an open stream looks whether its access still holds, for
/// revocations made on another node (this node's wake it at once).
const ACCESS_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

impl Access {
    async fn holds(&self, state: &AppState, name: &str) -> Result<bool, String> {
        let e = |e: crate::control::store::StoreError| e.to_string();
        Ok(match self {
            Access::Token { hash, team } => Caller::of_token_hash(state, hash)
                .await
                .map_err(e)?
                .is_some_and(|c| c.role_in(team).is_some()),
            Access::Share(token) => {
                state
                    .store
                    .shared_service(token)
                    .await
                    .map_err(e)?
                    .as_deref()
                    == Some(name)
            }
        })
    }
}

/// Answers a WebSocket upgrade with the log stream of `name`.
pub(crate) fn upgrade_log_stream(
    state: AppState,
    name: String,
    ws: WebSocketUpgrade,
    access: Access,
) -> Response {
    // Picked when offered (the console's token rides in another offered
    // subprotocol, which is never echoed).
    ws.protocols([crate::http::auth::WS_PROTOCOL])
        .on_upgrade(move |socket| async move {
            if let Err(e) = stream_logs(state, name, socket, access).await {
                tracing::debug!("log stream ended: {e}");
            }
        })
}

async fn send(socket: &mut WebSocket, ev: &LogEvent) -> Result<(), String> {
    let text = serde_json::to_string(ev).map_err(|e| e.to_string())?;
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|e| e.to_string())
}

/// Lines a log stream reads from the store at once: a follower of a long
/// log holds one page, not the whole log.
const REPLAY_PAGE: i64 = 500;

/// Sends the stored lines of `name` after line `after`, a page at a time;
/// returns the id of the last line sent (`after` when there were none).
async fn send_stored(
    state: &AppState,
    name: &str,
    socket: &mut WebSocket,
    mut after: i64,
) -> Result<i64, String> {
    loop {
        let page = state
            .store
            .logs_after(name, after, REPLAY_PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let full = page.len() as i64 == REPLAY_PAGE;
        for line in page {
            after = line.id;
            send(socket, &LogEvent::Line(line)).await?;
        }
        if !full {
            return Ok(after);
        }
    }
}

async fn stream_logs(
    state: AppState,
    name: String,
    mut socket: WebSocket,
    access: Access,
) -> Result<(), String> {
    let mut revoked = state.revoked.subscribe();
    let mut rx = state.logs.subscribe(&name);
    let mut last = send_stored(&state, &name, &mut socket, 0).await?;
    let mut recheck = tokio::time::interval(ACCESS_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.tick().await;
    loop {
        // Checked after the replay: a deploy that ended before we subscribed
        // has nothing more to say. Pending first, then the row: once no job
        // is pending, the row already holds the final status (the worker
        // writes the status before it finishes the job).
        let pending = state
            .store
            .has_pending_job(&name)
            .await
            .map_err(|e| e.to_string())?;
        let row = state
            .store
            .get_service(&name)
            .await
            .map_err(|e| e.to_string())?;
        let Some(row) = row else { break };
        if !pending {
            // Lines written between the replay and now.
            send_stored(&state, &name, &mut socket, last).await?;
            send(
                &mut socket,
                &LogEvent::End {
                    status: row.status,
                    message: row.message.clone(),
                },
            )
            .await?;
            break;
        }
        // A revocation here, or the regular look (for one on another node),
        // checks the stream's access again.
        let event = tokio::select! {
            ev = rx.recv() => ev,
            Ok(()) = revoked.changed() => {
                recheck.reset_immediately();
                continue;
            }
            _ = recheck.tick() => {
                if access.holds(&state, &name).await? {
                    continue;
                }
                // 1008 (policy violation): the close for "no longer allowed".
                let _ = socket
                    .send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 1008,
                        reason: "access revoked".into(),
                    })))
                    .await;
                return Ok(());
            }
        };
        match event {
            Ok(LogEvent::Line(line)) if line.id > last => {
                last = line.id;
                send(&mut socket, &LogEvent::Line(line)).await?;
            }
            Ok(LogEvent::Line(_)) => {}
            Ok(LogEvent::End { .. }) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                last = send_stored(&state, &name, &mut socket, last).await?;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    Ok(())
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: String,
}

/// Streams a model file or archive into the upload store. Archives are
/// unpacked and checked before anything is kept, so an unsafe archive leaves
/// no trace.
async fn upload(
    caller: Caller,
    State(state): State<AppState>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Result<Json<UploadResponse>, AppError> {
    require_uploader(&caller)?;
    let name = q.filename.trim().to_string();
    let valid = !name.is_empty()
        && !name.contains('/')
        && !name.contains('\\')
        && name != "."
        && name != "..";
    if !valid {
        return Err(AppError::BadRequest(format!(
            "filename '{name}': expected a plain file name like model.onnx or model.tar.gz"
        )));
    }
    let tmp = upload_tmp(&state).await?;
    let result = receive(&state, body, &tmp).await;
    let (sha, bytes) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    store_upload(&state, &tmp, &sha, &name, bytes).await
}

/// Uploading needs the deployer role in some team (or a site admin).
fn require_uploader(caller: &Caller) -> Result<(), AppError> {
    let may_deploy = caller.user.site_admin || caller.teams.iter().any(|t| t.role.can_deploy());
    if may_deploy {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "uploading a model needs the deployer role in a team".into(),
        ))
    }
}

/// A fresh name in the uploads folder for an upload being received.
async fn upload_tmp(state: &AppState) -> Result<PathBuf, AppError> {
    let uploads = state.settings.uploads_dir();
    tokio::fs::create_dir_all(&uploads).await?;
    Ok(uploads.join(format!(".tmp-{}", new_token(""))))
}

/// Files a received upload (`tmp`, of digest `sha`) under its digest as
/// `name`, unpacked first when it is an archive, and shares it with the
/// other nodes; answers its `model_path`.
async fn store_upload(
    state: &AppState,
    tmp: &std::path::Path,
    sha: &str,
    name: &str,
    bytes: u64,
) -> Result<Json<UploadResponse>, AppError> {
    let uploads = state.settings.uploads_dir();
    if resolve::is_archive(name) {
        let settings = state.settings.clone();
        let (tmp2, sha2) = (tmp.to_path_buf(), sha.to_string());
        let unpacked =
            tokio::task::spawn_blocking(move || resolve::unpacked_dir(&settings, &tmp2, &sha2))
                .await
                .map_err(|e| AppError::Internal(e.to_string()))?;
        if let Err(e) = unpacked {
            let _ = tokio::fs::remove_file(tmp).await;
            return Err(AppError::BadRequest(format!("{name}: {e}")));
        }
    }
    let dir = uploads.join(sha);
    tokio::fs::create_dir_all(&dir).await?;
    tokio::fs::rename(tmp, dir.join(name)).await?;
    // Nodes that share a store share uploads: any node can deploy this one.
    if let Some(objects) = &state.objects {
        let key = crate::deploy::remote::upload_key(sha, name);
        if !objects.exists(&key).await.map_err(unavailable)? {
            objects
                .put_file(&key, &dir.join(name))
                .await
                .map_err(unavailable)?;
        }
    }
    Ok(Json(UploadResponse {
        model_path: format!("upload://{sha}/{name}"),
        sha256: sha.to_string(),
        bytes,
    }))
}

/// The built-in example (a small ONNX model and its test data), filed as
/// an upload, and a config that deploys it: what the console offers as
/// its ready-to-deploy example.
async fn upload_example(
    caller: Caller,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, AppError> {
    require_uploader(&caller)?;
    let tar = tokio::task::spawn_blocking(crate::control::example::archive)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(AppError::Internal)?;
    let tmp = upload_tmp(&state).await?;
    tokio::fs::write(&tmp, &tar).await?;
    let sha = hex::encode(sha2::Sha256::digest(&tar));
    let up = store_upload(&state, &tmp, &sha, "example.tar", tar.len() as u64).await?;
    Ok(Json(serde_json::json!({
        "model_path": up.model_path,
        "config": crate::control::example::config(&up.model_path),
        "request": crate::control::example::request(),
    })))
}

fn unavailable(e: crate::control::objects::ObjectsError) -> AppError {
    AppError::Unavailable(e.to_string())
}

async fn receive(
    state: &AppState,
    body: Body,
    tmp: &std::path::Path,
) -> Result<(String, u64), AppError> {
    let mut file = tokio::fs::File::create(tmp).await?;
    let mut hasher = sha2::Sha256::new();
    let mut bytes = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| AppError::BadRequest(format!("upload interrupted: {e}")))?;
        bytes += chunk.len() as u64;
        if bytes > state.settings.max_model_bytes {
            return Err(AppError::PayloadTooLarge(format!(
                "upload exceeds the limit of {} bytes",
                state.settings.max_model_bytes
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.sync_all().await?;
    Ok((hex::encode(hasher.finalize()), bytes))
}

pub fn not_found() -> Response {
    AppError::NotFound("no such route".into()).into_response()
}
