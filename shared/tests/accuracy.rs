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
    let at = |suffix: &str| {
        errors
            .iter()
            .find(|e| e.path.ends_with(suffix))
            .unwrap_or_else(|| panic!("no error at {suffix}: {errors:?}"))
            .message
            .clone()
    };
    assert!(at(".accuracy.min_cosine").contains("between -1 and 1"));
    assert!(at(".accuracy.min_top1").contains("a number"));
    assert!(at(".accuracy.max_rel_error").contains("at least 0"));
    assert!(
        at(".accuracy.tolerance").contains("max_rel_error"),
        "unknown key lists the allowed ones"
    );
    assert_eq!(errors.len(), 4, "{errors:?}");
}
