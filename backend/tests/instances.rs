//! Serving instances refuse values an artifact was not built for.

use backend::instances::ServicePool;
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
    };
    std::fs::write(
        dir.path().join(META_FILE),
        serde_json::to_vec(&meta).unwrap(),
    )
    .unwrap();
    let pool = ServicePool::load(dir.path(), "svc", 2, "token".into(), None, None).unwrap();
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
