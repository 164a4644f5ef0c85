//! The report's headline, the precision served in words and the CSV all
//! come from the candidate rows, so the console, the CLI and the files say
//! one thing.

use shared::api::{
    CandidateReport, CandidateStatus, Diagnosis, OptimizationReport, ReportContext, ShapeLatency,
};

fn row(name: &str, description: &str, status: CandidateStatus, p50: f64) -> CandidateReport {
    CandidateReport {
        name: name.into(),
        description: description.into(),
        status,
        message: None,
        max_rel_error: Some(1e-3),
        min_cosine: Some(0.999),
        top1: Some(1.0),
        top_k: None,
        region_agreement: None,
        sequence_agreement: None,
        latency: vec![ShapeLatency {
            shapes: "1*128".into(),
            p50_ms: p50,
            p90_ms: p50 * 1.1,
            runs: 10,
        }],
        speedup: None,
        size_bytes: 10,
        seconds: 1.0,
        gate_max_rel_error: None,
        gate_min_cosine: Some(0.99),
    }
}

fn report(selected: &str, rows: Vec<CandidateReport>) -> OptimizationReport {
    OptimizationReport {
        optimizer_version: "test".into(),
        context: ReportContext {
            engine: "ort".into(),
            target: "cpu".into(),
            cpu: "cpu".into(),
            cores: 2,
            threads: 2,
            level: "o2".into(),
        },
        diagnosis: Diagnosis {
            test_data_source: "test".into(),
            samples: 1,
            shape_groups: vec!["1*128".into()],
            shape_variation: false,
            notes: vec![],
        },
        candidates: rows,
        selected: selected.into(),
        baseline: "ort-default".into(),
        // What an older search wrote: the lead candidate's time, not the
        // selected thread variant's.
        baseline_ms: 16.0,
        optimized_ms: 7.92,
        speedup: 16.0 / 7.92,
        total_seconds: 3.0,
    }
}

#[test]
fn the_headline_is_the_selected_rows_numbers() {
    use CandidateStatus::*;
    let r = report(
        "o2-dynamic-int8-fallback@1thread",
        vec![
            row("ort-default", "baseline", Passed, 16.0),
            row(
                "o2-dynamic-int8-fallback",
                "dynamic int8 with the 3 most sensitive of 52 nodes kept in float: a, b, c",
                Passed,
                7.92,
            ),
            row(
                "o2-dynamic-int8-fallback@1thread",
                "o2-dynamic-int8-fallback with 1 intra-op thread(s)",
                Selected,
                7.64,
            ),
        ],
    );
    let h = r.headline();
    assert_eq!((h.baseline_ms, h.optimized_ms), (16.0, 7.64));
    assert!((h.speedup - 16.0 / 7.64).abs() < 1e-12);
    assert_eq!(
        r.served_precision(),
        "INT8 weights, activations quantized per call (dynamic), with 3 of 52 layers kept in float"
    );
    let csv = r.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[0].starts_with("candidate,status,p50_ms 1*128,p90_ms 1*128,max_rel_error"),
        "{csv}"
    );
    assert!(
        lines[3].starts_with("o2-dynamic-int8-fallback@1thread,selected,7.64,"),
        "{csv}"
    );
    // A description with a comma is quoted.
    assert!(csv.contains("top-1 100.0%"), "{csv}");
}

#[test]
fn precision_in_words_for_each_kind_of_candidate() {
    use CandidateStatus::*;
    let words = |name: &str| {
        report(
            name,
            vec![
                row("ort-default", "", Passed, 2.0),
                row(name, "", Selected, 1.0),
            ],
        )
        .served_precision()
    };
    assert_eq!(words("o1-fp32-graph"), "FP32 (lossless)");
    assert!(words("o1-fp16-islands").starts_with("FP16"));
    assert_eq!(
        words("o2-static-int8-minmax"),
        "INT8 weights and activations (static, calibrated)"
    );
    // Without rows, the report's own fields.
    let r = report("gone", vec![]);
    assert_eq!(r.headline().optimized_ms, 7.92);
    assert_eq!(r.served_precision(), "unknown");
}
