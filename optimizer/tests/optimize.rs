//! The optimizer on models the tests build themselves (needs the ONNX
//! Runtime library: `scripts/install-onnxruntime.sh`).

use optimizer::data;
use optimizer::engine::{self, Engine, GraphLevel, SessionSettings};
use optimizer::onnx_build;
use optimizer::optimize::{optimize, OptimizeOptions};
use optimizer::tensor::{Tensor, TensorData};
use optimizer::OptimizerError;
use shared::api::CandidateStatus;

fn mlp_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("mlp.onnx");
    std::fs::write(&p, onnx_build::mlp(4, 16, 3)).unwrap();
    p
}

fn x(batch: usize, seed: f32) -> Tensor {
    Tensor::new(
        vec![batch, 4],
        TensorData::F32(
            (0..batch * 4)
                .map(|i| (i as f32 * 0.3 + seed).cos())
                .collect(),
        ),
    )
    .unwrap()
}

#[test]
fn built_model_runs_and_computes_the_mlp() {
    let dir = tempfile::tempdir().unwrap();
    let model = mlp_file(dir.path());
    let mut e = Engine::load(&model, &SessionSettings::new(GraphLevel::All, 1)).unwrap();
    assert_eq!(e.signature().inputs[0].name, "x");
    assert_eq!(e.signature().inputs[0].shape, vec![-1, 4]);
    let out = e.run(&[("x".into(), x(2, 0.0))]).unwrap();
    assert_eq!(out[0].0, "y");
    assert_eq!(out[0].1.shape, vec![2, 3]);
}

#[test]
fn inputs_are_checked_by_name_dtype_and_shape() {
    let dir = tempfile::tempdir().unwrap();
    let mut e = Engine::load(
        &mlp_file(dir.path()),
        &SessionSettings::new(GraphLevel::All, 1),
    )
    .unwrap();
    let err = e
        .run(&[(
            "x".into(),
            Tensor::new(vec![1, 5], TensorData::F32(vec![0.0; 5])).unwrap(),
        )])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input 'x'") && err.contains("expected shape [-1,4]"),
        "{err}"
    );
    let err = e
        .run(&[(
            "x".into(),
            Tensor::new(vec![1, 4], TensorData::I64(vec![0; 4])).unwrap(),
        )])
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected datatype FP32, got INT64"), "{err}");
    let err = e.run(&[("z".into(), x(1, 0.0))]).unwrap_err().to_string();
    assert!(
        err.contains("input 'z'") && err.contains("no such input"),
        "{err}"
    );
}

#[test]
fn a_file_that_is_not_onnx_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.onnx");
    std::fs::write(&p, b"definitely not a protobuf").unwrap();
    match engine::inspect(&p) {
        Err(OptimizerError::BadModel { path, .. }) => assert_eq!(path, p),
        other => panic!("expected BadModel, got {other:?}"),
    }
}

#[test]
fn npz_round_trip_and_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let sig = engine::inspect(&mlp_file(dir.path())).unwrap();
    let good = dir.path().join("test.npz");
    data::write_npz(&good, &[("x", &x(5, 1.0))]).unwrap();
    let ds = data::load(&good, &sig).unwrap();
    assert_eq!(ds.samples.len(), 5);
    assert_eq!(ds.samples[2][0].1, x(5, 1.0).batch_item(2));

    let wrong_name = dir.path().join("wrong.npz");
    data::write_npz(&wrong_name, &[("input", &x(5, 1.0))]).unwrap();
    let err = data::load(&wrong_name, &sig).unwrap_err().to_string();
    assert!(
        err.contains("wrong.npz")
            && err.contains("no array for model input 'x'")
            && err.contains("input"),
        "{err}"
    );

    let wrong_rank = dir.path().join("rank.npz");
    data::write_npz(
        &wrong_rank,
        &[(
            "x",
            &Tensor::new(vec![20], TensorData::F32(vec![0.0; 20])).unwrap(),
        )],
    )
    .unwrap();
    assert!(data::load(&wrong_rank, &sig)
        .unwrap_err()
        .to_string()
        .contains("expected rank 2"));

    let not_zip = dir.path().join("junk.npz");
    std::fs::write(&not_zip, b"junk").unwrap();
    assert!(data::load(&not_zip, &sig)
        .unwrap_err()
        .to_string()
        .contains("not a readable .npz"));
    let pth = dir.path().join("data.pth");
    std::fs::write(&pth, b"junk").unwrap();
    assert!(data::load(&pth, &sig)
        .unwrap_err()
        .to_string()
        .contains(".pth"));
}

#[test]
fn optimize_verifies_times_and_writes_an_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let model = mlp_file(dir.path());
    let test = dir.path().join("test.npz");
    data::write_npz(&test, &[("x", &x(6, 0.5))]).unwrap();
    let out = dir.path().join("artifact");
    let opts = OptimizeOptions {
        test_data: Some(test),
        inputs: Some(vec!["x".into()]),
        outputs: Some(vec!["y".into()]),
        input_shapes: vec![vec![vec![1, 4]], vec![vec![8, 4]]],
        budget: optimizer::bench::Budget {
            warmup: 1,
            min_runs: 3,
            max_runs: 20,
            time: std::time::Duration::from_millis(50),
        },
        fallback_budget: std::time::Duration::from_secs(30),
        ..OptimizeOptions::new(model.clone(), out.clone())
    };
    let mut lines = Vec::new();
    let (report, meta) = optimize(&opts, &mut |l: &str| lines.push(l.to_string())).unwrap();
    // original, ort-default, o1-fp32-graph, and the leader re-timed at all
    // cores (thread count is a search dimension).
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(
        report.candidates.len(),
        if cores > 1 { 4 } else { 3 },
        "{:?}",
        report
            .candidates
            .iter()
            .map(|c| &c.name)
            .collect::<Vec<_>>()
    );
    assert_eq!(report.candidates[0].name, "original");
    // Speedups are against ONNX Runtime's default session, the second row;
    // the optimizations-off row stays, with its own ratio to it.
    assert_eq!(report.candidates[1].name, "ort-default");
    assert_eq!(report.baseline, "ort-default");
    let p50 = |i: usize| report.candidates[i].latency[0].p50_ms;
    assert_eq!(report.baseline_ms, p50(1));
    assert_eq!(report.candidates[1].speedup, Some(1.0));
    let ratio = report.candidates[0].speedup.unwrap();
    assert!((ratio - p50(1) / p50(0)).abs() < 1e-9, "{ratio}");
    assert!((report.speedup - p50(1) / report.optimized_ms).abs() < 1e-9);
    if cores > 1 {
        let variant = &report.candidates[3];
        assert!(
            variant.name.ends_with(&format!("@{cores}threads")),
            "{}",
            variant.name
        );
        if report.selected == variant.name {
            assert_eq!(meta.session.intra_threads, cores);
        }
    }
    assert_eq!(report.diagnosis.samples, 6);
    assert_eq!(report.diagnosis.shape_groups, vec!["1*4", "8*4"]);
    assert!(report.diagnosis.shape_variation);
    for c in &report.candidates {
        assert_ne!(c.status, CandidateStatus::Rejected, "{c:?}");
        assert_eq!(c.latency.len(), 2, "timed over both shape groups");
        assert!(c.max_rel_error.unwrap() <= 1e-3);
    }
    assert_eq!(
        report
            .candidates
            .iter()
            .filter(|c| c.status == CandidateStatus::Selected)
            .count(),
        1
    );
    assert_eq!(meta.candidate, report.selected);
    for f in ["model.onnx", "artifact.json", "report.json"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // The artifact serves the same answers as the original.
    let mut a = Engine::load(&out.join("model.onnx"), &meta.session).unwrap();
    let mut b = Engine::load(&model, &SessionSettings::new(GraphLevel::Disable, 1)).unwrap();
    let input = vec![("x".to_string(), x(3, 2.0))];
    let (ya, yb) = (a.run(&input).unwrap(), b.run(&input).unwrap());
    let mut agree = optimizer::verify::Agreement::default();
    agree.update(&yb, &ya).unwrap();
    assert!(agree.passes(&optimizer::verify::Gate::O1));
    assert!(
        lines.iter().any(|l| l.starts_with("[OK] Selected ")),
        "{lines:?}"
    );
}

#[test]
fn declared_names_that_the_graph_lacks_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = OptimizeOptions {
        inputs: Some(vec!["input_ids".into()]),
        fallback_budget: std::time::Duration::from_secs(30),
        ..OptimizeOptions::new(mlp_file(dir.path()), dir.path().join("out"))
    };
    let err = optimize(&opts, &mut |_: &str| {}).unwrap_err().to_string();
    assert!(
        err.contains("model_info.inputs names 'input_ids'") && err.contains("x"),
        "{err}"
    );
}

#[test]
fn without_test_data_inputs_are_synthesized_from_shapes_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let sig = engine::inspect(&mlp_file(dir.path())).unwrap();
    let shapes = data::concrete_shapes(&sig, Some(&[vec![2, 4]]), 16).unwrap();
    let range = [shared::config::ValueRange::Numeric { lo: 0.3, hi: 0.9 }];
    let s = data::synthesize(&sig, &shapes, Some(&range), 1).unwrap();
    let TensorData::F32(v) = &s[0].1.data else {
        panic!()
    };
    assert_eq!(v.len(), 8);
    assert!(v.iter().all(|x| (0.3..0.9).contains(x)), "{v:?}");
    let err = data::concrete_shapes(&sig, Some(&[vec![2, 5]]), 16)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2, 5]") && err.contains("'x'"), "{err}");
}

fn zoo() -> std::path::PathBuf {
    let p = std::env::var_os("WHETSTONE_ZOO")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/zoo")
        });
    assert!(
        p.join("silero_vad.onnx").is_file(),
        "the model zoo is missing at {} (set WHETSTONE_ZOO)",
        p.display()
    );
    p
}

#[test]
fn silero_with_sr_fixed_by_input_ranges_gets_a_folded_candidate_and_a_guarded_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let range = |s: &str| shared::config::parse_range(s).unwrap();
    let opts = OptimizeOptions {
        input_shapes: vec![vec![vec![1, 576], vec![2, 1, 128], vec![1]]],
        input_ranges: vec![vec![
            range("[-1,1]"),
            range("[0,0]"),
            range("[16000,16000]"),
        ]],
        budget: optimizer::bench::Budget {
            warmup: 1,
            min_runs: 3,
            max_runs: 20,
            time: std::time::Duration::from_millis(50),
        },
        fallback_budget: std::time::Duration::from_secs(10),
        ..OptimizeOptions::new(zoo().join("silero_vad.onnx"), dir.path().join("out"))
    };
    let mut lines = Vec::new();
    let (report, meta) = optimize(&opts, &mut |l: &str| lines.push(l.to_string())).unwrap();
    let folded = report
        .candidates
        .iter()
        .find(|c| c.name == "o1-cleanup")
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert_ne!(folded.status, CandidateStatus::Rejected, "{folded:?}");
    assert!(
        folded.description.contains("if_fold"),
        "{}",
        folded.description
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[OK] Graph clean-up:") && l.contains("if_fold")),
        "{lines:#?}"
    );
    if meta.candidate == "o1-cleanup" {
        assert_eq!(meta.fixed_inputs.get("sr"), Some(&16000.0));
    } else {
        assert!(
            meta.fixed_inputs.is_empty(),
            "only the folded graph is specialized"
        );
    }
}

#[test]
fn a_cuda_session_is_the_cuda_provider_or_a_clear_error_never_the_cpu() {
    use optimizer::engine::ExecutionProvider;
    let settings =
        SessionSettings::new(GraphLevel::All, 1).on(ExecutionProvider::Cuda { device_id: 0 });
    match Engine::from_bytes(&onnx_build::mlp(4, 16, 3), &settings) {
        Err(OptimizerError::Provider(msg)) => {
            assert!(
                msg.contains("the CUDA execution provider (device 0) is not usable"),
                "{msg}"
            );
            assert!(msg.contains("never run on the CPU"), "{msg}");
            assert!(msg.contains("install-onnxruntime.sh --gpu"), "{msg}");
        }
        Err(other) => panic!("expected a provider error, got {other}"),
        // Only where the GPU build of ONNX Runtime and a GPU are present.
        Ok(_) => {
            use ort::ep::ExecutionProvider as _;
            assert_eq!(ort::ep::CUDA::is_available().ok(), Some(true));
        }
    }
    // Loading from a file reports the provider too, not a bad model.
    let dir = tempfile::tempdir().unwrap();
    let model = mlp_file(dir.path());
    if let Err(e) = Engine::load(&model, &settings) {
        assert!(matches!(e, OptimizerError::Provider(_)), "{e}");
    }
}

#[test]
fn a_tensorrt_session_is_tensorrt_or_a_clear_error_never_the_cpu() {
    use optimizer::engine::{ExecutionProvider, TensorRt};
    let trt = TensorRt {
        fp16: true,
        int8: true,
    };
    // TensorRT on the CPU is a contradiction, refused before anything loads.
    let cpu = SessionSettings::new(GraphLevel::All, 1).with_tensorrt(trt);
    match Engine::from_bytes(&onnx_build::mlp(4, 16, 3), &cpu) {
        Err(OptimizerError::Provider(msg)) => {
            assert!(msg.contains("TensorRT runs on a CUDA device"), "{msg}")
        }
        Err(other) => panic!("expected a provider error, got {other}"),
        Ok(_) => panic!("a TensorRT session ran on the CPU"),
    }
    let gpu = SessionSettings::new(GraphLevel::All, 1)
        .on(ExecutionProvider::Cuda { device_id: 0 })
        .with_tensorrt(trt);
    match Engine::from_bytes(&onnx_build::mlp(4, 16, 3), &gpu) {
        Err(OptimizerError::Provider(msg)) => {
            assert!(msg.contains("is not usable"), "{msg}");
            assert!(msg.contains("TensorRT") || msg.contains("CUDA"), "{msg}");
        }
        Err(other) => panic!("expected a provider error, got {other}"),
        // Only where ONNX Runtime's GPU build, TensorRT and a GPU are present.
        Ok(_) => {
            use ort::ep::ExecutionProvider as _;
            assert_eq!(ort::ep::TensorRT::is_available().ok(), Some(true));
        }
    }
    // Stored with the artifact, and absent (as before) when not used.
    let back: SessionSettings =
        serde_json::from_value(serde_json::to_value(&gpu).unwrap()).unwrap();
    assert_eq!(back, gpu);
    let plain = serde_json::to_value(SessionSettings::new(GraphLevel::All, 1)).unwrap();
    assert!(plain.get("tensorrt").is_none(), "{plain}");
}

#[test]
fn execution_providers_parse_and_old_artifacts_stay_on_the_cpu() {
    use optimizer::engine::ExecutionProvider;
    assert_eq!("cpu".parse(), Ok(ExecutionProvider::Cpu));
    assert_eq!(
        "cuda:1".parse(),
        Ok(ExecutionProvider::Cuda { device_id: 1 })
    );
    assert_eq!("cuda".parse(), Ok(ExecutionProvider::Cuda { device_id: 0 }));
    for bad in ["gpu", "cuda:", "cuda:-1", "cuda:x", "CPU"] {
        let err = bad.parse::<ExecutionProvider>().expect_err(bad);
        assert!(err.contains("expected `cpu` or `cuda:N`"), "{err}");
    }
    assert_eq!(
        ExecutionProvider::Cuda { device_id: 2 }.to_string(),
        "cuda:2"
    );
    // Settings stored before GPUs existed have no provider: CPU.
    let old: SessionSettings =
        serde_json::from_str(r#"{"graph_level":"all","intra_threads":2,"spinning":false}"#)
            .unwrap();
    assert_eq!(old.provider, ExecutionProvider::Cpu);
    // CPU settings are written as before; CUDA ones name the device.
    let cpu = serde_json::to_value(SessionSettings::new(GraphLevel::All, 1)).unwrap();
    assert!(cpu.get("provider").is_none(), "{cpu}");
    let gpu = SessionSettings::new(GraphLevel::All, 1).on(ExecutionProvider::Cuda { device_id: 1 });
    let back: SessionSettings =
        serde_json::from_value(serde_json::to_value(&gpu).unwrap()).unwrap();
    assert_eq!(back, gpu);
}

#[test]
fn gpu_and_cpu_artifacts_have_different_targets() {
    use optimizer::artifact::{artifact_key, cpu_target, gpu_target};
    use optimizer::optimize::TargetDevice;
    let t4 = TargetDevice::Cuda {
        device_id: 0,
        name: "Tesla T4".into(),
    };
    assert_eq!(t4.target(), "gpu-cuda-Tesla_T4");
    assert_eq!(TargetDevice::Cpu.target(), cpu_target());
    let cfg = serde_json::json!({"plugin": null});
    let keys = [
        artifact_key("abc", &cfg, &cpu_target()),
        artifact_key("abc", &cfg, &gpu_target("Tesla T4")),
        artifact_key("abc", &cfg, &gpu_target("Tesla V100-SXM2-16GB")),
    ];
    assert_ne!(keys[0], keys[1]);
    assert_ne!(keys[1], keys[2]);
}

#[test]
fn optimizing_for_a_cuda_device_without_one_fails_clearly() {
    use optimizer::optimize::TargetDevice;
    let dir = tempfile::tempdir().unwrap();
    let model = mlp_file(dir.path());
    let opts = OptimizeOptions {
        device: TargetDevice::Cuda {
            device_id: 0,
            name: "Tesla T4".into(),
        },
        ..OptimizeOptions::new(model, dir.path().join("out"))
    };
    match optimize(&opts, &mut |_| {}) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("CUDA execution provider"), "{msg}");
        }
        // With a real GPU: fp16 candidates were tried, and the artifact is a GPU one.
        Ok((report, meta)) => {
            use ort::ep::ExecutionProvider as _;
            assert_eq!(ort::ep::CUDA::is_available().ok(), Some(true));
            assert!(report
                .candidates
                .iter()
                .any(|c| c.name.starts_with("o1-fp16")));
            assert_eq!(meta.target, "gpu-cuda-Tesla_T4");
            assert!(!meta.session.provider.is_cpu());
        }
    }
}
