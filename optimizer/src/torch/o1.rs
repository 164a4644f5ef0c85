//! The search for a TorchScript module: the module as saved, in inference
//! mode, frozen (`torch.jit.freeze`), frozen and optimized for inference
//! (`torch.jit.optimize_for_inference`, CPU), and in fp16 on a GPU; each is
//! verified against the original on the test data (samples in order, after a
//! reset, so stateful modules see the same sequence) and timed like ONNX
//! candidates; the fastest that passes is the artifact.

use std::path::Path;
use std::time::Instant;

use shared::api::{
    CandidateReport, CandidateStatus, Diagnosis, ModelSignature, OptimizationReport, ReportContext,
    TensorSpec,
};
use shared::config::OptimizationLevel;

use super::engine::{TorchEngine, DESCRIPTION, RESET_METHOD};
use super::freeze::{freeze, static_int8, Freeze};
use crate::artifact::{self, ArtifactMeta, TorchSettings};
use crate::bench;
use crate::data::Sample;
use crate::engine::{EngineKind, ExecutionProvider, GraphLevel, InferenceEngine, SessionSettings};
use crate::error::{OptimizerError, Result};
use crate::optimize::{
    cpu_name, describe_row, first_p50, rejected_report, timing_sets, verify_and_time,
    OptimizeOptions, Progress,
};
use crate::tensor::Tensor;
use crate::verify::Gate;

/// Where a candidate runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Any,
    CpuOnly,
    GpuOnly,
}

struct Candidate {
    name: &'static str,
    description: &'static str,
    /// Frozen from the original into a file of its own; `None` runs the
    /// original file.
    freeze: Option<Freeze>,
    settings: TorchSettings,
    target: Target,
    /// An o2 candidate: built only at o2, judged by the o2 gate.
    o2: bool,
}

const CANDIDATES: [Candidate; 7] = [
    Candidate {
        name: "original",
        description: "the TorchScript module as saved (its training flag as saved, autograd on), 1 intra-op thread",
        freeze: None,
        settings: TorchSettings::AS_SAVED,
        target: Target::Any,
        o2: false,
    },
    Candidate {
        name: "o1-torchscript-inference",
        description: "eval() and no autograd (no graph recorded for backward), 1 intra-op thread",
        freeze: None,
        settings: TorchSettings::INFERENCE,
        target: Target::Any,
        o2: false,
    },
    Candidate {
        name: "o1-torchscript-frozen",
        description: "torch.jit.freeze: eval(), parameters and unmutated attributes inlined as constants and folded (conv+batch norm, linear+add), no autograd",
        freeze: Some(Freeze::Frozen),
        settings: TorchSettings::INFERENCE,
        target: Target::Any,
        o2: false,
    },
    Candidate {
        name: "o1-torchscript-frozen-optimized",
        description: "frozen, then torch.jit.optimize_for_inference (fusions and MKL-DNN conversions for CPU inference; refused when libtorch cannot load its result back, as for convolutions), no autograd",
        freeze: Some(Freeze::ForInference),
        settings: TorchSettings::INFERENCE,
        target: Target::CpuOnly,
        o2: false,
    },
    Candidate {
        name: "o1-torchscript-fp16",
        description: "eval(), no autograd, parameters and float inputs in fp16 on the GPU (outputs answered in fp32)",
        freeze: None,
        settings: TorchSettings {
            inference: true,
            half: true,
        },
        target: Target::GpuOnly,
        o2: false,
    },
    Candidate {
        name: "o2-torchscript-dynamic-int8",
        description: "frozen, then every linear, LSTM and GRU layer with constant weights in dynamic INT8 (weights int8 per output channel, prepacked for fbgemm; activations quantized at run time: quantized::linear_dynamic, aten::quantized_lstm/gru), no autograd",
        freeze: Some(Freeze::DynamicInt8),
        settings: TorchSettings::INFERENCE,
        target: Target::CpuOnly,
        o2: true,
    },
    Candidate {
        name: "o2-torchscript-static-int8",
        description: "static INT8 through libtorch's graph-mode quantization driven from C++: convolutions folded with their batch norms, observers around every convolution and linear layer, the calibration_dataset run through them, then fbgemm INT8 kernels (quantized::conv2d, conv2d_relu, linear; activations per tensor, weights per output channel), frozen, no autograd",
        freeze: Some(Freeze::StaticInt8),
        settings: TorchSettings::INFERENCE,
        target: Target::CpuOnly,
        o2: true,
    },
];

/// A folder removed when dropped.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: a leftover scratch folder is untidy, not wrong.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What o2 does and does not do for TorchScript, for the report.
const O2_SCOPE: &str = "o2 for TorchScript: dynamic INT8 of linear, LSTM and GRU layers, and, \
                        with a calibration_dataset, static INT8 of convolutions and linear layers \
                        (both through the C++ shim)";

/// Test data (positional inputs) or, without it, inputs synthesized from the
/// first `input_shapes` group; dimensions that `input_shapes` groups vary
/// are dynamic.
fn inputs(
    opts: &OptimizeOptions,
    notes: &mut Vec<String>,
) -> Result<(Vec<Sample>, Vec<TensorSpec>, String)> {
    let (samples, specs, source) = super::engine::positional_inputs(
        opts.test_data.as_deref(),
        &opts.input_shapes,
        &opts.input_ranges,
        4,
    )?;
    if opts.test_data.is_none() {
        notes.push(format!(
            "no test_data: verified on {} fp32 inputs synthesized from input_shapes",
            samples.len()
        ));
    }
    Ok((samples, specs, source))
}

fn rejected(c: &Candidate, message: String) -> CandidateReport {
    rejected_report(c.name, c.description, message)
}

/// Verifies one candidate against `reference` (filled by the first) and
/// times it on every timing set.
#[allow(clippy::too_many_arguments)]
fn evaluate(
    c: &Candidate,
    model: &Path,
    provider: ExecutionProvider,
    sig: &ModelSignature,
    samples: &[Sample],
    reference: &mut Vec<Vec<(String, Tensor)>>,
    timing: &[(String, Sample)],
    gate: &Gate,
    budget: &bench::Budget,
) -> Result<CandidateReport> {
    let mut engine = TorchEngine::load_on(model, sig.clone(), c.settings, provider)?;
    engine.reset()?;
    let mut row = verify_and_time(
        &mut engine,
        (c.name, c.description),
        gate,
        samples,
        reference,
        timing,
        budget,
    )?;
    row.size_bytes = std::fs::metadata(model).map(|m| m.len()).unwrap_or(0);
    Ok(row)
}

/// Runs the TorchScript search and writes `model.pt`, `artifact.json` and
/// `report.json` into `opts.out_dir`.
pub fn optimize(
    opts: &OptimizeOptions,
    progress: Progress<'_>,
) -> Result<(OptimizationReport, ArtifactMeta)> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| OptimizerError::io(&opts.out_dir, e))?;
    let provider = opts.device.provider();
    let mut notes = vec![
        "TorchScript: one intra-op thread per instance (libtorch's idle OpenMP threads spin and \
         steal the cores other instances use)"
            .to_string(),
    ];
    let (samples, input_specs, source) = inputs(opts, &mut notes)?;
    progress(&format!("[OK] Verification data: {source}"));
    let mut sig = super::engine::signature(input_specs);
    let timing = timing_sets(&sig, opts, &samples)?;
    let shape_groups: Vec<String> = timing.iter().map(|(l, _)| l.clone()).collect();
    let gate = Gate::O1.with_overrides(opts.accuracy.as_ref());
    let gate_o2 = Gate::O2.with_overrides(opts.accuracy.as_ref());
    // Frozen candidates are files of their own, in a folder that goes away
    // however the search ends (only the winner is copied into the artifact).
    let work = Scratch(opts.out_dir.join("candidates"));
    std::fs::create_dir_all(&work.0).map_err(|e| OptimizerError::io(&work.0, e))?;

    // Static INT8 calibrates on the calibration_dataset (positional
    // inputs, as test_data); without one it is not built, as for ONNX.
    let calibration = match (&opts.calibration, opts.level) {
        (Some(p), OptimizationLevel::O2) => Some(crate::data::load_positional(p)?.0.samples),
        (None, OptimizationLevel::O2) => {
            notes.push(
                "no calibration_dataset: static INT8 of convolutions not tried (dynamic INT8 only)"
                    .into(),
            );
            None
        }
        _ => None,
    };
    let mut reference = Vec::new();
    let mut rows: Vec<CandidateReport> = Vec::new();
    // The candidates run, each with its module file (parallel to `rows`).
    let mut tried: Vec<(&Candidate, std::path::PathBuf)> = Vec::new();
    for c in &CANDIDATES {
        let skip = match c.target {
            Target::Any => false,
            Target::CpuOnly => !provider.is_cpu(),
            Target::GpuOnly => provider.is_cpu(),
        } || (c.o2 && opts.level != OptimizationLevel::O2)
            || (c.freeze == Some(Freeze::StaticInt8) && calibration.is_none());
        if skip {
            continue;
        }
        let t0 = Instant::now();
        let (file, built) = match c.freeze {
            None => (opts.model.clone(), Ok(())),
            Some(mode) => {
                let file = work.0.join(format!("{}.pt", c.name));
                let built = match (mode, &calibration) {
                    (Freeze::StaticInt8, Some(set)) => static_int8(
                        &opts.model,
                        &file,
                        &[RESET_METHOD],
                        crate::quantize::saturating_u8s8(),
                        &sig,
                        set,
                    )
                    .map(drop),
                    _ => freeze(&opts.model, &file, mode, &[RESET_METHOD]),
                };
                (file, built)
            }
        };
        let result = built.and_then(|()| {
            evaluate(
                c,
                &file,
                provider,
                &sig,
                &samples,
                &mut reference,
                &timing,
                if c.o2 { &gate_o2 } else { &gate },
                &opts.budget,
            )
        });
        let mut row = match result {
            Ok(r) => r,
            // The baseline must run: without it nothing can be verified.
            Err(e) if rows.is_empty() => return Err(e),
            Err(e) => rejected(c, e.to_string()),
        };
        if rows.is_empty() {
            // Outputs as the test data and every shape group show them (a
            // batch dimension the groups vary is dynamic in the outputs too).
            let mut shown: Vec<Sample> = samples.iter().take(1).cloned().collect();
            shown.extend(timing.iter().map(|(_, s)| s.clone()));
            sig.outputs = super::engine::observed_outputs(&opts.model, &sig, &shown)?;
        }
        row.seconds = t0.elapsed().as_secs_f64();
        let baseline = rows
            .first()
            .unwrap_or(&row)
            .latency
            .first()
            .map(|l| l.p50_ms);
        row.speedup = baseline.zip(row.latency.first()).map(|(b, l)| b / l.p50_ms);
        progress(&format!(
            "[OK] Candidate {}: {}",
            row.name,
            describe_row(&row)
        ));
        rows.push(row);
        tried.push((c, file));
    }
    if opts.level == OptimizationLevel::O2 {
        notes.push(O2_SCOPE.into());
        progress(&format!("[OK] {O2_SCOPE}"));
    }
    let baseline_ms = first_p50(&rows[0]);
    // The fastest candidate that passed; the original always passes.
    let best = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == CandidateStatus::Passed)
        .min_by(|(_, a), (_, b)| first_p50(a).total_cmp(&first_p50(b)))
        .map(|(i, _)| i)
        .unwrap_or(0);
    rows[best].status = CandidateStatus::Selected;
    let (winner, winner_file) = &tried[best];
    let optimized_ms = first_p50(&rows[best]);

    let model_dst = opts.out_dir.join(artifact::TORCH_MODEL_FILE);
    std::fs::copy(winner_file, &model_dst).map_err(|e| OptimizerError::io(&model_dst, e))?;
    drop(work);
    let target = opts.device.target();
    let meta = ArtifactMeta {
        engine: EngineKind::TorchScript,
        model_file: artifact::TORCH_MODEL_FILE.into(),
        candidate: winner.name.into(),
        // The graph level is not used by TorchScript; the provider says
        // where the module runs (a GPU artifact on a CUDA device).
        session: SessionSettings::new(GraphLevel::Disable, 1).on(provider),
        signature: sig,
        optimizer_version: artifact::OPTIMIZER_VERSION.into(),
        target: target.clone(),
        fixed_inputs: Default::default(),
        torch: Some(winner.settings),
        warm_up: None,
    };
    let report = OptimizationReport {
        optimizer_version: artifact::OPTIMIZER_VERSION.into(),
        context: ReportContext {
            engine: DESCRIPTION.into(),
            target,
            cpu: cpu_name(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            threads: 1,
            level: match opts.level {
                OptimizationLevel::O1 => "o1".into(),
                OptimizationLevel::O2 => "o2".into(),
            },
        },
        diagnosis: Diagnosis {
            test_data_source: source,
            samples: samples.len(),
            shape_variation: shape_groups.len() > 1,
            shape_groups,
            notes,
        },
        selected: winner.name.into(),
        baseline: "original".into(),
        baseline_ms,
        optimized_ms,
        speedup: baseline_ms / optimized_ms,
        total_seconds: started.elapsed().as_secs_f64(),
        candidates: rows,
    };
    meta.write(&opts.out_dir)?;
    artifact::write_json(&opts.out_dir.join(artifact::REPORT_FILE), &report)?;
    progress(&format!(
        "[OK] Selected {}: p50 {:.3} ms vs {:.3} ms original ({:.2}x), {:.1} s",
        report.selected, optimized_ms, baseline_ms, report.speedup, report.total_seconds
    ));
    Ok((report, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;
    use crate::torch::build::{linear_relu, linear_relu_reference};

    #[test]
    fn the_cpu_search_freezes_verifies_and_keeps_only_the_winner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("m.pt");
        linear_relu(&model).expect("scripted");
        let out = dir.path().join("artifact");
        let opts = OptimizeOptions {
            // Two batch sizes: the served batch dimension is dynamic.
            input_shapes: vec![vec![vec![1, 2]], vec![vec![4, 2]]],
            budget: bench::Budget {
                warmup: 1,
                min_runs: 3,
                max_runs: 10,
                time: std::time::Duration::from_millis(50),
            },
            ..OptimizeOptions::new(model, out.clone())
        };
        let mut lines = Vec::new();
        let (report, meta) =
            optimize(&opts, &mut |l| lines.push(l.to_string())).expect("the search runs");
        let names: Vec<&str> = report.candidates.iter().map(|c| c.name.as_str()).collect();
        // The CPU search: no fp16 candidate.
        assert_eq!(
            names,
            [
                "original",
                "o1-torchscript-inference",
                "o1-torchscript-frozen",
                "o1-torchscript-frozen-optimized"
            ]
        );
        for c in &report.candidates {
            assert_ne!(
                c.status,
                CandidateStatus::Rejected,
                "{}: {:?}",
                c.name,
                c.message
            );
            assert_eq!(c.latency.len(), 2, "timed on both shape groups: {}", c.name);
        }
        assert!(lines.iter().any(|l| l.contains("o1-torchscript-frozen")));
        assert_eq!(meta.signature.inputs[0].shape, vec![-1, 2]);
        // The outputs follow the dynamic batch (what dynamic batching needs).
        assert_eq!(meta.signature.outputs[0].shape, vec![-1, 2]);
        // Only the artifact is left: the winner's module, no candidate files.
        assert!(!out.join("candidates").exists());
        let mut e = TorchEngine::load(
            &out.join(&meta.model_file),
            meta.signature.clone(),
            meta.torch.expect("torch settings"),
        )
        .expect("the artifact loads");
        let x = [2.0f32, 1.0];
        let t = Tensor::new(vec![1, 2], TensorData::F32(x.to_vec())).expect("tensor");
        let y = e.run(&[("input0".into(), t)]).expect("runs");
        assert_eq!(
            y[0].1.data,
            TensorData::F32(linear_relu_reference(x).to_vec())
        );
    }

    #[test]
    fn o2_adds_dynamic_int8_of_the_linear_layers_judged_by_the_o2_gate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("mlp.pt");
        crate::torch::build::mlp(&model, 256, 512, 16).expect("scripted");
        let out = dir.path().join("artifact");
        let opts = OptimizeOptions {
            level: OptimizationLevel::O2,
            input_shapes: vec![vec![vec![8, 256]]],
            budget: bench::Budget {
                warmup: 1,
                min_runs: 3,
                max_runs: 20,
                time: std::time::Duration::from_millis(100),
            },
            ..OptimizeOptions::new(model, out.clone())
        };
        let (report, meta) = optimize(&opts, &mut |_| {}).expect("the search runs");
        let int8 = report
            .candidates
            .iter()
            .find(|c| c.name == "o2-torchscript-dynamic-int8")
            .expect("the INT8 candidate");
        assert_ne!(int8.status, CandidateStatus::Rejected, "{int8:?}");
        assert!(int8.min_cosine.unwrap() >= 0.99, "{int8:?}");
        assert!(report
            .diagnosis
            .notes
            .iter()
            .any(|n| n.contains("o2 for TorchScript")));
        // Whichever won, the artifact is a module libtorch loads and runs.
        let mut e = TorchEngine::load(
            &out.join(&meta.model_file),
            meta.signature.clone(),
            TorchSettings::INFERENCE,
        )
        .expect("the artifact loads");
        let x = Tensor::new(vec![8, 256], TensorData::F32(vec![0.25; 2048])).expect("x");
        let y = e.run(&[("input0".to_string(), x)]).expect("runs");
        assert_eq!(y[0].1.shape, vec![8, 16]);
        // At o1 there is no INT8 candidate.
        let o1 = OptimizeOptions {
            level: OptimizationLevel::O1,
            out_dir: dir.path().join("o1"),
            ..opts
        };
        let (report, _) = optimize(&o1, &mut |_| {}).expect("o1 runs");
        assert!(report.candidates.iter().all(|c| !c.name.starts_with("o2")));
    }

    #[test]
    fn o2_with_a_calibration_set_adds_static_int8_of_the_convolutions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let model = dir.path().join("cnn.pt");
        crate::torch::build::conv_bn_net(&model, 16, 3).expect("scripted");
        let n = 8 * 3 * 16 * 16;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        let images = Tensor::new(vec![8, 3, 16, 16], TensorData::F32(x)).expect("tensor");
        let calibration = dir.path().join("calib.npz");
        crate::data::write_npz(&calibration, &[("input0", &images)]).expect("npz");
        let opts = OptimizeOptions {
            level: OptimizationLevel::O2,
            input_shapes: vec![vec![vec![1, 3, 16, 16]]],
            calibration: Some(calibration),
            budget: bench::Budget {
                warmup: 1,
                min_runs: 3,
                max_runs: 10,
                time: std::time::Duration::from_millis(50),
            },
            ..OptimizeOptions::new(model, dir.path().join("artifact"))
        };
        let (report, _) = optimize(&opts, &mut |_| {}).expect("the search runs");
        let int8 = report
            .candidates
            .iter()
            .find(|c| c.name == "o2-torchscript-static-int8")
            .expect("the static INT8 candidate");
        assert_ne!(int8.status, CandidateStatus::Rejected, "{int8:?}");
        assert!(int8.min_cosine.unwrap() >= 0.99, "{int8:?}");
        // Without a calibration set it is not tried, and the report says so.
        let opts = OptimizeOptions {
            calibration: None,
            out_dir: dir.path().join("uncalibrated"),
            ..opts
        };
        let (report, _) = optimize(&opts, &mut |_| {}).expect("the search runs");
        assert!(report
            .candidates
            .iter()
            .all(|c| c.name != "o2-torchscript-static-int8"));
        assert!(report
            .diagnosis
            .notes
            .iter()
            .any(|n| n.contains("no calibration_dataset")));
    }
}
