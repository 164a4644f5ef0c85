//! The API router called in-process (no socket): auth, validation errors,
//! JSON 404s, and that rejected requests store nothing.

mod common;

use axum::http::StatusCode;
use common::TestApp;

async fn app() -> (TestApp, String) {
    let app = TestApp::open().await;
    let token = app.admin.clone();
    (app, token)
}

async fn call(
    app: &TestApp,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    app.call(method, uri, token, body).await
}

#[tokio::test]
async fn admin_token_file_is_private_and_only_its_hash_is_stored() {
    let (app, token) = app().await;
    let dir = &app.dir;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("data/admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let db = std::fs::read(dir.path().join("data/whetstone.db")).unwrap();
    let wal = std::fs::read(dir.path().join("data/whetstone.db-wal")).unwrap_or_default();
    let needle = token.as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle)
            && !wal.windows(needle.len()).any(|w| w == needle),
        "token stored in clear"
    );
}

#[tokio::test]
async fn management_calls_need_a_valid_token() {
    let (app, token) = app().await;
    assert_eq!(
        call(&app, "GET", "/api/v2/services", None, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (s, body) = call(&app, "GET", "/api/v2/services", Some("whet_wrong"), "").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body["error"].as_str().unwrap().contains("invalid"));
    let (s, body) = call(&app, "GET", "/api/v2/services", Some(&token), "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, serde_json::json!([]));
}

#[tokio::test]
async fn invalid_configs_get_422_with_every_path_and_store_nothing() {
    let (app, token) = app().await;
    let cfg = r#"{"name": "x", "processor": "onnx_tpu", "surprise": 1}"#;
    let (s, body) = call(&app, "POST", "/api/v2/services", Some(&token), cfg).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in ["name", "model_path", "processor", "surprise"] {
        assert!(paths.contains(&p), "no error at {p}: {body}");
    }
    let (s, body) = call(&app, "POST", "/api/v2/services", Some(&token), "{not json").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        call(&app, "GET", "/api/v2/services", Some(&token), "")
            .await
            .1,
        serde_json::json!([])
    );
}

#[tokio::test]
async fn server_side_checks_name_the_field() {
    let (app, token) = app().await;
    let cfg = serde_json::json!({"name": "svc_one", "model_path": "oss://bucket/model/", "processor": "onnx_cpu"}).to_string();
    let (s, body) = call(&app, "POST", "/api/v2/services", Some(&token), &cfg).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["path"], "model_path");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("object store"));

    let cfg = serde_json::json!({"name": "svc_two", "model_path": "file:///etc/passwd", "processor": "onnx_cpu"}).to_string();
    let (s, body) = call(&app, "POST", "/api/v2/services", Some(&token), &cfg).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("--model-root"),
        "{body}"
    );

    let cfg = serde_json::json!({"name": "svc_three", "model_path": "upload://abc/m.pt", "processor": "pytorch_cpu_1.6"}).to_string();
    let (s, body) = call(&app, "POST", "/api/v2/services", Some(&token), &cfg).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Without the `torch` feature TorchScript is refused before anything is
    // fetched, saying how to enable it; with it, the missing upload is.
    if cfg!(feature = "torch") {
        assert_eq!(body["errors"][0]["path"], "model_path", "{body}");
    } else {
        assert_eq!(body["errors"][0]["path"], "processor", "{body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("--features torch") && message.contains("scripts/install-libtorch.sh"),
            "{body}"
        );
    }

    // TorchScript on a GPU is refused before anything is fetched.
    let cfg = serde_json::json!({"name": "svc_four", "model_path": "upload://abc/m.pt", "processor": "pytorch_gpu_1.6", "metadata": {"instance": 1, "gpu": 1, "cuda": "10.0"}}).to_string();
    let (s, body) = call(&app, "POST", "/api/v2/services", Some(&token), &cfg).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["path"], "processor", "{body}");
}

#[tokio::test]
async fn unknown_things_are_json_404s() {
    let (app, token) = app().await;
    let (s, body) = call(&app, "GET", "/api/v2/services/nope", Some(&token), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("nope"));
    // A prediction route does not tell a stranger which services exist.
    let (s, body) = call(&app, "POST", "/api/predict/nope", Some("t"), "{}").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let (s, body) = call(&app, "GET", "/api/v3/whatever", None, "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn unsafe_upload_names_are_refused() {
    let (app, token) = app().await;
    let (s, body) = call(
        &app,
        "POST",
        "/api/v2/uploads?filename=..",
        Some(&token),
        "x",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, body) = call(
        &app,
        "POST",
        "/api/v2/uploads?filename=m.onnx",
        Some(&token),
        "abc",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(body["model_path"]
        .as_str()
        .unwrap()
        .starts_with("upload://"));
    assert_eq!(body["bytes"], 3);
}

/// Every `$ref` in `v`.
fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push(x.as_str().unwrap_or_default().to_string());
                }
                refs(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_its_refs_resolve() {
    let (app, _token) = app().await;
    let (s, doc) = call(&app, "GET", "/api/openapi.json", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/api/v2/services", "get"),
        ("/api/v2/services", "post"),
        ("/api/v2/services/{name}", "get"),
        ("/api/v2/services/{name}", "put"),
        ("/api/v2/services/{name}", "delete"),
        ("/api/v2/services/{name}/scale", "post"),
        ("/api/v2/services/{name}/stop", "post"),
        ("/api/v2/services/{name}/start", "post"),
        ("/api/v2/services/{name}/versions", "get"),
        ("/api/v2/services/{name}/rollback", "post"),
        ("/api/v2/services/{name}/logs", "get"),
        ("/api/v2/services/{name}/logs/stream", "get"),
        ("/api/v2/uploads", "post"),
        ("/api/v2/uploads/example", "post"),
        ("/api/v2/schema", "get"),
        ("/api/predict/{name}", "post"),
        ("/v2", "get"),
        ("/v2/health/live", "get"),
        ("/v2/health/ready", "get"),
        ("/v2/models/{name}", "get"),
        ("/v2/models/{name}/ready", "get"),
        ("/v2/models/{name}/infer", "post"),
        ("/v2/models/{name}/versions/{version}/infer", "post"),
        ("/v2/models/{name}/config", "get"),
        ("/v2/models/{name}/versions/{version}/config", "get"),
        ("/metrics", "get"),
        ("/api/v2/me", "get"),
        ("/api/v2/teams", "post"),
        ("/api/v2/teams/{team}/dashboard", "get"),
        ("/api/v2/teams/{team}/members/{user}", "put"),
        ("/api/v2/users", "post"),
        ("/api/v2/users/{user}/tokens", "post"),
        ("/api/v2/users/{user}/tokens/{id}", "delete"),
        ("/api/v2/services/{name}/shares", "post"),
        ("/api/v2/services/{name}/shares/{token}", "delete"),
        ("/api/v2/shared/{token}", "get"),
        ("/api/v2/shared/{token}/logs/stream", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 10, "{all:?}");
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "$ref {r} does not resolve"
        );
    }
    // The config schema is the one validation uses: closed objects.
    assert_eq!(
        doc["components"]["schemas"]["ServiceConfig"]["additionalProperties"],
        false
    );
}

/// What axum refuses before a handler runs — a body that is not JSON, JSON
/// of another shape, a path parameter of the wrong type — is an `ApiError`
/// like every other error, with the status the document gives it.
#[tokio::test]
async fn unreadable_requests_get_json_errors() {
    let (app, token) = app().await;
    for (method, uri, body, status) in [
        ("POST", "/api/v2/teams", "not json", StatusCode::BAD_REQUEST),
        (
            "POST",
            "/api/v2/teams",
            "{}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "DELETE",
            "/api/v2/users/admin/tokens/abc",
            "",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET",
            "/api/v2/services/x/logs?after=x",
            "",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, b) = call(&app, method, uri, Some(&token), body).await;
        assert_eq!(s, status, "{method} {uri}: {b}");
        assert!(
            b["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {uri}: {b}"
        );
    }
    // A JSON body sent as text: 415, as JSON.
    let req = axum::http::Request::post("/api/v2/teams")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "text/plain")
        .body(axum::body::Body::from("{\"name\":\"ml\"}"))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let b: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(b["error"].is_string(), "{b}");
}
