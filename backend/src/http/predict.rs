//! The prediction routes: `POST /api/predict/{name}` (EAS: the service token
//! in `Authorization`, raw as the EAS SDK sends it or `Bearer`) and the
//! KServe v2 routes under `/v2`. Here the token and the service are checked
//! from the headers, then the body is read within its limits; the codecs in
//! `serving::eas` and `serving::kserve` do the rest.

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::control::store::canary_key;
use crate::http::auth::{request_token, tokens_equal};
use crate::http::error::AppError;
use crate::http::forward::VERSION;
use crate::http::state::AppState;
use crate::serving::instances::ServicePool;
use crate::serving::kserve::{self, MODEL_VERSION};

/// On an answer, the id of its trace when tracing is on (`--otlp-endpoint`).
pub const TRACE_ID: &str = "x-trace-id";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/predict/{name}", post(predict))
        // KServe v2 / Open Inference Protocol (JSON).
        .route("/metrics", get(metrics))
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        // A stopping server is not ready: load balancers send elsewhere.
        .route(
            "/v2/health/ready",
            get(|State(state): State<AppState>| async move {
                if state.stopping.is_cancelled() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }),
        )
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/config", get(model_config))
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/config",
            get(model_config_version),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version),
        )
        .layer(DefaultBodyLimit::max(256 << 20))
}

/// Prometheus metrics, for a management token (a scraper's
/// `authorization: bearer_token`): a site admin's sees every service's
/// series, anyone else's those of their teams' services.
async fn metrics(
    caller: crate::http::auth::Caller,
    State(state): State<AppState>,
) -> Result<Response, AppError> {
    let visible: Option<std::collections::HashSet<String>> = if caller.user.site_admin {
        None
    } else {
        Some(
            state
                .store
                .list_services()
                .await?
                .into_iter()
                .filter(|s| caller.role_in(&s.team).is_some())
                .map(|s| s.name)
                .collect(),
        )
    };
    let text = crate::control::metrics::render(|service| {
        visible.as_ref().is_none_or(|v| v.contains(service))
    });
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}

/// The serving pool of `name` for a caller holding its token.
async fn authorized_pool(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Arc<ServicePool>, AppError> {
    authorized_pool_headers(state, name, headers, uri).await
}

/// The version a request asks for in [`VERSION`] (a client's pin, or the
/// version a traffic split drew for it: `forward::forward_remote`).
fn pinned_version(headers: &HeaderMap) -> Result<Option<u32>, AppError> {
    let Some(v) = headers.get(VERSION) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            AppError::BadRequest(format!(
                "header {VERSION}: expected a version number of the service, got {v:?}"
            ))
        })
}

/// The pool of a service that is serving (of the version the request is
/// pinned to, if it is): 404 for no such service, 503 for one that is not
/// serving. Only headers have been read so far.
async fn serving_pool(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
) -> Result<Arc<ServicePool>, AppError> {
    let pinned = pinned_version(headers)?;
    let pool = match pinned {
        Some(v) => state.instances.of_version(name, v),
        None => state.instances.get(name),
    };
    match pool {
        Some(pool) => {
            crate::serving::execute::note_version(pool.version());
            Ok(pool)
        }
        None => match (state.store.get_service(name).await?, pinned) {
            (Some(s), Some(v)) if s.status == shared::api::ServiceStatus::Running => Err(AppError::Unavailable(format!(
                "service '{name}' does not serve version {v} here (only its current version and the versions of its traffic split are served)"
            ))),
            (Some(s), _) => Err(AppError::Unavailable(format!(
                "service '{name}' is {} and not serving",
                s.status.as_str()
            ))),
            (None, _) => Err(AppError::NotFound(format!("no service named '{name}'"))),
        },
    }
}

/// The refusal of a caller without the service's token: the same whether
/// the service exists or not, so a stranger learns nothing of its names.
pub(crate) fn denied(name: &str) -> AppError {
    AppError::Unauthorized(format!(
        "missing or wrong token for service '{name}': send the service token in the Authorization header"
    ))
}

/// The pool of `name` for a caller whose token (header or query) is the
/// service's: checked before any byte of the body is read. Why a service
/// does not serve (stopped, an unknown version) is told only to a caller
/// holding its token.
pub(crate) async fn authorized_pool_headers(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Arc<ServicePool>, AppError> {
    let Some(token) = request_token(headers, uri) else {
        return Err(denied(name));
    };
    match serving_pool(state, name, headers).await {
        Ok(pool) if tokens_equal(&token, &pool.token()) => Ok(pool),
        Ok(_) => Err(denied(name)),
        Err(e) => match state.store.get_service(name).await? {
            Some(s) if tokens_equal(&token, &s.token) => Err(e),
            _ => Err(denied(name)),
        },
    }
}

/// The pool of `name` for a signed request (EAS SDK), whose signature is
/// checked against the body once it is read. A service that is not serving
/// says so only to a request whose signature its `Content-MD5` proves.
async fn signed_pool(
    state: &AppState,
    name: &str,
    headers: &HeaderMap,
) -> Result<Arc<ServicePool>, AppError> {
    match serving_pool(state, name, headers).await {
        Ok(pool) => Ok(pool),
        Err(e) => match state.store.get_service(name).await? {
            Some(s)
                if crate::serving::eas::signing::verify_headers(
                    headers,
                    name,
                    &s.token,
                    SystemTime::now(),
                )
                .is_ok() =>
            {
                Err(e)
            }
            _ => Err(denied(name)),
        },
    }
}

/// The signed requests already taken (`signing::Replays`).
static REPLAYS: std::sync::LazyLock<crate::serving::eas::signing::Replays> =
    std::sync::LazyLock::new(Default::default);

/// How long a client may take to send a prediction body (or a gRPC
/// message).
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// `bytes` of the server's budget of prediction bodies held at once; 503
/// when it is spent. Released when the permit is dropped.
pub(crate) fn take_budget(
    state: &AppState,
    bytes: usize,
) -> Result<tokio::sync::OwnedSemaphorePermit, AppError> {
    state
        .body_budget
        .clone()
        .try_acquire_many_owned(crate::http::state::budget_units(bytes))
        .map_err(|_| {
            AppError::Unavailable(
                "the server is receiving as many prediction bodies as it holds at once; retry shortly"
                    .into(),
            )
        })
}

/// A request body held in memory, with its share of the server's body
/// budget (released when the request ends).
struct HeldBody {
    bytes: Bytes,
    _budget: tokio::sync::OwnedSemaphorePermit,
}

/// Reads a prediction body once the service and (unless the request is
/// signed, which needs the body) the token are known good: at most the
/// service's body limit (413 past it, before reading when Content-Length
/// says so), within the server's budget of bodies in flight (503 when it is
/// spent), within [`BODY_TIMEOUT`] (408).
async fn read_body(
    state: &AppState,
    pool: &ServicePool,
    headers: &HeaderMap,
    body: Body,
) -> Result<HeldBody, AppError> {
    let limit = pool.max_body_bytes();
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        AppError::PayloadTooLarge(format!(
            "service '{}' accepts request bodies of at most {limit} bytes (from its inputs and batch size)",
            pool.name
        ))
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let want = declared.map_or(limit, |n| n as usize);
    let budget = take_budget(state, want)?;
    let bytes = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            AppError::RequestTimeout(format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large()
            } else {
                AppError::BadRequest(format!("reading the request body: {e}"))
            }
        })?;
    Ok(HeldBody {
        bytes,
        _budget: budget,
    })
}

pub(crate) fn check_version(name: &str, version: &str) -> Result<(), AppError> {
    if version == MODEL_VERSION {
        Ok(())
    } else {
        Err(AppError::NotFound(format!(
            "model '{name}' has no version '{version}'; it serves version {MODEL_VERSION}"
        )))
    }
}

async fn server_metadata() -> Json<serde_json::Value> {
    Json(
        serde_json::json!({ "name": "whetstone", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data", "model_configuration"] }),
    )
}

async fn model_metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<serde_json::Value>, AppError> {
    let pool = authorized_pool(&state, &name, &headers, &uri).await?;
    let spec = |t: &shared::api::TensorSpec| serde_json::json!({ "name": t.name, "datatype": t.datatype, "shape": t.shape });
    Ok(Json(serde_json::json!({
        "name": name,
        "versions": [MODEL_VERSION],
        "platform": "onnxruntime_onnx",
        "inputs": pool.signature.inputs.iter().map(spec).collect::<Vec<_>>(),
        "outputs": pool.signature.outputs.iter().map(spec).collect::<Vec<_>>(),
    })))
}

async fn model_metadata_version(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<serde_json::Value>, AppError> {
    check_version(&name, &version)?;
    model_metadata(state, Path(name), headers, uri).await
}

/// 200 when the model serves, 400 when it exists but does not (as Triton answers).
async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, AppError> {
    match authorized_pool(&state, &name, &headers, &uri).await {
        // Loaded, warmed up, and (with a readiness check) passing it.
        Ok(pool) if pool.ready() => {
            Ok(Json(serde_json::json!({ "name": name, "ready": true })).into_response())
        }
        Ok(_) => Ok((
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "name": name, "ready": false })),
        )
            .into_response()),
        Err(AppError::Unavailable(_)) => Ok((
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "name": name, "ready": false })),
        )
            .into_response()),
        Err(e) => Err(e),
    }
}

async fn model_ready_version(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, AppError> {
    check_version(&name, &version)?;
    model_ready(state, Path(name), headers, uri).await
}

/// Triton's model configuration extension; perf_analyzer reads it first.
async fn model_config(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<serde_json::Value>, AppError> {
    let pool = authorized_pool(&state, &name, &headers, &uri).await?;
    Ok(Json(crate::serving::kserve::binary::model_config(
        &name,
        &pool.signature,
    )))
}

async fn model_config_version(
    state: State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Json<serde_json::Value>, AppError> {
    check_version(&name, &version)?;
    model_config(state, Path(name), headers, uri).await
}

/// Whether service `name`, whose `metadata.enable_grpc` is `on`, answers
/// gRPC calls: asked by the gRPC service (`http::grpc`) and here for a
/// gRPC call another node sent on.
pub(crate) fn grpc_switched_on(name: &str, on: bool) -> Result<(), AppError> {
    if on {
        Ok(())
    } else {
        Err(AppError::Conflict(format!(
            "service '{name}' does not answer over gRPC: its config must set metadata.enable_grpc to true"
        )))
    }
}

/// The protocol label of a KServe request: `grpc` for a gRPC call another
/// node sent on here over HTTP (`forward::PROTOCOL`).
fn kserve_label(headers: &HeaderMap) -> &'static str {
    let relayed_grpc = headers.contains_key(crate::http::forward::FORWARDED)
        && headers
            .get(crate::http::forward::PROTOCOL)
            .is_some_and(|v| v == "grpc");
    if relayed_grpc {
        "grpc"
    } else {
        "kserve"
    }
}

async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    kserve_infer(state, name, None, headers, uri, body).await
}

async fn infer_version(
    State(state): State<AppState>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    kserve_infer(state, name, Some(version), headers, uri, body).await
}

/// A KServe v2 inference, of the model's one version or of `version`.
async fn kserve_infer(
    state: AppState,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    let label = kserve_label(&headers);
    observed(&state, &name, label, &headers, async {
        if let Some(version) = &version {
            check_version(&name, version)?;
        }
        let pool = authorized_pool(&state, &name, &headers, &uri).await?;
        if label == "grpc" {
            grpc_switched_on(&pool.name, pool.grpc())?;
        }
        let body = read_body(&state, &pool, &headers, body).await?;
        crate::serving::execute::note_request(&body.bytes);
        Ok(kserve::infer(pool, &name, &headers, body.bytes.clone()).await?)
    })
    .await
}

/// EAS: KServe v2 JSON (what a `StringRequest` carries here) goes to `run`;
/// the SDK's TFRequest/TorchRequest protobuf bodies to `eas`.
async fn predict(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    body: Body,
) -> Response {
    observed(&state, &name, "eas", &headers, async {
        // A signed request (the EAS SDK) binds its body: the signature can
        // only be checked once the body is read; every other request's
        // token is checked first.
        let signed = crate::serving::eas::signing::is_signed(&headers);
        let pool = if signed {
            signed_pool(&state, &name, &headers).await?
        } else {
            authorized_pool_headers(&state, &name, &headers, &uri).await?
        };
        if signed && !headers.contains_key(axum::http::header::CONTENT_LENGTH) {
            // Its body is read before its signature can be checked: it must
            // say how long it is, so a trickled body cannot hold a budget
            // it never fills.
            return Err(AppError::BadRequest(
                "a request signed with 'Authorization: EAS …' must carry Content-Length".into(),
            ));
        }
        let held = read_body(&state, &pool, &headers, body).await?;
        crate::serving::execute::note_request(&held.bytes);
        let body = &held.bytes;
        if signed {
            crate::serving::eas::signing::verify(
                &headers,
                &name,
                body,
                &pool.token(),
                SystemTime::now(),
                &REPLAYS,
            )?;
        }
        if crate::serving::eas::is_json_body(&headers, body) {
            Ok(kserve::json::infer(pool, &name, None, body.clone()).await?)
        } else {
            Ok(crate::serving::eas::predict_protobuf(pool, body.clone()).await?)
        }
    })
    .await
}

/// Times a prediction and records it, labelled by service and protocol
/// (and version): metrics, the last hour's numbers, the load the
/// autoscaler reads, the request log (sampled, and every failure).
async fn observed(
    state: &AppState,
    name: &str,
    protocol: &str,
    headers: &HeaderMap,
    f: impl std::future::Future<Output = Result<(Response, Duration), AppError>>,
) -> Response {
    let watch = Watch::start(headers, name, protocol);
    let (r, served) = crate::serving::execute::observing(f).await;
    let (code, outcome) = match &r {
        Ok((resp, engine)) => (resp.status().as_u16(), Ok(*engine)),
        Err(e) => (e.status().as_u16(), Err(e)),
    };
    let end = watch.finish(state, name, protocol, code, outcome, &served);
    let mut r = r.map(|(mut resp, _)| {
        if let Some(v) = served.version {
            resp.headers_mut().insert(VERSION, v.into());
        }
        resp
    });
    if end.sampled {
        let response = match r {
            Ok(resp) => {
                // The answer is in memory already: taken whole, put back.
                let (parts, body) = resp.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let preview = crate::control::requests::preview(&bytes);
                r = Ok(Response::from_parts(parts, Body::from(bytes)));
                preview
            }
            Err(ref e) => e.to_string(),
        };
        end.record(name, protocol, code, &served, response);
    }
    // A failed prediction names its trace too.
    let mut resp = r.unwrap_or_else(IntoResponse::into_response);
    if let Some(id) = end.trace_id.as_deref().and_then(|id| id.parse().ok()) {
        resp.headers_mut().insert(TRACE_ID, id);
    }
    resp
}

/// One prediction watched from its arrival, whatever its protocol: its
/// time, its trace (when tracing is on) and whether the request log
/// samples it.
pub(crate) struct Watch {
    t0: Instant,
    trace: Option<crate::serving::telemetry::PredictionTrace>,
    trace_id: Option<String>,
    sampled: bool,
}

/// The service label a prediction of `name` that ended in `error` is
/// counted under: "-" for an unknown service, so junk names cannot grow the
/// label set. Nor can callers without the token, unless the name is one
/// this node serves (a client of it with a wrong token: worth seeing).
/// (Looked up on a refusal only, off the path of answered calls.)
pub(crate) fn metrics_label<'a>(
    state: &AppState,
    name: &'a str,
    error: Option<&AppError>,
) -> &'a str {
    match error {
        Some(AppError::Unauthorized(_)) if state.instances.main(name).is_some() => name,
        Some(AppError::NotFound(_) | AppError::Unauthorized(_)) => "-",
        _ => name,
    }
}

/// What [`Watch::finish`] leaves to the protocol: the trace's id for the
/// answer, and whether to record the request in the request log.
pub(crate) struct Finished {
    pub trace_id: Option<String>,
    pub sampled: bool,
    took: Duration,
}

impl Watch {
    pub(crate) fn start(headers: &HeaderMap, name: &str, protocol: &str) -> Watch {
        let trace = crate::serving::telemetry::start(headers, name, protocol, SystemTime::now());
        Watch {
            t0: Instant::now(),
            trace_id: trace.as_ref().map(|t| t.trace_id().to_string()),
            trace,
            sampled: crate::control::requests::draw(),
        }
    }

    /// Records a prediction's end, answered with HTTP status `code` (for
    /// gRPC, the HTTP status of the same error), labelled by service and
    /// protocol: metrics, the last hour's numbers, the load the autoscaler
    /// reads, the trace. Requests for unknown services are labelled "-" so
    /// junk names cannot grow the label set.
    pub(crate) fn finish(
        self,
        state: &AppState,
        name: &str,
        protocol: &str,
        code: u16,
        outcome: Result<Duration, &AppError>,
        served: &crate::serving::execute::Served,
    ) -> Finished {
        let (engine, error) = match outcome {
            Ok(engine) => (Some(engine), None),
            Err(e) => (None, Some(e)),
        };
        let label = metrics_label(state, name, error);
        let took = self.t0.elapsed();
        let queued = served.timing.map(|t| t.queued);
        crate::control::metrics::observe_request(label, protocol, code, took, engine, queued);
        let outcome = if error.is_none() { Ok(took) } else { Err(()) };
        if label != "-" {
            let ahead = served.timing.map_or(0, |t| t.ahead as u64);
            crate::control::recent::record(label, outcome, ahead);
        }
        if let Some(v) = served.version {
            crate::control::metrics::observe_version(name, v, code, took);
            crate::control::recent::record(&canary_key(name, v), outcome, 0);
        }
        if error.is_none() {
            crate::control::load::answered(name);
        }
        if let Some(t) = self.trace {
            t.finish(code, served.version, served.timing, SystemTime::now());
        }
        Finished {
            trace_id: self.trace_id,
            sampled: label != "-" && (self.sampled || code >= 400),
            took,
        }
    }
}

impl Finished {
    /// Adds the prediction to the service's request log (when
    /// [`Finished::sampled`]), with a preview of its answer.
    pub(crate) fn record(
        &self,
        name: &str,
        protocol: &str,
        code: u16,
        served: &crate::serving::execute::Served,
        response: String,
    ) {
        crate::control::requests::record(
            name,
            shared::api::RequestSample {
                at: crate::control::store::now(),
                protocol: protocol.to_string(),
                version: served.version,
                status: code,
                latency_ms: self.took.as_secs_f64() * 1000.0,
                trace_id: self.trace_id.clone(),
                request: served
                    .request
                    .as_deref()
                    .map(crate::control::requests::preview)
                    .unwrap_or_default(),
                response,
            },
        );
    }
}
