//! Resource groups and GPU deploys through the router (no socket): `resource`
//! and a plugin's `resource` must name configured groups, the plugin's group
//! has the service group's GPU type, GPU deploys need GPUs discovered at
//! start, and GPU jobs go to the GPU pool only.

mod common;

use axum::http::StatusCode;
use backend::control::gpu::{GpuDevice, GpuInventory, NO_DRIVER};
use backend::control::resources::{job_kind, parse_groups, Resources};
use backend::control::store::{ResolvedModel, Store};
use backend::http::server::open_with;
use common::TestApp;
use serde_json::{json, Value};

const CPU_PLUGIN: &str = "blade --mode eas_plugin --optimize_for cpu";
const GPU_PLUGIN: &str = "blade --mode eas_plugin --optimize_for gpu";
const CPU_IMAGE: &str = "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest";
const GPU_IMAGE: &str = "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cu110_latest";

/// A server with `groups` (as `--resource-group` values) and `gpus` found at start.
async fn app(groups: &[&str], gpus: GpuInventory) -> TestApp {
    let specs: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
    TestApp::open_with(Resources::new(parse_groups(&specs).unwrap(), gpus)).await
}

fn no_gpu() -> GpuInventory {
    GpuInventory::none(NO_DRIVER)
}

/// One Tesla T4, as discovery would report it on a T4 machine.
fn one_t4() -> GpuInventory {
    GpuInventory::of(vec![GpuDevice {
        ordinal: 0,
        name: "Tesla T4".into(),
        memory_bytes: 15 << 30,
    }])
}

impl TestApp {
    /// Uploads a small ONNX model; returns its `model_path`.
    async fn upload(&self) -> Value {
        let (s, up) = self.upload_mlp(&self.admin).await;
        assert_eq!(s, StatusCode::OK, "{up}");
        up["model_path"].clone()
    }

    /// Creates a service from `cfg` (its model_path filled in).
    async fn create(&self, mut cfg: Value) -> (StatusCode, Value) {
        cfg["model_path"] = self.upload().await;
        self.call(
            "POST",
            "/api/v2/services",
            Some(&self.admin),
            cfg.to_string().into_bytes(),
        )
        .await
    }

    async fn services(&self) -> Vec<Value> {
        let (s, list) = self
            .call("GET", "/api/v2/services", Some(&self.admin), vec![])
            .await;
        assert_eq!(s, StatusCode::OK);
        list.as_array().unwrap().clone()
    }
}

/// The one problem of a 422, as (path, message).
fn problem(status: StatusCode, body: &Value) -> (String, String) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{body}");
    (
        errors[0]["path"].as_str().unwrap().to_string(),
        errors[0]["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn an_unknown_resource_is_refused_naming_the_configured_groups() {
    let app = app(&["default=cpu", "T4_8CORE=gpu:T4:1"], no_gpu()).await;
    let (s, b) = app
        .create(json!({"name": "svc_a", "processor": "onnx_cpu", "resource": "big_cpu"}))
        .await;
    let (path, msg) = problem(s, &b);
    assert_eq!(path, "resource");
    assert!(msg.contains("'big_cpu'"), "{msg}");
    assert!(msg.contains("'default', 'T4_8CORE'"), "{msg}");
    // A seed name that this server does not configure is unknown too.
    let (s, b) = app
        .create(json!({"name": "svc_a", "processor": "onnx_cpu", "resource": "V100_8CORE"}))
        .await;
    assert_eq!(problem(s, &b).0, "resource");
    assert!(
        app.services().await.is_empty(),
        "a refused deploy stores nothing"
    );
}

#[tokio::test]
async fn an_unknown_plugin_resource_is_refused_at_its_path() {
    let app = app(&[], no_gpu()).await;
    let (s, b) = app
        .create(json!({
            "name": "svc_b", "processor": "onnx_cpu", "resource": "default",
            "plugins": [{"command": CPU_PLUGIN, "image": CPU_IMAGE, "resource": "elsewhere"}]
        }))
        .await;
    let (path, msg) = problem(s, &b);
    assert_eq!(path, "plugins[0].resource");
    assert!(msg.contains("('default')"), "{msg}");
}

#[tokio::test]
async fn the_plugin_group_must_have_the_service_groups_gpu_type() {
    // Names outside the <TYPE>_<N>CORE form: only the server knows their types.
    let app = app(
        &["serve_pool=gpu:T4:1", "tune_pool=gpu:V100:1", "cpus=cpu"],
        one_t4(),
    )
    .await;
    let (s, b) = app
        .create(json!({
            "name": "svc_c", "processor": "onnx_gpu", "resource": "serve_pool",
            "plugins": [{"command": GPU_PLUGIN, "image": GPU_IMAGE, "resource": "tune_pool", "gpu": 1}]
        }))
        .await;
    let (path, msg) = problem(s, &b);
    assert_eq!(path, "plugins[0].resource");
    assert!(msg.contains("GPU type T4"), "{msg}");
    assert!(msg.contains("GPU type V100"), "{msg}");
    // A CPU group against a GPU one is a mismatch too.
    let (s, b) = app
        .create(json!({
            "name": "svc_c", "processor": "onnx_cpu", "resource": "cpus",
            "plugins": [{"command": CPU_PLUGIN, "image": CPU_IMAGE, "resource": "serve_pool"}]
        }))
        .await;
    let (path, msg) = problem(s, &b);
    assert_eq!(path, "plugins[0].resource");
    assert!(msg.contains("a CPU group"), "{msg}");
    assert!(app.services().await.is_empty());
}

#[tokio::test]
async fn a_gpu_deploy_without_a_discovered_gpu_is_refused_at_its_field() {
    // Default groups, no GPU: a GPU processor alone.
    let app1 = app(&[], no_gpu()).await;
    let (s, b) = app1
        .create(json!({"name": "svc_d", "processor": "onnx_gpu"}))
        .await;
    let (path, msg) = problem(s, &b);
    assert_eq!(path, "processor");
    assert!(
        msg.contains("no GPU was discovered on this server"),
        "{msg}"
    );
    assert!(msg.contains(NO_DRIVER), "{msg}");

    // A configured GPU group does not make a GPU: processor and plugin both refused.
    let app2 = app(&["T4_8CORE=gpu:T4:1"], no_gpu()).await;
    let (s, b) = app2
        .create(json!({
            "name": "svc_d", "processor": "onnx_gpu", "resource": "T4_8CORE",
            "plugins": [{"command": GPU_PLUGIN, "image": GPU_IMAGE, "resource": "T4_8CORE", "gpu": 1}]
        }))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let errors: Vec<(String, String)> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().into(),
                e["message"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        errors.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        vec!["processor", "plugins[0].command"],
        "{b}"
    );
    assert!(
        errors
            .iter()
            .all(|e| e.1.contains("no GPU was discovered on this server")),
        "{b}"
    );
    assert!(app1.services().await.is_empty() && app2.services().await.is_empty());
}

#[tokio::test]
async fn a_gpu_group_whose_model_was_not_discovered_is_refused() {
    let app = app(&["V100_8CORE=gpu:V100:1"], one_t4()).await;
    let (s, b) = app
        .create(json!({"name": "svc_e", "processor": "onnx_gpu", "resource": "V100_8CORE"}))
        .await;
    let (path, msg) = problem(s, &b);
    assert_eq!(path, "resource");
    assert!(msg.contains("no V100 GPU was discovered"), "{msg}");
    assert!(msg.contains("Tesla T4"), "{msg}");
}

#[tokio::test]
async fn metadata_gpu_may_not_exceed_the_group() {
    let app = app(&["T4_8CORE=gpu:T4:2"], one_t4()).await;
    let (s, b) = app
        .create(json!({
            "name": "svc_f", "processor": "onnx_gpu", "resource": "T4_8CORE",
            "metadata": {"instance": 1, "gpu": 2}
        }))
        .await;
    let (path, msg) = problem(s, &b);
    assert_eq!(path, "metadata.gpu");
    assert!(msg.contains("expected at most 1 GPU(s)"), "{msg}");
    assert!(msg.contains("2 configured, 1 discovered"), "{msg}");
}

#[tokio::test]
async fn a_cpu_deploy_on_the_default_group_still_works_and_is_a_cpu_job() {
    let app = app(&[], no_gpu()).await;
    let (s, b) = app
        .create(json!({"name": "svc_g", "processor": "onnx_cpu", "resource": "default"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["name"], "svc_g");
    let job = app
        .state
        .store
        .claim_job(&["cpu".into()], "test-node", i64::MAX / 2)
        .await
        .unwrap();
    assert_eq!(job.map(|j| j.service).as_deref(), Some("svc_g"));
}

#[tokio::test]
async fn a_gpu_deploy_is_queued_for_the_gpu_pool_only() {
    let app = app(&["default=cpu", "T4_8CORE=gpu:T4:1"], one_t4()).await;
    let (s, b) = app
        .create(json!({
            "name": "svc_h", "processor": "onnx_gpu", "resource": "T4_8CORE",
            "metadata": {"instance": 1, "gpu": 1},
            "plugins": [{"command": GPU_PLUGIN, "image": GPU_IMAGE, "resource": "T4_8CORE", "gpu": 1}]
        }))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let store = &app.state.store;
    assert!(
        store
            .claim_job(&["cpu".into()], "test-node", i64::MAX / 2)
            .await
            .unwrap()
            .is_none(),
        "the CPU pool took a GPU job"
    );
    assert!(store
        .claim_job(&["gpu:V100_8CORE".into()], "test-node", i64::MAX / 2)
        .await
        .unwrap()
        .is_none());
    let job = store
        .claim_job(&["gpu:T4_8CORE".into()], "test-node", i64::MAX / 2)
        .await
        .unwrap();
    assert_eq!(job.map(|j| j.service).as_deref(), Some("svc_h"));
    // The server would start exactly one GPU worker, for device 0, taking that kind.
    let workers = app.state.resources.gpu_workers();
    assert_eq!(workers.len(), 1);
    assert_eq!(
        (workers[0].0.ordinal, workers[0].1.clone()),
        (0, vec!["gpu:T4_8CORE".to_string()])
    );
}

#[tokio::test]
async fn job_kinds_route_jobs_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("w.db")).await.unwrap();
    let model = ResolvedModel {
        dir: "d".into(),
        file: "d/m.onnx".into(),
        sha256: "00".into(),
        signature: Default::default(),
    };
    let config =
        |v: serde_json::Value| -> shared::ServiceConfig { serde_json::from_value(v).unwrap() };
    let gpu_cfg = config(
        json!({"name": "gpu_svc", "model_path": "upload://x/m.onnx", "processor": "onnx_gpu", "resource": "T4_8CORE"}),
    );
    let cpu_cfg = config(
        json!({"name": "cpu_svc", "model_path": "upload://x/m.onnx", "processor": "onnx_cpu"}),
    );
    // The GPU job is older: a CPU worker must skip it, not block on it.
    store
        .create_service(
            &gpu_cfg,
            &job_kind(&gpu_cfg),
            "t1",
            &model,
            "default",
            "admin",
        )
        .await
        .unwrap();
    store
        .create_service(
            &cpu_cfg,
            &job_kind(&cpu_cfg),
            "t2",
            &model,
            "default",
            "admin",
        )
        .await
        .unwrap();
    let cpu = vec!["cpu".to_string()];
    let first = store
        .claim_job(&cpu, "test-node", i64::MAX / 2)
        .await
        .unwrap()
        .expect("the CPU job");
    assert_eq!(first.service, "cpu_svc");
    assert!(
        store
            .claim_job(&cpu, "test-node", i64::MAX / 2)
            .await
            .unwrap()
            .is_none(),
        "the CPU pool claimed a GPU job"
    );
    assert!(store
        .claim_job(&[], "test-node", i64::MAX / 2)
        .await
        .unwrap()
        .is_none());
    let gpu = store
        .claim_job(
            &["gpu:A100_8CORE".into(), "gpu:T4_8CORE".into()],
            "test-node",
            i64::MAX / 2,
        )
        .await
        .unwrap()
        .expect("the GPU job");
    assert_eq!(gpu.service, "gpu_svc");
}

#[tokio::test]
async fn the_groups_and_gpus_are_shown_read_only() {
    let app = app(&["default=cpu", "T4_8CORE=gpu:T4:1"], no_gpu()).await;
    let (s, _) = app
        .call("GET", "/api/v2/resource-groups", None, vec![])
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = app
        .call("GET", "/api/v2/resource-groups", Some(&app.admin), vec![])
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!({
            "groups": [
                {"name": "default", "device": "cpu", "available": true},
                {"name": "T4_8CORE", "device": "gpu", "gpu_model": "T4", "gpu_count": 1,
                 "gpu_devices": [], "available": false, "note": NO_DRIVER},
            ],
            "gpus": {"devices": [], "unavailable": NO_DRIVER},
        })
    );
    let (s, _) = app
        .call("POST", "/api/v2/resource-groups", Some(&app.admin), vec![])
        .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (_, doc) = app.call("GET", "/api/openapi.json", None, vec![]).await;
    assert!(doc["paths"]["/api/v2/resource-groups"]["get"].is_object());
}

#[tokio::test]
async fn a_gpu_job_left_queued_by_a_server_that_lost_its_gpus_fails_at_restart() {
    let app = app(&["default=cpu", "T4_8CORE=gpu:T4:1"], one_t4()).await;
    let (s, b) = app
        .create(json!({"name": "svc_i", "processor": "onnx_gpu", "resource": "T4_8CORE"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // The same data folder, restarted on a machine without a GPU.
    let settings = (*app.state.settings).clone();
    let again = Resources::new(
        parse_groups(&["default=cpu".into(), "T4_8CORE=gpu:T4:1".into()]).unwrap(),
        no_gpu(),
    );
    let state = open_with(settings, again).await.unwrap();
    backend::deploy::recover(&state.deployer(), "127.0.0.1:0")
        .await
        .unwrap();
    let svc = state.store.get_service("svc_i").await.unwrap().unwrap();
    assert_eq!(svc.status, shared::api::ServiceStatus::Failed);
    let msg = svc.message.unwrap_or_default();
    assert!(
        msg.contains("no worker of this server can run this GPU deploy"),
        "{msg}"
    );
    assert!(msg.contains(NO_DRIVER), "{msg}");
    assert_eq!(state.store.count_jobs("svc_i", "queued").await.unwrap(), 0);
}

#[tokio::test]
async fn a_gpu_service_is_not_restarted_on_a_server_without_its_gpus() {
    let app = app(&["T4_8CORE=gpu:T4:1"], one_t4()).await;
    let (s, b) = app
        .create(json!({"name": "svc_j", "processor": "onnx_gpu", "resource": "T4_8CORE"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // Restarted without a GPU: the queued job is failed, and start/scale are refused.
    let settings = (*app.state.settings).clone();
    let again = Resources::new(
        parse_groups(&["T4_8CORE=gpu:T4:1".into()]).unwrap(),
        no_gpu(),
    );
    let state = open_with(settings, again).await.unwrap();
    backend::deploy::recover(&state.deployer(), "127.0.0.1:0")
        .await
        .unwrap();
    let restarted = app.restarted(state);
    for (uri, body) in [
        ("/api/v2/services/svc_j/start", String::new()),
        (
            "/api/v2/services/svc_j/scale",
            json!({"instances": 2}).to_string(),
        ),
    ] {
        let (s, b) = restarted
            .call("POST", uri, Some(&restarted.admin), body.into_bytes())
            .await;
        let errors = b["errors"].as_array().cloned().unwrap_or_default();
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {b}");
        assert_eq!(errors[0]["path"], "processor", "{b}");
        assert!(
            errors[0]["message"]
                .as_str()
                .unwrap()
                .contains("no GPU was discovered on this server"),
            "{b}"
        );
    }
    assert_eq!(
        restarted
            .state
            .store
            .count_jobs("svc_j", "queued")
            .await
            .unwrap(),
        0
    );
}

#[cfg(feature = "torch")]
#[tokio::test]
async fn a_gpu_pytorch_deploy_without_libtorchs_cuda_backend_says_how_to_install_it() {
    use optimizer::torch::cuda::{probe, TorchCuda};
    if let TorchCuda::Available { .. } = probe() {
        // libtorch's CUDA backend is installed and sees a GPU: nothing to refuse.
        return;
    }
    let app = app(&["default=cpu", "T4_8CORE=gpu:T4:1"], one_t4()).await;
    let (s, b) = app
        .create(json!({
            "name": "svc_torch_gpu", "processor": "pytorch_gpu_1.7", "resource": "T4_8CORE",
            "metadata": {"instance": 1, "gpu": 1, "cuda": "11.0"},
            "plugins": [{"command": GPU_PLUGIN, "image": GPU_IMAGE, "resource": "T4_8CORE", "gpu": 1}]
        }))
        .await;
    let (path, message) = problem(s, &b);
    assert_eq!(path, "processor");
    assert!(
        message.contains("pytorch_gpu_1.7") && message.contains("install-libtorch.sh --gpu"),
        "{message}"
    );
    assert!(app.services().await.is_empty(), "nothing is stored");
}

#[tokio::test]
async fn a_restored_gpu_service_is_served_on_its_groups_device() {
    let two_t4 = GpuInventory::of(
        (0..2)
            .map(|ordinal| GpuDevice {
                ordinal,
                name: "Tesla T4".into(),
                memory_bytes: 15 << 30,
            })
            .collect(),
    );
    let groups = parse_groups(&[
        "default=cpu".into(),
        "B=gpu:T4:1".into(),
        "A=gpu:T4:2".into(),
    ])
    .unwrap();
    let res = Resources::new(groups, two_t4);
    let cfg = |resource: &str, processor: &str| {
        shared::parse_and_validate(
            &json!({"name": "svc_restored", "model_path": "m.onnx", "processor": processor,
                    "resource": resource, "metadata": {"instance": 1}})
            .to_string(),
        )
        .unwrap()
    };
    use optimizer::engine::ExecutionProvider::Cuda;
    assert_eq!(
        res.serving_device(&cfg("A", "onnx_gpu")),
        Some(Cuda { device_id: 0 })
    );
    assert_eq!(res.serving_device(&cfg("default", "onnx_cpu")), None);
}
