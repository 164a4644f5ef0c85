//! Warm-up end to end: the config's `warm_up_data_path` names a file in the
//! model folder; it goes into the artifact, and every runner replays its
//! samples before it is ready. A sample the model refuses fails the deploy
//! naming the field and the sample; a file that is not there is refused at
//! create.

use optimizer::data::write_npz;
use optimizer::tensor::{Tensor, TensorData};
use whetstone_e2e::Server;

fn rows(n: usize, width: usize) -> Tensor {
    let v = (0..n * width).map(|i| (i % 7) as f32 / 7.0).collect();
    Tensor::new(vec![n, width], TensorData::F32(v)).unwrap()
}

/// `whet create` of an MLP (4 → 3) with `warm_up` as its warm-up file, the
/// folder holding `files`; the CLI's output and whether it succeeded.
fn create(server: &Server, work: &std::path::Path, name: &str, warm_up: &str) -> (bool, String) {
    whetstone_e2e::create(
        server,
        work,
        &serde_json::json!({
            "name": name,
            "model_path": "m",
            "processor": "onnx_cpu",
            "metadata": { "instance": 2 },
            "warm_up_data_path": warm_up,
        }),
    )
}

#[test]
fn each_runner_replays_the_warm_up_file_and_a_bad_one_fails_the_deploy() {
    let work = tempfile::tempdir().unwrap();
    let m = work.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("mlp.onnx"), optimizer::onnx_build::mlp(4, 16, 3)).unwrap();
    write_npz(&m.join("warm.npz"), &[("x", &rows(8, 4))]).unwrap();
    write_npz(&m.join("wrong.npz"), &[("x", &rows(2, 5))]).unwrap();
    let server = Server::start(&work.path().join("data"), &[]);

    let (ok, log) = create(&server, work.path(), "warm", "warm.npz");
    assert!(ok, "{log}");
    let (_, d) = server.admin("GET", "/api/v2/services/warm", b"");
    assert_eq!(d["status"], "Running", "{d}");
    assert_eq!(d["running_instances"], 2, "{d}");
    // The file travels in the artifact, named in its metadata.
    let art = work
        .path()
        .join("data/artifacts")
        .join(d["artifact"].as_str().unwrap());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(art.join("artifact.json")).unwrap()).unwrap();
    assert_eq!(meta["warm_up"], "warm_up.npz", "{meta}");
    assert!(art.join("warm_up.npz").is_file());
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]});
    let token = d["token"].as_str().unwrap();
    let (s, answer) = server.http(
        "POST",
        "/api/predict/warm",
        Some(token),
        body.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{answer}");

    // Samples the model refuses: the deploy fails and says which.
    let (ok, log) = create(&server, work.path(), "cold", "wrong.npz");
    assert!(!ok, "{log}");
    let (_, d) = server.admin("GET", "/api/v2/services/cold", b"");
    assert_eq!(d["status"], "Failed", "{d}");
    let message = d["message"].as_str().unwrap_or_default();
    eprintln!("a refused warm-up: {message}");
    assert!(
        message.contains("warm_up_data_path") && message.contains("sample 0"),
        "{d}"
    );

    // A file that is not in the folder: refused at create, at its field.
    let (ok, log) = create(&server, work.path(), "none", "missing.npz");
    assert!(!ok, "{log}");
    assert!(
        log.contains("warm_up_data_path") && log.contains("not found"),
        "{log}"
    );
    let (s, _) = server.admin("GET", "/api/v2/services/none", b"");
    assert_eq!(s, 404);
}
