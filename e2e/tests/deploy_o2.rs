//! An o2 deploy end to end: a CNN built by the test, calibration and test
//! data in the model folder, the seed's CPU plugin with optimization_level o2
//! and weight_adjustment; the report lists the INT8 candidates and the
//! service answers.

use std::process::Stdio;

use optimizer::data::write_npz;
use optimizer::tensor::{Tensor, TensorData};
use whetstone_e2e::Server;

fn images(n: usize, seed: u64) -> Tensor {
    let v = (0..n * 3 * 16 * 16)
        .map(|j| (((j as u64 * 2654435761 + seed) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::new(vec![n, 3, 16, 16], TensorData::F32(v)).unwrap()
}

#[test]
fn an_o2_deploy_quantizes_verifies_and_serves() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("cnn");
    std::fs::create_dir_all(&dir).unwrap();
    optimizer::onnx::save(
        &optimizer::onnx_build::cnn_model(16, 16, 10),
        &dir.join("cnn.onnx"),
    )
    .unwrap();
    write_npz(&dir.join("calib.npz"), &[("x", &images(32, 1))]).unwrap();
    write_npz(&dir.join("test.npz"), &[("x", &images(8, 2))]).unwrap();
    let cfg = serde_json::json!({
        "name": "cnn_o2",
        "model_path": "cnn",
        "processor": "onnx_cpu",
        "plugins": [{
            "command": "blade --mode eas_plugin --optimize_for cpu",
            "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
            "config": { "model_info": { "cnn.onnx": {
                "optimization_level": "o2",
                "test_data": "test.npz",
                "calibration_dataset": "calib.npz",
                "quantization": { "weight_adjustment": "true" },
                "accuracy": { "min_top1": 0.85 }
            } } }
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
    assert!(
        log.contains("[OK] Calibrated ") && log.contains("[OK] Bias correction: "),
        "{log}"
    );
    assert!(
        log.contains("[OK] Candidate o2-static-int8-minmax"),
        "{log}"
    );

    let (status, detail) = server.admin("GET", "/api/v2/services/cnn_o2", b"");
    assert_eq!(status, 200);
    let report = &detail["report"];
    assert_eq!(report["context"]["level"], "o2");
    let names: Vec<&str> = report["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in [
        "original",
        "o2-static-int8-minmax",
        "o2-static-int8-minmax-biascorr",
        "o2-static-int8-percentile99.999",
        "o2-static-int8-entropy",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let selected = report["selected"].as_str().unwrap();
    let row = report["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == selected)
        .unwrap();
    assert_eq!(row["status"], "Selected");

    let token = detail["token"].as_str().unwrap();
    let x = images(1, 3);
    let TensorData::F32(v) = &x.data else {
        unreachable!()
    };
    let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 3, 16, 16], "datatype": "FP32", "data": v}]});
    let (s, answer) = server.http(
        "POST",
        "/api/predict/cnn_o2",
        Some(token),
        body.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["outputs"][0]["shape"], serde_json::json!([1, 10]));
}

/// Real exports through the real server: a CNN written the old way (opset
/// 11, weights in `Constant` nodes) gets static INT8 after its weights are
/// folded and its opset raised; a segmentation net deployed with a region
/// gate reports its region agreement per candidate; both answer.
#[test]
fn old_exports_and_map_heads_deploy_with_o2() {
    use optimizer::onnx_build::{blob_images, cnn_model_old_export, seg_model};
    let work = tempfile::tempdir().unwrap();
    let server = Server::start(&work.path().join("data"), &[]);
    let cases = [
        (
            "old_cnn",
            cnn_model_old_export(16, 16, 10),
            16,
            serde_json::json!({"min_top1": 0.85}),
        ),
        (
            "seg_map",
            seg_model(8, 32),
            32,
            serde_json::json!({"min_region_agreement": 0.9}),
        ),
    ];
    for (name, model, size, accuracy) in cases {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        optimizer::onnx::save(&model, &dir.join("m.onnx")).unwrap();
        write_npz(
            &dir.join("calib.npz"),
            &[("x", &blob_images(16, size, size, 1))],
        )
        .unwrap();
        write_npz(
            &dir.join("test.npz"),
            &[("x", &blob_images(6, size, size, 2))],
        )
        .unwrap();
        let cfg = serde_json::json!({
            "name": name,
            "model_path": name,
            "processor": "onnx_cpu",
            "plugins": [{
                "command": "blade --mode eas_plugin --optimize_for cpu",
                "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
                "config": { "model_info": { "m.onnx": {
                    "optimization_level": "o2",
                    "test_data": "test.npz",
                    "calibration_dataset": "calib.npz",
                    "accuracy": accuracy
                } } }
            }]
        });
        let cfg_path = work.path().join(format!("{name}.json"));
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let out = server
            .cli(&["create", cfg_path.to_str().unwrap()])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{log}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (_, detail) = server.admin("GET", &format!("/api/v2/services/{name}"), b"");
        let report = &detail["report"];
        assert_eq!(report["baseline"], "ort-default", "{report}");
        let rows = report["candidates"].as_array().unwrap();
        let statics: Vec<_> = rows
            .iter()
            .filter(|c| c["name"].as_str().unwrap().starts_with("o2-static-int8"))
            .collect();
        assert!(!statics.is_empty(), "{log}");
        if name == "old_cnn" {
            let notes = report["diagnosis"]["notes"].to_string();
            assert!(notes.contains("opset 11 → 13"), "{notes}");
            assert!(!notes.contains("no Conv/Gemm/MatMul"), "{notes}");
        } else {
            assert!(
                statics
                    .iter()
                    .all(|c| c["latency"].as_array().unwrap().is_empty()
                        || c["region_agreement"].is_number()),
                "{statics:?}"
            );
        }
        // The service answers a prediction of the model's shape.
        let token = detail["token"].as_str().unwrap();
        let x = blob_images(1, size, size, 9);
        let TensorData::F32(v) = &x.data else {
            unreachable!()
        };
        let body = serde_json::json!({"inputs": [{"name": "x", "shape": [1, 3, size, size], "datatype": "FP32", "data": v}]});
        let (s, answer) = server.http(
            "POST",
            &format!("/api/predict/{name}"),
            Some(token),
            body.to_string().as_bytes(),
        );
        assert_eq!(s, 200, "{answer}");
    }
}
