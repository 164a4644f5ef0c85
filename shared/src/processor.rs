//! Processors (the runtimes that serve a model), Blade plugin images, the plugin command line and
//! resource-group names: the fixed vocabularies the service config refers to by string.
//!
//! The tables mirror the source document ("Processor, image and command per device"); the
//! `onnx_*` processors are our own addition.

use serde::{Deserialize, Serialize};

/// The hardware a model is served (and optimized) on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Gpu,
}

impl Device {
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The model format a processor serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Onnx,
    TensorFlow,
    PyTorch,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Onnx => "onnx",
            Runtime::TensorFlow => "tensorflow",
            Runtime::PyTorch => "pytorch",
        }
    }
}

/// One known processor name and what it implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Processor {
    pub name: &'static str,
    pub runtime: Runtime,
    pub device: Device,
    /// The CUDA version the processor is built against; `None` on CPU, and on `onnx_gpu`, which
    /// runs on whatever CUDA the worker has.
    pub cuda: Option<&'static str>,
}

const fn processor(
    name: &'static str,
    runtime: Runtime,
    device: Device,
    cuda: Option<&'static str>,
) -> Processor {
    Processor {
        name,
        runtime,
        device,
        cuda,
    }
}

/// Every processor name a service config may use.
pub const PROCESSORS: &[Processor] = &[
    processor(
        "tensorflow_cpu_1.15",
        Runtime::TensorFlow,
        Device::Cpu,
        None,
    ),
    processor("pytorch_cpu_1.6", Runtime::PyTorch, Device::Cpu, None),
    processor(
        "tensorflow_gpu_1.15",
        Runtime::TensorFlow,
        Device::Gpu,
        Some("10.0"),
    ),
    processor(
        "pytorch_gpu_1.6",
        Runtime::PyTorch,
        Device::Gpu,
        Some("10.0"),
    ),
    processor(
        "tensorflow_gpu_2.4",
        Runtime::TensorFlow,
        Device::Gpu,
        Some("11.0"),
    ),
    processor(
        "pytorch_gpu_1.7",
        Runtime::PyTorch,
        Device::Gpu,
        Some("11.0"),
    ),
    processor("onnx_cpu", Runtime::Onnx, Device::Cpu, None),
    processor("onnx_gpu", Runtime::Onnx, Device::Gpu, None),
];

impl Processor {
    /// Looks a processor up by its exact name.
    pub fn parse(name: &str) -> Option<Processor> {
        PROCESSORS.iter().copied().find(|p| p.name == name)
    }
}

/// One published build of the Blade optimizer plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginImage {
    pub image: &'static str,
    pub device: Device,
    /// The CUDA version the image is built against (`None` on CPU).
    pub cuda: Option<&'static str>,
}

/// Every plugin image a service config may use.
pub const PLUGIN_IMAGES: &[PluginImage] = &[
    PluginImage {
        image: "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
        device: Device::Cpu,
        cuda: None,
    },
    PluginImage {
        image: "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:gpu_latest",
        device: Device::Gpu,
        cuda: Some("10.0"),
    },
    PluginImage {
        image: "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cu110_latest",
        device: Device::Gpu,
        cuda: Some("11.0"),
    },
];

impl PluginImage {
    /// Looks an image up by its exact reference.
    pub fn parse(s: &str) -> Option<PluginImage> {
        PLUGIN_IMAGES.iter().copied().find(|i| i.image == s)
    }
}

const COMMAND_USAGE: &str = "expected \"blade --mode eas_plugin --optimize_for cpu\" or \
                             \"blade --mode eas_plugin --optimize_for gpu\"";

/// Parses the plugin `command` and returns the device it optimizes for.
///
/// The document gives one literal command per device; we accept any whitespace, the two flags in
/// either order, and `--flag=value`, because those are what a shell would also accept.
pub fn parse_plugin_command(cmd: &str) -> Result<Device, String> {
    let fail = |why: String| Err(format!("{COMMAND_USAGE}, got {cmd:?}: {why}"));
    let mut tokens = cmd.split_whitespace();
    match tokens.next() {
        Some("blade") => {}
        Some(other) => return fail(format!("the program must be `blade`, not `{other}`")),
        None => return fail("the command is empty".to_string()),
    }
    let mut mode: Option<String> = None;
    let mut target: Option<String> = None;
    while let Some(tok) = tokens.next() {
        let (flag, inline) = match tok.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (tok, None),
        };
        let slot = match flag {
            "--mode" => &mut mode,
            "--optimize_for" => &mut target,
            _ => return fail(format!("unexpected argument `{tok}`")),
        };
        if slot.is_some() {
            return fail(format!("`{flag}` is given twice"));
        }
        let value = match inline {
            Some(v) => v,
            None => match tokens.next() {
                Some(v) => v.to_string(),
                None => return fail(format!("`{flag}` needs a value")),
            },
        };
        *slot = Some(value);
    }
    match mode.as_deref() {
        Some("eas_plugin") => {}
        Some(other) => return fail(format!("`--mode` must be `eas_plugin`, not `{other}`")),
        None => return fail("`--mode eas_plugin` is missing".to_string()),
    }
    match target.as_deref() {
        Some("cpu") => Ok(Device::Cpu),
        Some("gpu") => Ok(Device::Gpu),
        Some(other) => fail(format!(
            "`--optimize_for` must be `cpu` or `gpu`, not `{other}`"
        )),
        None => fail("`--optimize_for cpu|gpu` is missing".to_string()),
    }
}

/// The GPU type of a resource-group name of the form `<TYPE>_<N>CORE` (`T4_8CORE` → `T4`).
///
/// Other names (dedicated resource-group ids, placeholders) carry no GPU type: `None`, and the
/// caller skips any comparison that needs one.
pub fn gpu_type_of_resource(resource: &str) -> Option<String> {
    let (ty, cores) = resource.rsplit_once('_')?;
    let count = cores.strip_suffix("CORE")?;
    let type_ok = ty.starts_with(|c: char| c.is_ascii_uppercase())
        && ty
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    let count_ok = !count.is_empty() && count.chars().all(|c| c.is_ascii_digit());
    (type_ok && count_ok).then(|| ty.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processors_by_name() {
        let p = Processor::parse("tensorflow_gpu_1.15").expect("known");
        assert_eq!(
            (p.runtime, p.device, p.cuda),
            (Runtime::TensorFlow, Device::Gpu, Some("10.0"))
        );
        let p = Processor::parse("pytorch_gpu_1.7").expect("known");
        assert_eq!(
            (p.runtime, p.device, p.cuda),
            (Runtime::PyTorch, Device::Gpu, Some("11.0"))
        );
        let p = Processor::parse("pytorch_cpu_1.6").expect("known");
        assert_eq!((p.device, p.cuda), (Device::Cpu, None));
        let p = Processor::parse("onnx_gpu").expect("known");
        assert_eq!(
            (p.runtime, p.device, p.cuda),
            (Runtime::Onnx, Device::Gpu, None)
        );
        assert_eq!(Processor::parse("tensorflow_cpu_2.4"), None);
        assert_eq!(Processor::parse(" onnx_cpu"), None);
        assert_eq!(PROCESSORS.len(), 8);
    }

    #[test]
    fn images_by_reference() {
        let cpu =
            PluginImage::parse("registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest");
        assert_eq!(cpu.map(|i| (i.device, i.cuda)), Some((Device::Cpu, None)));
        let gpu =
            PluginImage::parse("registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:gpu_latest");
        assert_eq!(
            gpu.map(|i| (i.device, i.cuda)),
            Some((Device::Gpu, Some("10.0")))
        );
        let cu110 = PluginImage::parse(
            "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cu110_latest",
        );
        assert_eq!(
            cu110.map(|i| (i.device, i.cuda)),
            Some((Device::Gpu, Some("11.0")))
        );
        assert_eq!(PluginImage::parse("pai-blade-deploy:cpu_latest"), None);
    }

    #[test]
    fn device_and_runtime_names() {
        assert_eq!(Device::Cpu.as_str(), "cpu");
        assert_eq!(Device::Gpu.to_string(), "gpu");
        assert_eq!(
            serde_json::to_string(&Runtime::TensorFlow).ok().as_deref(),
            Some("\"tensorflow\"")
        );
        assert_eq!(
            serde_json::to_string(&Runtime::PyTorch).ok().as_deref(),
            Some("\"pytorch\"")
        );
        assert_eq!(
            serde_json::to_string(&Device::Gpu).ok().as_deref(),
            Some("\"gpu\"")
        );
        assert_eq!(Runtime::Onnx.as_str(), "onnx");
    }

    #[test]
    fn command_accepts_the_documented_forms() {
        for (cmd, dev) in [
            ("blade --mode eas_plugin --optimize_for cpu", Device::Cpu),
            ("blade --mode eas_plugin --optimize_for gpu", Device::Gpu),
            (
                "  blade\t--mode   eas_plugin\n--optimize_for  gpu ",
                Device::Gpu,
            ),
            ("blade --optimize_for cpu --mode eas_plugin", Device::Cpu),
            ("blade --mode=eas_plugin --optimize_for=gpu", Device::Gpu),
            ("blade --optimize_for=cpu --mode eas_plugin", Device::Cpu),
        ] {
            assert_eq!(parse_plugin_command(cmd), Ok(dev), "{cmd:?}");
        }
    }

    #[test]
    fn command_rejects_everything_else() {
        for (cmd, why) in [
            ("", "empty"),
            ("   ", "empty"),
            (
                "python --mode eas_plugin --optimize_for cpu",
                "must be `blade`",
            ),
            (
                "blade --mode eas_plugin",
                "--optimize_for cpu|gpu` is missing",
            ),
            ("blade --optimize_for cpu", "--mode eas_plugin` is missing"),
            (
                "blade --mode serve --optimize_for cpu",
                "must be `eas_plugin`",
            ),
            (
                "blade --mode eas_plugin --optimize_for tpu",
                "must be `cpu` or `gpu`",
            ),
            (
                "blade --mode eas_plugin --optimize_for GPU",
                "must be `cpu` or `gpu`",
            ),
            ("blade --mode eas_plugin --optimize_for", "needs a value"),
            (
                "blade --mode eas_plugin --optimize_for cpu --verbose",
                "unexpected argument",
            ),
            (
                "blade --mode eas_plugin --optimize_for cpu --optimize_for gpu",
                "given twice",
            ),
            (
                "blade --mode eas_plugin --optimize_for=",
                "must be `cpu` or `gpu`",
            ),
        ] {
            let err = parse_plugin_command(cmd).expect_err(cmd);
            assert!(err.contains(why), "{cmd:?}: {err}");
            assert!(
                err.starts_with("expected \"blade --mode eas_plugin"),
                "{err}"
            );
        }
    }

    #[test]
    fn gpu_types_of_resource_groups() {
        assert_eq!(gpu_type_of_resource("T4_8CORE").as_deref(), Some("T4"));
        assert_eq!(gpu_type_of_resource("V100_8CORE").as_deref(), Some("V100"));
        assert_eq!(gpu_type_of_resource("P4_8CORE").as_deref(), Some("P4"));
        assert_eq!(gpu_type_of_resource("A10_16CORE").as_deref(), Some("A10"));
        for none in [
            "<yourEASResource>",
            "eas-r-abc123",
            "T4_CORE",
            "_8CORE",
            "T4_8core",
            "T4-8CORE",
            "",
            "t4_8CORE",
        ] {
            assert_eq!(gpu_type_of_resource(none), None, "{none:?}");
        }
    }
}
