//! Calls to the management API (`/api/v2`). Every failure becomes a
//! [`Failure`] with a message fit to show: the server's own error text (and
//! its path-tagged config problems) when it sent one, otherwise what went wrong.

use gloo_net::http::{Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use shared::api::ApiError;
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

    pub fn is_unauthorized(&self) -> bool {
        self.status == Some(401)
    }
}

fn network(e: gloo_net::Error) -> Failure {
    Failure::new(None, format!("cannot reach the server: {e}"))
}

fn with_token(req: RequestBuilder, token: &str) -> RequestBuilder {
    req.header("Authorization", &format!("Bearer {token}"))
}

/// A path segment (a service name) made safe for a URL.
pub fn segment(s: &str) -> String {
    String::from(js_sys::encode_uri_component(s))
}

pub async fn get<T: DeserializeOwned>(path: &str, token: &str) -> Result<T, Failure> {
    let resp = with_token(Request::get(path), token)
        .send()
        .await
        .map_err(network)?;
    decode(resp).await
}

/// POSTs a JSON body (already text: the config editor sends what was typed).
pub async fn post<T: DeserializeOwned>(path: &str, token: &str, body: &str) -> Result<T, Failure> {
    let req = with_token(Request::post(path), token)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .map_err(network)?;
    decode(req.send().await.map_err(network)?).await
}

/// DELETE; the answer has no body.
pub async fn delete(path: &str, token: &str) -> Result<(), Failure> {
    let resp = with_token(Request::delete(path), token)
        .send()
        .await
        .map_err(network)?;
    if resp.ok() {
        Ok(())
    } else {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(failure(status, &text))
    }
}

async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, Failure> {
    let status = resp.status();
    let text = resp.text().await.map_err(network)?;
    if !resp.ok() {
        return Err(failure(status, &text));
    }
    serde_json::from_str(&text).map_err(|e| {
        Failure::new(
            Some(status),
            format!("unexpected answer from the server: {e}"),
        )
    })
}

fn failure(status: u16, text: &str) -> Failure {
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

/// `ws://host/api/v2/services/NAME/logs/stream?token=T` for the page's own
/// server. Browsers cannot set headers on a WebSocket, hence the query form.
pub fn log_stream_url(name: &str, token: &str) -> Option<String> {
    let loc = web_sys::window()?.location();
    let scheme = if loc.protocol().ok()? == "https:" {
        "wss:"
    } else {
        "ws:"
    };
    Some(format!(
        "{scheme}//{}/api/v2/services/{}/logs/stream?token={}",
        loc.host().ok()?,
        segment(name),
        segment(token)
    ))
}

/// `http://host` of the page, to show full endpoint URLs.
pub fn origin() -> String {
    web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .unwrap_or_default()
}
