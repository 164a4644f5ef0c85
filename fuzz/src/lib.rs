//! What the fuzz targets share: a scratch file per process (the readers
//! under test take paths, as the optimizer's children do), and the model
//! signatures requests are checked against.

use std::path::PathBuf;
use std::sync::OnceLock;

use shared::api::{ModelSignature, TensorSpec};

/// Writes `data` to a scratch file named `name` (its extension picks the
/// reader) and returns its path.
pub fn scratch(name: &str, data: &[u8]) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("a scratch folder"));
    let path = dir.path().join(name);
    std::fs::write(&path, data).expect("write the scratch file");
    path
}

fn spec(name: &str, datatype: &str, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
    }
}

/// Two inputs of different types and ranks, dynamic batch, and one output:
/// enough for the request decoders to check names, types and shapes.
pub fn signature() -> ModelSignature {
    ModelSignature {
        format: "onnx".into(),
        inputs: vec![spec("x", "FP32", &[-1, 4]), spec("ids", "INT64", &[-1, -1])],
        outputs: vec![spec("y", "FP32", &[-1, 3])],
    }
}
