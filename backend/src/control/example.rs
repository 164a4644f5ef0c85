//! The built-in example: a small ONNX perceptron (4 inputs, 3 outputs),
//! its test data and a service config that deploys it with the Blade
//! plugin. `whet example-model` writes it to a folder; the console's
//! "ready to deploy" example gets it as an upload of the server's own.

use optimizer::tensor::{Tensor, TensorData};

/// The model folder's files: (name, bytes).
pub fn files() -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let samples = 16;
    let x = Tensor::new(
        vec![samples, 4],
        TensorData::F32(
            (0..samples * 4)
                .map(|i| ((i * 7919) % 100) as f32 / 100.0)
                .collect(),
        ),
    )?;
    let tmp = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    optimizer::data::write_npz(tmp.path(), &[("x", &x)]).map_err(|e| e.to_string())?;
    let npz = std::fs::read(tmp.path()).map_err(|e| e.to_string())?;
    Ok(vec![
        ("mlp.onnx", optimizer::onnx_build::mlp(4, 64, 3)),
        ("test_data.npz", npz),
    ])
}

/// The service config of the example, its model at `model_path`.
pub fn config(model_path: &str) -> serde_json::Value {
    serde_json::json!({
        "name": "example_mlp",
        "model_path": model_path,
        "processor": "onnx_cpu",
        "metadata": { "instance": 1, "memory": 1000 },
        "plugins": [{
            "command": "blade --mode eas_plugin --optimize_for cpu",
            "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
            "config": { "model_info": { "mlp.onnx": {
                "optimization_level": "o1",
                "test_data": "test_data.npz",
                "input_shapes": [["1*4"], ["32*4"]]
            } } }
        }]
    })
}

/// A request the example answers.
pub fn request() -> serde_json::Value {
    serde_json::json!({ "inputs": [{ "name": "x", "shape": [2, 4], "datatype": "FP32", "data": [[0.1, 0.2, 0.3, 0.4], [1.0, 0.5, 0.0, -0.5]] }] })
}

/// The model folder as a tar archive (what an upload of a folder is).
pub fn archive() -> Result<Vec<u8>, String> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in files()? {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice())
            .map_err(|e| e.to_string())?;
    }
    tar.into_inner().map_err(|e| e.to_string())
}
