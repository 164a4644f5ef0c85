//! The search for a TorchScript module: the module as saved and an inference
//! variant, each verified against the original on the test data (samples in
//! order, after a reset, so stateful modules see the same sequence) and timed
//! like ONNX candidates; the fastest that passes is the artifact.

use std::path::Path;
use std::time::Instant;

use shared::api::{
    CandidateReport, CandidateStatus, Diagnosis, ModelSignature, OptimizationReport, ReportContext,
    TensorSpec,
};
use shared::config::OptimizationLevel;

use super::engine::{output_specs, TorchEngine, DESCRIPTION};
use crate::artifact::{self, ArtifactMeta, TorchSettings};
use crate::bench;
use crate::data::{self, Sample};
use crate::engine::{EngineKind, GraphLevel, InferenceEngine, SessionSettings};
use crate::error::{OptimizerError, Result};
use crate::optimize::{
    cpu_name, describe_row, first_p50, rejected_report, timing_sets, verify_and_time, write_json,
    OptimizeOptions, Progress,
};
use crate::tensor::Tensor;
use crate::verify::Gate;

struct Candidate {
    name: &'static str,
    description: &'static str,
    settings: TorchSettings,
}

const CANDIDATES: [Candidate; 2] = [
    Candidate {
        name: "original",
        description: "the TorchScript module as saved (its training flag as saved, autograd on), 1 intra-op thread",
        settings: TorchSettings { inference: false },
    },
    Candidate {
        name: "o1-torchscript-inference",
        description: "eval() and no autograd (no graph recorded for backward), 1 intra-op thread",
        settings: TorchSettings { inference: true },
    },
];

/// Why o2 is not applied to TorchScript, for the report.
const NO_O2: &str =
    "o2 not applied: libtorch's INT8 paths for TorchScript (torch.ao quantization, \
                     freezing) are Python-side transforms that tch does not expose; the best o1 \
                     candidate is served";

/// Test data (positional inputs) or, without it, inputs synthesized from a
/// single fp32 `input_shapes` group.
fn inputs(
    opts: &OptimizeOptions,
    notes: &mut Vec<String>,
) -> Result<(Vec<Sample>, Vec<TensorSpec>, String)> {
    if let Some(p) = &opts.test_data {
        let (ds, specs) = data::load_positional(p)?;
        return Ok((ds.samples, specs, format!("test_data: {}", ds.source)));
    }
    let Some(group) = opts.input_shapes.first() else {
        return Err(OptimizerError::Config(
            "a TorchScript module declares no inputs: give test_data (a .pth of tuples of tensors, \
             one tuple per call) or input_shapes"
                .into(),
        ));
    };
    let specs: Vec<TensorSpec> = group
        .iter()
        .enumerate()
        .map(|(i, dims)| TensorSpec {
            name: data::positional_name(i),
            datatype: "FP32".into(),
            shape: dims.iter().map(|&d| d as i64).collect(),
        })
        .collect();
    let sig = signature(specs.clone(), vec![]);
    let shapes = data::concrete_shapes(&sig, Some(group), 16)?;
    let ranges = opts.input_ranges.first().map(Vec::as_slice);
    let samples = (0..4)
        .map(|i| data::synthesize(&sig, &shapes, ranges, 7 + i))
        .collect::<Result<Vec<_>>>()?;
    notes.push(format!(
        "no test_data: verified on {} fp32 inputs synthesized from input_shapes",
        samples.len()
    ));
    Ok((samples, specs, "synthesized from input_shapes".into()))
}

fn signature(inputs: Vec<TensorSpec>, outputs: Vec<TensorSpec>) -> ModelSignature {
    ModelSignature {
        format: "torchscript".into(),
        inputs,
        outputs,
    }
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
    sig: &ModelSignature,
    samples: &[Sample],
    reference: &mut Vec<Vec<(String, Tensor)>>,
    timing: &[(String, Sample)],
    gate: &Gate,
    budget: &bench::Budget,
) -> Result<CandidateReport> {
    let mut engine = TorchEngine::load(model, sig.clone(), c.settings)?;
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
    if !opts.device.provider().is_cpu() {
        return Err(OptimizerError::Config(
            "TorchScript is served on the CPU only in this build (a pytorch_gpu_* processor needs libtorch's CUDA libraries)".into(),
        ));
    }
    let mut notes = vec![
        "TorchScript: one intra-op thread per instance (libtorch's idle OpenMP threads spin and \
         steal the cores other instances use)"
            .to_string(),
    ];
    let (samples, input_specs, source) = inputs(opts, &mut notes)?;
    progress(&format!("[OK] Verification data: {source}"));
    let mut sig = signature(input_specs, vec![]);
    let timing = timing_sets(&sig, opts, &samples)?;
    let shape_groups: Vec<String> = timing.iter().map(|(l, _)| l.clone()).collect();
    let gate = Gate::O1.with_overrides(opts.accuracy.as_ref());

    let mut reference = Vec::new();
    let mut rows: Vec<CandidateReport> = Vec::new();
    for c in &CANDIDATES {
        let t0 = Instant::now();
        let mut row = match evaluate(
            c,
            &opts.model,
            &sig,
            &samples,
            &mut reference,
            &timing,
            &gate,
            &opts.budget,
        ) {
            Ok(r) => r,
            // The baseline must run: without it nothing can be verified.
            Err(e) if rows.is_empty() => return Err(e),
            Err(e) => rejected(c, e.to_string()),
        };
        if rows.is_empty() {
            sig.outputs = output_specs(&reference);
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
    }
    if opts.level == OptimizationLevel::O2 {
        notes.push(NO_O2.into());
        progress(&format!("[OK] {NO_O2}"));
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
    let winner = &CANDIDATES[best];
    let optimized_ms = first_p50(&rows[best]);

    let model_dst = opts.out_dir.join(artifact::TORCH_MODEL_FILE);
    std::fs::copy(&opts.model, &model_dst).map_err(|e| OptimizerError::io(&model_dst, e))?;
    let target = opts.device.target();
    let meta = ArtifactMeta {
        engine: EngineKind::TorchScript,
        model_file: artifact::TORCH_MODEL_FILE.into(),
        candidate: winner.name.into(),
        // Not used by TorchScript; kept so the metadata has one shape.
        session: SessionSettings::new(GraphLevel::Disable, 1),
        signature: sig,
        optimizer_version: artifact::OPTIMIZER_VERSION.into(),
        target: target.clone(),
        fixed_inputs: Default::default(),
        torch: Some(winner.settings),
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
        baseline_ms,
        optimized_ms,
        speedup: baseline_ms / optimized_ms,
        total_seconds: started.elapsed().as_secs_f64(),
        candidates: rows,
    };
    write_json(&opts.out_dir.join(artifact::META_FILE), &meta)?;
    write_json(&opts.out_dir.join(artifact::REPORT_FILE), &report)?;
    progress(&format!(
        "[OK] Selected {}: p50 {:.3} ms vs {:.3} ms original ({:.2}x), {:.1} s",
        report.selected, optimized_ms, baseline_ms, report.speedup, report.total_seconds
    ));
    Ok((report, meta))
}
