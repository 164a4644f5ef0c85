//! INT8 quantization on models the tests build: static QDQ on a CNN, dynamic
//! on an MLP, the o2 gate rejecting a broken candidate, and the accuracy
//! fallback (needs the ONNX Runtime library).

use std::collections::HashSet;

use optimizer::data::{self, Sample};
use optimizer::engine::{Engine, GraphLevel, SessionSettings};
use optimizer::onnx::{self, data_type};
use optimizer::onnx_build;
use optimizer::optimize::{optimize, OptimizeOptions};
use optimizer::quantize::{calibrate, dynamic, qdq};
use optimizer::tensor::{Tensor, TensorData};
use optimizer::verify::{Agreement, Gate};
use shared::api::CandidateStatus;
use shared::config::OptimizationLevel;

fn images(n: usize, size: usize, seed: u64) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let v = (0..3 * size * size)
                .map(|j| {
                    (((j as u64 * 2654435761 + i as u64 * 97 + seed) % 1000) as f32 / 500.0) - 1.0
                })
                .collect();
            vec![(
                "x".to_string(),
                Tensor::new(vec![1, 3, size, size], TensorData::F32(v)).unwrap(),
            )]
        })
        .collect()
}

fn run_all(bytes: &[u8], samples: &[Sample]) -> Vec<Vec<(String, Tensor)>> {
    let mut e = Engine::from_bytes(bytes, &SessionSettings::new(GraphLevel::All, 1)).unwrap();
    samples.iter().map(|s| e.run(s).unwrap()).collect()
}

fn agreement(reference: &[Vec<(String, Tensor)>], got: &[Vec<(String, Tensor)>]) -> Agreement {
    let mut a = Agreement::default();
    for (r, g) in reference.iter().zip(got) {
        a.update(r, g).unwrap();
    }
    a
}

fn count_ops(m: &onnx::ModelProto, op: &str) -> usize {
    onnx::graph(m)
        .node
        .iter()
        .filter(|n| n.op_type == op)
        .count()
}

#[test]
fn static_qdq_on_a_cnn_quantizes_weights_and_activations_and_stays_accurate() {
    let model = onnx_build::cnn_model(8, 16, 10);
    let calib = images(16, 16, 1);
    let plan = qdq::plan(&model, &HashSet::new());
    // conv1, conv2, the residual Add, the pool and the Gemm.
    assert_eq!(plan.nodes.len(), 5, "{:?}", plan.nodes);
    let ranges = calibrate::calibrate(
        &model,
        &plan.activations,
        &calib,
        calibrate::Method::MinMax,
        1,
    )
    .unwrap();
    assert_eq!(
        ranges.len(),
        plan.activations.len(),
        "every planned activation observed"
    );
    let (q, summary) = qdq::quantize(&model, &plan, &ranges).unwrap();
    assert_eq!(count_ops(&q, "QuantizeLinear"), plan.activations.len());
    assert_eq!(summary.quantized_nodes, 5);
    let g = onnx::graph(&q);
    let int8_weights = g
        .initializer
        .iter()
        .filter(|t| t.data_type == data_type::INT8 && t.dims.len() > 1)
        .count();
    assert_eq!(
        int8_weights, 3,
        "two conv weights and the Gemm weight are int8"
    );
    assert!(
        g.initializer
            .iter()
            .any(|t| t.data_type == data_type::INT32),
        "conv biases are int32"
    );
    assert!(
        !g.initializer.iter().any(|t| t.name == "w1"),
        "the float weight is gone"
    );

    let test = images(8, 16, 99);
    let reference = run_all(&onnx::to_bytes(&model), &test);
    let a = agreement(&reference, &run_all(&onnx::to_bytes(&q), &test));
    assert!(
        a.passes(&Gate::O2),
        "cosine {} top1 {:?}",
        a.min_cosine,
        a.top1()
    );
}

#[test]
fn histogram_calibrations_clip_inside_the_minmax_range() {
    let model = onnx_build::cnn_model(8, 16, 10);
    let plan = qdq::plan(&model, &HashSet::new());
    let methods = [
        calibrate::Method::MinMax,
        calibrate::Method::Percentile(99.0),
        calibrate::Method::Entropy,
    ];
    let all = calibrate::calibrate_all(&model, &plan.activations, &images(8, 16, 3), &methods, 1)
        .unwrap();
    for t in &plan.activations {
        let mm = all[0][t];
        for other in &all[1..] {
            let r = other[t];
            assert!(
                r.min >= mm.min && r.max <= mm.max,
                "{t}: {r:?} outside {mm:?}"
            );
        }
    }
    assert!(
        plan.activations
            .iter()
            .any(|t| all[1][t].max < all[0][t].max),
        "the 99th percentile clips something"
    );
}

#[test]
fn dynamic_int8_rewrites_matmuls_and_stays_close() {
    let model = onnx_build::mlp_model(32, 64, 16);
    assert_eq!(dynamic::candidates(&model).len(), 2);
    let (q, s) = dynamic::quantize(&model, &HashSet::new(), true).unwrap();
    assert_eq!(s.quantized_nodes, 2);
    assert_eq!(count_ops(&q, "MatMulInteger"), 2);
    assert_eq!(count_ops(&q, "DynamicQuantizeLinear"), 2);
    let x: Vec<Sample> = (0..6)
        .map(|i| {
            vec![(
                "x".to_string(),
                Tensor::new(
                    vec![2, 32],
                    TensorData::F32(
                        (0..64)
                            .map(|j| ((i * 64 + j) as f32 * 0.37).sin())
                            .collect(),
                    ),
                )
                .unwrap(),
            )]
        })
        .collect();
    let a = agreement(
        &run_all(&onnx::to_bytes(&model), &x),
        &run_all(&onnx::to_bytes(&q), &x),
    );
    assert!(a.min_cosine > 0.995, "cosine {}", a.min_cosine);
    // Keeping a node in float leaves it a plain MatMul.
    let keep: HashSet<String> = [dynamic::candidates(&model)[0].clone()].into();
    let (q1, s1) = dynamic::quantize(&model, &keep, true).unwrap();
    assert_eq!((s1.quantized_nodes, count_ops(&q1, "MatMul")), (1, 1));
}

#[test]
fn the_o2_gate_rejects_a_deliberately_broken_candidate() {
    let model = onnx_build::cnn_model(8, 16, 10);
    let plan = qdq::plan(&model, &HashSet::new());
    let mut ranges = calibrate::calibrate(
        &model,
        &plan.activations,
        &images(8, 16, 1),
        calibrate::Method::MinMax,
        1,
    )
    .unwrap();
    // Ranges 100x too narrow: every activation saturates.
    for r in ranges.values_mut() {
        r.min /= 100.0;
        r.max /= 100.0;
    }
    let (broken, _) = qdq::quantize(&model, &plan, &ranges).unwrap();
    let test = images(8, 16, 5);
    let a = agreement(
        &run_all(&onnx::to_bytes(&model), &test),
        &run_all(&onnx::to_bytes(&broken), &test),
    );
    assert!(
        !a.passes(&Gate::O2),
        "a saturated model passed: cosine {}",
        a.min_cosine
    );
}

/// An MLP whose first weight has one outlier row: per-column int8 scales are
/// set by the outlier, so the rest of that layer quantizes to almost nothing.
fn fragile_mlp() -> onnx::ModelProto {
    let mut m = onnx_build::mlp_model(8, 32, 1);
    let g = onnx::graph_mut(&mut m);
    let w1 = g.initializer.iter_mut().find(|t| t.name == "w1").unwrap();
    for j in 0..32 {
        w1.float_data[j] = 500.0;
    }
    m
}

#[test]
fn the_fallback_keeps_the_sensitive_node_in_float_until_the_gate_passes() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("fragile.onnx");
    onnx::save(&fragile_mlp(), &model_path).unwrap();
    // Input 0 (the outlier row's) is always zero, so the float model never sees the outlier.
    let x = Tensor::new(
        vec![12, 8],
        TensorData::F32(
            (0..96)
                .map(|i| {
                    if i % 8 == 0 {
                        0.0
                    } else {
                        ((i as f32) * 0.61).sin()
                    }
                })
                .collect(),
        ),
    )
    .unwrap();
    let test = dir.path().join("test.npz");
    data::write_npz(&test, &[("x", &x)]).unwrap();
    let opts = OptimizeOptions {
        level: OptimizationLevel::O2,
        test_data: Some(test),
        budget: optimizer::bench::Budget {
            warmup: 1,
            min_runs: 3,
            max_runs: 10,
            time: std::time::Duration::from_millis(20),
        },
        fallback_budget: std::time::Duration::from_secs(60),
        ..OptimizeOptions::new(model_path, dir.path().join("out"))
    };
    let mut lines = Vec::new();
    let (report, _) = optimize(&opts, &mut |l: &str| lines.push(l.to_string())).unwrap();
    let dynamic = report
        .candidates
        .iter()
        .find(|c| c.name == "o2-dynamic-int8")
        .unwrap();
    assert_eq!(dynamic.status, CandidateStatus::Rejected, "{dynamic:?}");
    let fb = report
        .candidates
        .iter()
        .find(|c| c.name.starts_with("o2-dynamic-int8") && c.name.ends_with("-fallback"))
        .unwrap_or_else(|| panic!("no fallback candidate: {lines:#?}"));
    assert_ne!(fb.status, CandidateStatus::Rejected, "{fb:?}");
    assert!(
        fb.description.contains("MatMul_h0"),
        "the outlier layer stays float: {}",
        fb.description
    );
    assert!(
        !fb.description.contains("MatMul_y0"),
        "the healthy layer stays quantized: {}",
        fb.description
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[OK] Fallback for o2-dynamic-int8")),
        "{lines:#?}"
    );
}

#[test]
fn smooth_quant_migrates_scales_into_weights_and_keeps_the_function() {
    let model = onnx_build::mlp_model(32, 64, 16);
    // An activation outlier channel: 0 of x is 100x larger than the others.
    let x: Vec<Sample> = (0..6)
        .map(|i| {
            let v = (0..64)
                .map(|j| {
                    if j % 32 == 0 {
                        100.0
                    } else {
                        ((i * 64 + j) as f32 * 0.37).sin()
                    }
                })
                .collect();
            vec![(
                "x".to_string(),
                Tensor::new(vec![2, 32], TensorData::F32(v)).unwrap(),
            )]
        })
        .collect();
    let absmax =
        calibrate::channel_absmax(&model, &["x".to_string(), "h2".to_string()], &x, 1).unwrap();
    assert_eq!(absmax["x"].len(), 32);
    assert_eq!(absmax["x"][0], 100.0);
    let factors = dynamic::smooth_factors(&model, &absmax, 0.5);
    // The outlier channel gets the largest factor.
    let fx = &factors["x"];
    assert!(fx.iter().skip(1).all(|f| *f < fx[0]), "{fx:?}");
    let (q, _) = dynamic::quantize_smoothed(&model, &HashSet::new(), true, &factors).unwrap();
    assert_eq!(
        count_ops(&q, "Mul")
            - count_ops(
                &dynamic::quantize(&model, &HashSet::new(), true).unwrap().0,
                "Mul"
            ),
        factors.len(),
        "one rescaling Mul per activation"
    );
    let reference = run_all(&onnx::to_bytes(&model), &x);
    let smoothed = agreement(&reference, &run_all(&onnx::to_bytes(&q), &x));
    assert!(
        smoothed.min_cosine > 0.99,
        "smoothed cosine {}",
        smoothed.min_cosine
    );
}

#[test]
fn bias_correction_reduces_the_mean_output_shift() {
    let model = onnx_build::cnn_model(8, 16, 10);
    let calib = images(16, 16, 1);
    let plan = qdq::plan(&model, &HashSet::new());
    let ranges = calibrate::calibrate(
        &model,
        &plan.activations,
        &calib,
        calibrate::Method::MinMax,
        1,
    )
    .unwrap();
    let (corrected, n) =
        optimizer::quantize::bias_correction::correct(&model, &plan, &calib, 1).unwrap();
    assert_eq!(n, 3, "conv1, conv2 and the Gemm have biases");
    let (plain_q, _) = qdq::quantize(&model, &plan, &ranges).unwrap();
    let (corr_q, _) = qdq::quantize(&corrected, &plan, &ranges).unwrap();
    let test = images(16, 16, 7);
    let reference = run_all(&onnx::to_bytes(&model), &test);
    // Mean signed error per logit, averaged in absolute value over logits.
    let shift = |got: Vec<Vec<(String, Tensor)>>| -> f64 {
        let mut acc = [0f64; 10];
        for (r, g) in reference.iter().zip(&got) {
            let (TensorData::F32(a), TensorData::F32(b)) = (&r[0].1.data, &g[0].1.data) else {
                panic!()
            };
            for (k, (x, y)) in a.iter().zip(b).enumerate() {
                acc[k % 10] += (y - x) as f64;
            }
        }
        acc.iter()
            .map(|v| (v / test.len() as f64).abs())
            .sum::<f64>()
            / 10.0
    };
    let before = shift(run_all(&onnx::to_bytes(&plain_q), &test));
    let after = shift(run_all(&onnx::to_bytes(&corr_q), &test));
    assert!(after < before, "mean shift {after} not below {before}");
}

/// A CNN as older exporters write it (weights in `Constant` nodes, two of
/// them behind a `Transpose`, opset 11 or 12) computes what the plain one does,
/// and o2 with a calibration set folds the weights into initializers,
/// raises the opset to 13 and builds static INT8 that passes the gate —
/// where it used to report "no Conv/Gemm/MatMul with constant weights".
#[test]
fn o2_quantizes_a_cnn_whose_weights_are_constant_nodes_at_opset_11_and_12() {
    for opset in [11, 12] {
        o2_on_an_old_export(opset);
    }
}

fn o2_on_an_old_export(opset: i64) {
    let plain = onnx_build::cnn_model(8, 16, 10);
    let mut old = onnx_build::cnn_model_old_export(8, 16, 10);
    old.opset_import[0].version = opset;
    assert!(onnx::graph(&old).initializer.is_empty());
    let weighted = ["conv1", "conv2", "fc"];
    let planned = qdq::plan(&old, &HashSet::new()).nodes;
    assert!(
        planned.iter().all(|n| !weighted.contains(&n.as_str())),
        "no weighted node is quantizable as exported: {planned:?}"
    );
    let test = images(4, 16, 5);
    let a = run_all(&onnx::to_bytes(&plain), &test);
    let b = run_all(&onnx::to_bytes(&old), &test);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x[0].1, y[0].1, "the same logits");
    }

    let (report, lines) = o2_with_gate(&old, (16, 16), serde_json::json!({}));
    let notes = report.diagnosis.notes.join("\n");
    assert!(
        !notes.contains("no Conv/Gemm/MatMul with constant weights"),
        "{notes}"
    );
    assert!(notes.contains(&format!("opset {opset} → 13")), "{notes}");
    let statics: Vec<_> = report
        .candidates
        .iter()
        .filter(|c| c.name.starts_with("o2-static-int8"))
        .collect();
    assert!(!statics.is_empty(), "{lines:#?}");
    assert!(
        statics
            .iter()
            .any(|c| c.status != CandidateStatus::Rejected),
        "{statics:#?}"
    );
}

/// The images of `t` ([n, …]) as n samples of `x` ([1, …]).
fn samples_of(t: &Tensor) -> Vec<Sample> {
    let n = t.shape[0];
    let per = t.data.len() / n.max(1);
    let v: Vec<f32> = t.data.to_f64().into_iter().map(|x| x as f32).collect();
    let mut shape = t.shape.clone();
    shape[0] = 1;
    v.chunks(per)
        .map(|c| {
            vec![(
                "x".to_string(),
                Tensor::new(shape.clone(), TensorData::F32(c.to_vec())).unwrap(),
            )]
        })
        .collect()
}

/// Runs o2 with test and calibration sets of `onnx_build::blob_images` and
/// the given `accuracy` on `model`, and returns the report.
fn o2_with_gate(
    model: &onnx::ModelProto,
    (h, w): (usize, usize),
    accuracy: serde_json::Value,
) -> (shared::api::OptimizationReport, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("m.onnx");
    onnx::save(model, &model_path).unwrap();
    let (test_npz, calib_npz) = (dir.path().join("test.npz"), dir.path().join("calib.npz"));
    data::write_npz(&test_npz, &[("x", &onnx_build::blob_images(8, h, w, 3))]).unwrap();
    data::write_npz(
        &calib_npz,
        &[("x", &onnx_build::blob_images(16, h, w, 101))],
    )
    .unwrap();
    let opts = OptimizeOptions {
        level: OptimizationLevel::O2,
        test_data: Some(test_npz),
        calibration: Some(calib_npz),
        accuracy: Some(serde_json::from_value(accuracy).unwrap()),
        budget: optimizer::bench::Budget {
            warmup: 1,
            min_runs: 3,
            max_runs: 10,
            time: std::time::Duration::from_millis(20),
        },
        fallback_budget: std::time::Duration::from_secs(60),
        ..OptimizeOptions::new(model_path, dir.path().join("out"))
    };
    let mut lines = Vec::new();
    let (report, _) = optimize(&opts, &mut |l: &str| lines.push(l.to_string())).unwrap();
    (report, lines)
}

/// A segmentation net (HardSwish, a strided conv, `ConvTranspose` back up,
/// a sigmoid map): static INT8 quantizes the transposed convolution too,
/// every INT8 row reports its region agreement, and an INT8 candidate (or
/// its fallback) keeps the map's regions.
#[test]
fn o2_on_a_sigmoid_map_head_is_judged_by_its_regions() {
    let model = onnx_build::seg_model(8, 32);
    let plan = qdq::plan(&model, &HashSet::new());
    assert!(plan.nodes.iter().any(|n| n == "up"), "{:?}", plan.nodes);
    // The float map has regions to keep: several per image.
    let gate = Gate::O2.with_overrides(Some(
        &serde_json::from_value(serde_json::json!({"min_region_agreement": 0.9})).unwrap(),
    ));
    let maps = run_all(
        &onnx::to_bytes(&model),
        &samples_of(&onnx_build::blob_images(8, 32, 32, 3)),
    );
    let mut own = Agreement::for_gate(&gate);
    for m in &maps {
        own.update(m, m).unwrap();
    }
    assert!(own.regions.total >= 8, "{:?}", own.regions);
    let (report, lines) = o2_with_gate(
        &model,
        (32, 32),
        serde_json::json!({"min_region_agreement": 0.9, "region_threshold": 0.5}),
    );
    let int8: Vec<_> = report
        .candidates
        .iter()
        .filter(|c| c.name.starts_with("o2-static-int8"))
        .collect();
    assert!(!int8.is_empty(), "{lines:#?}");
    for c in &int8 {
        if !c.latency.is_empty() {
            assert!(c.region_agreement.is_some(), "{c:?}");
        }
    }
    assert!(
        int8.iter().any(|c| c.status != CandidateStatus::Rejected),
        "no INT8 candidate kept the regions: {int8:#?}"
    );
}

/// A CTC-style recognizer (conv, pooled over the height, MatMul+Softmax
/// over time): INT8 rows report their sequence agreement, and one keeps
/// the greedy readings.
#[test]
fn o2_on_a_ctc_head_is_judged_by_its_readings() {
    let model = onnx_build::ctc_model(16, 32, 12);
    let (report, lines) = o2_with_gate(
        &model,
        (8, 32),
        serde_json::json!({"min_sequence_agreement": 0.9}),
    );
    let int8: Vec<_> = report
        .candidates
        .iter()
        .filter(|c| c.name.starts_with("o2-"))
        .collect();
    assert!(!int8.is_empty(), "{lines:#?}");
    assert!(
        int8.iter()
            .filter(|c| !c.latency.is_empty())
            .all(|c| c.sequence_agreement.is_some()),
        "{int8:#?}"
    );
    // The near-uniform per-step scores of this head flip under INT8: the
    // cosine stays above o2's 0.99, the readings do not, and the gate says
    // why; the fallback keeps the layer that decides them in float.
    let plain = int8
        .iter()
        .find(|c| c.name == "o2-dynamic-int8")
        .expect("the dynamic candidate");
    assert_eq!(plain.status, CandidateStatus::Rejected, "{plain:?}");
    assert!(plain.min_cosine.unwrap() > 0.99, "{plain:?}");
    assert!(
        plain
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("sequence agreement"),
        "{plain:?}"
    );
    let kept = int8
        .iter()
        .find(|c| c.name.ends_with("-fallback"))
        .unwrap_or_else(|| panic!("no fallback: {lines:#?}"));
    assert_ne!(kept.status, CandidateStatus::Rejected, "{kept:?}");
    assert!(
        kept.description.contains("classifier"),
        "{}",
        kept.description
    );
}
