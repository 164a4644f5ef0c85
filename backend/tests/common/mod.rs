//! The server the router-level tests call in-process (no socket): a fresh
//! data folder, its admin token, and one request helper.
#![allow(dead_code)] // each test file uses its own part of this

use axum::body::Body;
use axum::http::{Request, StatusCode};
use backend::control::resources::Resources;
use backend::control::Settings;
use backend::http::server::{open_with, router};
use backend::http::state::AppState;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub struct TestApp {
    pub router: axum::Router,
    pub state: AppState,
    pub admin: String,
    pub dir: tempfile::TempDir,
}

impl TestApp {
    /// A server on the default CPU resource group.
    pub async fn open() -> TestApp {
        TestApp::open_with(Resources::cpu_default()).await
    }

    /// A server with these resource groups (and the GPUs found for them).
    pub async fn open_with(resources: Resources) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            max_model_bytes: 1 << 20,
            ..Settings::new(dir.path().join("data"), env!("CARGO_BIN_EXE_whet").into())
        };
        let state = open_with(settings, resources).await.unwrap();
        let admin = std::fs::read_to_string(dir.path().join("data/admin-token")).unwrap();
        TestApp {
            router: router(state.clone()),
            state,
            admin,
            dir,
        }
    }

    /// The same data folder served again by `state` (a restarted server).
    pub fn restarted(self, state: AppState) -> TestApp {
        TestApp {
            router: router(state.clone()),
            state,
            ..self
        }
    }

    /// One request; the answer's status and JSON body (Null when not JSON).
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: impl Into<Vec<u8>>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body.into())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Uploads a small ONNX model as `token`; the upload's answer.
    pub async fn upload_mlp(&self, token: &str) -> (StatusCode, Value) {
        let model = optimizer::onnx_build::mlp(4, 8, 2);
        self.call(
            "POST",
            "/api/v2/uploads?filename=m.onnx",
            Some(token),
            model,
        )
        .await
    }
}
