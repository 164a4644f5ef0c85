//! The three service configs of the source document (model_path pointed at a real location) must
//! load with zero errors, agree with plain serde, and serialize back to the same JSON.

use serde_json::Value;
use shared::config::{OptimizationLevel, ServiceConfig};
use shared::processor::Device;
use shared::validate::parse_and_validate;

const NO_PLUGIN: &str = include_str!("examples/no_plugin.json");
const CPU_PLUGIN: &str = include_str!("examples/cpu_plugin.json");
const GPU_PLUGIN: &str = include_str!("examples/gpu_plugin.json");

fn load(text: &str) -> ServiceConfig {
    match parse_and_validate(text) {
        Ok(cfg) => cfg,
        Err(errors) => panic!("seed example rejected: {errors:#?}"),
    }
}

fn assert_round_trips(text: &str, cfg: &ServiceConfig) {
    let via_serde: ServiceConfig = serde_json::from_str(text).expect("serde reads it");
    assert_eq!(&via_serde, cfg);
    let original: Value = serde_json::from_str(text).expect("json");
    assert_eq!(serde_json::to_value(cfg).expect("serializes"), original);
}

#[test]
fn example_without_plugin() {
    let cfg = load(NO_PLUGIN);
    assert_round_trips(NO_PLUGIN, &cfg);
    assert_eq!(cfg.name, "blade_eas_plugin_test");
    assert_eq!(cfg.metadata.memory, Some(4000));
    assert!(cfg.blade_plugin().is_none());
    assert!(cfg.model_info().is_none());
}

#[test]
fn example_with_cpu_plugin() {
    let cfg = load(CPU_PLUGIN);
    assert_round_trips(CPU_PLUGIN, &cfg);
    assert_eq!(cfg.processor_info().map(|p| p.device), Some(Device::Cpu));
    let plugin = cfg.blade_plugin().expect("plugin");
    assert_eq!(plugin.optimize_for(), Some(Device::Cpu));
    assert_eq!(plugin.resource, None);
    assert!(cfg.model_info().is_none());
}

#[test]
fn example_with_gpu_plugin() {
    let cfg = load(GPU_PLUGIN);
    assert_round_trips(GPU_PLUGIN, &cfg);
    assert_eq!(cfg.resource.as_deref(), Some("<yourEASResource>"));
    assert_eq!(cfg.metadata.cuda.as_deref(), Some("10.0"));
    let plugin = cfg.blade_plugin().expect("plugin");
    assert_eq!(plugin.optimize_for(), Some(Device::Gpu));
    assert_eq!(plugin.resource.as_deref(), Some("T4_8CORE"));
    let (file, info) = cfg.model_info().expect("one model");
    assert_eq!(file, "frozen.pb");
    assert_eq!(info.level(), OptimizationLevel::O1);
    assert_eq!(
        info.inputs.as_deref(),
        Some(&["input_ids_a_1".to_string()][..])
    );
    assert_eq!(info.test_data.as_deref(), Some("test_len9240_bc1.npy"));
}

#[test]
fn gpu_example_with_a_service_gpu_type_is_checked() {
    // The placeholder service resource has no GPU type; a real one of another type is an error.
    let text = GPU_PLUGIN.replace("\"<yourEASResource>\"", "\"V100_8CORE\"");
    let errors = parse_and_validate(&text).expect_err("GPU types differ");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].path, "plugins[0].resource");
    let text = GPU_PLUGIN.replace("\"<yourEASResource>\"", "\"T4_8CORE\"");
    assert!(parse_and_validate(&text).is_ok());
}
