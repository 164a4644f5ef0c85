//! The search: candidates → verify → time → pick → write the artifact.

use std::path::{Path, PathBuf};
use std::time::Instant;

use shared::api::{
    CandidateReport, CandidateStatus, Diagnosis, ModelSignature, OptimizationReport, ReportContext,
};
use shared::config::{OptimizationLevel, ValueRange};

use crate::artifact::{self, ArtifactMeta};
use crate::bench::{self, Budget};
use crate::data::{self, Sample};
use crate::engine::{self, Engine, GraphLevel, SessionSettings};
use crate::error::{OptimizerError, Result};
use crate::verify::{Agreement, Gate};

/// Everything one optimization needs. Built from a plugin's `model_info` by
/// the server, or from flags by `whet optimize`.
#[derive(Debug, Clone)]
pub struct OptimizeOptions {
    pub model: PathBuf,
    pub out_dir: PathBuf,
    pub level: OptimizationLevel,
    pub test_data: Option<PathBuf>,
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
}

/// Progress sink: one human-readable line per step.
pub type Progress<'a> = &'a mut dyn FnMut(&str);

struct Candidate {
    name: &'static str,
    description: String,
    model: PathBuf,
    settings: SessionSettings,
}

/// Runs the whole search and writes `model.onnx`, `artifact.json` and
/// `report.json` into `opts.out_dir`.
pub fn optimize(
    opts: &OptimizeOptions,
    progress: Progress<'_>,
) -> Result<(OptimizationReport, ArtifactMeta)> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| OptimizerError::io(&opts.out_dir, e))?;
    let threads = opts.threads.max(1);

    let sig = engine::inspect(&opts.model)?;
    check_declared_names(&sig, opts)?;

    let mut notes = Vec::new();
    if opts.level == OptimizationLevel::O2 {
        notes.push("o2 (INT8) candidates are not built by this optimizer version; o1 candidates were searched".to_string());
        progress("[OK] o2 requested: INT8 candidates are not available in this version, searching o1 candidates");
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
    let optimized_path = work.join("extended.onnx");
    let mut candidates = vec![Candidate {
        name: "original",
        description: "the model as given, ONNX Runtime graph optimizations off".into(),
        model: opts.model.clone(),
        settings: SessionSettings::new(GraphLevel::Disable, threads),
    }];
    match engine::save_optimized(&opts.model, &optimized_path, GraphLevel::Extended) {
        Ok(()) => candidates.push(Candidate {
            name: "o1-fp32-graph",
            description: "fp32 graph optimization (constant folding, fusions) saved portable, layout optimizations at load, no thread spinning".into(),
            model: optimized_path.clone(),
            settings: SessionSettings::new(GraphLevel::All, threads),
        }),
        Err(e) => notes.push(format!("graph optimization failed, candidate skipped: {e}")),
    }

    let mut reference: Vec<Vec<(String, crate::tensor::Tensor)>> = Vec::new();
    let mut rows = Vec::new();
    for cand in &candidates {
        let t0 = Instant::now();
        let row = evaluate(cand, &samples, &mut reference, &timing, &opts.budget);
        let mut row = match row {
            Ok(r) => r,
            Err(e) => {
                if cand.name == "original" {
                    // The baseline must run: without it nothing can be verified.
                    return Err(e);
                }
                CandidateReport {
                    name: cand.name.into(),
                    description: cand.description.clone(),
                    status: CandidateStatus::Rejected,
                    message: Some(e.to_string()),
                    max_rel_error: None,
                    min_cosine: None,
                    latency: vec![],
                    speedup: None,
                    size_bytes: 0,
                    seconds: 0.0,
                }
            }
        };
        row.size_bytes = std::fs::metadata(&cand.model).map(|m| m.len()).unwrap_or(0);
        row.seconds = t0.elapsed().as_secs_f64();
        rows.push(row);
    }

    let baseline_ms = rows[0]
        .latency
        .first()
        .map(|l| l.p50_ms)
        .unwrap_or(f64::NAN);
    for row in rows.iter_mut() {
        if let Some(l) = row.latency.first() {
            row.speedup = Some(baseline_ms / l.p50_ms);
        }
    }
    for row in &rows {
        progress(&format!(
            "[OK] Candidate {}: {}",
            row.name,
            describe_row(row)
        ));
    }

    // The fastest candidate that passed; the original always passes.
    let best = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == CandidateStatus::Passed)
        .min_by(|(_, a), (_, b)| first_p50(a).total_cmp(&first_p50(b)))
        .map(|(i, _)| i)
        .unwrap_or(0);
    rows[best].status = CandidateStatus::Selected;
    let winner = &candidates[best];
    let optimized_ms = first_p50(&rows[best]);

    let model_dst = opts.out_dir.join(artifact::MODEL_FILE);
    std::fs::copy(&winner.model, &model_dst).map_err(|e| OptimizerError::io(&model_dst, e))?;
    let _ = std::fs::remove_dir_all(&work);

    let target = artifact::cpu_target();
    let meta = ArtifactMeta {
        model_file: artifact::MODEL_FILE.into(),
        candidate: winner.name.into(),
        session: winner.settings.clone(),
        signature: sig.clone(),
        optimizer_version: artifact::OPTIMIZER_VERSION.into(),
        target: target.clone(),
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

/// Verifies (against the original's outputs, computed by the first candidate)
/// and times one candidate.
fn evaluate(
    cand: &Candidate,
    samples: &[Sample],
    reference: &mut Vec<Vec<(String, crate::tensor::Tensor)>>,
    timing: &[(String, Sample)],
    budget: &Budget,
) -> Result<CandidateReport> {
    let mut engine = Engine::load(&cand.model, &cand.settings)?;
    let is_reference = reference.is_empty();
    let mut agreement = Agreement::default();
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
    let gate = Gate::O1;
    let passed = failure.is_none() && agreement.passes(&gate);
    let message = failure.or_else(|| {
        (!passed).then(|| {
            format!(
                "accuracy gate failed: max relative error {:.3e} (limit {:.0e}), min cosine {:.6} (limit {})",
                agreement.max_rel_error, gate.max_rel_error, agreement.min_cosine, gate.min_cosine
            )
        })
    });
    let mut latency = Vec::new();
    if passed {
        for (label, sample) in timing {
            latency.push(bench::time(&mut engine, sample, label, budget)?);
        }
    }
    Ok(CandidateReport {
        name: cand.name.into(),
        description: cand.description.clone(),
        status: if passed {
            CandidateStatus::Passed
        } else {
            CandidateStatus::Rejected
        },
        message,
        max_rel_error: Some(agreement.max_rel_error),
        min_cosine: Some(agreement.min_cosine),
        latency,
        speedup: None,
        size_bytes: 0,
        seconds: 0.0,
    })
}

fn timing_sets(
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
    for (kind, declared, actual) in [
        ("inputs", &opts.inputs, &sig.inputs),
        ("outputs", &opts.outputs, &sig.outputs),
    ] {
        let Some(declared) = declared else { continue };
        for name in declared {
            let found = actual
                .iter()
                .any(|s| &s.name == name || s.name.strip_suffix(":0") == Some(name.as_str()));
            if !found {
                return Err(OptimizerError::Config(format!(
                    "model_info.{kind} names '{name}', which the model does not have; its {kind} are: {}",
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

fn describe_row(row: &CandidateReport) -> String {
    let lat = row
        .latency
        .iter()
        .map(|l| format!("p50 {:.3} ms @ {}", l.p50_ms, l.shapes))
        .collect::<Vec<_>>()
        .join(", ");
    match row.status {
        CandidateStatus::Rejected => format!("rejected: {}", row.message.as_deref().unwrap_or("")),
        _ => format!(
            "max rel error {:.2e}, min cosine {:.6}, {lat}, speedup {:.2}x",
            row.max_rel_error.unwrap_or(0.0),
            row.min_cosine.unwrap_or(1.0),
            row.speedup.unwrap_or(1.0)
        ),
    }
}

fn first_p50(row: &CandidateReport) -> f64 {
    row.latency
        .first()
        .map(|l| l.p50_ms)
        .unwrap_or(f64::INFINITY)
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|e| OptimizerError::Config(e.to_string()))?;
    std::fs::write(path, bytes).map_err(|e| OptimizerError::io(path, e))
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let p = dir.join(format!(".work-{}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(|e| OptimizerError::io(&p, e))?;
    Ok(p)
}

fn cpu_name() -> String {
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
