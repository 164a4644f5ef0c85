//! KServe v2 over gRPC (`whet serve --grpc-addr`): the
//! `inference.GRPCInferenceService` that Triton's gRPC client and
//! perf_analyzer (`-i grpc`) call, on an HTTP/2 listener of its own.
//!
//! It is the HTTP routes' twin: the same token check (the service token as
//! `authorization` metadata, `Bearer` or raw), the same pool choice (a
//! pinned `x-whet-version`, else the traffic split's draw), the same way
//! into the engines (`serving::execute`), the same metrics and request log
//! (protocol `grpc`, codes as the HTTP status of the same error), and the
//! errors of `http::error` as gRPC status codes with the same messages. A
//! service answers here only when its config sets `metadata.enable_grpc`.
//!
//! Sizes ([`SizeGate`]): a `ModelInfer` message's caller is checked from
//! its first bytes, before the message is read; one longer than its
//! service's body limit (from its signature and batch size, as over HTTP)
//! is refused unread; every message in flight holds its share of the
//! server's body budget. The other methods take messages of at most
//! 64 KiB, also refused unread, and every message has 60 s to arrive.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Uri};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use tonic::{Request, Response, Status};

use crate::http::error::AppError;
use crate::http::forward::VERSION;
use crate::http::predict::{
    authorized_pool_headers, check_version, grpc_switched_on, take_budget, Watch, BODY_TIMEOUT,
};
use crate::http::state::AppState;
use crate::serving::instances::ServicePool;
use crate::serving::kserve::grpc::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use crate::serving::kserve::grpc::{self as codec, proto};
use crate::serving::kserve::MODEL_VERSION;
use shared::api::ModelSignature;

/// The largest message taken at all (a service's own limit is usually far
/// lower): the HTTP routes' largest body.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// The label of this protocol in metrics and the request log.
const PROTOCOL: &str = "grpc";

/// The full name of the unary inference method (what [`SizeGate`] looks at).
const MODEL_INFER_PATH: &str = "/inference.GRPCInferenceService/ModelInfer";

/// The HTTP/2 flow-control window a call may fill before the peer reads.
pub const WINDOW_BYTES: u32 = 4 << 20;

/// The streaming method, whose callers [`SizeGate`] checks when it opens.
const MODEL_STREAM_INFER_PATH: &str = "/inference.GRPCInferenceService/ModelStreamInfer";

/// Requests of one `ModelStreamInfer` stream run at once at most.
const STREAM_IN_FLIGHT: usize = 16;

/// The service, on the server's state.
#[derive(Clone)]
pub struct Inference {
    state: AppState,
}

/// The gRPC service of `state`, with its message limits. Compressed
/// requests are taken; answers go uncompressed, as Triton sends them (a
/// client's `grpc-accept-encoding` would otherwise have every answer
/// gzipped, which costs more than it saves on a local network).
pub fn service(state: AppState) -> GrpcInferenceServiceServer<Inference> {
    use tonic::codec::CompressionEncoding::{Deflate, Gzip};
    GrpcInferenceServiceServer::new(Inference { state })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(usize::MAX)
        .accept_compressed(Gzip)
        .accept_compressed(Deflate)
}

/// An accepted connection with Nagle's algorithm off, as on the HTTP
/// listener: an answer's last small frame must not wait for the client to
/// acknowledge the ones before it. (tonic's own `tcp_nodelay` applies only
/// to listeners it binds itself, not to an incoming stream given to it.)
fn nagle_off(
    accepted: std::io::Result<tokio::net::TcpStream>,
) -> std::io::Result<tokio::net::TcpStream> {
    accepted.inspect(|stream| {
        // Fails only on a socket already gone; its first read says so.
        let _ = stream.set_nodelay(true);
    })
}

/// Serves the gRPC service on `listener` until `stopping` is cancelled,
/// then lets the calls in flight finish (at most `drain`). With `tls`
/// (`--tls-cert/--tls-key`) it speaks TLS as the HTTP listener does.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    drain: Duration,
) -> Result<(), String> {
    let stopping = state.stopping.clone();
    let mut builder = tonic::transport::Server::builder()
        // Bounds what one connection can hold open at once.
        .max_concurrent_streams(Some(256))
        // HTTP/2's default 64 KiB window would make a request of a few
        // hundred KiB wait for window updates, round trip after round trip.
        .initial_stream_window_size(Some(WINDOW_BYTES))
        .initial_connection_window_size(Some(4 * WINDOW_BYTES))
        .http2_keepalive_interval(Some(Duration::from_secs(60)));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| format!("gRPC TLS: {e}"))?;
    }
    let gate = SizeGate {
        state: state.clone(),
    };
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(nagle_off);
    let server = builder
        .layer(tower::layer::layer_fn(move |inner| Gated {
            inner,
            gate: gate.clone(),
        }))
        .add_service(service(state))
        .serve_with_incoming_shutdown(incoming, stopping.clone().cancelled_owned());
    let mut server = std::pin::pin!(server);
    tokio::select! {
        r = &mut server => return r.map_err(|e| format!("gRPC server: {e}")),
        () = stopping.cancelled() => {}
    }
    // Stopping: the server stops accepting and drains its calls.
    match tokio::time::timeout(drain, server).await {
        Ok(r) => r.map_err(|e| format!("gRPC server: {e}")),
        Err(_) => {
            tracing::warn!(
                "gRPC calls still busy after {} s; stopping anyway",
                drain.as_secs()
            );
            Ok(())
        }
    }
}

/// The TLS settings of `--tls-cert/--tls-key` for the gRPC listener.
pub fn tls_config(
    files: &crate::http::tls::TlsFiles,
) -> Result<tonic::transport::ServerTlsConfig, String> {
    let read = |flag: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
    };
    let identity = tonic::transport::Identity::from_pem(
        read("--tls-cert", &files.cert)?,
        read("--tls-key", &files.key)?,
    );
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

impl From<AppError> for Status {
    fn from(e: AppError) -> Status {
        let msg = e.to_string();
        match e {
            AppError::BadRequest(_) | AppError::Invalid(_) => Status::invalid_argument(msg),
            AppError::Unauthorized(_) => Status::unauthenticated(msg),
            AppError::Forbidden(_) => Status::permission_denied(msg),
            AppError::NotFound(_) => Status::not_found(msg),
            AppError::Conflict(_) => Status::failed_precondition(msg),
            AppError::PayloadTooLarge(_) | AppError::TooManyRequests(_) => {
                Status::resource_exhausted(msg)
            }
            AppError::RequestTimeout(_) => Status::deadline_exceeded(msg),
            AppError::Unavailable(_) => Status::unavailable(msg),
            AppError::Internal(_) => Status::internal(msg),
        }
    }
}

impl Inference {
    /// The pool of model `name` (at `version`, which must be empty or the
    /// one version a service serves) for a caller whose metadata holds its
    /// token; `draw`: a prediction, which a traffic split may send to
    /// another version.
    async fn pool(
        &self,
        name: &str,
        version: &str,
        headers: &mut HeaderMap,
        draw: bool,
    ) -> Result<Arc<ServicePool>, AppError> {
        if !version.is_empty() {
            check_version(name, version)?;
        }
        if draw && !headers.contains_key(VERSION) {
            if let Some(v) = self.state.instances.draw(name) {
                if self.state.instances.of_version(name, v).is_some() {
                    headers.insert(VERSION, v.into());
                }
            }
        }
        let pool = authorized_pool_headers(&self.state, name, headers, &Uri::default()).await?;
        grpc_switched_on(&pool.name, pool.grpc())?;
        Ok(pool)
    }

    /// The signature of the model a metadata, readiness or config call
    /// names, and whether it is ready: from its pool here, or — on a node
    /// that shares a PostgreSQL with the nodes that run it — from the
    /// store (ready while a live node runs a slot of it).
    async fn model_view(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        name: &str,
        version: &str,
    ) -> Result<(ModelSignature, bool), AppError> {
        let mut headers = metadata.clone().into_headers();
        let err = match self.pool(name, version, &mut headers, false).await {
            Ok(pool) => return Ok((pool.signature.clone(), pool.ready())),
            // Only a holder of the token hears that it is not served here.
            Err(e @ AppError::Unavailable(_)) => e,
            Err(e) => return Err(e),
        };
        let state = &self.state;
        if state.store.dialect() != crate::control::store::Dialect::Postgres {
            return Err(err);
        }
        let Some(row) = state.store.get_service(name).await? else {
            return Err(err);
        };
        let Some(signature) = row.signature else {
            return Err(err);
        };
        grpc_switched_on(name, row.config.metadata.enable_grpc.unwrap_or(false))?;
        let since = crate::http::forward::live_since(&state.settings);
        let hosts = state
            .store
            .host_addrs(name, &state.settings.node_id, since)
            .await?;
        if hosts.is_empty() {
            return Err(err);
        }
        Ok((signature, hosts.iter().any(|(_, up)| *up)))
    }

    /// One inference, watched and recorded like an HTTP prediction.
    async fn infer(
        &self,
        mut headers: HeaderMap,
        req: proto::ModelInferRequest,
        budget: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
    ) -> Result<proto::ModelInferResponse, Status> {
        let name = req.model_name.clone();
        if let Some(answer) = self.forward(&name, &headers, &req).await {
            return answer.map_err(Status::from);
        }
        let watch = Watch::start(&headers, &name, PROTOCOL);
        let (r, served) = crate::serving::execute::observing(async {
            let pool = self
                .pool(&name, &req.model_version, &mut headers, true)
                .await?;
            let size = prost::Message::encoded_len(&req);
            let budget = match budget {
                Some(b) => b,
                // Not gated (a stream's message): counted now.
                None => Arc::new(take_budget(&self.state, size)?),
            };
            if size > pool.max_body_bytes() {
                return Err(too_large(&pool, size));
            }
            crate::serving::execute::note_request(&Bytes::from(describe_request(&req)));
            let sig = pool.signature.clone();
            let parsed = codec::parse(req, &sig)?;
            let (outputs, engine) = crate::serving::execute::execute(pool, parsed.inputs).await?;
            drop(budget);
            let answer = codec::answer(&name, MODEL_VERSION, parsed.id, &parsed.outputs, outputs)?;
            Ok::<_, AppError>((answer, engine))
        })
        .await;
        let (code, outcome) = match &r {
            Ok((_, engine)) => (200, Ok(*engine)),
            Err(e) => (e.status().as_u16(), Err(e)),
        };
        let end = watch.finish(&self.state, &name, PROTOCOL, code, outcome, &served);
        if end.sampled {
            let response = match &r {
                Ok((answer, _)) => describe_answer(answer),
                Err(e) => e.to_string(),
            };
            end.record(&name, PROTOCOL, code, &served, response);
        }
        r.map(|(answer, _)| answer).map_err(Status::from)
    }
}

impl Inference {
    /// A prediction of a service that only other nodes serve (nodes that
    /// share a PostgreSQL; on one node, `None`): sent to one of them as
    /// KServe v2 over HTTP with binary tensors — the route every node
    /// serves and forwards — and its answer turned back into gRPC. The
    /// serving node checks the token and the limits and counts the call as
    /// `grpc` (`forward::PROTOCOL`); a node that cannot be reached is
    /// skipped for the next.
    async fn forward(
        &self,
        name: &str,
        headers: &HeaderMap,
        req: &proto::ModelInferRequest,
    ) -> Option<Result<proto::ModelInferResponse, AppError>> {
        use crate::http::forward::{client, FORWARDED, PROTOCOL as PROTOCOL_HEADER};
        use crate::serving::kserve::binary::HEADER_LENGTH;
        let state = &self.state;
        if state.store.dialect() != crate::control::store::Dialect::Postgres
            || state.instances.get(name).is_some()
        {
            return None;
        }
        let since = crate::http::forward::live_since(&state.settings);
        let addrs = match state
            .store
            .host_addrs(name, &state.settings.node_id, since)
            .await
        {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => return None,
            Err(e) => return Some(Err(e.into())),
        };
        if !req.model_version.is_empty() {
            if let Err(e) = check_version(name, &req.model_version) {
                return Some(Err(e));
            }
        }
        let (body, head_len) = match codec::to_binary_request(req) {
            Ok(b) => b,
            Err(e) => return Some(Err(e.into())),
        };
        let body = Bytes::from(body);
        let scheme = state.settings.scheme();
        let mut last = String::new();
        for addr in crate::http::forward::trial_order(&addrs) {
            let mut out = client(&state.settings)
                .post(format!("{scheme}://{addr}/v2/models/{name}/infer"))
                .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
                .header(HEADER_LENGTH, head_len)
                .header(FORWARDED, state.settings.node_id.as_str())
                .header(PROTOCOL_HEADER, PROTOCOL);
            for h in [
                axum::http::header::AUTHORIZATION.as_str(),
                VERSION,
                "traceparent",
            ] {
                if let Some(v) = headers.get(h) {
                    out = out.header(h, v);
                }
            }
            let answer = match out.body(body.clone()).send().await {
                Ok(a) => a,
                Err(e) if e.is_connect() => {
                    last = format!("node {addr}: {e}");
                    continue;
                }
                Err(e) => {
                    return Some(Err(AppError::Unavailable(format!(
                        "service '{name}' is served by node {addr}, which failed during the request: {e}"
                    ))))
                }
            };
            let status = answer.status();
            let head = answer
                .headers()
                .get(HEADER_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            let bytes = match answer.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    return Some(Err(AppError::Unavailable(format!(
                        "service '{name}': the answer of node {addr} broke off: {e}"
                    ))))
                }
            };
            if !status.is_success() {
                let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                return Some(Err(AppError::of_status(status, message)));
            }
            return Some(
                head.ok_or_else(|| "no Inference-Header-Content-Length".to_string())
                    .and_then(|n| codec::from_binary_answer(bytes, n))
                    .map_err(|e| {
                        AppError::Internal(format!("service '{name}': node {addr} answered: {e}"))
                    }),
            );
        }
        Some(Err(AppError::Unavailable(format!(
            "service '{name}': no node that serves it could be reached (last: {last})"
        ))))
    }
}

fn too_large(pool: &ServicePool, size: usize) -> AppError {
    AppError::PayloadTooLarge(format!(
        "service '{}' accepts inference messages of at most {} bytes (from its inputs and batch size); this one has {size}",
        pool.name,
        pool.max_body_bytes()
    ))
}

/// What the request log keeps of a request: its inputs' names, types and
/// shapes (not their elements).
fn describe_request(req: &proto::ModelInferRequest) -> String {
    let inputs: Vec<_> = req
        .inputs
        .iter()
        .map(|i| serde_json::json!({ "name": i.name, "datatype": i.datatype, "shape": i.shape }))
        .collect();
    serde_json::json!({ "model_name": req.model_name, "id": req.id, "inputs": inputs }).to_string()
}

fn describe_answer(answer: &proto::ModelInferResponse) -> String {
    let outputs: Vec<_> = answer
        .outputs
        .iter()
        .map(|o| serde_json::json!({ "name": o.name, "datatype": o.datatype, "shape": o.shape }))
        .collect();
    serde_json::json!({ "model_name": answer.model_name, "id": answer.id, "outputs": outputs })
        .to_string()
}

/// The budget permit [`SizeGate`] took for a message, carried to the
/// handler in the request's extensions.
#[derive(Clone)]
struct Budget(Arc<tokio::sync::OwnedSemaphorePermit>);

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(
        &self,
        _: Request<proto::ServerLiveRequest>,
    ) -> Result<Response<proto::ServerLiveResponse>, Status> {
        Ok(Response::new(proto::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<proto::ServerReadyRequest>,
    ) -> Result<Response<proto::ServerReadyResponse>, Status> {
        // A stopping server is not ready: load balancers send elsewhere.
        Ok(Response::new(proto::ServerReadyResponse {
            ready: !self.state.stopping.is_cancelled(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<proto::ModelReadyRequest>,
    ) -> Result<Response<proto::ModelReadyResponse>, Status> {
        let r = req.get_ref();
        let ready = match self.model_view(req.metadata(), &r.name, &r.version).await {
            // Loaded, warmed up, and (with a readiness check) passing it.
            Ok((_, ready)) => ready,
            // Known to the caller, not serving: not ready (as Triton answers).
            Err(AppError::Unavailable(_)) => false,
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(proto::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<proto::ServerMetadataRequest>,
    ) -> Result<Response<proto::ServerMetadataResponse>, Status> {
        Ok(Response::new(proto::ServerMetadataResponse {
            name: "whetstone".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_configuration".into()],
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<proto::ModelMetadataRequest>,
    ) -> Result<Response<proto::ModelMetadataResponse>, Status> {
        let r = req.get_ref();
        let (signature, _) = self.model_view(req.metadata(), &r.name, &r.version).await?;
        Ok(Response::new(codec::model_metadata(
            &r.name,
            MODEL_VERSION,
            &signature,
        )))
    }

    async fn model_config(
        &self,
        req: Request<proto::ModelConfigRequest>,
    ) -> Result<Response<proto::ModelConfigResponse>, Status> {
        let r = req.get_ref();
        let (signature, _) = self.model_view(req.metadata(), &r.name, &r.version).await?;
        Ok(Response::new(proto::ModelConfigResponse {
            config: Some(codec::model_config(&r.name, &signature)),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<proto::ModelInferRequest>,
    ) -> Result<Response<proto::ModelInferResponse>, Status> {
        let budget = req.extensions().get::<Budget>().map(|b| b.0.clone());
        let (metadata, _, message) = req.into_parts();
        let answer = self.infer(metadata.into_headers(), message, budget).await?;
        Ok(Response::new(answer))
    }

    type ModelStreamInferStream = Pin<
        Box<
            dyn futures_util::Stream<Item = Result<proto::ModelStreamInferResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    /// Each request of the stream is answered on it, in the order the
    /// answers are ready (a request's `id` tells them apart); a failed one
    /// is answered with its `error_message` and the stream goes on.
    async fn model_stream_infer(
        &self,
        req: Request<tonic::Streaming<proto::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let headers = req.metadata().clone().into_headers();
        let me = self.clone();
        let answers = req
            .into_inner()
            .map(move |next| {
                let (me, headers) = (me.clone(), headers.clone());
                async move {
                    let message = next?;
                    // A failed request's answer still names it.
                    let named = proto::ModelInferResponse {
                        model_name: message.model_name.clone(),
                        id: message.id.clone(),
                        ..Default::default()
                    };
                    Ok(match me.infer(headers, message, None).await {
                        Ok(answer) => proto::ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(answer),
                        },
                        Err(status) => proto::ModelStreamInferResponse {
                            error_message: status.message().to_string(),
                            infer_response: Some(named),
                        },
                    })
                }
            })
            .buffer_unordered(STREAM_IN_FLIGHT);
        Ok(Response::new(Box::pin(answers)))
    }
}

/// Refuses a `ModelInfer` message longer than its service's body limit
/// before reading it, and takes the message's share of the server's body
/// budget: it reads only the gRPC frame's 5-byte header and the message's
/// first field, the model's name (field 1, which Triton's and KServe's
/// clients write first). A message whose name comes later, or a
/// compressed one, is checked once decoded instead (`Inference::infer`),
/// within [`MAX_MESSAGE_BYTES`], and only for a caller who holds some
/// service's token (the budget is not a stranger's to hold). The other
/// methods' messages are refused unread past [`SMALL_MESSAGE_BYTES`].
#[derive(Clone)]
struct SizeGate {
    state: AppState,
}

/// The gRPC service behind a [`SizeGate`].
#[derive(Clone)]
struct Gated<S> {
    inner: S,
    gate: SizeGate,
}

/// What the gate reads of a message before deciding: the frame header, the
/// name's tag and length, and a name of up to this many bytes.
const PEEK_BYTES: usize = 5 + 1 + 2 + 256;

type GrpcRequest = axum::http::Request<tonic::body::Body>;
type GrpcResponse = axum::http::Response<tonic::body::Body>;

impl<S> tower::Service<GrpcRequest> for Gated<S>
where
    S: tower::Service<GrpcRequest, Response = GrpcResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<GrpcResponse, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        // The service that was polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        if req.uri().path() == MODEL_STREAM_INFER_PATH {
            return Box::pin(async move {
                match gate.some_caller(req.headers()).await {
                    Ok(()) => {
                        let (parts, body) = req.into_parts();
                        let body = Metered::new(body, gate.state.clone()).into_body();
                        inner.call(GrpcRequest::from_parts(parts, body)).await
                    }
                    Err(status) => Ok(status.into_http()),
                }
            });
        }
        if req.uri().path() != MODEL_INFER_PATH {
            // Every other method takes a message of a few bytes (a name, a
            // version): refused unread past SMALL_MESSAGE_BYTES, before
            // anyone's token is known, and given BODY_TIMEOUT to arrive.
            return Box::pin(async move {
                match small(req).await {
                    Ok(req) => inner.call(req).await,
                    Err(status) => Ok(status.into_http()),
                }
            });
        }
        Box::pin(async move {
            match gate.check(req).await {
                Ok(req) => inner.call(req).await,
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

impl SizeGate {
    /// The request, its first bytes read and put back, with its budget
    /// permit; or the status that refuses it.
    async fn check(&self, req: GrpcRequest) -> Result<GrpcRequest, Status> {
        let (mut parts, mut body) = req.into_parts();
        // The whole message must arrive within the HTTP routes' body
        // timeout: a client that trickles it cannot hold its budget.
        let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
        let (head, ended) = peek(&mut body, deadline, |h| {
            h.len() >= PEEK_BYTES || complete_name(h)
        })
        .await?;
        let mut left = usize::MAX;
        if let Some(frame) = FrameHeader::read(&head) {
            frame.within_server_limit()?;
            let declared = frame.declared;
            // One message, then the end: what follows it is refused below
            // rather than decoded unchecked.
            left = frame.left_after(&head);
            if head.len() > 5 + declared {
                return Err(Status::invalid_argument(
                    "ModelInfer takes one message; the request carries more",
                ));
            }
            // Who calls: a stranger is refused before the message is read,
            // and hears nothing of the service (as the HTTP route). When
            // the name cannot be read first (compressed, or a later field
            // first), the caller must hold some service's token before the
            // message may hold budget; the handler checks which one.
            let name = if frame.compressed {
                None
            } else {
                model_name(&head[5..])
            };
            match name {
                // (Named, so not compressed: `declared` is its size.)
                Some(name) => match self.caller(name, &parts.headers).await? {
                    Some(pool) if declared > pool.max_body_bytes() => {
                        return Err(self.refused(&pool.name, too_large(&pool, declared)));
                    }
                    _ => {}
                },
                None => self.some_caller(&parts.headers).await?,
            }
            let permit = take_budget(&self.state, frame.charge()).map_err(Status::from)?;
            parts.extensions.insert(Budget(Arc::new(permit)));
        }
        Ok(reassemble(parts, head, ended, body, left, deadline))
    }

    /// The service `name` for a caller whose `authorization` is its token:
    /// its pool when this node serves it, `None` when another node does;
    /// UNAUTHENTICATED (as the handler would answer) for anyone else.
    async fn caller(
        &self,
        name: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<ServicePool>>, Status> {
        let token = crate::http::auth::request_token(headers, &Uri::default());
        let holds = |t: &str| {
            token
                .as_deref()
                .is_some_and(|given| crate::http::auth::tokens_equal(given, t))
        };
        if let Some(pool) = self.state.instances.get(name) {
            if holds(&pool.token()) {
                return Ok(Some(pool));
            }
        } else if let Some(s) = self
            .state
            .store
            .get_service(name)
            .await
            .map_err(|e| Status::from(AppError::from(e)))?
        {
            if holds(&s.token) {
                return Ok(None);
            }
        }
        Err(self.refused(name, crate::http::predict::denied(name)))
    }

    /// A call of `name` refused before its message was read, counted as the
    /// HTTP routes count their refusals.
    fn refused(&self, name: &str, e: AppError) -> Status {
        crate::control::metrics::observe_request(
            crate::http::predict::metrics_label(&self.state, name, Some(&e)),
            PROTOCOL,
            e.status().as_u16(),
            Duration::ZERO,
            None,
            None,
        );
        e.into()
    }

    /// A caller holding some service's token: who may open a stream (its
    /// messages are each read whole before the service they name is known)
    /// or send a message whose service cannot be read from its first bytes.
    async fn some_caller(&self, headers: &HeaderMap) -> Result<(), Status> {
        let token = crate::http::auth::request_token(headers, &Uri::default());
        if let Some(given) = token {
            let tokens = self
                .state
                .store
                .service_tokens()
                .await
                .map_err(|e| Status::from(AppError::from(e)))?;
            if tokens
                .iter()
                .any(|(_, t)| crate::http::auth::tokens_equal(&given, t))
            {
                return Ok(());
            }
        }
        Err(Status::unauthenticated(
            "missing or wrong token: send a service token in the authorization metadata",
        ))
    }
}

/// A `ModelStreamInfer` request body, read as it passes: each message holds
/// its share of the server's body budget from its frame header to its last
/// byte (the handler then charges the decoded message), may not declare
/// more than [`MAX_MESSAGE_BYTES`], and has [`BODY_TIMEOUT`] to arrive once
/// begun. A stream may idle between messages.
struct Metered {
    inner: http_body_util::BodyStream<tonic::body::Body>,
    state: AppState,
    /// The frame header being read, and how much of it is in.
    header: [u8; 5],
    have: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: bool,
}

impl Metered {
    fn new(body: tonic::body::Body, state: AppState) -> Metered {
        Metered {
            inner: http_body_util::BodyStream::new(body),
            state,
            header: [0; 5],
            have: 0,
            remaining: 0,
            permit: None,
            deadline: None,
            failed: false,
        }
    }

    fn into_body(self) -> tonic::body::Body {
        tonic::body::Body::new(http_body_util::StreamBody::new(self))
    }

    /// Follows the messages through `data`.
    fn count(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                if self.remaining == 0 {
                    self.message_done();
                }
                continue;
            }
            if self.deadline.is_none() {
                self.deadline = Some(Box::pin(tokio::time::sleep(BODY_TIMEOUT)));
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < 5 {
                continue;
            }
            self.have = 0;
            let frame = FrameHeader::of(&self.header);
            frame.within_server_limit()?;
            self.permit = Some(take_budget(&self.state, frame.charge()).map_err(Status::from)?);
            self.remaining = frame.declared;
            if frame.declared == 0 {
                self.message_done();
            }
        }
        Ok(())
    }

    fn message_done(&mut self) {
        self.permit = None;
        self.deadline = None;
    }
}

impl futures_util::Stream for Metered {
    type Item = Result<http_body::Frame<Bytes>, Status>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::future::Future;
        use std::task::Poll;
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        // Polled before the body, so that its timer is set while we wait.
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.failed = true;
                return Poll::Ready(Some(Err(late())));
            }
        }
        let next = std::task::ready!(Pin::new(&mut this.inner).poll_next(cx));
        if let Some(Ok(frame)) = &next {
            if let Some(data) = frame.data_ref() {
                if let Err(status) = this.count(data) {
                    this.failed = true;
                    return Poll::Ready(Some(Err(status)));
                }
            }
        }
        Poll::Ready(next)
    }
}

/// A gRPC message's 5-byte frame header, as the gate and [`Metered`] read
/// it before the message.
#[derive(Clone, Copy)]
struct FrameHeader {
    compressed: bool,
    /// The message's length on the wire (compressed, if it is).
    declared: usize,
}

impl FrameHeader {
    /// The header `bytes` start with; `None` while fewer than 5 are in.
    fn read(bytes: &[u8]) -> Option<FrameHeader> {
        bytes.first_chunk::<5>().map(FrameHeader::of)
    }

    fn of(header: &[u8; 5]) -> FrameHeader {
        FrameHeader {
            compressed: header[0] != 0,
            declared: u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize,
        }
    }

    /// An inference message over [`MAX_MESSAGE_BYTES`] is refused unread.
    fn within_server_limit(self) -> Result<(), Status> {
        if self.declared > MAX_MESSAGE_BYTES {
            return Err(Status::resource_exhausted(format!(
                "an inference message of {} bytes is over the server's limit of {MAX_MESSAGE_BYTES}",
                self.declared
            )));
        }
        Ok(())
    }

    /// Its share of the body budget: what it may hold once decoded.
    fn charge(self) -> usize {
        if self.compressed {
            inflated_at_most(self.declared)
        } else {
            self.declared
        }
    }

    /// Bytes of its message still to come after `head` (header included).
    fn left_after(self, head: &[u8]) -> usize {
        (5 + self.declared).saturating_sub(head.len())
    }
}

/// What a compressed message of `declared` bytes may hold once inflated,
/// with its compressed self: gzip and deflate (the encodings taken) are
/// DEFLATE, which expands at most 1032-fold (a 258-byte match in about two
/// bits), and tonic stops at the server's limit. Charging the limit itself
/// would let only four compressed calls run at once.
fn inflated_at_most(declared: usize) -> usize {
    const DEFLATE_MAX_RATIO: usize = 1032;
    declared
        .saturating_mul(DEFLATE_MAX_RATIO + 1)
        .saturating_add(1 << 10)
        .min(MAX_MESSAGE_BYTES)
}

/// The most a message of a method other than the two inference ones may
/// hold: theirs are a model's name and version, or nothing.
const SMALL_MESSAGE_BYTES: usize = 64 << 10;

/// A request of a small method (see [`SMALL_MESSAGE_BYTES`]), its frame
/// header checked before the message is read.
async fn small(req: GrpcRequest) -> Result<GrpcRequest, Status> {
    let (parts, mut body) = req.into_parts();
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let (head, ended) = peek(&mut body, deadline, |h| h.len() >= 5).await?;
    let mut left = usize::MAX;
    if let Some(frame) = FrameHeader::read(&head) {
        if frame.declared > SMALL_MESSAGE_BYTES {
            return Err(Status::resource_exhausted(format!(
                "a {} message of {} bytes is over the limit of {SMALL_MESSAGE_BYTES} bytes for this method",
                parts.uri.path(),
                frame.declared
            )));
        }
        left = frame.left_after(&head);
    }
    Ok(reassemble(parts, head, ended, body, left, deadline))
}

/// Reads `body` until `enough` of its first bytes are in, it ends (the
/// flag), or `deadline` passes (DEADLINE_EXCEEDED).
async fn peek(
    body: &mut tonic::body::Body,
    deadline: tokio::time::Instant,
    enough: impl Fn(&[u8]) -> bool,
) -> Result<(BytesMut, bool), Status> {
    let mut head = BytesMut::new();
    let mut ended = false;
    let reading = async {
        while !enough(&head) {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        head.extend_from_slice(data);
                    }
                }
                Some(Err(status)) => return Err(status),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout_at(deadline, reading)
        .await
        .map_err(|_| late())??;
    Ok((head, ended))
}

/// The request again: the bytes `peek` read put back in front of the rest
/// of `body`, which may bring `left` more bytes (one message; more is
/// INVALID_ARGUMENT) and ends with DEADLINE_EXCEEDED at `deadline`.
fn reassemble(
    parts: axum::http::request::Parts,
    head: BytesMut,
    ended: bool,
    body: tonic::body::Body,
    mut left: usize,
    deadline: tokio::time::Instant,
) -> GrpcRequest {
    let first =
        futures_util::stream::iter([Ok::<_, Status>(http_body::Frame::data(head.freeze()))]);
    let body = if ended {
        tonic::body::Body::new(http_body_util::StreamBody::new(first))
    } else {
        let method = parts.uri.path().to_string();
        let rest = http_body_util::BodyStream::new(body).map(move |frame| {
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                left = left.checked_sub(data.len()).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{method} takes one message; the request carries more"
                    ))
                })?;
            }
            Ok(frame)
        });
        let rest = until(deadline, rest);
        tonic::body::Body::new(http_body_util::StreamBody::new(first.chain(rest)))
    };
    GrpcRequest::from_parts(parts, body)
}

fn late() -> Status {
    Status::deadline_exceeded(format!(
        "the request message did not arrive within {} s",
        BODY_TIMEOUT.as_secs()
    ))
}

/// `stream`, ended with DEADLINE_EXCEEDED at `deadline`.
fn until<S>(
    deadline: tokio::time::Instant,
    stream: S,
) -> impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, Status>> + Send
where
    S: futures_util::Stream<Item = Result<http_body::Frame<Bytes>, Status>> + Send + 'static,
{
    let state = (
        Box::pin(stream),
        Box::pin(tokio::time::sleep_until(deadline)),
        false,
    );
    futures_util::stream::unfold(state, |(mut s, mut sleep, done)| async move {
        if done {
            return None;
        }
        tokio::select! {
            item = s.next() => item.map(|i| (i, (s, sleep, false))),
            () = &mut sleep => Some((Err(late()), (s, sleep, true))),
        }
    })
}

/// Whether `head` (frame header and message start) holds the whole first
/// field when that is the model's name, or shows that it is not.
fn complete_name(head: &[u8]) -> bool {
    let Some(msg) = head.get(5..) else {
        return false;
    };
    match msg.first() {
        None => false,
        Some(&0x0a) => match varint(&msg[1..]) {
            Some((len, used)) => len.checked_add(1 + used).is_none_or(|end| msg.len() >= end),
            None => msg.len() >= 11,
        },
        Some(_) => true,
    }
}

/// The model name a message starts with (field 1, `model_name`).
fn model_name(msg: &[u8]) -> Option<&str> {
    if *msg.first()? != 0x0a {
        return None;
    }
    let (len, used) = varint(&msg[1..])?;
    let name = msg.get(1 + used..len.checked_add(1 + used)?)?;
    std::str::from_utf8(name).ok()
}

/// A protobuf varint at the start of `b`: its value and its length.
fn varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return usize::try_from(v).ok().map(|v| (v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_waiting_for_acknowledgements() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accepted = listener.accept().await.map(|(s, _)| s);
        assert!(!accepted.as_ref().expect("accept").nodelay().expect("read"));
        let stream = nagle_off(accepted).expect("accept");
        assert!(stream.nodelay().expect("read"));
    }

    #[test]
    fn the_gate_reads_the_model_name_a_message_starts_with() {
        let msg = proto::ModelInferRequest {
            model_name: "minilm".into(),
            id: "x".into(),
            ..Default::default()
        };
        let body = prost::Message::encode_to_vec(&msg);
        assert_eq!(model_name(&body), Some("minilm"));
        let mut framed = vec![0, 0, 0, 0, body.len() as u8];
        framed.extend_from_slice(&body);
        assert!(complete_name(&framed));
        assert!(!complete_name(&framed[..8]));
        // A message without a name (field 3 first) shows that at once.
        let nameless = prost::Message::encode_to_vec(&proto::ModelInferRequest {
            id: "x".into(),
            ..Default::default()
        });
        assert_eq!(model_name(&nameless), None);
        let mut framed = vec![0, 0, 0, 0, nameless.len() as u8];
        framed.extend_from_slice(&nameless);
        assert!(complete_name(&framed));
        // A name longer than a byte's varint.
        let long = "m".repeat(200);
        let body = prost::Message::encode_to_vec(&proto::ModelInferRequest {
            model_name: long.clone(),
            ..Default::default()
        });
        assert_eq!(model_name(&body), Some(long.as_str()));
        assert_eq!(varint(&[0xff; 11]), None);
        // A name length near 2^64: no overflow, no name, nothing more to read.
        let mut huge = vec![0, 0, 0, 0, 12, 0x0a];
        huge.extend_from_slice(&[0xff; 9]);
        huge.push(0x01);
        assert!(complete_name(&huge));
        assert_eq!(model_name(&huge[5..]), None);
    }

    #[test]
    fn a_compressed_message_is_charged_what_it_may_inflate_to() {
        assert_eq!(inflated_at_most(0), 1 << 10);
        assert_eq!(inflated_at_most(3_000), 3_000 * 1033 + 1024);
        assert_eq!(inflated_at_most(1 << 20), MAX_MESSAGE_BYTES);
        assert_eq!(inflated_at_most(usize::MAX), MAX_MESSAGE_BYTES);
        // Well below the limit that would let only four run at once.
        assert!(inflated_at_most(4 << 10) * 64 < crate::http::state::BODY_BUDGET_BYTES);
    }

    #[test]
    fn errors_become_the_grpc_codes_of_their_http_statuses() {
        let code = |e: AppError| Status::from(e).code();
        assert_eq!(
            code(AppError::BadRequest("x".into())),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(AppError::Unauthorized("x".into())),
            tonic::Code::Unauthenticated
        );
        assert_eq!(code(AppError::NotFound("x".into())), tonic::Code::NotFound);
        assert_eq!(
            code(AppError::TooManyRequests("x".into())),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            code(AppError::PayloadTooLarge("x".into())),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            code(AppError::Unavailable("x".into())),
            tonic::Code::Unavailable
        );
        let s = Status::from(AppError::BadRequest("input 'x': expected [1, 4]".into()));
        assert_eq!(s.message(), "input 'x': expected [1, 4]");
    }
}
