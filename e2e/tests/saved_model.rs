//! TensorFlow SavedModel folders deploy through the CLI like frozen graphs:
//! `whet create` uploads the folder (saved_model.pb with variables/), the
//! server imports the signature once, optimizes (o1, o2) and serves it under
//! the signature's keys, and the answers match TensorFlow's own outputs
//! (the fixtures of optimizer/tests/savedmodels, made by
//! scripts/make-savedmodels.py with TensorFlow).

use std::path::{Path, PathBuf};

use whetstone_e2e::{create, Server};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../optimizer/tests/savedmodels")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The user's folder: the SavedModel, with the inputs it was saved with as
/// `test.npz` beside it (test and calibration data).
fn model_folder(work: &Path, fixture_name: &str, signature: &str) -> PathBuf {
    let dir = work.join("export");
    copy_dir(&fixture(fixture_name).join("model"), &dir);
    std::fs::copy(
        fixture(fixture_name).join(format!("{signature}.inputs.npz")),
        dir.join("test.npz"),
    )
    .unwrap();
    dir
}

fn config(name: &str, model_path: &Path, info: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "model_path": model_path.to_str().unwrap(),
        "processor": "tensorflow_cpu_1.15",
        "metadata": { "instance": 1, "memory": 4000 },
        "plugins": [{
            "command": "blade --mode eas_plugin --optimize_for cpu",
            "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
            "config": { "model_info": { "saved_model.pb": info } }
        }]
    })
}

/// `whet create` of `cfg`, asserting that the service runs.
fn deploy(server: &Server, work: &Path, cfg: &serde_json::Value) {
    let (ok, log) = create(server, work, cfg);
    assert!(ok && log.contains("[OK] Service is running"), "{log}");
}

/// Every array of an `.npz`: name, shape, KServe datatype, values.
fn arrays(path: &Path) -> Vec<(String, Vec<u64>, &'static str, Vec<f64>)> {
    let mut npz = npyz::npz::NpzArchive::open(path).unwrap();
    let names: Vec<String> = npz.array_names().map(str::to_string).collect();
    names
        .into_iter()
        .map(|n| {
            let arr = npz.by_name(&n).unwrap().unwrap();
            let shape = arr.shape().to_vec();
            let descr = arr.dtype().descr();
            let (datatype, values): (&str, Vec<f64>) = match descr.trim_matches('\'') {
                "<f4" => (
                    "FP32",
                    arr.into_vec::<f32>()
                        .unwrap()
                        .into_iter()
                        .map(f64::from)
                        .collect(),
                ),
                "<i4" => (
                    "INT32",
                    arr.into_vec::<i32>()
                        .unwrap()
                        .into_iter()
                        .map(f64::from)
                        .collect(),
                ),
                "<i8" => (
                    "INT64",
                    arr.into_vec::<i64>()
                        .unwrap()
                        .into_iter()
                        .map(|v| v as f64)
                        .collect(),
                ),
                other => panic!("{}: array '{n}' of type {other}", path.display()),
            };
            (n, shape, datatype, values)
        })
        .collect()
}

/// Posts the fixture's inputs (arrays named by the signature's keys) over
/// KServe v2 and compares every output with TensorFlow's, by max
/// |difference| (integers exactly).
fn predict_matches(server: &Server, name: &str, fixture_name: &str, signature: &str, tol: f64) {
    let (s, detail) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    assert_eq!(s, 200, "{detail}");
    let token = detail["token"].as_str().unwrap().to_string();
    let dir = fixture(fixture_name);
    let inputs: Vec<serde_json::Value> = arrays(&dir.join(format!("{signature}.inputs.npz")))
        .into_iter()
        .map(|(n, shape, datatype, data)| {
            let data: Vec<serde_json::Value> = data
                .into_iter()
                .map(|v| {
                    if datatype == "FP32" {
                        v.into()
                    } else {
                        (v as i64).into()
                    }
                })
                .collect();
            serde_json::json!({"name": n, "shape": shape, "datatype": datatype, "data": data})
        })
        .collect();
    let body = serde_json::json!({ "inputs": inputs }).to_string();
    let (s, answer) = server.http(
        "POST",
        &format!("/v2/models/{name}/infer"),
        Some(&format!("Bearer {token}")),
        body.as_bytes(),
    );
    assert_eq!(s, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    for (out, shape, datatype, want) in arrays(&dir.join(format!("{signature}.outputs.npz"))) {
        let got = answer["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == out.as_str())
            .unwrap_or_else(|| panic!("no output '{out}' in {answer}"));
        assert_eq!(got["shape"], serde_json::json!(shape), "{got}");
        assert_eq!(got["datatype"], datatype, "{got}");
        let got: Vec<f64> = got["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f64, f64::max);
        let tol = if datatype == "FP32" { tol } else { 0.0 };
        assert!(worst <= tol, "{name}: output '{out}' differs by {worst}");
    }
}

#[test]
fn a_keras_saved_model_folder_deploys_with_o1_and_o2_and_matches_tensorflow() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let model = model_folder(work.path(), "keras_convnet", "serving_default");

    let o1 = config(
        "convnet_o1",
        &model,
        serde_json::json!({ "optimization_level": "o1", "test_data": "test.npz" }),
    );
    deploy(&server, work.path(), &o1);
    // The service's tensors are the signature's keys.
    let (_, detail) = server.admin("GET", "/api/v2/services/convnet_o1", b"");
    let sig = &detail["signature"];
    assert_eq!(sig["inputs"][0]["name"], "inputs", "{sig}");
    assert_eq!(sig["outputs"][0]["name"], "output_0", "{sig}");
    predict_matches(
        &server,
        "convnet_o1",
        "keras_convnet",
        "serving_default",
        1e-4,
    );

    // o2 (INT8 calibrated on the same inputs): whatever candidate passes the
    // accuracy gate is served, so the answer stays close to TensorFlow's.
    let o2 = config(
        "convnet_o2",
        &model,
        serde_json::json!({
            "optimization_level": "o2",
            "test_data": "test.npz",
            "calibration_dataset": "test.npz",
        }),
    );
    deploy(&server, work.path(), &o2);
    predict_matches(
        &server,
        "convnet_o2",
        "keras_convnet",
        "serving_default",
        2e-2,
    );
}

#[test]
fn a_keras_text_model_and_a_tf1_saved_model_deploy_and_match_tensorflow() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    for (name, fixture_name, dir) in [
        ("text_gru", "text_gru", "gru"),
        ("tf1_simple", "tf1_simple_save", "tf1"),
    ] {
        let model = model_folder(&work.path().join(dir), fixture_name, "serving_default");
        let cfg = config(name, &model, serde_json::json!({ "test_data": "test.npz" }));
        deploy(&server, work.path(), &cfg);
        predict_matches(&server, name, fixture_name, "serving_default", 1e-4);
    }
}

#[test]
fn signature_name_picks_a_signature_and_a_wrong_one_lists_the_others() {
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let model = model_folder(work.path(), "two_signatures", "scores");

    let cfg = config(
        "scores",
        &model,
        serde_json::json!({ "signature_name": "scores", "test_data": "test.npz" }),
    );
    deploy(&server, work.path(), &cfg);
    predict_matches(&server, "scores", "two_signatures", "scores", 1e-4);
    // The default signature of the same folder: two outputs, one of them
    // int64 (an argmax).
    let cfg = config("classify", &model, serde_json::json!({}));
    deploy(&server, work.path(), &cfg);
    predict_matches(
        &server,
        "classify",
        "two_signatures",
        "serving_default",
        1e-4,
    );

    // The same folder under an ONNX processor: told which processor reads it.
    let mut cfg = config("as_onnx", &model, serde_json::json!({}));
    cfg["processor"] = "onnx_cpu".into();
    cfg.as_object_mut().unwrap().remove("plugins");
    let (ok, log) = create(&server, work.path(), &cfg);
    assert!(!ok, "{log}");
    assert!(
        log.contains("no .onnx model file") && log.contains("tensorflow_* processor"),
        "{log}"
    );

    let cfg = config(
        "nope",
        &model,
        serde_json::json!({ "signature_name": "predict" }),
    );
    let (ok, log) = create(&server, work.path(), &cfg);
    assert!(!ok, "{log}");
    assert!(
        log.contains("no signature 'predict'") && log.contains("scores, serving_default"),
        "{log}"
    );
    assert!(log.contains("signature_name"), "{log}");
}

#[test]
fn a_checkpoint_entry_outside_its_shard_is_a_422_naming_the_variable() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("models");
    let server = Server::start(
        &work.path().join("data"),
        &["--model-root", root.to_str().unwrap()],
    );
    // A TF1 SavedModel: its checkpoint holds only the variables, so the
    // shard's last bytes are a variable's.
    let model = model_folder(&root, "tf1_simple_save", "serving_default");
    // The shard loses its last bytes: the index's last entry now points
    // past its end.
    let shard = model.join("variables/variables.data-00000-of-00001");
    let len = std::fs::metadata(&shard).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&shard)
        .unwrap();
    f.set_len(len - 8).unwrap();
    drop(f);
    let url = format!("file://{}", model.display());
    let mut cfg = config("broken", &model, serde_json::json!({}));
    cfg["model_path"] = url.into();
    let (s, body) = server.admin("POST", "/api/v2/services", cfg.to_string().as_bytes());
    assert_eq!(s, 422, "{body}");
    let text = body.to_string();
    assert!(text.contains("points outside its shard"), "{text}");
    assert!(text.contains("variable '"), "{text}");
    assert!(text.contains(r#"model_info[\"saved_model.pb\"]"#), "{text}");
    // Nothing was stored.
    let (s, _) = server.admin("GET", "/api/v2/services/broken", b"");
    assert_eq!(s, 404);
}
