//! The zoo's TorchScript silero VAD through the TorchScript engine and the
//! o1 search: 425 chunks of 16 kHz audio in order (the module carries state
//! between calls) against the probabilities PyTorch computed. Needs the
//! `torch` feature and the zoo (`WHETSTONE_ZOO`, default `../../shared/zoo`).
#![cfg(feature = "torch")]

use std::path::{Path, PathBuf};

use optimizer::artifact::{ArtifactMeta, TorchSettings};
use optimizer::data;
use optimizer::engine::{EngineKind, InferenceEngine};
use optimizer::optimize::{optimize, OptimizeOptions};
use optimizer::tensor::{Tensor, TensorData};
use optimizer::torch::{engine, TorchEngine};
use shared::api::{CandidateStatus, ModelSignature, TensorSpec};

fn zoo() -> PathBuf {
    let dir = std::env::var_os("WHETSTONE_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/zoo"));
    assert!(
        dir.join("silero_vad.jit").is_file(),
        "the model zoo is missing: no silero_vad.jit in {}; set WHETSTONE_ZOO to the folder \
         holding the zoo's models and data files",
        dir.display()
    );
    dir
}

fn array(name: &str, shape: Vec<i64>) -> Vec<Tensor> {
    let sig = ModelSignature {
        format: "npz".into(),
        inputs: vec![TensorSpec {
            name: name.into(),
            datatype: "FP32".into(),
            shape,
        }],
        outputs: vec![],
    };
    data::load(&zoo().join("test_silero_vad.npz"), &sig)
        .expect("test_silero_vad.npz reads")
        .samples
        .into_iter()
        .map(|mut s| s.remove(0).1)
        .collect()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    match &t.data {
        TensorData::F32(v) => v.clone(),
        other => panic!("expected f32, got {other:?}"),
    }
}

/// The first `n` chunks as positional test data: input0 = chunk [1, 512],
/// input1 = the sample rate, a scalar shared by every call.
fn test_data(dir: &Path, chunks: &[Tensor]) -> PathBuf {
    let rows: Vec<f32> = chunks.iter().flat_map(f32s).collect();
    let stacked = Tensor::new(vec![chunks.len(), 512], TensorData::F32(rows)).expect("stack");
    let sr = Tensor::new(vec![], TensorData::I64(vec![16000])).expect("sr");
    let path = dir.join("silero_chunks.npz");
    data::write_npz(&path, &[("input0", &stacked), ("input1", &sr)]).expect("npz writes");
    path
}

#[test]
fn silero_jit_matches_pytorch_over_425_chunks_in_order() {
    let chunks = array("chunks", vec![-1, 512]);
    let refs: Vec<f32> = array("ref_prob_jit", vec![-1])
        .iter()
        .flat_map(f32s)
        .collect();
    assert_eq!(chunks.len(), 425);
    assert_eq!(refs.len(), 425);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = test_data(dir.path(), &chunks);
    let model = zoo().join("silero_vad.jit");
    let sig = engine::inspect(&model, Some(&data), &[], &[]).expect("signature from the test data");
    assert_eq!(sig.inputs.len(), 2);
    assert_eq!(sig.inputs[0].shape, vec![1, 512]);
    assert_eq!(sig.inputs[1].shape, Vec::<i64>::new());
    assert_eq!(sig.outputs.len(), 1);
    let mut e = TorchEngine::load(&model, sig, TorchSettings::INFERENCE).expect("loads");
    e.reset().expect("reset_states");
    let sr = Tensor::new(vec![], TensorData::I64(vec![16000])).expect("sr");
    let mut worst = 0f32;
    for (i, chunk) in chunks.iter().enumerate() {
        let out = e
            .run(&[
                ("input0".into(), chunk.clone()),
                ("input1".into(), sr.clone()),
            ])
            .expect("runs");
        let p = f32s(&out[0].1)[0];
        worst = worst.max((p - refs[i]).abs());
    }
    assert!(worst <= 1e-4, "max |p - ref_prob_jit| = {worst}");
}

#[test]
fn o1_search_writes_a_torchscript_artifact() {
    let chunks = array("chunks", vec![-1, 512]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = test_data(dir.path(), &chunks[..40]);
    let out = dir.path().join("artifact");
    let opts = OptimizeOptions {
        level: shared::config::OptimizationLevel::O2,
        test_data: Some(data),
        budget: optimizer::bench::Budget {
            warmup: 1,
            min_runs: 3,
            max_runs: 20,
            time: std::time::Duration::from_millis(200),
        },
        fallback_budget: std::time::Duration::from_secs(1),
        ..OptimizeOptions::new(zoo().join("silero_vad.jit"), out.clone())
    };
    let (report, meta) = optimize(&opts, &mut |_| {}).expect("the search runs");
    assert_eq!(meta.engine, EngineKind::TorchScript);
    assert!(out.join(&meta.model_file).is_file());
    assert_eq!(ArtifactMeta::read(&out).expect("meta reads"), meta);
    // As saved, inference, frozen, frozen + optimize_for_inference (no fp16
    // on a CPU), and at o2 dynamic INT8 of the linear layers.
    assert_eq!(report.candidates.len(), 5);
    assert_eq!(report.candidates[4].name, "o2-torchscript-dynamic-int8");
    assert!(report
        .candidates
        .iter()
        .any(|c| c.status == CandidateStatus::Selected));
    assert!(report
        .diagnosis
        .notes
        .iter()
        .any(|n| n.contains("o2 for TorchScript")));
    // Every o1 candidate agreed with the original: o1 changes no output.
    assert!(report
        .candidates
        .iter()
        .filter(|c| c.name.starts_with("o1") || c.name == "original")
        .all(|c| c.status != CandidateStatus::Rejected));
}
