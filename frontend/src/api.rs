//! Calls to the management API (`/api/v2`). Every failure becomes a
//! [`Failure`] with a message fit to show: the server's own error text (and
//! its path-tagged config problems) when it sent one, otherwise what went wrong.

use gloo_net::http::Request;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use shared::api::{ApiError, InferResponse, ModelSignature, OptimizationReport, ServiceStatus};
use shared::ValidationError;

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// HTTP status, None when no answer came (network, server down).
    pub status: Option<u16>,
    pub message: String,
    /// Path-tagged config problems of a 422.
    pub errors: Vec<ValidationError>,
}

impl Failure {
    fn new(status: Option<u16>, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            errors: vec![],
        }
    }

    /// A problem found in the page itself (bad input), before any request.
    pub fn local(message: impl Into<String>) -> Failure {
        Failure::new(None, message)
    }

    pub fn is_unauthorized(&self) -> bool {
        self.status == Some(401)
    }

    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }
}

/// `GET /api/v2/services/{name}` as the console reads it: the wire's
/// `ServiceDetail` without `config`, which no page shows, and with the
/// summary's fields inline (they are on the wire). Both keep deserializers
/// out of the bundle: the config's (the editor validates with `shared`'s own
/// reader, not serde) and serde's `flatten` machinery.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ServiceView {
    pub name: String,
    pub team: String,
    pub status: ServiceStatus,
    pub processor: String,
    pub instances: u32,
    pub running_instances: u32,
    pub optimization_level: Option<String>,
    pub speedup: Option<f64>,
    pub created_at: String,
    pub endpoint: String,
    pub token: String,
    pub stage: Option<String>,
    pub message: Option<String>,
    pub signature: Option<ModelSignature>,
    pub report: Option<OptimizationReport>,
    /// Each instance's runner process (on the node that answered).
    #[serde(default)]
    pub runners: Vec<shared::api::RunnerState>,
    /// Where each instance is placed.
    #[serde(default)]
    pub placements: Vec<shared::api::InstancePlacement>,
    /// The config as deployed (kept as JSON: shown and edited as text).
    #[serde(default)]
    pub config: Option<serde_json::Value>,
}

fn network(e: gloo_net::Error) -> Failure {
    Failure::new(None, format!("cannot reach the server: {e}"))
}

/// A path segment (a service name) made safe for a URL.
pub fn segment(s: &str) -> String {
    String::from(js_sys::encode_uri_component(s))
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

/// One request; the answer's status and text, or a [`Failure`] for a non-2xx
/// answer. Not generic, so every typed call below shares this code (the
/// console's size budget is mostly monomorphized code).
async fn call(
    method: Method,
    path: &str,
    authorization: Option<&str>,
    json: Option<&str>,
) -> Result<(u16, String), Failure> {
    let mut req = match method {
        Method::Get => Request::get(path),
        Method::Post => Request::post(path),
        Method::Put => Request::put(path),
        Method::Patch => Request::patch(path),
        Method::Delete => Request::delete(path),
    };
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    let resp = match json {
        Some(body) => {
            req.header("Content-Type", "application/json")
                .body(body.to_string())
                .map_err(network)?
                .send()
                .await
        }
        None => req.send().await,
    }
    .map_err(network)?;
    let status = resp.status();
    let text = resp.text().await.map_err(network)?;
    if resp.ok() {
        Ok((status, text))
    } else {
        Err(failure(status, &text))
    }
}

/// Hands `data` to the browser as a file download named `name`.
pub fn save_file(name: &str, mime: &str, data: &[u8]) -> Result<(), Failure> {
    use wasm_bindgen::JsCast;
    let fail = |what: &str| Failure::local(format!("saving {name}: {what}"));
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(data));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options)
        .map_err(|_| fail("the browser refused the data"))?;
    let url =
        web_sys::Url::create_object_url_with_blob(&blob).map_err(|_| fail("no object URL"))?;
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| fail("no document"))?;
    let a: web_sys::HtmlAnchorElement = document
        .create_element("a")
        .map_err(|_| fail("no link element"))?
        .dyn_into()
        .map_err(|_| fail("no link element"))?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    let _ = web_sys::Url::revoke_object_url(&url);
    Ok(())
}

/// Fetches `path` with the session's token and saves the body as `name`.
pub async fn download(path: &str, token: &str, name: &str) -> Result<(), Failure> {
    let resp = Request::get(path)
        .header("Authorization", &bearer(token))
        .send()
        .await
        .map_err(network)?;
    if !resp.ok() {
        let status = resp.status();
        let text = resp.text().await.map_err(network)?;
        return Err(failure(status, &text));
    }
    let mime = resp
        .headers()
        .get("content-type")
        .unwrap_or_else(|| "application/octet-stream".into());
    let bytes = resp.binary().await.map_err(network)?;
    save_file(name, &mime, &bytes)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn parse<T: DeserializeOwned>((status, text): (u16, String)) -> Result<T, Failure> {
    serde_json::from_str(&text).map_err(|e| {
        Failure::new(
            Some(status),
            format!("unexpected answer from the server: {e}"),
        )
    })
}

pub async fn get<T: DeserializeOwned>(path: &str, token: &str) -> Result<T, Failure> {
    parse(call(Method::Get, path, Some(&bearer(token)), None).await?)
}

/// GET without a token: the public share-link API.
pub async fn get_public<T: DeserializeOwned>(path: &str) -> Result<T, Failure> {
    parse(call(Method::Get, path, None, None).await?)
}

/// POSTs a JSON body (already text: the config editor sends what was typed).
pub async fn post<T: DeserializeOwned>(path: &str, token: &str, body: &str) -> Result<T, Failure> {
    parse(call(Method::Post, path, Some(&bearer(token)), Some(body)).await?)
}

/// PUTs a JSON body.
pub async fn put<T: DeserializeOwned>(path: &str, token: &str, body: &str) -> Result<T, Failure> {
    parse(call(Method::Put, path, Some(&bearer(token)), Some(body)).await?)
}

/// PATCHes a JSON body (a team's settings).
pub async fn patch<T: DeserializeOwned>(path: &str, token: &str, body: &str) -> Result<T, Failure> {
    parse(call(Method::Patch, path, Some(&bearer(token)), Some(body)).await?)
}

/// DELETE whose answer is a JSON body (member removal answers the team).
pub async fn delete_json<T: DeserializeOwned>(path: &str, token: &str) -> Result<T, Failure> {
    parse(call(Method::Delete, path, Some(&bearer(token)), None).await?)
}

/// DELETE; the answer has no body.
pub async fn delete(path: &str, token: &str) -> Result<(), Failure> {
    call(Method::Delete, path, Some(&bearer(token)), None)
        .await
        .map(|_| ())
}

/// A request body for [`post`]/[`put`]. The wire types always serialize; were
/// one not to, the empty body makes the server say what is missing.
pub fn json_body<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `POST /api/predict/{name}` with the service token in `Authorization`, as
/// the EAS SDK sends it. Returns the answer and the round trip in
/// milliseconds as the browser measured it (request sent to answer read).
pub async fn predict(
    name: &str,
    service_token: &str,
    body: &str,
) -> Result<(InferResponse, f64), Failure> {
    let path = format!("/api/predict/{}", segment(name));
    let started = now_ms();
    let answer = call(Method::Post, &path, Some(service_token), Some(body)).await;
    let elapsed = now_ms() - started;
    Ok((parse(answer?)?, elapsed))
}

/// A monotonic clock in milliseconds (sub-millisecond where the browser
/// allows), for latencies measured in the page.
fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or_else(js_sys::Date::now)
}

pub(crate) fn failure(status: u16, text: &str) -> Failure {
    match serde_json::from_str::<ApiError>(text) {
        Ok(e) => Failure {
            status: Some(status),
            message: e.error,
            errors: e.errors,
        },
        // Not our JSON: a proxy page or an old server. Say the status, not the HTML.
        Err(_) => Failure::new(Some(status), format!("the server answered HTTP {status}")),
    }
}

/// `ws://host/api/v2/services/NAME/logs/stream` for the page's own server.
/// Browsers cannot set headers on a WebSocket: the token goes in the
/// subprotocols ([`ws_protocols`]), never in the URL.
pub fn log_stream_url(name: &str) -> Option<String> {
    ws_url(&format!("/api/v2/services/{}/logs/stream", segment(name)))
}

/// The subprotocols a log stream is opened with: the one the server speaks,
/// and `token` (hex-encoded: any token, valid protocol characters).
pub fn ws_protocols(token: &str) -> [String; 2] {
    let hex: String = token.bytes().map(|b| format!("{b:02x}")).collect();
    [
        shared::api::WS_PROTOCOL.to_string(),
        format!("{}{hex}", shared::api::WS_TOKEN_PREFIX),
    ]
}

/// `ws(s)://host` + `path` of the page's own server.
pub fn ws_url(path: &str) -> Option<String> {
    let loc = web_sys::window()?.location();
    let scheme = if loc.protocol().ok()? == "https:" {
        "wss:"
    } else {
        "ws:"
    };
    Some(format!("{scheme}//{}{path}", loc.host().ok()?))
}

/// `http://host` of the page, to show full endpoint URLs.
pub fn origin() -> String {
    web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_default()
}
