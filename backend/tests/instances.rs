//! Serving instances refuse values an artifact was not built for.

use backend::control::Settings;
use backend::serving::instances::ServicePool;
use optimizer::artifact::{ArtifactMeta, META_FILE, MODEL_FILE, OPTIMIZER_VERSION};
use optimizer::engine::{GraphLevel, SessionSettings};
use optimizer::tensor::{Tensor, TensorData};

#[tokio::test]
async fn a_pool_refuses_other_values_of_a_fixed_input() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(MODEL_FILE),
        optimizer::onnx_build::mlp(4, 8, 2),
    )
    .unwrap();
    let signature = optimizer::engine::inspect(&dir.path().join(MODEL_FILE)).unwrap();
    let meta = ArtifactMeta {
        model_file: MODEL_FILE.into(),
        candidate: "o1-cleanup".into(),
        session: SessionSettings::new(GraphLevel::All, 1),
        signature,
        optimizer_version: OPTIMIZER_VERSION.into(),
        target: "test".into(),
        fixed_inputs: [("x".to_string(), 1.0)].into(),
        engine: Default::default(),
        torch: None,
        warm_up: None,
    };
    std::fs::write(
        dir.path().join(META_FILE),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let settings = Settings::new(data.path().into(), env!("CARGO_BIN_EXE_whet").into());
    let pool = ServicePool::load(
        &settings,
        dir.path(),
        "svc",
        2,
        "token".into(),
        &Default::default(),
        None,
    )
    .unwrap();
    assert_eq!(pool.len(), 2);
    let input = |v: f32| {
        vec![(
            "x".to_string(),
            Tensor::new(vec![1, 4], TensorData::F32(vec![v; 4])).unwrap(),
        )]
    };
    assert!(pool.run(input(1.0)).await.is_ok());
    let err = pool.run(input(2.0)).await.unwrap_err().to_string();
    assert!(
        err.contains("input 'x'") && err.contains("optimized for x = 1") && err.contains("got 2"),
        "{err}"
    );
}

/// An artifact whose files no longer match its seal is never served: the
/// runner verifies it before it loads anything.
#[test]
fn a_damaged_artifact_is_refused_by_its_runner() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(MODEL_FILE),
        optimizer::onnx_build::mlp(4, 8, 2),
    )
    .unwrap();
    let signature = optimizer::engine::inspect(&dir.path().join(MODEL_FILE)).unwrap();
    let meta = ArtifactMeta {
        model_file: MODEL_FILE.into(),
        candidate: "original".into(),
        session: SessionSettings::new(GraphLevel::All, 1),
        signature,
        optimizer_version: OPTIMIZER_VERSION.into(),
        target: "test".into(),
        fixed_inputs: Default::default(),
        engine: Default::default(),
        torch: None,
        warm_up: None,
    };
    std::fs::write(
        dir.path().join(META_FILE),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    optimizer::artifact::seal(dir.path()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let settings = Settings::new(data.path().into(), env!("CARGO_BIN_EXE_whet").into());
    let load = || {
        ServicePool::load(
            &settings,
            dir.path(),
            "svc",
            1,
            "t".into(),
            &Default::default(),
            None,
        )
    };
    assert!(load().is_ok());
    // One byte of the model changed after it was sealed.
    let mut bytes = std::fs::read(dir.path().join(MODEL_FILE)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.path().join(MODEL_FILE), bytes).unwrap();
    let err = load().err().expect("a damaged artifact was served");
    assert!(
        err.contains("model.onnx") && err.contains("damaged"),
        "{err}"
    );
}
