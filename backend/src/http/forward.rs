//! Every node answers every service's endpoint: a node that does not serve a
//! service itself forwards the prediction, as it came, to a live node that
//! does (the store's placements), so clients keep one address. The body is
//! streamed through, not held: the serving node checks the token and the
//! limits as it would for a client. A forwarded request carries
//! [`FORWARDED`] and is never forwarded again.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::Stream;

use crate::control::store::{canary_key, now_ms, Dialect};
use crate::http::error::AppError;
use crate::http::state::AppState;

/// Marks a request one node forwarded to another (its value: the node).
pub const FORWARDED: &str = "x-whet-forwarded";
/// Names the node whose instance answered a prediction.
pub const SERVED_BY: &str = "x-whet-node";
/// On a prediction request, the version of the service to serve it (a
/// client may pin one; a traffic split's draw is written here, so the node
/// a request is forwarded to serves the version drawn); on the answer, the
/// version that served it.
pub const VERSION: &str = "x-whet-version";
/// On a forwarded prediction, the protocol the client used when it is not
/// the route's own (`grpc`: a gRPC call sent on as KServe v2 over HTTP), so
/// the serving node counts it under that protocol.
pub const PROTOCOL: &str = "x-whet-protocol";

/// The service a prediction path names: `/api/predict/{name}` or
/// `/v2/models/{name}/…`.
fn service_of(path: &str) -> Option<&str> {
    let name = if let Some(rest) = path.strip_prefix("/api/predict/") {
        rest.split('/').next()
    } else {
        path.strip_prefix("/v2/models/")
            .and_then(|rest| rest.split('/').next())
    }?;
    (!name.is_empty()).then_some(name)
}

/// The client for forwards: over HTTPS when this node serves TLS (the
/// nodes of one cluster share a certificate chain, trusted here beside the
/// system's roots).
pub(crate) fn client(settings: &crate::control::Settings) -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let own = settings.tls.as_ref().map(|t| t.cert.as_path());
        crate::http::tls::reqwest_builder(own)
            .unwrap_or_else(|e| {
                tracing::warn!("forwarding TLS: {e}; using the system's roots only");
                reqwest::Client::builder()
            })
            .connect_timeout(Duration::from_secs(5))
            // The serving node bounds the call; this only stops a node that
            // went silent from holding the client forever.
            .read_timeout(Duration::from_secs(300))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

/// The oldest heartbeat of a live node: within two leases (beats come a
/// third of one apart).
pub(crate) fn live_since(settings: &crate::control::Settings) -> i64 {
    now_ms() - 2 * settings.job_lease.as_millis() as i64
}

/// The order to try the nodes that serve a service (`host_addrs`: address,
/// whether its slots run), spreading forwarded load: in random order those
/// whose slots run, then those whose slots are starting.
pub(crate) fn trial_order(addrs: &[(String, bool)]) -> Vec<&String> {
    let mut order: Vec<(bool, u32, &String)> = addrs
        .iter()
        .map(|(a, up)| (!up, rand::random::<u32>(), a))
        .collect();
    order.sort();
    order.into_iter().map(|(_, _, a)| a).collect()
}

/// Middleware of the prediction routes: serves locally when this node has
/// the service's instances (or is the only node), else forwards.
pub async fn forward_remote(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(name) = service_of(req.uri().path()).map(str::to_string) else {
        return next.run(req).await;
    };
    // A prediction of a service with a traffic split goes to the version
    // its weights draw, unless the client pinned one (a malformed pin is
    // the handler's 400).
    let pinned = req.headers().get(VERSION).is_some();
    let drawn = match (pinned, req.method() == axum::http::Method::POST) {
        (false, true) => state.instances.draw(&name),
        _ => None,
    };
    let drawn_here = drawn.is_some_and(|v| state.instances.of_version(&name, v).is_some());
    if let (Some(v), true) = (drawn, drawn_here) {
        req.headers_mut().insert(VERSION, v.into());
    }
    let local = state.store.dialect() != Dialect::Postgres || req.headers().contains_key(FORWARDED);
    let since = live_since(&state.settings);
    // A version drawn that runs on no node of this database yet: the
    // service's own instances answer.
    let drawn_hosts = match drawn {
        Some(v) if !drawn_here && !local => {
            match state
                .store
                .host_addrs(&canary_key(&name, v), &state.settings.node_id, since)
                .await
            {
                Ok(a) if !a.is_empty() => Some((v, a)),
                Ok(_) => None,
                Err(e) => return AppError::from(e).into_response(),
            }
        }
        _ => None,
    };
    let here = match drawn_hosts {
        Some(_) => false,
        None if drawn_here => true,
        None => state.instances.get(&name).is_some(),
    };
    if here || local {
        let mut r = next.run(req).await;
        // Named only when an instance of this node answered (not a 404/503
        // saying there is none).
        if here {
            if let Ok(v) = state.settings.node_id.parse() {
                r.headers_mut().insert(SERVED_BY, v);
            }
        }
        return r;
    }
    let addrs = match drawn_hosts {
        Some((v, addrs)) => {
            req.headers_mut().insert(VERSION, v.into());
            addrs
        }
        None => match state
            .store
            .host_addrs(&name, &state.settings.node_id, since)
            .await
        {
            Ok(a) => a,
            Err(e) => return AppError::from(e).into_response(),
        },
    };
    if addrs.is_empty() {
        // Nobody serves it: the local handler says why (404, 503).
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let body = Unsent::new(body);
    let mut last = String::new();
    for addr in trial_order(&addrs) {
        match forward(&state, addr, &parts, body.clone()).await {
            Ok(r) => return r,
            // Not a byte of the body went out (the node is down, or died
            // since its last heartbeat): the next node may answer.
            Err(e) if !body.sent() => last = format!("node {addr}: {e}"),
            Err(e) => {
                return AppError::Unavailable(format!(
                "service '{name}' is served by node {addr}, which failed during the request: {e}"
            ))
                .into_response()
            }
        }
    }
    AppError::Unavailable(format!(
        "service '{name}': no node that serves it could be reached (last: {last})"
    ))
    .into_response()
}

/// A request body that is handed back untouched when the node it was
/// forwarded to could not be reached, so that another node can be tried; once
/// any of it was read it is spent.
#[derive(Clone)]
struct Unsent {
    body: Arc<Mutex<BodyDataStream>>,
    read: Arc<AtomicBool>,
}

impl Unsent {
    fn new(body: Body) -> Unsent {
        Unsent {
            body: Arc::new(Mutex::new(body.into_data_stream())),
            read: Arc::default(),
        }
    }

    /// Whether any of the body was read (sent, or about to be).
    fn sent(&self) -> bool {
        self.read.load(Ordering::Acquire)
    }
}

impl Stream for Unsent {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.read.store(true, Ordering::Release);
        let mut body = self.body.lock().unwrap_or_else(|p| p.into_inner());
        Pin::new(&mut *body).poll_next(cx)
    }
}

async fn forward(
    state: &AppState,
    addr: &str,
    parts: &Parts,
    body: Unsent,
) -> Result<Response, reqwest::Error> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let scheme = state.settings.scheme();
    let mut out =
        client(&state.settings).request(parts.method.clone(), format!("{scheme}://{addr}{path}"));
    for (k, v) in parts.headers.iter().filter(|(k, _)| !hop_by_hop(k)) {
        out = out.header(k, v);
    }
    let answer = out
        .header(FORWARDED, state.settings.node_id.as_str())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?;
    let mut resp = Response::builder().status(answer.status());
    for (k, v) in answer.headers().iter().filter(|(k, _)| !hop_by_hop(k)) {
        resp = resp.header(k, v);
    }
    Ok(resp
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_paths_name_their_service() {
        assert_eq!(service_of("/api/predict/mlp"), Some("mlp"));
        assert_eq!(service_of("/v2/models/mlp/infer"), Some("mlp"));
        assert_eq!(service_of("/v2/models/mlp/versions/1/infer"), Some("mlp"));
        assert_eq!(service_of("/v2/models/"), None);
        assert_eq!(service_of("/v2/health/ready"), None);
        assert_eq!(service_of("/metrics"), None);
    }
}
