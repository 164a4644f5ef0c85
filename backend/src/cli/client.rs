//! The CLI's side of the API: a small typed client over reqwest, and the
//! WebSocket log follower (the same stream the console uses).

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use shared::api::{ApiError, LogEvent, ServiceStatus, UploadResponse};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A failed CLI call: what to print, and the exit code.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Api(String),
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the server at {server}: {reason}")]
    Connect { server: String, reason: String },
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Usage(_) => 2,
            _ => 1,
        }
    }
}

pub struct Client {
    pub server: String,
    token: String,
    http: reqwest::Client,
}

/// An error and what caused it, as one line: "sending the request: … :
/// invalid peer certificate: UnknownIssuer" says why where the outermost
/// error alone would not.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        cause = c.source();
    }
    out
}

/// A PEM file of certificates the CLI trusts beside the system's roots
/// (`--ca-cert`): a server with a private or self-signed certificate.
static CA_CERT: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

/// Sets `--ca-cert` for the process (once, before any client is made).
pub fn set_ca_cert(path: Option<std::path::PathBuf>) {
    let _ = CA_CERT.set(path);
}

fn ca_cert() -> Option<&'static std::path::Path> {
    CA_CERT.get().and_then(|p| p.as_deref())
}

/// A builder for the CLI's HTTP clients: HTTPS servers are verified
/// against the system's roots and `--ca-cert`; nothing turns that off.
pub fn http_builder() -> Result<reqwest::ClientBuilder, ClientError> {
    crate::http::tls::reqwest_builder(ca_cert())
        .map_err(|e| ClientError::Usage(format!("--ca-cert {e}")))
}

impl Client {
    pub fn new(server: &str, token: String) -> Result<Client, ClientError> {
        Ok(Client {
            server: server.trim_end_matches('/').to_string(),
            token,
            http: http_builder()?
                .build()
                .map_err(|e| ClientError::Usage(e.to_string()))?,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    fn connect_err(&self, e: reqwest::Error) -> ClientError {
        ClientError::Connect {
            server: self.server.clone(),
            reason: with_causes(&e),
        }
    }

    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<reqwest::Body>,
    ) -> Result<T, ClientError> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            let kind = if path.starts_with("/api/v2/uploads") {
                "application/octet-stream"
            } else {
                "application/json"
            };
            req = req.header(reqwest::header::CONTENT_TYPE, kind).body(b);
        }
        let resp = req.send().await.map_err(|e| self.connect_err(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.connect_err(e))?;
        if !status.is_success() {
            return Err(ClientError::Api(describe_error(status, &bytes)));
        }
        if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            return serde_json::from_value(serde_json::Value::Null)
                .map_err(|e| ClientError::Api(format!("unexpected empty answer: {e}")));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Api(format!("unexpected answer from the server: {e}")))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::GET, path, None).await
    }

    /// Uploads a local file, or a folder as a tar archive, with a progress bar.
    pub async fn upload(&self, local: &Path) -> Result<UploadResponse, ClientError> {
        let (file, name, _tmp) = if local.is_dir() {
            let tmp = tempfile::Builder::new()
                .suffix(".tar")
                .tempfile()
                .map_err(|e| ClientError::Usage(e.to_string()))?;
            let dir = local.to_path_buf();
            let out = tmp.path().to_path_buf();
            tokio::task::spawn_blocking(move || pack_dir(&dir, &out))
                .await
                .map_err(|e| ClientError::Usage(e.to_string()))?
                .map_err(|e| ClientError::Usage(format!("packing {}: {e}", local.display())))?;
            let base = local
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            (tmp.path().to_path_buf(), format!("{base}.tar"), Some(tmp))
        } else {
            let name = local
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            (local.to_path_buf(), name, None)
        };
        let f = tokio::fs::File::open(&file)
            .await
            .map_err(|e| ClientError::Usage(format!("{}: {e}", local.display())))?;
        let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "uploading {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(name.clone());
        let stream = tokio_util::io::ReaderStream::new(f).inspect({
            let bar = bar.clone();
            move |c| {
                if let Ok(c) = c {
                    bar.inc(c.len() as u64)
                }
            }
        });
        let path = format!("/api/v2/uploads?filename={}", urlencode(&name));
        let r = self
            .send(
                Method::POST,
                &path,
                Some(reqwest::Body::wrap_stream(stream)),
            )
            .await;
        bar.finish_and_clear();
        r
    }

    /// Follows a service's log stream, printing each line, until the deploy
    /// ends. Returns the final status.
    pub async fn follow_logs(
        &self,
        name: &str,
        mut print: impl FnMut(&str),
    ) -> Result<(ServiceStatus, Option<String>), ClientError> {
        let ws_url = format!(
            "{}/api/v2/services/{name}/logs/stream",
            self.server.replacen("http", "ws", 1)
        );
        let mut req = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let auth = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| ClientError::Usage("the token holds characters a header cannot".into()))?;
        req.headers_mut().insert("authorization", auth);
        let tls = crate::http::tls::client_config(ca_cert())
            .map_err(|e| ClientError::Usage(format!("--ca-cert {e}")))?;
        let connector = tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(tls));
        let (mut ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector))
                .await
                .map_err(|e| match e {
                    tokio_tungstenite::tungstenite::Error::Http(resp) => {
                        let body = resp.body().as_deref().unwrap_or_default();
                        ClientError::Api(describe_error(
                            StatusCode::from_u16(resp.status().as_u16())
                                .unwrap_or(StatusCode::BAD_GATEWAY),
                            body,
                        ))
                    }
                    other => ClientError::Connect {
                        server: self.server.clone(),
                        reason: with_causes(&other),
                    },
                })?;
        while let Some(msg) = ws.next().await {
            let msg = msg.map_err(|e| ClientError::Connect {
                server: self.server.clone(),
                reason: e.to_string(),
            })?;
            let Message::Text(text) = msg else {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match serde_json::from_str::<LogEvent>(&text) {
                Ok(LogEvent::Line(l)) => print(&l.line),
                Ok(LogEvent::End { status, message }) => return Ok((status, message)),
                Err(e) => return Err(ClientError::Api(format!("unexpected log event: {e}"))),
            }
        }
        Err(ClientError::Api(
            "the log stream closed before the deploy ended".into(),
        ))
    }
}

/// Packs a model folder as a tar archive for upload, links followed. A
/// sparse file (a `cp` keeps holes) goes in as a regular entry, its holes
/// written out as zeros: older servers refuse GNU sparse entries, and a
/// model file is rarely mostly holes, so the archive costs little more.
fn pack_dir(dir: &Path, out: &Path) -> std::io::Result<()> {
    let mut b = tar::Builder::new(std::fs::File::create(out)?);
    b.follow_symlinks(true);
    b.sparse(false);
    b.append_dir_all(".", dir)?;
    b.finish()
}

pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A server error as the user should read it, path-tagged problems one a line.
pub fn describe_error(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) if !e.errors.is_empty() => {
            let mut s = format!("{} ({}):", e.error, status.as_u16());
            for v in e.errors {
                s.push_str(&format!(
                    "\n  {}: {}",
                    if v.path.is_empty() { "$" } else { &v.path },
                    v.message
                ));
            }
            s
        }
        Ok(e) => format!("{} ({})", e.error, status.as_u16()),
        Err(_) => format!(
            "server answered {status}: {}",
            String::from_utf8_lossy(body)
        ),
    }
}

/// Where a local server keeps its admin token, for talking to it without
/// `--token`.
pub fn default_data_dir() -> PathBuf {
    shared::api::default_data_dir(
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn sparse_files_are_packed_as_regular_entries() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        std::fs::create_dir(&model).unwrap();
        // A hole of 1 MiB, then data: sparse wherever the filesystem can be.
        let mut f = std::fs::File::create(model.join("weights.bin")).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(b"weights").unwrap();
        drop(f);
        std::fs::write(model.join("model.onnx"), b"onnx").unwrap();
        let out = dir.path().join("m.tar");
        pack_dir(&model, &out).unwrap();
        let mut a = tar::Archive::new(std::fs::File::open(&out).unwrap());
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            assert_ne!(
                e.header().entry_type(),
                tar::EntryType::GNUSparse,
                "{:?}",
                e.path()
            );
        }
        let dest = dir.path().join("unpacked");
        crate::deploy::resolve::unpack(&out, &dest, 4 << 20).unwrap();
        let got = std::fs::read(dest.join("weights.bin")).unwrap();
        assert_eq!(got.len(), (1 << 20) + 7);
        assert!(got.ends_with(b"weights"));
        assert_eq!(std::fs::read(dest.join("model.onnx")).unwrap(), b"onnx");
    }
}
