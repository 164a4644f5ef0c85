//! TensorFlow frozen graphs deploy like ONNX models: the zoo's TextCNN and
//! MobileNetV2 `.pb` files go through the real server with the seed's
//! TensorFlow config (`tensorflow_cpu_1.15`, `model_info` naming graph nodes,
//! `.npy` feed-dict test data), are imported, optimized, verified and served
//! under their TensorFlow tensor names, and match the zoo's references.

use std::process::Stdio;

use optimizer::tensor::{Tensor, TensorData};
use shared::api::ModelSignature;
use whetstone_e2e::{npz_f32, zoo, Server};

fn request(sample: &[(String, Tensor)]) -> serde_json::Value {
    let inputs: Vec<serde_json::Value> = sample
        .iter()
        .map(|(name, t)| {
            let data = match &t.data {
                TensorData::F32(v) => serde_json::json!(v),
                TensorData::I32(v) => serde_json::json!(v),
                TensorData::I64(v) => serde_json::json!(v),
                other => panic!("unexpected test input type {other:?}"),
            };
            serde_json::json!({"name": name, "shape": t.shape, "datatype": t.dtype().kserve_name(), "data": data})
        })
        .collect();
    serde_json::json!({ "inputs": inputs })
}

/// Deploys `pb` with the seed's TensorFlow plugin config and checks every
/// test sample's `output` against row i of `reference`, by relative L2 error.
fn deploy_and_compare(
    name: &str,
    pb: &str,
    test_npy: &str,
    io: serde_json::Value,
    output: &str,
    reference: (&str, &str),
    tolerance: f32,
) {
    let zoo = zoo();
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in [pb, test_npy] {
        std::os::unix::fs::symlink(zoo.join(f), model.join(f)).unwrap();
    }
    let mut info = serde_json::json!({ "optimization_level": "o1", "test_data": test_npy });
    if let (Some(info), Some(io)) = (info.as_object_mut(), io.as_object()) {
        info.extend(io.clone());
    }
    let cfg = serde_json::json!({
        "name": name,
        "model_path": "model",
        "processor": "tensorflow_cpu_1.15",
        "metadata": { "instance": 1, "memory": 4000 },
        "plugins": [{
            "command": "blade --mode eas_plugin --optimize_for cpu",
            "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
            "config": { "model_info": { pb: info } }
        }]
    });
    let cfg_path = work.path().join("service.json");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();

    let server = Server::start(&work.path().join("data"), &[]);
    let out = server
        .cli(&["create", cfg_path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("[OK] Service is running"), "{log}");

    let (s, detail) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
    assert_eq!(s, 200);
    let sig: ModelSignature = serde_json::from_value(detail["signature"].clone()).unwrap();
    assert!(sig.outputs.iter().any(|o| o.name == output), "{sig:?}");
    let token = detail["token"].as_str().unwrap();

    let data = optimizer::data::load(&zoo.join(test_npy), &sig).unwrap();
    let (shape, want) = npz_f32(&zoo.join(reference.0), reference.1);
    let width: usize = shape[1..].iter().map(|&d| d as usize).product();
    assert_eq!(data.samples.len() as u64, shape[0]);
    for (i, sample) in data.samples.iter().enumerate() {
        let (s, answer) = server.http(
            "POST",
            &format!("/api/predict/{name}"),
            Some(token),
            request(sample).to_string().as_bytes(),
        );
        assert_eq!(s, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let got: Vec<f32> = answer["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == output)
            .unwrap_or_else(|| panic!("no output {output} in {answer}"))["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let want = &want[i * width..(i + 1) * width];
        assert_eq!(got.len(), want.len());
        let diff: f32 = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt();
        let norm: f32 = want.iter().map(|b| b * b).sum::<f32>().sqrt();
        assert!(
            diff <= tolerance * norm,
            "sample {i}: relative error {}",
            diff / norm
        );
    }
}

#[test]
fn textcnn_frozen_graph_deploys_and_matches_its_reference() {
    deploy_and_compare(
        "textcnn_tf",
        "textcnn_frozen.pb",
        "test_textcnn.npy",
        serde_json::json!({ "inputs": ["input_ids"], "outputs": ["l2_normalize"] }),
        "l2_normalize:0",
        ("ref_textcnn.npz", "l2_normalize"),
        1e-4,
    );
}

#[test]
fn mobilenet_frozen_graph_deploys_with_default_inputs_and_outputs() {
    // No inputs/outputs declared: the graph's Placeholder and its one sink
    // (the final Identity node).
    deploy_and_compare(
        "mobilenet_tf",
        "mobilenet_v2_frozen.pb",
        "test_mobilenet_v2.npy",
        serde_json::json!({}),
        "Identity:0",
        ("ref_mobilenet_v2.npz", "output"),
        1e-4,
    );
}
