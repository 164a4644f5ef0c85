//! A TorchScript deploy end to end: the zoo's silero VAD (`silero_vad.jit`)
//! with `pytorch_cpu_1.6` and the seed's CPU plugin config, optimized by the
//! child `whet optimize`, served by the TorchScript engine, and predicted in
//! chunk order (the module carries state between calls). Needs the `torch`
//! feature here and in the `whet` binary (scripts/test.sh builds both).
#![cfg(feature = "torch")]

use std::path::Path;

use optimizer::tensor::{Tensor, TensorData};
use whetstone_e2e::{npz_f32, zoo, Server};

const CHUNKS: usize = 24;

/// Deploys the TorchScript `model` in `work/<folder>` as service `name`
/// with `pytorch_cpu_1.6`, the seed's CPU plugin config and o1 on
/// `test_data`; returns the server and the service's prediction token.
fn deploy(work: &Path, folder: &str, model: &str, test_data: &str, name: &str) -> (Server, String) {
    let info = serde_json::json!({ "optimization_level": "o1", "test_data": test_data });
    deploy_with(work, folder, model, info, name)
}

/// [`deploy`] with the given `model_info` item for `model`.
fn deploy_with(
    work: &Path,
    folder: &str,
    model: &str,
    info: serde_json::Value,
    name: &str,
) -> (Server, String) {
    let cfg = serde_json::json!({
        "name": name,
        "model_path": folder,
        "processor": "pytorch_cpu_1.6",
        "metadata": { "instance": 1, "memory": 2000 },
        "plugins": [{
            "command": "blade --mode eas_plugin --optimize_for cpu",
            "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
            "config": { "model_info": { model: info } }
        }]
    });
    let cfg_path = work.join(format!("{name}.json"));
    std::fs::write(&cfg_path, cfg.to_string()).expect("write config");

    let server = Server::start(&work.join("data"), &[]);
    let out = server
        .cli(&["create", cfg_path.to_str().expect("UTF-8 path")])
        .output()
        .expect("run whet create");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "whet create failed:\n{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("[OK] Selected "), "{log}");
    let (s, detail) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    assert_eq!(s, 200, "{detail}");
    assert_eq!(detail["status"], "Running", "{detail}");
    let token = detail["token"].as_str().expect("token").to_string();
    (server, token)
}

#[test]
fn silero_torchscript_deploys_and_predicts_in_order() {
    let zoo = zoo();
    let work = tempfile::tempdir().expect("tempdir");
    let model_dir = work.path().join("silero");
    std::fs::create_dir_all(&model_dir).expect("model folder");
    std::os::unix::fs::symlink(zoo.join("silero_vad.jit"), model_dir.join("silero_vad.jit"))
        .expect("link the model");
    // Test data with positional inputs: input0 = a [1, 512] chunk per call,
    // input1 = the sample rate (an `int` argument of forward).
    let (shape, chunks) = npz_f32(&zoo.join("test_silero_vad.npz"), "chunks");
    assert_eq!(shape, vec![425, 512]);
    let (_, refs) = npz_f32(&zoo.join("test_silero_vad.npz"), "ref_prob_jit");
    let stacked = Tensor::new(
        vec![CHUNKS, 512],
        TensorData::F32(chunks[..CHUNKS * 512].to_vec()),
    )
    .expect("chunks");
    let sr = Tensor::new(vec![], TensorData::I64(vec![16000])).expect("sr");
    optimizer::data::write_npz(
        &model_dir.join("test_silero.npz"),
        &[("input0", &stacked), ("input1", &sr)],
    )
    .expect("write test data");
    let (server, token) = deploy(
        work.path(),
        "silero",
        "silero_vad.jit",
        "test_silero.npz",
        "silero_torch",
    );

    // The fresh instance starts from the module's initial state, so chunks
    // sent in order give PyTorch's probabilities for that order.
    for i in 0..8 {
        let body = serde_json::json!({"inputs": [
            {"name": "input0", "shape": [1, 512], "datatype": "FP32",
             "data": &chunks[i * 512..(i + 1) * 512]},
            {"name": "input1", "shape": [], "datatype": "INT64", "data": [16000]},
        ]});
        let (s, answer) = server.http(
            "POST",
            "/api/predict/silero_torch",
            Some(&token),
            body.to_string().as_bytes(),
        );
        assert_eq!(s, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON answer");
        assert_eq!(answer["outputs"][0]["name"], "output0", "{answer}");
        let p = answer["outputs"][0]["data"][0]
            .as_f64()
            .expect("probability");
        assert!(
            (p - f64::from(refs[i])).abs() <= 1e-4,
            "chunk {i}: {p} vs ref_prob_jit {}",
            refs[i]
        );
    }
}

/// Without test data, `input_shapes` declares the inputs (fp32); two batch
/// sizes make the batch dimension dynamic, so one request may hold any
/// number of rows. The search freezes the module, and the frozen candidates
/// are verified and reported like the others.
#[test]
fn a_torchscript_module_deploys_from_input_shapes_with_a_dynamic_batch() {
    use optimizer::torch::build::linear_relu;
    let work = tempfile::tempdir().expect("tempdir");
    let model_dir = work.path().join("shapes");
    std::fs::create_dir_all(&model_dir).expect("model folder");
    linear_relu(&model_dir.join("linear_relu.pt")).expect("build the module");
    let info = serde_json::json!({
        "optimization_level": "o1",
        "input_shapes": [["1*2"], ["8*2"]],
        "input_ranges": [["[-2,2]"], ["[-2,2]"]]
    });
    let (server, token) = deploy_with(
        work.path(),
        "shapes",
        "linear_relu.pt",
        info,
        "shapes_torch",
    );
    let (s, detail) = server.admin("GET", "/api/v2/services/shapes_torch", b"");
    assert_eq!(s, 200, "{detail}");
    let candidates = detail["report"]["candidates"].as_array().expect("report");
    for name in ["o1-torchscript-frozen", "o1-torchscript-frozen-optimized"] {
        let c = candidates
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {detail}"));
        assert_ne!(c["status"], "Rejected", "{c}");
    }
    // Three rows in one request: a batch size no sample had.
    predict_rows(
        &server,
        &token,
        "shapes_torch",
        &[[1.0, 2.0], [-1.5, 0.25], [0.75, -0.5]],
    );
}

/// Sends `rows` to the `linear_relu` service `name` as one [N, 2] request
/// and checks the answer against what the module's weights compute.
fn predict_rows(server: &Server, token: &str, name: &str, rows: &[[f32; 2]]) {
    use optimizer::torch::build::linear_relu_reference;
    let body = serde_json::json!({"inputs": [
        {"name": "input0", "shape": [rows.len(), 2], "datatype": "FP32", "data": rows.concat()},
    ]});
    let (s, answer) = server.http(
        "POST",
        &format!("/api/predict/{name}"),
        Some(token),
        body.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).expect("JSON answer");
    assert_eq!(
        answer["outputs"][0]["shape"],
        serde_json::json!([rows.len(), 2]),
        "{answer}"
    );
    let got: Vec<f64> = answer["outputs"][0]["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    let want: Vec<f32> = rows
        .iter()
        .flat_map(|r| linear_relu_reference(*r))
        .collect();
    assert_eq!(got.len(), want.len(), "{answer}");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - f64::from(*w)).abs() <= 1e-5, "{got:?} vs {want:?}");
    }
}

/// A TorchScript module of our own (scripted in code, saved as torch.jit.save
/// does) deploys with positional `.npz` test data and answers what its
/// weights compute.
#[test]
fn an_own_torchscript_module_deploys_and_matches_hand_computed_outputs() {
    use optimizer::torch::build::linear_relu;
    let work = tempfile::tempdir().expect("tempdir");
    let model_dir = work.path().join("own");
    std::fs::create_dir_all(&model_dir).expect("model folder");
    linear_relu(&model_dir.join("linear_relu.pt")).expect("build the module");
    let rows: Vec<[f32; 2]> = (0..8)
        .map(|i| [i as f32 * 0.5 - 2.0, 1.0 - i as f32 * 0.25])
        .collect();
    let x = Tensor::new(
        vec![rows.len(), 2],
        TensorData::F32(rows.iter().flatten().copied().collect()),
    )
    .expect("test inputs");
    optimizer::data::write_npz(&model_dir.join("test.npz"), &[("input0", &x)])
        .expect("write test data");
    let (server, token) = deploy(
        work.path(),
        "own",
        "linear_relu.pt",
        "test.npz",
        "own_torch",
    );

    // The signature comes from the test data, whose samples are [1, 2]: one
    // row per request.
    for row in &rows {
        predict_rows(&server, &token, "own_torch", &[*row]);
    }
}

/// The seed's Example 1 with a PyTorch processor: no plugin, no data. The
/// module is served as given, as EAS's PyTorch processor serves it: inputs
/// by position in whatever shape the client sends, outputs as the module
/// returns them, and a shape the module refuses is a 400 in libtorch's words.
#[test]
fn a_plain_pytorch_deploy_takes_inputs_of_any_shape_by_position() {
    use optimizer::torch::build::linear_relu;
    let work = tempfile::tempdir().expect("tempdir");
    let model_dir = work.path().join("plain");
    std::fs::create_dir_all(&model_dir).expect("model folder");
    linear_relu(&model_dir.join("linear_relu.pt")).expect("build the module");
    let cfg = serde_json::json!({
        "name": "plain_torch",
        "model_path": "plain",
        "processor": "pytorch_cpu_1.6",
        "metadata": { "instance": 1 }
    });
    let cfg_path = work.path().join("plain_torch.json");
    std::fs::write(&cfg_path, cfg.to_string()).expect("write config");
    let server = Server::start(&work.path().join("data"), &[]);
    let out = server
        .cli(&["create", cfg_path.to_str().expect("UTF-8 path")])
        .current_dir(work.path())
        .output()
        .expect("run whet create");
    assert!(
        out.status.success(),
        "whet create failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, detail) = server.admin("GET", "/api/v2/services/plain_torch", b"");
    assert_eq!(
        (s, detail["status"].as_str()),
        (200, Some("Running")),
        "{detail}"
    );
    assert_eq!(
        detail["signature"]["inputs"],
        serde_json::json!([]),
        "{detail}"
    );
    let token = detail["token"].as_str().expect("token").to_string();
    // One row, then five: the module takes any batch.
    predict_rows(&server, &token, "plain_torch", &[[1.0, 2.0]]);
    predict_rows(
        &server,
        &token,
        "plain_torch",
        &[
            [1.0, 2.0],
            [-1.5, 0.25],
            [0.75, -0.5],
            [0.0, 0.0],
            [3.0, -3.0],
        ],
    );
    // A shape the module refuses: [2, 3] rows cannot multiply its [2, 2].
    let body = serde_json::json!({"inputs": [
        {"name": "input0", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]},
    ]});
    let (s, answer) = server.http(
        "POST",
        "/api/predict/plain_torch",
        Some(&token),
        body.to_string().as_bytes(),
    );
    assert_eq!(s, 400, "{answer}");
    assert!(answer.contains("the module refused them"), "{answer}");
    // The server and the service live on.
    predict_rows(&server, &token, "plain_torch", &[[0.5, 0.5]]);
}
