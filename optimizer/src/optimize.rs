//! The search: candidates → verify → time → pick → write the artifact.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use shared::api::{
    CandidateReport, CandidateStatus, Diagnosis, ModelSignature, OptimizationReport, ReportContext,
};
use shared::config::{OptimizationLevel, ValueRange};

use crate::artifact::{self, ArtifactMeta};
use crate::bench;
pub use crate::bench::Budget;
use crate::data::{self, Sample};
use crate::engine::{
    self, Engine, ExecutionProvider, GraphLevel, InferenceEngine, SessionSettings, TensorRt,
};
use crate::error::{OptimizerError, Result};
use crate::onnx;
use crate::passes::{self, OpsetUpgrade, Pass, PassContext};
use crate::quantize::{self, calibrate::Method};
use crate::tensor::{DType, Tensor, TensorData};
use crate::verify::{Agreement, Gate};

/// Everything one optimization needs. Built from a plugin's `model_info` by
/// the server, or from flags by `whet optimize`.
#[derive(Debug, Clone)]
pub struct OptimizeOptions {
    pub model: PathBuf,
    pub out_dir: PathBuf,
    pub level: OptimizationLevel,
    pub test_data: Option<PathBuf>,
    /// o2 offline: calibration inputs for static INT8. Absent: online (dynamic) INT8.
    pub calibration: Option<PathBuf>,
    /// `quantization.weight_adjustment`.
    pub weight_adjustment: bool,
    /// `accuracy`: overrides of the default gates.
    pub accuracy: Option<shared::config::Accuracy>,
    /// Declared input/output names to check against the graph.
    pub inputs: Option<Vec<String>>,
    pub outputs: Option<Vec<String>>,
    /// Parsed `input_shapes`: groups × inputs × dims.
    pub input_shapes: Vec<Vec<Vec<usize>>>,
    pub input_ranges: Vec<Vec<ValueRange>>,
    /// Intra-op threads each candidate is timed with (what one serving
    /// instance gets).
    pub threads: usize,
    pub budget: Budget,
    /// Time the accuracy fallback may spend looking for nodes to keep in float.
    pub fallback_budget: std::time::Duration,
    /// The hardware the artifact is for: every candidate is built, verified
    /// and timed there.
    pub device: TargetDevice,
}

impl OptimizeOptions {
    /// An o1 search of `model` into `out_dir` on the CPU with one thread,
    /// no data files and the default budgets: the base that callers (tests,
    /// benchmarks) change a few fields of.
    pub fn new(model: PathBuf, out_dir: PathBuf) -> OptimizeOptions {
        OptimizeOptions {
            model,
            out_dir,
            level: OptimizationLevel::O1,
            test_data: None,
            calibration: None,
            weight_adjustment: false,
            accuracy: None,
            inputs: None,
            outputs: None,
            input_shapes: vec![],
            input_ranges: vec![],
            threads: 1,
            budget: Budget::default(),
            fallback_budget: std::time::Duration::from_secs(5),
            device: TargetDevice::Cpu,
        }
    }

    /// The options a service config's `model_info` asks for: the level, the
    /// test and calibration data (paths relative to `data_dir`), the declared
    /// inputs and outputs, `input_shapes` and `input_ranges`, the accuracy
    /// gate and weight adjustment; timed with every core, on the CPU. An
    /// error names the `model_info` field that does not parse.
    pub fn from_model_info(
        model: PathBuf,
        out_dir: PathBuf,
        info: &shared::config::ModelInfo,
        data_dir: &Path,
    ) -> std::result::Result<OptimizeOptions, String> {
        Ok(OptimizeOptions {
            level: info.level(),
            test_data: info.test_data.as_ref().map(|t| data_dir.join(t)),
            calibration: info.calibration_dataset.as_ref().map(|t| data_dir.join(t)),
            weight_adjustment: info
                .quantization
                .as_ref()
                .is_some_and(|q| q.weight_adjustment()),
            accuracy: info.accuracy.clone(),
            inputs: info.inputs.clone(),
            outputs: info.outputs.clone(),
            input_shapes: info.shapes().map_err(|e| format!("input_shapes: {e}"))?,
            input_ranges: info.ranges().map_err(|e| format!("input_ranges: {e}"))?,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            fallback_budget: std::time::Duration::from_secs(30),
            ..OptimizeOptions::new(model, out_dir)
        })
    }
}

/// Where an optimized model will be served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TargetDevice {
    #[default]
    Cpu,
    /// A CUDA device, with the driver's name for it (part of the artifact's
    /// target, so a model tuned on one GPU model is not reused on another).
    Cuda { device_id: i32, name: String },
}

impl TargetDevice {
    pub fn provider(&self) -> ExecutionProvider {
        match self {
            TargetDevice::Cpu => ExecutionProvider::Cpu,
            TargetDevice::Cuda { device_id, .. } => ExecutionProvider::Cuda {
                device_id: *device_id,
            },
        }
    }

    /// The artifact target string (see [`artifact::cpu_target`], [`artifact::gpu_target`]).
    pub fn target(&self) -> String {
        match self {
            TargetDevice::Cpu => artifact::cpu_target(),
            TargetDevice::Cuda { name, .. } => artifact::gpu_target(name),
        }
    }
}

/// Progress sink: one human-readable line per step.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Where a candidate's graph is.
#[derive(Clone)]
enum ModelSource {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Rebuilds a quantized candidate with some nodes kept in float.
type Rebuild = Box<dyn Fn(&HashSet<String>) -> Result<onnx::ModelProto>>;

struct Candidate {
    name: String,
    description: String,
    model: ModelSource,
    settings: SessionSettings,
    gate: Gate,
    /// For quantized candidates: the quantized nodes, and how to rebuild
    /// with a keep-in-float list (the accuracy fallback).
    fallback: Option<(Vec<String>, Rebuild)>,
    /// Built from the graph specialized for fixed inputs.
    specialized: bool,
}

impl Candidate {
    fn load(&self) -> Result<Engine> {
        match &self.model {
            ModelSource::File(p) => Engine::load(p, &self.settings),
            ModelSource::Bytes(b) => Engine::from_bytes(b, &self.settings),
        }
    }

    fn size(&self) -> u64 {
        match &self.model {
            ModelSource::File(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            ModelSource::Bytes(b) => b.len() as u64,
        }
    }
}

/// Runs the whole search and writes `model.onnx`, `artifact.json` and
/// `report.json` into `opts.out_dir`.
pub fn optimize(
    opts: &OptimizeOptions,
    progress: Progress<'_>,
) -> Result<(OptimizationReport, ArtifactMeta)> {
    // TorchScript has its own, smaller search (no graph we can rewrite).
    if engine::EngineKind::of_model(&opts.model) == engine::EngineKind::TorchScript {
        #[cfg(feature = "torch")]
        return crate::torch::o1::optimize(opts, progress);
        #[cfg(not(feature = "torch"))]
        return Err(OptimizerError::Config(engine::TORCH_FEATURE_HINT.into()));
    }
    let started = Instant::now();
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| OptimizerError::io(&opts.out_dir, e))?;
    let threads = opts.threads.max(1);

    let sig = engine::inspect(&opts.model)?;
    check_declared_names(&sig, opts)?;

    let mut notes = Vec::new();
    let fixed = fixed_inputs(&sig, opts)?;
    if !fixed.is_empty() {
        let names: Vec<&str> = fixed.keys().map(String::as_str).collect();
        notes.push(format!(
            "inputs fixed by input_ranges (the artifact refuses other values): {}",
            names.join(", ")
        ));
    }
    // Verification inputs: the user's test data, else synthesized samples.
    let (samples, source) = match &opts.test_data {
        Some(p) => {
            let ds = data::load(p, &sig)?;
            (ds.samples, format!("test_data: {}", ds.source))
        }
        None => {
            let group = opts.input_shapes.first().map(Vec::as_slice);
            let shapes = data::concrete_shapes(&sig, group, 16)?;
            let ranges = opts.input_ranges.first().map(Vec::as_slice);
            let samples = (0..4)
                .map(|i| data::synthesize(&sig, &shapes, ranges, 7 + i))
                .collect::<Result<Vec<_>>>()?;
            let from = if opts.input_shapes.is_empty() {
                "the model's declared shapes"
            } else {
                "input_shapes"
            };
            notes.push(format!(
                "no test_data: verified on {} inputs synthesized from {from}",
                samples.len()
            ));
            (samples, format!("synthesized from {from}"))
        }
    };
    progress(&format!("[OK] Verification data: {source}"));

    // Timing inputs: one per input_shapes group, else the first sample.
    let timing = timing_sets(&sig, opts, &samples)?;
    let shape_groups: Vec<String> = timing.iter().map(|(l, _)| l.clone()).collect();

    let work = tempdir_in(&opts.out_dir)?;
    let candidates = build_candidates(
        opts, &sig, &fixed, &work, &samples, threads, &mut notes, progress,
    )?;

    let mut reference: Vec<Vec<(String, Tensor)>> = Vec::new();
    let mut rows = Vec::new();
    for cand in &candidates {
        let t0 = Instant::now();
        let row = evaluate(cand, &samples, &mut reference, &timing, &opts.budget);
        let mut row = match row {
            Ok(r) => r,
            // The baseline must run: without it nothing can be verified.
            Err(e) if cand.name == "original" => return Err(e),
            Err(e) => rejected(cand, e.to_string()),
        };
        row.size_bytes = cand.size();
        row.seconds = t0.elapsed().as_secs_f64();
        let baseline = baseline_p50(&rows).or(row.latency.first().map(|l| l.p50_ms));
        row.speedup = baseline.zip(row.latency.first()).map(|(b, l)| b / l.p50_ms);
        progress(&format!(
            "[OK] Candidate {}: {}",
            row.name,
            describe_row(&row)
        ));
        rows.push(row);
    }
    // Accuracy-aware fallback: no INT8 candidate passed its gate, so keep
    // the nodes that hurt most in float until one does.
    let o2_passed = rows
        .iter()
        .zip(&candidates)
        .any(|(r, c)| c.fallback.is_some() && r.status == CandidateStatus::Passed);
    let nearest_failed = rows
        .iter()
        .zip(&candidates)
        .enumerate()
        .filter(|(_, (r, c))| {
            c.fallback.is_some() && r.status == CandidateStatus::Rejected && !r.latency.is_empty()
        })
        // The one nearest to passing needs the fewest nodes kept in float.
        .max_by(|a, b| {
            a.1 .0
                .min_cosine
                .unwrap_or(0.0)
                .total_cmp(&b.1 .0.min_cosine.unwrap_or(0.0))
        })
        .map(|(i, _)| i);
    let mut candidates = candidates;
    if let (false, Some(ci)) = (o2_passed, nearest_failed) {
        let cand = &candidates[ci];
        let deadline = Instant::now() + opts.fallback_budget;
        let t0 = Instant::now();
        match fallback(cand, &samples, &reference, deadline, progress) {
            Ok(Some(fb)) => {
                let row = evaluate(&fb, &samples, &mut reference.clone(), &timing, &opts.budget);
                let mut row = row.unwrap_or_else(|e| rejected(&fb, e.to_string()));
                row.size_bytes = fb.size();
                row.seconds = t0.elapsed().as_secs_f64();
                let baseline = baseline_p50(&rows);
                row.speedup = baseline.zip(row.latency.first()).map(|(b, l)| b / l.p50_ms);
                progress(&format!(
                    "[OK] Candidate {}: {}",
                    row.name,
                    describe_row(&row)
                ));
                rows.push(row);
                candidates.push(fb);
            }
            Ok(None) => {
                let msg = format!(
                    "accuracy fallback for {} found no passing keep-in-float set within {:?}",
                    candidates[ci].name, opts.fallback_budget
                );
                notes.push(msg)
            }
            Err(e) => {
                let msg = format!("accuracy fallback for {} failed: {e}", candidates[ci].name);
                notes.push(msg)
            }
        }
    }
    let baseline_ms = baseline_p50(&rows).unwrap_or_else(|| first_p50(&rows[0]));
    let baseline = match rows
        .iter()
        .any(|r| r.name == BASELINE && !r.latency.is_empty())
    {
        true => BASELINE,
        false => "original",
    };
    // The original was timed before the baseline: its speedup too is
    // against the baseline.
    if let Some(l) = rows[0].latency.first().map(|l| l.p50_ms) {
        rows[0].speedup = Some(baseline_ms / l);
    }

    // The fastest candidate that passed; the original always passes.
    let pick = |rows: &[CandidateReport]| {
        rows.iter()
            .enumerate()
            .filter(|(_, r)| r.status == CandidateStatus::Passed)
            .min_by(|(_, a), (_, b)| first_p50(a).total_cmp(&first_p50(b)))
            .map(|(i, _)| i)
            .unwrap_or(0)
    };
    let best = pick(&rows);

    // Session settings: the leading candidate again at the other thread
    // counts; serving uses the fastest (capped by the cores an instance gets).
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut counts = vec![1, cores];
    counts.dedup();
    for t in counts.into_iter().filter(|&t| t != threads) {
        let lead = &candidates[best];
        let variant = Candidate {
            name: format!("{}@{t}thread{}", lead.name, if t == 1 { "" } else { "s" }),
            description: format!("{} with {t} intra-op thread(s)", lead.name),
            model: lead.model.clone(),
            settings: SessionSettings {
                intra_threads: t,
                ..lead.settings.clone()
            },
            gate: lead.gate.clone(),
            fallback: None,
            specialized: lead.specialized,
        };
        let t0 = Instant::now();
        let mut row = evaluate(
            &variant,
            &samples,
            &mut reference.clone(),
            &timing,
            &opts.budget,
        )
        .unwrap_or_else(|e| rejected(&variant, e.to_string()));
        row.size_bytes = variant.size();
        row.seconds = t0.elapsed().as_secs_f64();
        row.speedup = Some(baseline_ms / first_p50(&row));
        progress(&format!(
            "[OK] Candidate {}: {}",
            row.name,
            describe_row(&row)
        ));
        rows.push(row);
        candidates.push(variant);
    }
    let best = pick(&rows);
    rows[best].status = CandidateStatus::Selected;
    let winner = &candidates[best];
    // The headline is the selected row's own number (a thread variant's,
    // when one won), as the table and the chart show it.
    let optimized_ms = first_p50(&rows[best]);
    if rows[best].name.contains('@') {
        notes.push(format!(
            "serving setting: {} (p50 {:.3} ms on the first shape group)",
            rows[best].description,
            first_p50(&rows[best])
        ));
    }

    let model_dst = opts.out_dir.join(artifact::MODEL_FILE);
    match &winner.model {
        ModelSource::File(p) => std::fs::copy(p, &model_dst).map(|_| ()),
        ModelSource::Bytes(b) => std::fs::write(&model_dst, b),
    }
    .map_err(|e| OptimizerError::io(&model_dst, e))?;
    let _ = std::fs::remove_dir_all(&work);

    let target = opts.device.target();
    let meta = ArtifactMeta {
        model_file: artifact::MODEL_FILE.into(),
        candidate: winner.name.clone(),
        session: winner.settings.clone(),
        signature: sig.clone(),
        optimizer_version: artifact::OPTIMIZER_VERSION.into(),
        target: target.clone(),
        fixed_inputs: if winner.specialized {
            fixed
                .iter()
                .map(|(k, t)| (k.clone(), t.data.to_f64().first().copied().unwrap_or(0.0)))
                .collect()
        } else {
            Default::default()
        },
        engine: Default::default(),
        torch: None,
        warm_up: None,
    };
    let report = OptimizationReport {
        optimizer_version: artifact::OPTIMIZER_VERSION.into(),
        context: ReportContext {
            engine: crate::runtime::describe(),
            target,
            cpu: cpu_name(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            threads,
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
        selected: winner.name.clone(),
        baseline: baseline.into(),
        baseline_ms,
        optimized_ms,
        speedup: baseline_ms / optimized_ms,
        total_seconds: started.elapsed().as_secs_f64(),
        candidates: rows,
    };
    meta.write(&opts.out_dir)?;
    artifact::write_json(&opts.out_dir.join(artifact::REPORT_FILE), &report)?;
    progress(&format!(
        "[OK] Selected {}: p50 {:.3} ms vs {:.3} ms {} ({:.2}x), {:.1} s",
        report.selected,
        optimized_ms,
        baseline_ms,
        report.baseline,
        report.speedup,
        report.total_seconds
    ));
    Ok((report, meta))
}

/// FP16 candidates for a GPU target: the whole graph in fp16, and fp16 with
/// fp32 islands for the numerically sensitive ops. Both are judged by the o1
/// gate (with the config's `accuracy` overrides), like every o1 candidate.
fn fp16_candidates(
    opts: &OptimizeOptions,
    served: &SessionSettings,
    gate: Gate,
    out: &mut Vec<Candidate>,
    notes: &mut Vec<String>,
) -> Result<()> {
    let model = onnx::load(&opts.model)?;
    for (name, keep, what) in [
        (
            "o1-fp16-islands",
            passes::DEFAULT_KEEP_FP32,
            "fp16 weights and activations, numerically sensitive ops (softmax, normalizations, reductions, exp/log/sqrt) kept in fp32",
        ),
        ("o1-fp16", &[][..], "the whole graph in fp16"),
    ] {
        match passes::to_fp16(&model, keep) {
            Ok(m) => out.push(Candidate {
                name: name.into(),
                description: format!("{what}; inputs and outputs stay fp32"),
                model: ModelSource::Bytes(onnx::to_bytes(&m)),
                settings: served.clone(),
                gate: gate.clone(),
                fallback: None,
                specialized: false,
            }),
            Err(e) => notes.push(format!("{name} skipped: {e}")),
        }
    }
    // TensorRT picks fp16 per layer where it is faster and keeps its own
    // fp32 where the graph needs it; the model stays as given.
    out.push(Candidate {
        name: "o1-tensorrt-fp16".into(),
        description: "the model as given on ONNX Runtime's TensorRT execution provider (fp16 allowed per layer; CUDA for what TensorRT does not take); the engine is built when the session is".into(),
        model: ModelSource::File(opts.model.clone()),
        settings: served.clone().with_tensorrt(TensorRt {
            fp16: true,
            int8: false,
        }),
        gate,
        fallback: None,
        specialized: false,
    });
    Ok(())
}

/// The original, the o1 graph, and (o2) every INT8 variant that applies.
#[allow(clippy::too_many_arguments)]
fn build_candidates(
    opts: &OptimizeOptions,
    sig: &ModelSignature,
    fixed: &HashMap<String, Tensor>,
    work: &Path,
    samples: &[Sample],
    threads: usize,
    notes: &mut Vec<String>,
    progress: Progress<'_>,
) -> Result<Vec<Candidate>> {
    // Every candidate runs on the target's provider, the original included,
    // so speedups compare like with like.
    let provider = opts.device.provider();
    let served = SessionSettings::new(GraphLevel::All, threads).on(provider);
    let gate_o1 = Gate::O1.with_overrides(opts.accuracy.as_ref());
    let gate_o2 = Gate::O2.with_overrides(opts.accuracy.as_ref());
    let mut out = vec![
        Candidate {
            name: "original".into(),
            description: "the model as given, ONNX Runtime graph optimizations off".into(),
            model: ModelSource::File(opts.model.clone()),
            settings: SessionSettings::new(GraphLevel::Disable, threads).on(provider),
            gate: gate_o1.clone(),
            fallback: None,
            specialized: false,
        },
        Candidate {
            name: BASELINE.into(),
            description: "the model as given in ONNX Runtime's default session (every graph optimization on): what serving it without Whetstone gives; the baseline of the speedups".into(),
            model: ModelSource::File(opts.model.clone()),
            settings: SessionSettings::new(GraphLevel::All, threads).on(provider),
            gate: gate_o1.clone(),
            fallback: None,
            specialized: false,
        },
    ];
    let optimized_path = work.join("extended.onnx");
    match engine::save_optimized_on(&opts.model, &optimized_path, GraphLevel::Extended, provider) {
        Ok(()) => out.push(Candidate {
            name: "o1-fp32-graph".into(),
            description: "fp32 graph optimization (constant folding, fusions) saved portable, layout optimizations at load, no thread spinning".into(),
            model: ModelSource::File(optimized_path),
            settings: served.clone(),
            gate: gate_o1.clone(),
            fallback: None,
            specialized: false,
        }),
        Err(e) => notes.push(format!("graph optimization failed, candidate skipped: {e}")),
    }
    match &opts.device {
        TargetDevice::Cpu => notes.push("fp16 skipped: this CPU target has no fast fp16 arithmetic (it is measured slower than fp32)".into()),
        TargetDevice::Cuda { .. } => fp16_candidates(opts, &served, gate_o1.clone(), &mut out, notes)?,
    }
    // Clean-up on our own graph: fold If nodes on fixed inputs, specialize a
    // single input_shapes group, fold constants, drop dead nodes.
    let mut cleaned = None;
    let mut folded_ifs = false;
    if !fixed.is_empty() || opts.input_shapes.len() == 1 {
        let mut m = onnx::load(&opts.model)?;
        let shapes = opts
            .input_shapes
            .first()
            .map(|g| data::concrete_shapes(sig, Some(g), 16))
            .transpose()?;
        let ctx = PassContext {
            fixed_inputs: fixed.clone(),
            input_shapes: shapes,
        };
        match passes::cleanup(&mut m, &ctx) {
            Ok(reports) if reports.iter().any(|r| r.changed > 0) => {
                let what = reports
                    .iter()
                    .filter(|r| r.changed > 0)
                    .map(|r| format!("{} ({})", r.name, r.changed))
                    .collect::<Vec<_>>()
                    .join(", ");
                progress(&format!("[OK] Graph clean-up: {what}"));
                out.push(Candidate {
                    name: "o1-cleanup".into(),
                    description: format!(
                        "our passes: {what}; then ONNX Runtime's optimizations at load"
                    ),
                    model: ModelSource::Bytes(onnx::to_bytes(&m)),
                    settings: served.clone(),
                    gate: gate_o1.clone(),
                    fallback: None,
                    specialized: true,
                });
                folded_ifs = reports.iter().any(|r| r.name == "if_fold" && r.changed > 0);
                cleaned = Some(m);
            }
            Ok(_) => {}
            Err(e) => notes.push(format!("graph clean-up skipped: {e}")),
        }
    }
    if opts.level != OptimizationLevel::O2 {
        return Ok(out);
    }
    if quantize::saturating_u8s8() {
        notes.push("INT8 weights use 7 bits (±63): this CPU has no VNNI, and ONNX Runtime's uint8×int8 kernels here add product pairs in saturating int16".into());
    }
    // INT8 builds on the cleaned graph only when it folded If nodes (the
    // quantizers cannot see inside them). Measured on MiniLM: the cleaned
    // graph without Ifs is slower once quantized (ORT fuses less of it).
    let specialized = folded_ifs;
    let model = std::sync::Arc::new(int8_ready(
        match (&cleaned, folded_ifs) {
            (Some(m), true) => m.clone(),
            _ => onnx::load(&opts.model)?,
        },
        work,
        notes,
        progress,
    ));
    let none = HashSet::new();
    let int8 = Int8 {
        settings: served.clone(),
        gate: gate_o2.clone(),
        specialized,
    };
    if !provider.is_cpu() {
        // The CPU's INT8 forms (MatMulInteger, QDQ tuned for x86 kernels)
        // would run on the CPU under the CUDA provider, which a GPU artifact
        // must not do: INT8 on the GPU is TensorRT's.
        notes.push("CPU INT8 forms skipped on the CUDA target (the CUDA provider runs their kernels on the CPU); INT8 on the GPU is TensorRT's, from the calibration_dataset".into());
        tensorrt_int8(
            opts,
            sig,
            &model,
            served.clone(),
            gate_o2.clone(),
            specialized,
            &mut out,
            notes,
            progress,
        )?;
        return Ok(out);
    }
    let dynamic_nodes = quantize::dynamic::candidates(&model);
    for (per_channel, name, what) in [
        (true, "o2-dynamic-int8", "per-channel"),
        (false, "o2-dynamic-int8-per-tensor", "per-tensor"),
    ] {
        if dynamic_nodes.is_empty() {
            break;
        }
        let description = format!(
            "dynamic INT8: {} MatMuls with {what} int8 weights, activations quantized at run time",
            dynamic_nodes.len()
        );
        int8.push(
            &mut out,
            notes,
            name.into(),
            description,
            dynamic_nodes.clone(),
            dynamic_build(model.clone(), per_channel, Default::default()),
        );
    }

    // weight_adjustment: SmoothQuant-style scale migration for the dynamic
    // MatMuls, from per-channel activation maxima.
    if opts.weight_adjustment && !dynamic_nodes.is_empty() {
        let t0 = Instant::now();
        let (stats, from) = match &opts.calibration {
            Some(p) => (data::load(p, sig)?.samples, "calibration_dataset"),
            None => (samples.to_vec(), "test data"),
        };
        let g = onnx::graph(&model);
        let acts: Vec<String> = g
            .node
            .iter()
            .filter(|n| dynamic_nodes.contains(&n.name))
            .filter_map(|n| n.input.first().cloned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let absmax = quantize::calibrate::channel_absmax(&model, &acts, &stats, cores)?;
        progress(&format!("[OK] Scale migration: per-channel activation maxima of {} tensors from the {from} ({:.1} s)", absmax.len(), t0.elapsed().as_secs_f64()));
        // The migration strength: 0.5 splits the difficulty evenly; larger
        // values move more of it into the (per-channel) weights. Measured on
        // MiniLM: alpha 0.65 and 0.8 kept less accuracy than 0.5.
        let alpha = 0.5f32;
        let factors =
            std::sync::Arc::new(quantize::dynamic::smooth_factors(&model, &absmax, alpha));
        for (per_channel, name, what) in [
            (true, "o2-dynamic-int8-smooth", "per-channel"),
            (false, "o2-dynamic-int8-per-tensor-smooth", "per-tensor"),
        ] {
            let description = format!(
                "dynamic INT8 with SmoothQuant scale migration (weight_adjustment, alpha {alpha}): {} MatMuls, {what} int8 weights, {} activations rescaled",
                dynamic_nodes.len(),
                factors.len()
            );
            int8.push(
                &mut out,
                notes,
                name.into(),
                description,
                dynamic_nodes.clone(),
                dynamic_build(model.clone(), per_channel, factors.clone()),
            );
        }
    }
    let Some(calib_path) = &opts.calibration else {
        notes.push(
            "no calibration_dataset: INT8 is online (dynamic) only, as the seed specifies".into(),
        );
        return Ok(out);
    };
    if !onnx::graph(&model).node.iter().any(|n| n.op_type == "Conv") {
        // Measured on MiniLM: static QDQ over attention blocks keeps a cosine
        // of 0.6-0.7; dynamic INT8 is the form that suits them.
        notes.push("static INT8 skipped: the model has no convolutions (static activation ranges lose too much on attention models; dynamic INT8 is used)".into());
        return Ok(out);
    }
    let t0 = Instant::now();
    let calib = data::load(calib_path, sig)?;
    let plan = quantize::qdq::plan(&model, &none);
    if plan.nodes.is_empty() {
        notes.push("static INT8 skipped: no Conv/Gemm/MatMul with constant weights".into());
        return Ok(out);
    }
    let methods = [Method::MinMax, Method::Percentile(99.999), Method::Entropy];
    // Calibration is not timed: it may use every core.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let all = quantize::calibrate::calibrate_all(
        &model,
        &plan.activations,
        &calib.samples,
        &methods,
        cores,
    )?;
    progress(&format!(
        "[OK] Calibrated {} activations on {} ({:.1} s, streamed sample by sample)",
        plan.activations.len(),
        calib.source,
        t0.elapsed().as_secs_f64()
    ));
    let sizes = format!(
        "{} nodes, {} activations uint8, weights int8 per channel, biases int32",
        plan.nodes.len(),
        plan.activations.len()
    );
    // weight_adjustment: bias correction of the MinMax candidate.
    if opts.weight_adjustment {
        let t1 = Instant::now();
        match quantize::bias_correction::correct(&model, &plan, &calib.samples, cores) {
            Ok((corrected, n)) => {
                progress(&format!(
                    "[OK] Bias correction: {n} layers adjusted on {} ({:.1} s)",
                    calib.source,
                    t1.elapsed().as_secs_f64()
                ));
                let description = format!("static QDQ INT8 (minmax) with bias correction (weight_adjustment) on {n} layers: {sizes}");
                int8.push(
                    &mut out,
                    notes,
                    "o2-static-int8-minmax-biascorr".into(),
                    description,
                    plan.nodes.clone(),
                    static_build(std::sync::Arc::new(corrected), all[0].clone()),
                );
            }
            Err(e) => notes.push(format!("bias correction skipped: {e}")),
        }
    }
    for (method, ranges) in methods.iter().zip(all) {
        let description = format!("static QDQ INT8 ({} calibration): {sizes}", method.label());
        int8.push(
            &mut out,
            notes,
            format!("o2-static-int8-{}", method.label()),
            description,
            plan.nodes.clone(),
            static_build(model.clone(), ranges),
        );
    }
    Ok(out)
}

/// The graph the INT8 candidates build on. Exports that hold their weights
/// in `Constant` nodes (often behind a `Transpose`, `Cast` or `Squeeze` of
/// constants) or target opset 11 or 12 get those folded into initializers
/// and the opset raised to 13, which per-channel QDQ needs; a graph that
/// gains nothing by it keeps its own form (measured on MiniLM: re-folding a
/// graph ONNX Runtime already fuses well makes it slower once quantized).
fn int8_ready(
    model: onnx::ModelProto,
    work: &Path,
    notes: &mut Vec<String>,
    progress: Progress<'_>,
) -> onnx::ModelProto {
    let model = layout_clean(model, work, notes, progress);
    let none = HashSet::new();
    let weighted = |m: &onnx::ModelProto| {
        quantize::qdq::plan(m, &none).nodes.len() + quantize::dynamic::candidates(m).len()
    };
    let from = onnx::opset(&model);
    let old_opset = from < passes::OPSET_TARGET;
    if !old_opset && !weights_in_constant_nodes(onnx::graph(&model)) {
        return model;
    }
    let mut m = model.clone();
    let mut done = Vec::new();
    match passes::cleanup(&mut m, &PassContext::default()) {
        Ok(reports) => done.extend(
            reports
                .iter()
                .filter(|r| r.changed > 0)
                .map(|r| format!("{} ({})", r.name, r.changed)),
        ),
        Err(e) => {
            notes.push(format!("folding constants for INT8 skipped: {e}"));
            m = model.clone();
        }
    }
    if old_opset {
        match OpsetUpgrade.run(&mut m, &PassContext::default()) {
            Ok(r) => done.push(r.note),
            Err(e) => notes.push(format!("INT8 stays at opset {from}: {e}")),
        }
    }
    let (before, after) = (weighted(&model), weighted(&m));
    if after > before || onnx::opset(&m) > from {
        let what = format!(
            "INT8 builds on a prepared graph: {}; quantizable nodes {before} → {after}",
            done.join(", ")
        );
        progress(&format!("[OK] {what}"));
        notes.push(what);
        m
    } else {
        model
    }
}

/// Graphs imported from a channels-last framework (TensorFlow, via our
/// importer or tf2onnx) wrap every convolution in layout `Transpose`s and
/// often carry batch norm as `Mul`/`Add`/`Sqrt` chains; quantized as they
/// are, each convolution is an island between float transposes, slower
/// than float. ONNX Runtime's basic-level optimization (constant folding,
/// its transpose optimizer, Conv+Mul/Add folding — no fused contrib ops)
/// makes them plain NCHW convolutions with their weights folded, the form
/// static INT8 fuses well. Applied when the graph has at least as many
/// `Transpose`s as convolutions; the gate judges the result as always.
fn layout_clean(
    model: onnx::ModelProto,
    work: &Path,
    notes: &mut Vec<String>,
    progress: Progress<'_>,
) -> onnx::ModelProto {
    let g = onnx::graph(&model);
    let count = |op: &str| g.node.iter().filter(|n| n.op_type == op).count();
    let (convs, transposes) = (count("Conv"), count("Transpose"));
    if convs == 0 || transposes < convs {
        return model;
    }
    let (src, dst) = (
        work.join("int8-layout-src.onnx"),
        work.join("int8-layout.onnx"),
    );
    let cleaned = std::fs::write(&src, onnx::to_bytes(&model))
        .map_err(|e| OptimizerError::io(&src, e))
        .and_then(|()| {
            engine::save_optimized_on(&src, &dst, GraphLevel::Basic, ExecutionProvider::Cpu)
        })
        .and_then(|()| onnx::load(&dst));
    match cleaned {
        Ok(m) => {
            let (before, after) = (g.node.len(), onnx::graph(&m).node.len());
            let what = format!(
                "INT8 builds on ONNX Runtime's basic-level optimization of this channels-last graph ({transposes} Transposes around {convs} convolutions): {before} → {after} nodes"
            );
            progress(&format!("[OK] {what}"));
            notes.push(what);
            m
        }
        Err(e) => {
            notes.push(format!("layout clean-up for INT8 skipped: {e}"));
            model
        }
    }
}

/// Whether some `Constant` node holds what looks like weights (a float
/// tensor of 16 elements or more, rather than a shape or a scalar): the
/// cheap test for whether folding constants can give the quantizers more
/// to work on.
fn weights_in_constant_nodes(g: &onnx::GraphProto) -> bool {
    g.node.iter().filter(|n| n.op_type == "Constant").any(|n| {
        n.attribute.iter().filter_map(|a| a.t.as_ref()).any(|t| {
            matches!(
                t.data_type,
                onnx::data_type::FLOAT | onnx::data_type::FLOAT16 | onnx::data_type::DOUBLE
            ) && t.dims.iter().map(|&d| d.max(0) as u64).product::<u64>() >= 16
                && !t.dims.is_empty()
        })
    })
}

/// What every INT8 candidate of one search shares.
/// o2 on a CUDA target: the static QDQ INT8 graph (min-max ranges from the
/// calibration set) run by TensorRT, which turns each quantize/dequantize
/// pair into INT8 layers (fp16 allowed where a layer stays float).
#[allow(clippy::too_many_arguments)]
fn tensorrt_int8(
    opts: &OptimizeOptions,
    sig: &ModelSignature,
    model: &std::sync::Arc<onnx::ModelProto>,
    served: SessionSettings,
    gate: Gate,
    specialized: bool,
    out: &mut Vec<Candidate>,
    notes: &mut Vec<String>,
    progress: Progress<'_>,
) -> Result<()> {
    let Some(calib_path) = &opts.calibration else {
        notes.push("no calibration_dataset: no TensorRT INT8 candidate (its ranges come from the calibration set)".into());
        return Ok(());
    };
    let plan = quantize::qdq::plan(model, &HashSet::new());
    if plan.nodes.is_empty() {
        notes.push("TensorRT INT8 skipped: no Conv/Gemm/MatMul with constant weights".into());
        return Ok(());
    }
    let t0 = Instant::now();
    let calib = data::load(calib_path, sig)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let ranges = quantize::calibrate::calibrate(
        model,
        &plan.activations,
        &calib.samples,
        Method::MinMax,
        cores,
    )?;
    progress(&format!(
        "[OK] Calibrated {} activations for TensorRT on {} ({:.1} s)",
        plan.activations.len(),
        calib.source,
        t0.elapsed().as_secs_f64()
    ));
    let trt = Int8 {
        settings: served.with_tensorrt(TensorRt {
            fp16: true,
            int8: true,
        }),
        gate,
        specialized,
    };
    trt.push(
        out,
        notes,
        "o2-tensorrt-int8".into(),
        format!(
            "static QDQ INT8 (minmax calibration) on ONNX Runtime's TensorRT execution provider: {} nodes INT8 layers, fp16 allowed elsewhere",
            plan.nodes.len()
        ),
        plan.nodes.clone(),
        static_build(model.clone(), ranges),
    );
    Ok(())
}

struct Int8 {
    settings: SessionSettings,
    gate: Gate,
    specialized: bool,
}

impl Int8 {
    /// Builds the candidate with nothing kept in float and keeps `build` for
    /// the accuracy fallback; a build that fails is a note, not an error.
    fn push(
        &self,
        out: &mut Vec<Candidate>,
        notes: &mut Vec<String>,
        name: String,
        description: String,
        nodes: Vec<String>,
        build: Rebuild,
    ) {
        match build(&HashSet::new()) {
            Ok(m) => out.push(Candidate {
                name,
                description,
                model: ModelSource::Bytes(onnx::to_bytes(&m)),
                settings: self.settings.clone(),
                gate: self.gate.clone(),
                fallback: Some((nodes, build)),
                specialized: self.specialized,
            }),
            Err(e) => notes.push(format!("{name} skipped: {e}")),
        }
    }
}

fn dynamic_build(
    base: std::sync::Arc<onnx::ModelProto>,
    per_channel: bool,
    smooth: std::sync::Arc<HashMap<String, Vec<f32>>>,
) -> Rebuild {
    Box::new(move |keep| {
        Ok(quantize::dynamic::quantize_smoothed(&base, keep, per_channel, &smooth)?.0)
    })
}

fn static_build(
    base: std::sync::Arc<onnx::ModelProto>,
    ranges: HashMap<String, quantize::calibrate::Range>,
) -> Rebuild {
    Box::new(move |keep| {
        Ok(quantize::qdq::quantize(&base, &quantize::qdq::plan(&base, keep), &ranges)?.0)
    })
}

/// Per-node sensitivity (each node quantized alone, error on a few samples),
/// then the most sensitive nodes kept in float, 1, 2, 3, 4, 6, 8, … at a
/// time, until the candidate passes its gate on every sample.
fn fallback(
    cand: &Candidate,
    samples: &[Sample],
    reference: &[Vec<(String, Tensor)>],
    deadline: Instant,
    progress: Progress<'_>,
) -> Result<Option<Candidate>> {
    let Some((nodes, rebuild)) = &cand.fallback else {
        return Ok(None);
    };
    let all: HashSet<String> = nodes.iter().cloned().collect();
    let probe = samples.len().min(3);
    let score = |keep: &HashSet<String>, n: usize| -> Result<(Agreement, Vec<u8>)> {
        let bytes = onnx::to_bytes(&rebuild(keep)?);
        let mut engine = Engine::from_bytes(&bytes, &cand.settings)?;
        let mut a = Agreement::for_gate(&cand.gate);
        for (i, s) in samples.iter().enumerate().take(n) {
            a.update(&reference[i], &engine.run(s)?)
                .map_err(OptimizerError::Engine)?;
        }
        Ok((a, bytes))
    };
    let mut sens: Vec<(String, f64)> = Vec::new();
    for n in nodes {
        if Instant::now() > deadline {
            break;
        }
        let mut keep = all.clone();
        keep.remove(n);
        let (a, _) = score(&keep, probe)?;
        // Every metric of the gate counts: a node that loses regions or
        // misreads sequences is kept in float before one that only costs
        // a little cosine.
        sens.push((n.clone(), a.loss()));
    }
    sens.sort_by(|a, b| b.1.total_cmp(&a.1));
    progress(&format!(
        "[OK] Fallback for {}: measured the sensitivity of {} nodes; most sensitive: {}",
        cand.name,
        sens.len(),
        sens.iter()
            .take(3)
            .map(|(n, e)| format!("{n} ({e:.2e})"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut k = 1;
    while k <= sens.len() && Instant::now() <= deadline {
        let keep: HashSet<String> = sens.iter().take(k).map(|(n, _)| n.clone()).collect();
        let (a, bytes) = score(&keep, samples.len())?;
        if a.passes(&cand.gate) {
            let mut kept: Vec<&String> = keep.iter().collect();
            kept.sort();
            return Ok(Some(Candidate {
                name: format!("{}-fallback", cand.name),
                description: format!(
                    "{} with the {k} most sensitive of {} nodes kept in float: {}",
                    cand.name,
                    nodes.len(),
                    kept.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                model: ModelSource::Bytes(bytes),
                settings: cand.settings.clone(),
                gate: cand.gate.clone(),
                fallback: None,
                specialized: cand.specialized,
            }));
        }
        k = if k < 4 { k + 1 } else { k + k / 2 };
    }
    Ok(None)
}

fn rejected(cand: &Candidate, message: String) -> CandidateReport {
    rejected_report(&cand.name, &cand.description, message)
}

/// The report row of a candidate that could not be built, loaded or run.
pub(crate) fn rejected_report(name: &str, description: &str, message: String) -> CandidateReport {
    CandidateReport {
        name: name.to_string(),
        description: description.to_string(),
        status: CandidateStatus::Rejected,
        message: Some(message),
        max_rel_error: None,
        min_cosine: None,
        top1: None,
        top_k: None,
        region_agreement: None,
        sequence_agreement: None,
        latency: vec![],
        speedup: None,
        size_bytes: 0,
        seconds: 0.0,
        gate_max_rel_error: None,
        gate_min_cosine: None,
    }
}

/// Verifies (against the original's outputs, computed by the first candidate)
/// and times one candidate.
fn evaluate(
    cand: &Candidate,
    samples: &[Sample],
    reference: &mut Vec<Vec<(String, Tensor)>>,
    timing: &[(String, Sample)],
    budget: &Budget,
) -> Result<CandidateReport> {
    let mut engine = cand.load()?;
    verify_and_time(
        &mut engine,
        (&cand.name, &cand.description),
        &cand.gate,
        samples,
        reference,
        timing,
        budget,
    )
}

/// Runs `samples` on a loaded candidate engine and judges its outputs by
/// `gate` against `reference` (the first candidate, the original, fills it),
/// then times it on every timing set. Engine-agnostic: the ONNX and the
/// TorchScript searches both report through here.
pub(crate) fn verify_and_time(
    engine: &mut dyn InferenceEngine,
    (name, description): (&str, &str),
    gate: &Gate,
    samples: &[Sample],
    reference: &mut Vec<Vec<(String, Tensor)>>,
    timing: &[(String, Sample)],
    budget: &Budget,
) -> Result<CandidateReport> {
    let is_reference = reference.is_empty();
    let mut agreement = Agreement::for_gate(gate);
    let mut failure = None;
    for (i, sample) in samples.iter().enumerate() {
        let out = engine.run(sample)?;
        if is_reference {
            reference.push(out);
        } else if let Err(e) = agreement.update(&reference[i], &out) {
            failure = Some(format!("sample {i}: {e}"));
            break;
        }
    }
    // The reference agrees with itself by definition (it compared nothing).
    let passed = failure.is_none() && (is_reference || agreement.passes(gate));
    let message = failure.or_else(|| (!passed).then(|| agreement.failure(gate)));
    let mut latency = Vec::new();
    for (label, sample) in timing {
        latency.push(bench::time(engine, sample, label, budget)?);
    }
    Ok(CandidateReport {
        name: name.to_string(),
        description: description.to_string(),
        status: if passed {
            CandidateStatus::Passed
        } else {
            CandidateStatus::Rejected
        },
        message,
        max_rel_error: Some(agreement.max_rel_error),
        min_cosine: Some(agreement.min_cosine),
        top1: agreement.top1().filter(|_| !is_reference),
        top_k: agreement.top_k.share(),
        region_agreement: agreement.regions.share(),
        sequence_agreement: agreement.sequences.share(),
        latency,
        speedup: None,
        size_bytes: 0,
        seconds: 0.0,
        gate_max_rel_error: gate.max_rel_error.is_finite().then_some(gate.max_rel_error),
        gate_min_cosine: (gate.min_cosine > -1.0).then_some(gate.min_cosine),
    })
}

pub(crate) fn timing_sets(
    sig: &ModelSignature,
    opts: &OptimizeOptions,
    samples: &[Sample],
) -> Result<Vec<(String, Sample)>> {
    let label = |shapes: &[Vec<usize>]| {
        shapes
            .iter()
            .map(|s| {
                s.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("*")
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    if opts.input_shapes.is_empty() {
        let Some(first) = samples.first() else {
            return Err(OptimizerError::Config("no samples to time".into()));
        };
        let shapes: Vec<Vec<usize>> = first.iter().map(|(_, t)| t.shape.clone()).collect();
        return Ok(vec![(label(&shapes), first.clone())]);
    }
    let mut out = Vec::new();
    for (g, group) in opts.input_shapes.iter().enumerate() {
        let shapes = data::concrete_shapes(sig, Some(group), 16)?;
        // Prefer a real sample when one has exactly these shapes.
        let real = samples
            .iter()
            .find(|s| s.iter().map(|(_, t)| &t.shape).eq(shapes.iter()));
        let sample = match real {
            Some(s) => s.clone(),
            None => {
                let ranges = opts
                    .input_ranges
                    .get(g)
                    .or(opts.input_ranges.first())
                    .map(Vec::as_slice);
                data::synthesize(sig, &shapes, ranges, 1000 + g as u64)?
            }
        };
        out.push((label(&shapes), sample));
    }
    Ok(out)
}

fn check_declared_names(sig: &ModelSignature, opts: &OptimizeOptions) -> Result<()> {
    let gated = opts.accuracy.as_ref().and_then(|a| a.outputs.clone());
    for (kind, declared, actual) in [
        ("inputs", &opts.inputs, &sig.inputs),
        ("outputs", &opts.outputs, &sig.outputs),
        ("accuracy.outputs", &gated, &sig.outputs),
    ] {
        let Some(declared) = declared else { continue };
        for name in declared {
            let found = actual
                .iter()
                .any(|s| &s.name == name || s.name.strip_suffix(":0") == Some(name.as_str()));
            if !found {
                let what = kind.rsplit('.').next().unwrap_or(kind);
                return Err(OptimizerError::Config(format!(
                    "model_info.{kind} names '{name}', which the model does not have; its {what} are: {}",
                    actual.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    Ok(())
}

pub fn describe_signature(sig: &ModelSignature) -> String {
    let list = |v: &[shared::api::TensorSpec]| {
        v.iter()
            .map(|s| format!("{} {} {}", s.name, s.datatype, engine::fmt_dims(&s.shape)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "inputs {}; outputs {}",
        list(&sig.inputs),
        list(&sig.outputs)
    )
}

pub(crate) fn describe_row(row: &CandidateReport) -> String {
    let lat = row
        .latency
        .iter()
        .map(|l| format!("p50 {:.3} ms @ {}", l.p50_ms, l.shapes))
        .collect::<Vec<_>>()
        .join(", ");
    match row.status {
        CandidateStatus::Rejected if row.latency.is_empty() => {
            format!("rejected: {}", row.message.as_deref().unwrap_or(""))
        }
        CandidateStatus::Rejected => format!(
            "rejected ({lat}, speedup {:.2}x): {}",
            row.speedup.unwrap_or(1.0),
            row.message.as_deref().unwrap_or("")
        ),
        _ => format!(
            "max rel error {:.2e}, min cosine {:.6}{}, {lat}, speedup {:.2}x",
            row.max_rel_error.unwrap_or(0.0),
            row.min_cosine.unwrap_or(1.0),
            gate_metrics(row),
            row.speedup.unwrap_or(1.0)
        ),
    }
}

/// The agreement metrics of a row, as `, regions 98.0%`….
fn gate_metrics(row: &CandidateReport) -> String {
    row.agreements().iter().map(|a| format!(", {a}")).collect()
}

/// The candidate ONNX speedups are measured against.
pub const BASELINE: &str = "ort-default";

/// The p50 (first shape group) of the [`BASELINE`] row, once it was timed.
fn baseline_p50(rows: &[CandidateReport]) -> Option<f64> {
    rows.iter()
        .find(|r| r.name == BASELINE)
        .and_then(|r| r.latency.first())
        .map(|l| l.p50_ms)
}

pub(crate) fn first_p50(row: &CandidateReport) -> f64 {
    row.latency
        .first()
        .map(|l| l.p50_ms)
        .unwrap_or(f64::INFINITY)
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let p = dir.join(format!(".work-{}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(|e| OptimizerError::io(&p, e))?;
    Ok(p)
}

pub(crate) fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Single-element inputs whose `input_ranges` entry is one value (`[16000,16000]`):
/// the graph may be specialized for them (If nodes on a sample rate, say).
fn fixed_inputs(sig: &ModelSignature, opts: &OptimizeOptions) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    let Some(group) = opts.input_ranges.first() else {
        return Ok(out);
    };
    for (spec, range) in sig.inputs.iter().zip(group) {
        let ValueRange::Numeric { lo, hi } = *range else {
            continue;
        };
        if lo != hi || spec.shape.iter().any(|&d| d != 1) {
            continue;
        }
        let shape = vec![1; spec.shape.len()];
        let data = match DType::from_kserve_name(&spec.datatype) {
            Some(DType::F32) => TensorData::F32(vec![lo as f32]),
            Some(DType::F64) => TensorData::F64(vec![lo]),
            Some(DType::I64) => TensorData::I64(vec![lo as i64]),
            Some(DType::I32) => TensorData::I32(vec![lo as i32]),
            _ => continue,
        };
        out.insert(
            spec.name.clone(),
            Tensor::new(shape, data).map_err(OptimizerError::Config)?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(v: serde_json::Value) -> shared::config::ModelInfo {
        serde_json::from_value(v).expect("a model_info object")
    }

    #[test]
    fn model_info_becomes_options_with_paths_inside_the_data_folder() {
        let i = info(serde_json::json!({
            "optimization_level": "o2",
            "test_data": "data/test.npz",
            "calibration_dataset": "calib.npz",
            "inputs": ["x"],
            "input_shapes": [["1*4"], ["8*4"]],
        }));
        let o = OptimizeOptions::from_model_info(
            PathBuf::from("m.onnx"),
            PathBuf::from("out"),
            &i,
            Path::new("/models/abc"),
        )
        .unwrap();
        assert_eq!(o.level, OptimizationLevel::O2);
        assert_eq!(
            o.test_data,
            Some(PathBuf::from("/models/abc/data/test.npz"))
        );
        assert_eq!(o.calibration, Some(PathBuf::from("/models/abc/calib.npz")));
        assert_eq!(o.inputs, Some(vec!["x".to_string()]));
        assert_eq!(o.input_shapes, vec![vec![vec![1, 4]], vec![vec![8, 4]]]);
        assert_eq!(o.device, TargetDevice::Cpu);
        assert!(o.threads >= 1);
    }

    #[test]
    fn a_shape_that_does_not_parse_is_named_by_its_field() {
        let i = info(serde_json::json!({ "input_shapes": [["1*x"]] }));
        let e = OptimizeOptions::from_model_info(
            PathBuf::from("m.onnx"),
            PathBuf::from("out"),
            &i,
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.starts_with("input_shapes:"), "{e}");
    }
}
