//! The `accuracy` gate overrides of `model_info` (a Whetstone extension).

use shared::parse_and_validate;

fn config(accuracy: serde_json::Value) -> String {
    serde_json::json!({
        "name": "gate_test",
        "model_path": "file:///models/m/",
        "processor": "onnx_cpu",
        "plugins": [{
            "command": "blade --mode eas_plugin --optimize_for cpu",
            "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
            "config": { "model_info": { "m.onnx": { "optimization_level": "o2", "accuracy": accuracy } } }
        }]
    })
    .to_string()
}

/// The message of the error whose path ends with `suffix`.
fn message_at(errors: &[shared::ValidationError], suffix: &str) -> String {
    errors
        .iter()
        .find(|e| e.path.ends_with(suffix))
        .unwrap_or_else(|| panic!("no error at {suffix}: {errors:?}"))
        .message
        .clone()
}

#[test]
fn overrides_within_bounds_are_accepted() {
    let cfg = parse_and_validate(&config(
        serde_json::json!({"min_cosine": 0.98, "min_top1": 0.9, "max_rel_error": 0.05}),
    ))
    .unwrap();
    let (_, info) = cfg.model_info().unwrap();
    let acc = info.accuracy.clone().unwrap();
    assert_eq!(
        (acc.min_cosine, acc.min_top1, acc.max_rel_error),
        (Some(0.98), Some(0.9), Some(0.05))
    );
}

#[test]
fn out_of_range_wrong_type_and_unknown_keys_are_reported_with_paths() {
    let errors = parse_and_validate(&config(serde_json::json!({"min_cosine": 1.5, "min_top1": "high", "max_rel_error": -1, "tolerance": 1}))).unwrap_err();
    let at = |suffix: &str| message_at(&errors, suffix);
    assert!(at(".accuracy.min_cosine").contains("between -1 and 1"));
    assert!(at(".accuracy.min_top1").contains("a number"));
    assert!(at(".accuracy.max_rel_error").contains("at least 0"));
    assert!(
        at(".accuracy.tolerance").contains("max_rel_error"),
        "unknown key lists the allowed ones"
    );
    assert_eq!(errors.len(), 4, "{errors:?}");
}

#[test]
fn region_sequence_and_top_k_metrics_are_read_with_their_settings() {
    let cfg = parse_and_validate(&config(serde_json::json!({
        "min_top_k": 0.98, "top_k": 3,
        "min_region_agreement": 0.95, "region_threshold": 0.3, "region_iou": 0.4,
        "min_sequence_agreement": 0.9, "ctc_blank": 5,
        "outputs": ["maps", "logits"]
    })))
    .unwrap();
    let (_, info) = cfg.model_info().unwrap();
    let a = info.accuracy.clone().unwrap();
    assert_eq!((a.min_top_k, a.top_k), (Some(0.98), Some(3)));
    assert_eq!(
        (a.min_region_agreement, a.region_threshold, a.region_iou),
        (Some(0.95), Some(0.3), Some(0.4))
    );
    assert_eq!(
        (a.min_sequence_agreement, a.ctc_blank),
        (Some(0.9), Some(5))
    );
    assert_eq!(
        a.outputs,
        Some(vec!["maps".to_string(), "logits".to_string()])
    );
}

#[test]
fn bad_metric_settings_name_their_field() {
    let errors = parse_and_validate(&config(serde_json::json!({
        "top_k": 0, "min_top_k": 2,
        "region_iou": 0, "min_region_agreement": 0.9,
        "ctc_blank": -1, "min_sequence_agreement": 0.9,
        "outputs": "maps"
    })))
    .unwrap_err();
    let at = |suffix: &str| message_at(&errors, suffix);
    assert!(at(".accuracy.top_k").contains("positive integer"));
    assert!(at(".accuracy.min_top_k").contains("between 0 and 1"));
    assert!(at(".accuracy.region_iou").contains("above 0"));
    assert!(at(".accuracy.ctc_blank").contains("integer"));
    assert!(at(".accuracy.outputs").contains("list of strings"));
    // A setting whose metric is off does nothing, and is said so.
    let errors =
        parse_and_validate(&config(serde_json::json!({"region_threshold": 0.5}))).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].path.ends_with(".accuracy.region_threshold"));
    assert!(errors[0].message.contains("without min_region_agreement"));
}
