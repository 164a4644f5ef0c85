//! The web console's routes, in-process against a fake bundle folder (no wasm
//! build needed): SPA fallback for deep links, real 404s for missing assets,
//! the API's JSON 404 kept, gzip copies, cache headers, and the page shown
//! when no console was built.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use backend::control::Settings;
use backend::http::console::{IMMUTABLE, NO_CACHE};
use backend::http::server::{open, router_with_console};
use http_body_util::BodyExt;
use tower::ServiceExt;

const INDEX: &str = "<!doctype html><title>fake console</title>";
const JS: &str = "export default function init() {}";
const JS_NAME: &str = "whetstone-0123456789abcdef.js";

/// A server whose console folder holds a fake bundle (or nothing, when `built` is false).
async fn app(built: bool) -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console");
    std::fs::create_dir_all(&console).unwrap();
    if built {
        std::fs::write(console.join("index.html"), INDEX).unwrap();
        std::fs::write(console.join(JS_NAME), JS).unwrap();
        std::fs::write(console.join(format!("{JS_NAME}.gz")), gzip(JS.as_bytes())).unwrap();
    }
    let settings = Settings {
        max_model_bytes: 1 << 20,
        ..Settings::new(dir.path().join("data"), env!("CARGO_BIN_EXE_whet").into())
    };
    let state = open(settings).await.unwrap();
    (router_with_console(state, Some(console)), dir)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

async fn get(app: &axum::Router, uri: &str, gzip: bool) -> (Response<()>, Vec<u8>) {
    let mut req = Request::builder().uri(uri);
    if gzip {
        req = req.header(header::ACCEPT_ENCODING, "gzip");
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (Response::from_parts(parts, ()), bytes)
}

fn header_of(resp: &Response<()>, name: header::HeaderName) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn deep_links_get_index_html_uncached() {
    let (app, _dir) = app(true).await;
    for uri in ["/", "/services/x", "/new", "/services/my_model?tab=log"] {
        let (resp, body) = get(&app, uri, false).await;
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        assert_eq!(String::from_utf8(body).unwrap(), INDEX, "{uri}");
        assert_eq!(header_of(&resp, header::CACHE_CONTROL), NO_CACHE, "{uri}");
        assert!(header_of(&resp, header::CONTENT_TYPE).starts_with("text/html"));
    }
}

#[tokio::test]
async fn missing_assets_are_real_404s() {
    let (app, _dir) = app(true).await;
    for uri in [
        "/app-123.wasm",
        "/whetstone-ffffffffffffffff.js",
        "/x/y.css",
    ] {
        let (resp, body) = get(&app, uri, false).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{uri}");
        assert_ne!(body, INDEX.as_bytes(), "{uri}: must not be the app page");
    }
}

#[tokio::test]
async fn unknown_api_paths_stay_json_404() {
    let (app, _dir) = app(true).await;
    // A model's route is the API's too: 401 without its token (whether the
    // model exists is not told to a stranger), JSON, not the console page.
    for (uri, status) in [
        ("/api/v2/nope", StatusCode::NOT_FOUND),
        ("/api", StatusCode::NOT_FOUND),
        ("/v2/models/x", StatusCode::UNAUTHORIZED),
    ] {
        let (resp, body) = get(&app, uri, false).await;
        assert_eq!(resp.status(), status, "{uri}");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(json["error"].is_string(), "{uri}: {json}");
    }
    // And the API itself is still there, ahead of the console.
    let (resp, _) = get(&app, "/api/v2/services", false).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (resp, body) = get(&app, "/healthz", false).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body, b"ok");
}

#[tokio::test]
async fn hashed_assets_are_long_cached_and_gzip_served() {
    let (app, _dir) = app(true).await;
    let uri = format!("/{JS_NAME}");
    let (resp, body) = get(&app, &uri, false).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(body, JS.as_bytes());
    assert_eq!(header_of(&resp, header::CACHE_CONTROL), IMMUTABLE);
    assert!(header_of(&resp, header::CONTENT_TYPE).contains("javascript"));

    let (resp, body) = get(&app, &uri, true).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header_of(&resp, header::CONTENT_ENCODING), "gzip");
    assert_eq!(body, gzip(JS.as_bytes()));
    assert_eq!(header_of(&resp, header::CACHE_CONTROL), IMMUTABLE);
}

#[tokio::test]
async fn unbuilt_console_explains_how_to_build_it() {
    let (app, _dir) = app(false).await;
    let (resp, body) = get(&app, "/services/x", false).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains("build-console"), "{page}");
    let (resp, _) = get(&app, "/whetstone-0123456789abcdef.js", false).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let (resp, _) = get(&app, "/api/v2/nope", false).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// Every answer — the console's page and files, the API, a 404 — carries the
/// policy that keeps a script the console did not ship from running.
#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let (app, _dir) = app(true).await;
    for uri in [
        "/",
        "/services/x",
        &format!("/{JS_NAME}"),
        "/api/v2/services",
        "/api/nope",
        "/healthz",
    ] {
        let (resp, _) = get(&app, uri, false).await;
        let csp = header_of(&resp, header::CONTENT_SECURITY_POLICY);
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval'")
                && csp.contains("frame-ancestors 'none'")
                && !csp.contains(" 'unsafe-eval'")
                && !csp.contains("script-src 'self' 'unsafe-inline'"),
            "{uri}: {csp}"
        );
        assert_eq!(
            header_of(&resp, header::X_CONTENT_TYPE_OPTIONS),
            "nosniff",
            "{uri}"
        );
        assert_eq!(
            header_of(&resp, header::REFERRER_POLICY),
            "no-referrer",
            "{uri}"
        );
        assert_eq!(header_of(&resp, header::X_FRAME_OPTIONS), "DENY", "{uri}");
    }
}
