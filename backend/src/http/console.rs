//! Serves the web console: the wasm bundle that `cargo run -p xtask --
//! build-console` writes (by default into `target/console/`).
//!
//! The console is a single-page app with deep links (`/services/<name>`), so
//! every path without a file extension gets `index.html`, and the app's
//! router picks the page. Paths with an extension are real files: a missing
//! `.js` or `.wasm` is a plain 404 (an HTML page there would only turn into a
//! confusing MIME/parse error in the browser). Unknown `/api` paths keep the
//! API's JSON 404. `.gz` copies are served to clients that accept gzip.
//!
//! Caching: `index.html` is revalidated on every load (`no-cache`), so a
//! rebuilt console is picked up at once; the hashed bundle files it points to
//! never change under their name and are cached for a year.

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::Router;
use tower_http::services::ServeDir;

/// `Cache-Control` of `index.html` and of files without a content hash.
pub const NO_CACHE: &str = "no-cache";
/// `Cache-Control` of hashed bundle files (`whetstone-<16 hex>.js`, …).
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Where `whet serve` looks for the console when `--console` is not given:
/// `<exe_dir>/../console`, which is `target/console` for `target/{debug,release}/whet`.
pub fn default_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.join("console"))
}

/// The console as a router to use as the server's fallback (every path the
/// API did not match arrives here).
pub fn router(dir: PathBuf) -> Router {
    let files = ServeDir::new(&dir)
        .precompressed_gzip()
        .append_index_html_on_directories(false);
    Router::new().fallback(move |req: Request| {
        let dir = dir.clone();
        let files = files.clone();
        async move { serve(&dir, files, req).await }
    })
}

async fn serve(dir: &Path, files: ServeDir, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if is_api_path(&path) {
        return crate::http::api::not_found();
    }
    // Checked per request, so building the console while the server runs works.
    if !dir.join("index.html").is_file() {
        return if has_extension(&path) {
            StatusCode::NOT_FOUND.into_response()
        } else {
            not_built_page(dir)
        };
    }
    let (mut parts, body) = req.into_parts();
    let spa_page = !has_extension(&path);
    if spa_page {
        // The query is dropped: it belongs to the app's route, not to the file.
        parts.uri = Uri::from_static("/index.html");
    }
    let req = Request::from_parts(parts, body);
    let mut files = files;
    let mut resp = match files.try_call(req).await {
        Ok(r) => r.map(Body::new),
        Err(e) => {
            tracing::error!("console file: {e}");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    if resp.status().is_success() || resp.status() == StatusCode::NOT_MODIFIED {
        let cache = if !spa_page && is_hashed_asset(&path) {
            IMMUTABLE
        } else {
            NO_CACHE
        };
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    }
    resp
}

/// Paths that belong to the API (and the KServe-style `/v2` namespace): they
/// never fall back to the console.
fn is_api_path(path: &str) -> bool {
    ["/api", "/v2"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// True when the last path segment has a file extension (`app.js`, not `my_service`).
fn has_extension(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|seg| seg.rfind('.').is_some_and(|i| i > 0 && i + 1 < seg.len()))
}

/// Bundle files carry a 16-hex-digit content hash before the extension
/// (`whetstone-0123456789abcdef.js`, `whetstone-0123456789abcdef_bg.wasm`).
pub fn is_hashed_asset(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    name.split(['-', '_', '.'])
        .any(|part| part.len() == 16 && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn not_built_page(dir: &Path) -> Response {
    let dir = html_escape(&dir.display().to_string());
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Whetstone</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\
         <h1>Whetstone</h1><p>The API is running, but the web console has not been built \
         (no <code>index.html</code> in <code>{dir}</code>).</p>\
         <p>Build it from the repository with</p>\
         <pre>rustup target add wasm32-unknown-unknown\n\
         cargo run --release -p xtask -- build-console --release</pre>\
         <p>or start the server with <code>scripts/serve.sh</code>, which does both; \
         <code>whet serve --console DIR</code> serves a bundle from another folder.</p>\
         </body></html>"
    );
    let mut resp = Html(page).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE));
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions() {
        assert!(has_extension("/whetstone-abc.js"));
        assert!(has_extension("/snippets/x/inline0.js"));
        assert!(!has_extension("/services/my_model"));
        assert!(!has_extension("/"));
        assert!(!has_extension("/services/.hidden"));
        assert!(!has_extension("/new."));
    }

    #[test]
    fn api_paths() {
        assert!(is_api_path("/api"));
        assert!(is_api_path("/api/v2/nope"));
        assert!(is_api_path("/v2/models"));
        assert!(!is_api_path("/apiary"));
        assert!(!is_api_path("/services/api"));
    }

    #[test]
    fn hashed_names() {
        assert!(is_hashed_asset("/whetstone-0123456789abcdef.js"));
        assert!(is_hashed_asset("/whetstone-0123456789abcdef_bg.wasm"));
        assert!(!is_hashed_asset("/index.html"));
        assert!(!is_hashed_asset("/favicon.ico"));
    }
}
