//! The optimizer's performance targets, measured in one run on this machine:
//! our o2 search on the zoo models against ONNX Runtime fp32 (Level3, 1
//! thread, no spinning) and against ORT's own quantization tools at their
//! best settings (built by `scripts/peers.py` when a Python with onnxruntime
//! is available: `scripts/bench.sh` sets that up).
//!
//! Then the zoo's TensorFlow graphs (imported to ONNX by our importer) and
//! the models the tests build (an opset-11 CNN with its weights in
//! `Constant` nodes, a segmentation net with a sigmoid map, a CTC-style
//! recognizer), each against ORT's tools run on it by `scripts/peers.py
//! generic` — any ONNX model with one image input goes through the same path.
//!
//! Run: `scripts/bench.sh` (or `cargo bench -p whetstone-optimizer --bench o2`;
//! `O2_BENCH=built` for the built models alone, `O2_BENCH=tf` for the zoo's
//! TensorFlow graphs alone). Needs the zoo
//! (`WHETSTONE_ZOO`, default `../shared/zoo`) except for `O2_BENCH=built`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use optimizer::data::{self, Sample};
use optimizer::engine::{Engine, GraphLevel, SessionSettings};
use optimizer::optimize::{optimize, OptimizeOptions};
use optimizer::tensor::{Tensor, TensorData};
use shared::config::OptimizationLevel;

fn zoo() -> PathBuf {
    let p = std::env::var_os("WHETSTONE_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/zoo"));
    assert!(
        p.join("minilm.onnx").is_file(),
        "the model zoo is missing at {} (set WHETSTONE_ZOO)",
        p.display()
    );
    p
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn p50(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Batch `k` copies of a batch-1 sample along axis 0.
fn batched(sample: &Sample, k: usize) -> Sample {
    sample
        .iter()
        .map(|(n, t)| {
            let mut shape = t.shape.clone();
            shape[0] *= k;
            let data = match &t.data {
                TensorData::F32(v) => TensorData::F32(v.repeat(k)),
                TensorData::I64(v) => TensorData::I64(v.repeat(k)),
                TensorData::I32(v) => TensorData::I32(v.repeat(k)),
                other => other.clone(),
            };
            (n.clone(), Tensor { shape, data })
        })
        .collect()
}

struct Contender {
    name: String,
    engine: Engine,
}

/// p50 per contender per input, interleaved in rounds so machine noise hits all alike.
fn time_interleaved(
    contenders: &mut [Contender],
    inputs: &[Sample],
    rounds: usize,
    per_round: usize,
) -> Vec<Vec<f64>> {
    let mut times = vec![vec![Vec::new(); inputs.len()]; contenders.len()];
    for c in contenders.iter_mut() {
        for inp in inputs {
            c.engine.run(inp).expect("warm-up run");
        }
    }
    for _ in 0..rounds {
        for (ci, c) in contenders.iter_mut().enumerate() {
            for (ii, inp) in inputs.iter().enumerate() {
                for _ in 0..per_round {
                    let t = Instant::now();
                    c.engine.run(inp).expect("timed run");
                    times[ci][ii].push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    }
    times
        .into_iter()
        .map(|per| per.into_iter().map(|mut v| p50(&mut v)).collect())
        .collect()
}

/// Mean-pooled (over the attention mask), L2-normalized sentence embedding.
fn sentence_embedding(hidden: &[f32], mask: &[i64], dim: usize) -> Vec<f32> {
    let mut e = vec![0f32; dim];
    let mut n = 0f32;
    for (t, &m) in mask.iter().enumerate() {
        if m != 0 {
            for d in 0..dim {
                e[d] += hidden[t * dim + d];
            }
            n += 1.0;
        }
    }
    let norm = e.iter().map(|x| (x / n) * (x / n)).sum::<f32>().sqrt();
    e.iter().map(|x| x / n / norm).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64) * (*y as f64))
        .sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn f32s(t: &Tensor) -> &[f32] {
    match &t.data {
        TensorData::F32(v) => v,
        _ => panic!("expected a float output"),
    }
}

/// Builds ORT's peer artifacts with its Python tools, when available.
fn peers(zoo: &Path, out: &Path, resnet_calib: &[Sample]) -> Vec<(String, PathBuf)> {
    let python = std::env::var_os("WHET_PEER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.bench-venv/bin/python"));
    if !python.is_file() {
        println!("peers skipped: no Python with onnxruntime (run scripts/bench.sh, or set WHET_PEER_PYTHON)");
        return vec![];
    }
    std::fs::create_dir_all(out).expect("peer folder");
    // The peer tool reads .npz; hand it the same calibration samples we use.
    let stacked: Vec<f32> = resnet_calib
        .iter()
        .flat_map(|s| f32s(&s[0].1).to_vec())
        .collect();
    let calib = out.join("calib_resnet.npz");
    let t = Tensor::new(
        vec![resnet_calib.len(), 3, 224, 224],
        TensorData::F32(stacked),
    )
    .expect("calibration tensor");
    data::write_npz(&calib, &[("input", &t)]).expect("write calibration npz");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers.py");
    let t0 = Instant::now();
    let status = std::process::Command::new(&python)
        .arg(script)
        .arg(zoo)
        .arg(out)
        .arg(&calib)
        .status()
        .expect("run peers.py");
    assert!(status.success(), "peers.py failed");
    println!(
        "peer artifacts built by ORT's Python tools in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    std::fs::read_dir(out)
        .expect("peer folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .map(|p| {
            (
                p.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                p,
            )
        })
        .collect()
}

fn run_ours(
    model: &Path,
    test: &Path,
    calib: &Path,
    shapes: Vec<Vec<Vec<usize>>>,
    out: &Path,
) -> (
    optimizer::artifact::ArtifactMeta,
    shared::api::OptimizationReport,
    f64,
) {
    run_ours_gated(model, test, calib, shapes, out, None)
}

/// [`run_ours`] with the `accuracy` a user would set for the model.
fn run_ours_gated(
    model: &Path,
    test: &Path,
    calib: &Path,
    shapes: Vec<Vec<Vec<usize>>>,
    out: &Path,
    accuracy: Option<shared::config::Accuracy>,
) -> (
    optimizer::artifact::ArtifactMeta,
    shared::api::OptimizationReport,
    f64,
) {
    let opts = OptimizeOptions {
        accuracy,
        level: OptimizationLevel::O2,
        test_data: Some(test.to_path_buf()),
        calibration: Some(calib.to_path_buf()),
        weight_adjustment: true,
        input_shapes: shapes,
        budget: optimizer::bench::Budget {
            warmup: 2,
            min_runs: 5,
            max_runs: 50,
            time: Duration::from_millis(700),
        },
        fallback_budget: std::time::Duration::from_secs(30),
        ..OptimizeOptions::new(model.to_path_buf(), out.to_path_buf())
    };
    let t0 = Instant::now();
    let (report, meta) = optimize(&opts, &mut |l: &str| println!("  {l}")).expect("optimize");
    (meta, report, t0.elapsed().as_secs_f64())
}

fn one_thread(level: GraphLevel) -> SessionSettings {
    SessionSettings::new(level, 1)
}

/// Models the tests build, as other exporters write them: our o2 search
/// (with the gate metric such a model's user would choose) against ORT fp32
/// and ORT's quantization tools run on the same model and calibration set.
fn built_models(work: &Path, table: &mut Vec<String>) {
    use optimizer::onnx_build;
    let cases: Vec<(
        &str,
        optimizer::onnx::ModelProto,
        (usize, usize),
        serde_json::Value,
    )> = vec![
        (
            "cnn-opset11",
            onnx_build::cnn_model_old_export(32, 64, 100),
            (64, 64),
            serde_json::json!({}),
        ),
        (
            "seg",
            onnx_build::seg_model(32, 128),
            (128, 128),
            serde_json::json!({"min_region_agreement": 0.9}),
        ),
        (
            "ctc",
            onnx_build::ctc_model(64, 256, 40),
            (8, 256),
            serde_json::json!({"min_sequence_agreement": 0.9}),
        ),
    ];
    for (name, model, (h, w), acc) in cases {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).expect("folder");
        let path = dir.join(format!("{name}.onnx"));
        optimizer::onnx::save(&model, &path).expect("save model");
        let (test, calib) = (dir.join("test.npz"), dir.join("calib.npz"));
        data::write_npz(&test, &[("x", &onnx_build::blob_images(8, h, w, 3))]).expect("test npz");
        data::write_npz(&calib, &[("x", &onnx_build::blob_images(32, h, w, 101))])
            .expect("calib npz");
        println!("\n{name}: o2 search (built by onnx_build, {h}×{w} inputs, accuracy {acc})");
        let accuracy: shared::config::Accuracy = serde_json::from_value(acc).expect("accuracy");
        bench_onnx(name, &path, &test, &calib, accuracy, &dir, table);
    }
}

/// The zoo's TensorFlow graphs, imported to ONNX by our importer, through
/// the same comparison. MobileNetV2 has no calibration set in the zoo: both
/// sides calibrate on its test set, and the row says so.
fn zoo_tf_models(zoo: &Path, work: &Path, table: &mut Vec<String>) {
    for (name, pb, test, calib) in [
        (
            "textcnn",
            "textcnn_frozen.pb",
            "test_textcnn.npz",
            "calib_textcnn.npz",
        ),
        (
            "mobilenet",
            "mobilenet_v2_frozen.pb",
            "test_mobilenet_v2.npy",
            "test_mobilenet_v2.npy",
        ),
    ] {
        let dir = work.join(name);
        std::fs::create_dir_all(&dir).expect("folder");
        let imported =
            optimizer::inspect::tensorflow(&zoo.join(pb), None, None, None).expect("import");
        let path = dir.join(format!("{name}.onnx"));
        std::fs::write(&path, &imported.onnx).expect("write the imported graph");
        println!("\n{name}: {pb} imported to ONNX, o2 search ({test}, calibration {calib})");
        let label = if test == calib {
            format!("{name} (calibrated on its test set)")
        } else {
            name.to_string()
        };
        bench_onnx(
            &label,
            &path,
            &zoo.join(test),
            &zoo.join(calib),
            Default::default(),
            &dir,
            table,
        );
    }
}

/// One model through the comparison: our o2 search with `accuracy` on
/// `test` and `calib` (any format `data::load` reads), ORT fp32 (Level3),
/// and ORT's tools (`scripts/peers.py generic`, when a Python with
/// onnxruntime is set) calibrated on the same samples; timed interleaved on
/// the first test sample and judged against fp32 by the gate's metrics.
fn bench_onnx(
    name: &str,
    path: &Path,
    test: &Path,
    calib: &Path,
    accuracy: shared::config::Accuracy,
    dir: &Path,
    table: &mut Vec<String>,
) {
    let sig = optimizer::engine::inspect(path).expect("inspect");
    let samples = data::load(test, &sig).expect("test samples").samples;
    let shapes = vec![samples[0].iter().map(|(_, t)| t.shape.clone()).collect()];
    let (meta, report, secs) = run_ours_gated(
        path,
        test,
        calib,
        shapes,
        &dir.join("ours"),
        Some(accuracy.clone()),
    );
    let mut contenders = vec![
        Contender {
            name: "ORT fp32 (Level3)".into(),
            engine: Engine::load(path, &one_thread(GraphLevel::All)).expect("fp32"),
        },
        Contender {
            name: format!("whetstone o2: {}", meta.candidate),
            engine: Engine::load(
                &dir.join("ours/model.onnx"),
                &SessionSettings {
                    intra_threads: 1,
                    ..meta.session.clone()
                },
            )
            .expect("ours"),
        },
    ];
    let mut refused = Vec::new();
    let python = std::env::var_os("WHET_PEER_PYTHON").map(PathBuf::from);
    if let (Some(py), [input]) = (&python, sig.inputs.as_slice()) {
        // ORT's tools read an .npz of the one input, samples on axis 0.
        let calib_samples = data::load(calib, &sig).expect("calibration").samples;
        let stacked = stack(&calib_samples);
        let calib_npz = dir.join("peer_calib.npz");
        data::write_npz(&calib_npz, &[(input.name.as_str(), &stacked)]).expect("peer calibration");
        let peers_dir = dir.join("peers");
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let out = std::process::Command::new(py)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers.py"))
            .arg("generic")
            .arg(path)
            .arg(&peers_dir)
            .arg(&calib_npz)
            .arg(&input.name)
            .output()
            .expect("run peers.py");
        let said = String::from_utf8_lossy(&out.stdout);
        for line in said.lines().filter(|l| l.contains("FAILED")) {
            refused.push(line.replace(&format!("{stem}__"), ""));
        }
        let mut peers: Vec<PathBuf> = std::fs::read_dir(&peers_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        peers.retain(|p| p.extension().is_some_and(|e| e == "onnx"));
        peers.sort();
        for p in peers {
            let label = p
                .file_stem()
                .map(|s| s.to_string_lossy().replace(&format!("{stem}__"), ""))
                .unwrap_or_default();
            match Engine::load(&p, &one_thread(GraphLevel::All)) {
                Ok(engine) => contenders.push(Contender {
                    name: label,
                    engine,
                }),
                Err(e) => refused.push(format!(
                    "{label}: ONNX Runtime refuses to load it: {}",
                    e.to_string().chars().take(160).collect::<String>()
                )),
            }
        }
    }
    let times = time_interleaved(&mut contenders, &[samples[0].clone()], 6, 4);
    let gate = optimizer::verify::Gate::O2.with_overrides(Some(&accuracy));
    let reference: Vec<_> = samples
        .iter()
        .map(|s| contenders[0].engine.run(s).expect("fp32 run"))
        .collect();
    for (c, t) in contenders.iter_mut().zip(&times) {
        let mut a = optimizer::verify::Agreement::for_gate(&gate);
        for (s, r) in samples.iter().zip(&reference) {
            let out = c.engine.run(s).expect("run");
            if let Err(e) = a.update(r, &out) {
                println!("  {}: {e}", c.name);
            }
        }
        let judged = [
            ("top-1", a.top1()),
            ("regions", a.regions.share()),
            ("sequences", a.sequences.share()),
        ]
        .iter()
        .filter_map(|(w, v)| v.map(|v| format!("{w} {:.0}%", v * 100.0)))
        .collect::<Vec<_>>()
        .join(", ");
        table.push(format!(
            "| {name:<8} | {:<42} | {:>8.3} | {:>6.2}x | {:>8} | {:>7} | cosine {:.4}{}{} |",
            c.name,
            t[0],
            times[0][0] / t[0],
            "-",
            "-",
            a.min_cosine,
            if judged.is_empty() { "" } else { ", " },
            judged
        ));
    }
    for r in refused {
        table.push(format!("| {name:<8} | {r} | | | | | |"));
    }
    table.push(format!(
        "| {name:<8} | o2 search wall time {secs:.1} s (report: {:.1} s), {} candidates | | | | | |",
        report.total_seconds,
        report.candidates.len()
    ));
}

/// Samples of one input stacked on axis 0 (batch-1 samples of any dtype
/// the readers give).
fn stack(samples: &[Sample]) -> Tensor {
    let first = &samples[0][0].1;
    let mut shape = first.shape.clone();
    shape[0] = samples.iter().map(|s| s[0].1.shape[0]).sum();
    let data = match &first.data {
        TensorData::F32(_) => TensorData::F32(
            samples
                .iter()
                .flat_map(|s| f32s(&s[0].1).to_vec())
                .collect(),
        ),
        TensorData::I32(_) => TensorData::I32(
            samples
                .iter()
                .flat_map(|s| match &s[0].1.data {
                    TensorData::I32(v) => v.clone(),
                    _ => panic!("mixed dtypes"),
                })
                .collect(),
        ),
        TensorData::I64(_) => TensorData::I64(
            samples
                .iter()
                .flat_map(|s| match &s[0].1.data {
                    TensorData::I64(v) => v.clone(),
                    _ => panic!("mixed dtypes"),
                })
                .collect(),
        ),
        other => panic!("no stacking for {other:?}"),
    };
    Tensor::new(shape, data).expect("stacked")
}

fn main() {
    if std::env::var("O2_BENCH").as_deref() == Ok("tf") {
        // Only the zoo's TensorFlow graphs.
        let work = tempfile::tempdir().expect("temp dir");
        let mut table = Vec::new();
        zoo_tf_models(&zoo(), work.path(), &mut table);
        println!("\ncpu flags: {}", optimizer::bench::cpu_flags());
        print_table(&table);
        return;
    }
    if std::env::var("O2_BENCH").as_deref() == Ok("built") {
        // Only the models the tests build (no zoo needed).
        let work = tempfile::tempdir().expect("temp dir");
        let mut table = Vec::new();
        built_models(work.path(), &mut table);
        println!("\ncpu flags: {}", optimizer::bench::cpu_flags());
        print_table(&table);
        return;
    }
    let zoo = zoo();
    let work = tempfile::tempdir().expect("temp dir");
    let baseline_rss = peak_rss_mb();
    let sig_resnet = optimizer::engine::inspect(&zoo.join("resnet18.onnx")).expect("resnet18");
    let resnet_calib = data::load(&zoo.join("calib_resnet.pth"), &sig_resnet)
        .expect("calib_resnet.pth")
        .samples;
    let peer_list = peers(&zoo, &work.path().join("peers"), &resnet_calib);

    let mut table: Vec<String> = Vec::new();

    // ---- MiniLM -------------------------------------------------------------
    println!("\nminilm.onnx: o2 search (test_minilm.npz, calib_minilm.npz, shapes 1*128 and 8*128, 1 thread)");
    let s1 = vec![vec![1, 128]; 3];
    let s8 = vec![vec![8, 128]; 3];
    let (meta, report, secs) = run_ours(
        &zoo.join("minilm.onnx"),
        &zoo.join("test_minilm.npz"),
        &zoo.join("calib_minilm.npz"),
        vec![s1, s8],
        &work.path().join("minilm"),
    );
    let sig = optimizer::engine::inspect(&zoo.join("minilm.onnx")).expect("minilm");
    let test = data::load(&zoo.join("test_minilm.npz"), &sig)
        .expect("test data")
        .samples;
    let mut contenders = vec![
        Contender {
            name: "ORT fp32 (Level3)".into(),
            engine: Engine::load(&zoo.join("minilm.onnx"), &one_thread(GraphLevel::All))
                .expect("fp32"),
        },
        Contender {
            name: format!("whetstone o2: {}", meta.candidate),
            engine: Engine::load(
                &work.path().join("minilm/model.onnx"),
                &SessionSettings {
                    intra_threads: 1,
                    ..meta.session.clone()
                },
            )
            .expect("ours"),
        },
    ];
    // FP16 on this CPU, measured (the search skips it on CPU targets).
    let fp16 = optimizer::passes::to_fp16(
        &optimizer::onnx::load(&zoo.join("minilm.onnx")).expect("load"),
        optimizer::passes::DEFAULT_KEEP_FP32,
    )
    .expect("fp16");
    contenders.push(Contender {
        name: "fp16 (our pass, fp32 islands)".into(),
        engine: Engine::from_bytes(
            &optimizer::onnx::to_bytes(&fp16),
            &one_thread(GraphLevel::All),
        )
        .expect("fp16 session"),
    });
    for (name, path) in peer_list.iter().filter(|(n, _)| n.starts_with("minilm__")) {
        contenders.push(Contender {
            name: name.trim_start_matches("minilm__").to_string(),
            engine: Engine::load(path, &one_thread(GraphLevel::All)).expect("peer"),
        });
    }
    let (ref_shape, reference) = {
        let mut npz =
            npyz::npz::NpzArchive::open(zoo.join("ref_minilm.npz")).expect("ref_minilm.npz");
        let arr = npz
            .by_name("sentence_embedding")
            .expect("read")
            .expect("sentence_embedding");
        (arr.shape().to_vec(), arr.into_vec::<f32>().expect("f32"))
    };
    let dim = ref_shape[1] as usize;
    let inputs = vec![test[0].clone(), batched(&test[0], 8)];
    let times = time_interleaved(&mut contenders, &inputs, 6, 5);
    for (c, t) in contenders.iter_mut().zip(&times) {
        let mut worst = 1.0f64;
        for (i, s) in test.iter().enumerate() {
            let out = c.engine.run(s).expect("run");
            let mask = match &s[1].1.data {
                TensorData::I64(v) => v.clone(),
                _ => panic!("attention_mask"),
            };
            let emb = sentence_embedding(f32s(&out[0].1), &mask, dim);
            worst = worst.min(cosine(&emb, &reference[i * dim..(i + 1) * dim]));
        }
        table.push(format!(
            "| minilm   | {:<42} | {:>8.2} | {:>6.2}x | {:>8.2} | {:>6.2}x | cosine {:.4} |",
            c.name,
            t[0],
            times[0][0] / t[0],
            t[1],
            times[0][1] / t[1],
            worst
        ));
    }
    table.push(format!(
        "| minilm   | o2 search wall time {secs:.1} s (report: {:.1} s), {} candidates | | | | | |",
        report.total_seconds,
        report.candidates.len()
    ));

    // ---- ResNet18 -----------------------------------------------------------
    println!("\nresnet18.onnx: o2 search (test_resnet.npz, calib_resnet.pth, shape 1*3*224*224, 1 thread)");
    let (meta, report, secs) = run_ours(
        &zoo.join("resnet18.onnx"),
        &zoo.join("test_resnet.npz"),
        &zoo.join("calib_resnet.pth"),
        vec![vec![vec![1, 3, 224, 224]]],
        &work.path().join("resnet"),
    );
    let test = data::load(&zoo.join("test_resnet.npz"), &sig_resnet)
        .expect("test data")
        .samples;
    let mut contenders = vec![
        Contender {
            name: "ORT fp32 (Level3)".into(),
            engine: Engine::load(&zoo.join("resnet18.onnx"), &one_thread(GraphLevel::All))
                .expect("fp32"),
        },
        Contender {
            name: format!("whetstone o2: {}", meta.candidate),
            engine: Engine::load(
                &work.path().join("resnet/model.onnx"),
                &SessionSettings {
                    intra_threads: 1,
                    ..meta.session.clone()
                },
            )
            .expect("ours"),
        },
    ];
    for (name, path) in peer_list
        .iter()
        .filter(|(n, _)| n.starts_with("resnet18__"))
    {
        contenders.push(Contender {
            name: name.trim_start_matches("resnet18__").to_string(),
            engine: Engine::load(path, &one_thread(GraphLevel::All)).expect("peer"),
        });
    }
    let times = time_interleaved(&mut contenders, &[test[0].clone()], 6, 4);
    let fp32_top: Vec<usize> = test
        .iter()
        .map(|s| argmax(f32s(&contenders[0].engine.run(s).expect("run")[0].1)))
        .collect();
    for (c, t) in contenders.iter_mut().zip(&times) {
        let agree = test
            .iter()
            .zip(&fp32_top)
            .filter(|(s, top)| argmax(f32s(&c.engine.run(s).expect("run")[0].1)) == **top)
            .count();
        table.push(format!(
            "| resnet18 | {:<42} | {:>8.2} | {:>6.2}x | {:>8} | {:>7} | top-1 {agree}/{} |",
            c.name,
            t[0],
            times[0][0] / t[0],
            "-",
            "-",
            test.len()
        ));
    }
    table.push(format!(
        "| resnet18 | o2 search wall time {secs:.1} s (report: {:.1} s), {} candidates | | | | | |",
        report.total_seconds,
        report.candidates.len()
    ));

    // ---- Silero VAD -----------------------------------------------------------
    println!("\nsilero_vad.onnx: o1 search (sr fixed to 16000 by input_ranges, shapes 1*576, 2*1*128, scalar; 1 thread)");
    let range = |s: &str| shared::config::parse_range(s).expect("range");
    let opts = OptimizeOptions {
        input_shapes: vec![vec![vec![1, 576], vec![2, 1, 128], vec![1]]],
        input_ranges: vec![vec![
            range("[-1,1]"),
            range("[0,0]"),
            range("[16000,16000]"),
        ]],
        budget: optimizer::bench::Budget {
            warmup: 2,
            min_runs: 5,
            max_runs: 200,
            time: Duration::from_millis(500),
        },
        fallback_budget: Duration::from_secs(10),
        ..OptimizeOptions::new(zoo.join("silero_vad.onnx"), work.path().join("silero"))
    };
    let t0 = Instant::now();
    let (report, meta) =
        optimize(&opts, &mut |l: &str| println!("  {l}")).expect("optimize silero");
    let secs = t0.elapsed().as_secs_f64();
    let chunks = {
        let mut npz = npyz::npz::NpzArchive::open(zoo.join("test_silero_vad.npz"))
            .expect("test_silero_vad.npz");
        let arr = npz
            .by_name("onnx_input")
            .expect("read")
            .expect("onnx_input");
        arr.into_vec::<f32>().expect("f32")
    };
    let mut contenders = vec![
        Contender {
            name: "ORT fp32 (Level3)".into(),
            engine: Engine::load(&zoo.join("silero_vad.onnx"), &one_thread(GraphLevel::All))
                .expect("fp32"),
        },
        Contender {
            name: format!("whetstone: {}", meta.candidate),
            engine: Engine::load(
                &work.path().join("silero/model.onnx"),
                &SessionSettings {
                    intra_threads: 1,
                    ..meta.session.clone()
                },
            )
            .expect("ours"),
        },
    ];
    let step = |x: &[f32], state: &Tensor| -> Sample {
        vec![
            (
                "input".into(),
                Tensor::new(vec![1, 576], TensorData::F32(x.to_vec())).expect("input"),
            ),
            ("state".into(), state.clone()),
            (
                "sr".into(),
                Tensor::new(vec![], TensorData::I64(vec![16000])).expect("sr"),
            ),
        ]
    };
    let zero_state = Tensor::new(vec![2, 1, 128], TensorData::F32(vec![0.0; 256])).expect("state");
    let mut decisions: Vec<Vec<bool>> = Vec::new();
    for c in contenders.iter_mut() {
        let mut state = zero_state.clone();
        let mut d = Vec::new();
        for x in chunks.chunks(576) {
            let out = c.engine.run(&step(x, &state)).expect("silero step");
            d.push(f32s(&out.iter().find(|(n, _)| n == "output").expect("output").1)[0] > 0.5);
            state = out
                .iter()
                .find(|(n, _)| n == "stateN")
                .expect("stateN")
                .1
                .clone();
        }
        decisions.push(d);
    }
    let times = time_interleaved(&mut contenders, &[step(&chunks[..576], &zero_state)], 6, 50);
    for (i, (c, t)) in contenders.iter().zip(&times).enumerate() {
        let same = decisions[i]
            .iter()
            .zip(&decisions[0])
            .filter(|(a, b)| a == b)
            .count();
        table.push(format!(
            "| silero   | {:<42} | {:>8.3} | {:>6.2}x | {:>8} | {:>7} | decisions {same}/{} |",
            c.name,
            t[0],
            times[0][0] / t[0],
            "-",
            "-",
            decisions[0].len()
        ));
    }
    table.push(format!(
        "| silero   | o1 search wall time {secs:.1} s (report: {:.1} s), {} candidates | | | | | |",
        report.total_seconds,
        report.candidates.len()
    ));

    built_models(work.path(), &mut table);
    zoo_tf_models(&zoo, work.path(), &mut table);

    println!("\ncpu flags: {}", optimizer::bench::cpu_flags());
    print_table(&table);
    println!(
        "\npeak RSS of this process (optimizations + all sessions): {:.0} MB (at start {:.0} MB)",
        peak_rss_mb(),
        baseline_rss
    );
}

fn print_table(table: &[String]) {
    println!("\n| model    | artifact                                   | b1 p50 ms | speedup | b8 p50 ms | speedup | accuracy |");
    println!("|----------|--------------------------------------------|----------|---------|----------|---------|----------|");
    for row in table {
        println!("{row}");
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}
