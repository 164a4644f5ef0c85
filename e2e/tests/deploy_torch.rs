//! A TorchScript deploy end to end: the zoo's silero VAD (`silero_vad.jit`)
//! with `pytorch_cpu_1.6` and the seed's CPU plugin config, optimized by the
//! child `whet optimize`, served by the TorchScript engine, and predicted in
//! chunk order (the module carries state between calls). Needs the `torch`
//! feature here and in the `whet` binary (scripts/test.sh builds both).
#![cfg(feature = "torch")]

use optimizer::tensor::{Tensor, TensorData};
use whetstone_e2e::{npz_f32, zoo, Server};

const CHUNKS: usize = 24;

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
    let cfg = serde_json::json!({
        "name": "silero_torch",
        "model_path": "silero",
        "processor": "pytorch_cpu_1.6",
        "metadata": { "instance": 1, "memory": 2000 },
        "plugins": [{
            "command": "blade --mode eas_plugin --optimize_for cpu",
            "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
            "config": { "model_info": { "silero_vad.jit": {
                "optimization_level": "o1",
                "test_data": "test_silero.npz"
            } } }
        }]
    });
    let cfg_path = work.path().join("silero.json");
    std::fs::write(&cfg_path, cfg.to_string()).expect("write config");

    let server = Server::start(&work.path().join("data"), &[]);
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
    let (s, detail) = server.admin("GET", "/api/v2/services/silero_torch", b"");
    assert_eq!(s, 200, "{detail}");
    assert_eq!(detail["status"], "Running", "{detail}");
    let token = detail["token"].as_str().expect("token").to_string();

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
