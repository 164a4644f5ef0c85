//! Resource groups: the named pools a service config's `resource` (where the
//! service runs) and a plugin's `resource` (where the optimization runs) refer
//! to. They are configured on the server (`whet serve --resource-group
//! NAME=cpu|gpu:MODEL[:COUNT]`, repeatable; a CPU group `default` when none
//! is given), matched against the GPUs discovered at start, shown read-only at
//! `GET /api/v2/resource-groups`, and checked at deploy (see [`Resources::check`]).
//!
//! Deploy jobs carry a *kind* derived from their config ([`job_kind`]): `cpu`
//! jobs go to the CPU worker pool, `gpu:<group>` jobs only to a GPU worker on
//! a device of that group.

use std::collections::BTreeMap;

use serde::Serialize;
use shared::processor::{gpu_type_of_resource, Device};
use shared::{ServiceConfig, ValidationError};

use crate::control::gpu::{GpuDevice, GpuInventory};

/// The group used when the server configures none.
pub const DEFAULT_GROUP: &str = "default";

/// The job kind of everything that runs on the CPU pool.
pub const CPU_KIND: &str = "cpu";

/// What a resource group offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupKind {
    Cpu,
    /// `count` GPUs of model `model` (a word of the driver's device name:
    /// `T4` matches "Tesla T4").
    Gpu {
        model: String,
        count: u32,
    },
}

/// One configured group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceGroup {
    pub name: String,
    pub kind: GroupKind,
}

impl ResourceGroup {
    pub fn gpu_model(&self) -> Option<&str> {
        match &self.kind {
            GroupKind::Cpu => None,
            GroupKind::Gpu { model, .. } => Some(model),
        }
    }
}

const SPEC_USAGE: &str =
    "expected NAME=cpu or NAME=gpu:MODEL[:COUNT], e.g. default=cpu or T4_8CORE=gpu:T4:1";

/// Parses one `--resource-group` value: `NAME=cpu` or `NAME=gpu:MODEL[:COUNT]`
/// (COUNT defaults to 1).
///
/// A name in the seed's `<TYPE>_<N>CORE` form (`T4_8CORE`) states its GPU
/// type, and the config validation compares plugin and service groups by it;
/// so such a name must be a GPU group of that very model.
pub fn parse_group(spec: &str) -> Result<ResourceGroup, String> {
    let fail = |why: String| Err(format!("resource group {spec:?}: {why} ({SPEC_USAGE})"));
    let Some((name, what)) = spec.split_once('=') else {
        return fail("no `=`".into());
    };
    let (name, what) = (name.trim(), what.trim());
    if name.is_empty() {
        return fail("the name is empty".into());
    }
    if name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return fail(format!(
            "the name {name:?} must be 1-64 letters, digits, `_`, `-` or `.`"
        ));
    }
    let kind = if what == "cpu" {
        GroupKind::Cpu
    } else if let Some(gpu) = what.strip_prefix("gpu:") {
        let (model, count) = match gpu.split_once(':') {
            Some((m, c)) => (m, Some(c)),
            None => (gpu, None),
        };
        if model.is_empty()
            || !model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        {
            return fail(format!(
                "the GPU model {model:?} must be letters, digits, `_` or `-` (a word of the device name, like T4 or A100)"
            ));
        }
        let count = match count {
            None => 1,
            Some(c) => match c.parse::<u32>() {
                Ok(n) if n >= 1 => n,
                _ => return fail(format!("the GPU count {c:?} must be a whole number >= 1")),
            },
        };
        GroupKind::Gpu {
            model: model.to_string(),
            count,
        }
    } else {
        return fail(format!("unknown kind {what:?}"));
    };
    if let Some(ty) = gpu_type_of_resource(name) {
        match &kind {
            GroupKind::Gpu { model, .. } if model.eq_ignore_ascii_case(&ty) => {}
            GroupKind::Gpu { model, .. } => {
                return fail(format!(
                    "the name says GPU type {ty} (the <TYPE>_<N>CORE form), but the group has {model} GPUs"
                ))
            }
            GroupKind::Cpu => {
                return fail(format!(
                    "the name says GPU type {ty} (the <TYPE>_<N>CORE form); use gpu:{ty}:COUNT, or another name for a CPU group"
                ))
            }
        }
    }
    Ok(ResourceGroup {
        name: name.to_string(),
        kind,
    })
}

/// Parses every `--resource-group`; names must be unique. None given: the
/// one CPU group `default`.
pub fn parse_groups(specs: &[String]) -> Result<Vec<ResourceGroup>, String> {
    if specs.is_empty() {
        return Ok(vec![ResourceGroup {
            name: DEFAULT_GROUP.into(),
            kind: GroupKind::Cpu,
        }]);
    }
    let mut out: Vec<ResourceGroup> = Vec::with_capacity(specs.len());
    for spec in specs {
        let g = parse_group(spec)?;
        if out.iter().any(|o| o.name == g.name) {
            return Err(format!(
                "resource group {:?} is configured twice; each name may appear once",
                g.name
            ));
        }
        out.push(g);
    }
    Ok(out)
}

/// Whether `device_name` is a GPU of `model`: the model is one of the name's
/// words, ignoring case ("Tesla T4" is a T4; "NVIDIA A100-SXM4-80GB" is an
/// A100 but not an A10).
pub fn device_matches(device_name: &str, model: &str) -> bool {
    device_name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case(model))
}

/// The configured groups and the GPUs found at start, with the devices each
/// GPU group may use.
#[derive(Debug, Clone)]
pub struct Resources {
    groups: Vec<ResourceGroup>,
    gpus: GpuInventory,
    /// Per GPU group: the ordinals of its devices (the first `count` matching ones).
    devices: BTreeMap<String, Vec<u32>>,
}

/// One group as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ResourceGroupInfo {
    pub name: String,
    /// `cpu` or `gpu`.
    pub device: String,
    /// GPU groups: the configured model and count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_count: Option<u32>,
    /// GPU groups: the discovered devices (CUDA ordinals) the group uses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_devices: Option<Vec<u32>>,
    /// Whether deploys may use the group now (a GPU group needs discovered GPUs).
    pub available: bool,
    /// Why a group is unavailable, or runs short of its configured count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `GET /api/v2/resource-groups`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ResourceGroupsInfo {
    pub groups: Vec<ResourceGroupInfo>,
    /// The GPUs discovered when the server started.
    pub gpus: GpuInventory,
}

impl Resources {
    /// Matches the groups to the discovered devices.
    pub fn new(groups: Vec<ResourceGroup>, gpus: GpuInventory) -> Resources {
        let mut devices = BTreeMap::new();
        for g in &groups {
            if let GroupKind::Gpu { model, count } = &g.kind {
                let found: Vec<u32> = gpus
                    .devices
                    .iter()
                    .filter(|d| device_matches(&d.name, model))
                    .map(|d| d.ordinal)
                    .take(*count as usize)
                    .collect();
                devices.insert(g.name.clone(), found);
            }
        }
        Resources {
            groups,
            gpus,
            devices,
        }
    }

    /// The default CPU group, with GPU discovery (used where no groups are configured).
    pub fn cpu_default() -> Resources {
        Resources::new(
            parse_groups(&[]).unwrap_or_default(),
            crate::control::gpu::discover(),
        )
    }

    pub fn groups(&self) -> &[ResourceGroup] {
        &self.groups
    }

    pub fn gpus(&self) -> &GpuInventory {
        &self.gpus
    }

    pub fn group(&self, name: &str) -> Option<&ResourceGroup> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The device a GPU service of `cfg` is served on when no deploy
    /// worker picked one (instances restored at start): the first device
    /// of its resource group. `None` for a CPU service.
    pub fn serving_device(
        &self,
        cfg: &ServiceConfig,
    ) -> Option<optimizer::engine::ExecutionProvider> {
        self.devices_of(gpu_group(cfg)?).first().map(|&d| {
            optimizer::engine::ExecutionProvider::Cuda {
                device_id: d as i32,
            }
        })
    }

    /// The discovered devices a GPU group uses (empty for CPU groups).
    pub fn devices_of(&self, group: &str) -> &[u32] {
        self.devices.get(group).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Logs one line per GPU group that found fewer devices than configured
    /// (nothing more without GPUs: discovery's one line already said so).
    pub fn log_groups(&self) {
        if self.gpus.is_empty() {
            return;
        }
        for g in &self.groups {
            if let GroupKind::Gpu { model, count } = &g.kind {
                let n = self.devices_of(&g.name).len();
                if n == 0 {
                    tracing::warn!("resource group {}: no {model} GPU discovered; GPU deploys to it are refused", g.name);
                } else if n < *count as usize {
                    tracing::warn!(
                        "resource group {}: {count} {model} GPU(s) configured, {n} discovered",
                        g.name
                    );
                }
            }
        }
    }

    /// The GPU workers to start: one per discovered device that some GPU
    /// group uses, with the job kinds it takes (`gpu:<group>` of each group
    /// the device belongs to).
    pub fn gpu_workers(&self) -> Vec<(GpuDevice, Vec<String>)> {
        self.gpus
            .devices
            .iter()
            .filter_map(|d| {
                let kinds: Vec<String> = self
                    .devices
                    .iter()
                    .filter(|(_, ords)| ords.contains(&d.ordinal))
                    .map(|(g, _)| gpu_kind(g))
                    .collect();
                (!kinds.is_empty()).then(|| (d.clone(), kinds))
            })
            .collect()
    }

    /// The job kinds this server can run and serve: the CPU, and each GPU
    /// group with a discovered device. A node records them with its
    /// heartbeat, and a service is placed only on nodes that serve its kind.
    pub fn served_kinds(&self) -> Vec<String> {
        let mut kinds = vec![CPU_KIND.to_string()];
        for (_, ks) in self.gpu_workers() {
            for k in ks {
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
        }
        kinds
    }

    fn names(&self) -> String {
        self.groups
            .iter()
            .map(|g| format!("'{}'", g.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn usable_gpu_groups(&self) -> String {
        let usable: Vec<String> = self
            .groups
            .iter()
            .filter(|g| !self.devices_of(&g.name).is_empty())
            .map(|g| format!("'{}'", g.name))
            .collect();
        if usable.is_empty() {
            "none".into()
        } else {
            usable.join(", ")
        }
    }

    fn group_or_error(
        &self,
        name: &str,
        path: &str,
        errors: &mut Vec<ValidationError>,
    ) -> Option<&ResourceGroup> {
        let g = self.group(name);
        if g.is_none() {
            errors.push(problem(
                path,
                format!(
                    "expected a resource group configured on this server ({}), got '{name}'",
                    self.names()
                ),
            ));
        }
        g
    }

    /// The deploy-time checks only the server can make, all reported at once:
    /// the service's and each plugin's `resource` name configured groups; a
    /// plugin's group has the GPU type of the service's; a GPU processor (and
    /// `--optimize_for gpu`) gets a GPU group whose GPUs were discovered at
    /// start; `metadata.gpu` and a plugin's `gpu` fit the group.
    pub fn check(&self, cfg: &ServiceConfig) -> Result<(), Vec<ValidationError>> {
        let mut errors = Vec::new();
        let service_group = cfg
            .resource
            .as_deref()
            .and_then(|r| self.group_or_error(r, "resource", &mut errors));
        let mut plugin_groups = Vec::new();
        for (i, p) in cfg.plugins.iter().enumerate() {
            let Some(r) = p.resource.as_deref() else {
                continue;
            };
            let path = format!("plugins[{i}].resource");
            let Some(pg) = self.group_or_error(r, &path, &mut errors) else {
                continue;
            };
            // The seed's rule, against what the groups really are: a model
            // optimized on one GPU type is tuned for the wrong one elsewhere.
            if let Some(sg) = service_group {
                let same = match (pg.gpu_model(), sg.gpu_model()) {
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    (a, b) => a == b,
                };
                if !same {
                    errors.push(problem(
                        &path,
                        format!(
                            "expected a resource group with the GPU type of the service's resource '{}' ({}), got '{}' ({}): a model optimized on one GPU type is tuned for the wrong one",
                            sg.name,
                            describe_type(sg),
                            pg.name,
                            describe_type(pg)
                        ),
                    ));
                }
            }
            plugin_groups.push((i, pg));
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let gpu_processor = cfg
            .processor_info()
            .is_some_and(|p| p.device == Device::Gpu);
        let gpu_plugins: Vec<usize> = cfg
            .plugins
            .iter()
            .enumerate()
            .filter(|(_, p)| p.optimize_for() == Some(Device::Gpu))
            .map(|(i, _)| i)
            .collect();
        if !gpu_processor && gpu_plugins.is_empty() {
            return Ok(());
        }
        if self.gpus.is_empty() {
            let why = format!(
                "no GPU was discovered on this server ({})",
                self.gpus.reason()
            );
            if gpu_processor {
                errors.push(problem(
                    "processor",
                    format!(
                        "processor '{}' serves on GPU, but {why}; use a CPU processor such as onnx_cpu",
                        cfg.processor
                    ),
                ));
            }
            for i in gpu_plugins {
                errors.push(problem(
                    &format!("plugins[{i}].command"),
                    format!("--optimize_for gpu needs a GPU, but {why}; use --optimize_for cpu"),
                ));
            }
            return Err(errors);
        }
        if gpu_processor {
            match service_group {
                None => errors.push(problem(
                    "resource",
                    format!(
                        "expected the GPU resource group the service runs on (processor '{}' serves on GPU); GPU groups with discovered GPUs: {}",
                        cfg.processor,
                        self.usable_gpu_groups()
                    ),
                )),
                Some(sg) => self.check_gpu_group(sg, "resource", cfg.metadata.gpu, "metadata.gpu", &mut errors),
            }
        }
        for (i, pg) in plugin_groups {
            if gpu_plugins.contains(&i) {
                let gpu = cfg.plugins.get(i).and_then(|p| p.gpu);
                self.check_gpu_group(
                    pg,
                    &format!("plugins[{i}].resource"),
                    gpu,
                    &format!("plugins[{i}].gpu"),
                    &mut errors,
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// `group` (named at `path`) is a GPU group with discovered devices, and
    /// `want` GPUs (at `want_path`) fit in it.
    fn check_gpu_group(
        &self,
        group: &ResourceGroup,
        path: &str,
        want: Option<u32>,
        want_path: &str,
        errors: &mut Vec<ValidationError>,
    ) {
        let GroupKind::Gpu { model, count } = &group.kind else {
            errors.push(problem(
                path,
                format!(
                    "expected a GPU resource group, got '{}', a CPU group; GPU groups with discovered GPUs: {}",
                    group.name,
                    self.usable_gpu_groups()
                ),
            ));
            return;
        };
        let found = self.devices_of(&group.name).len() as u32;
        if found == 0 {
            let seen = self
                .gpus
                .devices
                .iter()
                .map(|d| d.name.clone())
                .collect::<Vec<_>>()
                .join(", ");
            errors.push(problem(
                path,
                format!(
                    "resource group '{}' has no discovered GPU: no {model} GPU was discovered on this server (found: {seen})",
                    group.name
                ),
            ));
            return;
        }
        if let Some(n) = want.filter(|&n| n > found) {
            let short = if found < *count {
                format!(" ({count} configured, {found} discovered)")
            } else {
                String::new()
            };
            errors.push(problem(
                want_path,
                format!(
                    "expected at most {found} GPU(s): resource group '{}' has {found}{short}, got {n}",
                    group.name
                ),
            ));
        }
    }

    /// The read-only view of the API.
    pub fn info(&self) -> ResourceGroupsInfo {
        let groups = self
            .groups
            .iter()
            .map(|g| match &g.kind {
                GroupKind::Cpu => ResourceGroupInfo {
                    name: g.name.clone(),
                    device: "cpu".into(),
                    gpu_model: None,
                    gpu_count: None,
                    gpu_devices: None,
                    available: true,
                    note: None,
                },
                GroupKind::Gpu { model, count } => {
                    let devs = self.devices_of(&g.name).to_vec();
                    let note = if self.gpus.is_empty() {
                        Some(self.gpus.reason().to_string())
                    } else if devs.is_empty() {
                        Some(format!("no {model} GPU discovered"))
                    } else if devs.len() < *count as usize {
                        Some(format!("{count} configured, {} discovered", devs.len()))
                    } else {
                        None
                    };
                    ResourceGroupInfo {
                        name: g.name.clone(),
                        device: "gpu".into(),
                        gpu_model: Some(model.clone()),
                        gpu_count: Some(*count),
                        available: !devs.is_empty(),
                        gpu_devices: Some(devs),
                        note,
                    }
                }
            })
            .collect();
        ResourceGroupsInfo {
            groups,
            gpus: self.gpus.clone(),
        }
    }
}

fn describe_type(g: &ResourceGroup) -> String {
    match g.gpu_model() {
        Some(m) => format!("GPU type {m}"),
        None => "no GPU: a CPU group".into(),
    }
}

fn problem(path: &str, message: String) -> ValidationError {
    ValidationError {
        path: path.to_string(),
        message,
    }
}

fn gpu_kind(group: &str) -> String {
    format!("gpu:{group}")
}

/// The kind of a deploy job for `cfg`: `gpu:<service resource group>` for a
/// GPU processor (the plugin then optimizes for GPU too, which validation
/// ensures), else `cpu`. Only a worker of that kind may claim the job.
pub fn job_kind(cfg: &ServiceConfig) -> String {
    gpu_group(cfg).map_or_else(|| CPU_KIND.to_string(), gpu_kind)
}

/// The service resource group of a GPU service (a GPU processor, or a GPU
/// plugin, which implies one); `None` for a CPU service.
fn gpu_group(cfg: &ServiceConfig) -> Option<&str> {
    let gpu = cfg
        .processor_info()
        .is_some_and(|p| p.device == Device::Gpu)
        || cfg.blade_plugin().and_then(|p| p.optimize_for()) == Some(Device::Gpu);
    gpu.then(|| cfg.resource.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, model: &str, count: u32) -> ResourceGroup {
        ResourceGroup {
            name: name.into(),
            kind: GroupKind::Gpu {
                model: model.into(),
                count,
            },
        }
    }

    #[test]
    fn good_specs() {
        assert_eq!(
            parse_group("default=cpu"),
            Ok(ResourceGroup {
                name: "default".into(),
                kind: GroupKind::Cpu
            })
        );
        assert_eq!(
            parse_group("T4_8CORE=gpu:T4:1"),
            Ok(gpu("T4_8CORE", "T4", 1))
        );
        assert_eq!(
            parse_group("V100_8CORE=gpu:V100"),
            Ok(gpu("V100_8CORE", "V100", 1))
        );
        assert_eq!(parse_group(" big = gpu:A100:4 "), Ok(gpu("big", "A100", 4)));
        assert_eq!(
            parse_group("P4_8CORE=gpu:P4:2"),
            Ok(gpu("P4_8CORE", "P4", 2))
        );
    }

    #[test]
    fn bad_specs_say_why() {
        for (spec, why) in [
            ("default", "no `=`"),
            ("=cpu", "the name is empty"),
            ("a b=cpu", "must be 1-64 letters"),
            ("x=tpu", "unknown kind \"tpu\""),
            ("x=gpu:", "the GPU model \"\""),
            ("x=gpu:T4:0", "count \"0\" must be a whole number >= 1"),
            ("x=gpu:T4:two", "count \"two\""),
            ("x=gpu:T 4:1", "the GPU model"),
            ("T4_8CORE=gpu:V100:1", "the name says GPU type T4"),
            ("T4_8CORE=cpu", "use gpu:T4:COUNT"),
        ] {
            let err = parse_group(spec).expect_err(spec);
            assert!(err.contains(why), "{spec}: {err}");
            assert!(
                err.contains("expected NAME=cpu or NAME=gpu:MODEL[:COUNT]"),
                "{err}"
            );
        }
    }

    #[test]
    fn group_lists() {
        let d = parse_groups(&[]).expect("default");
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].name.as_str(), &d[0].kind),
            ("default", &GroupKind::Cpu)
        );
        let two = parse_groups(&["default=cpu".into(), "T4_8CORE=gpu:T4:2".into()]).expect("two");
        assert_eq!(two.len(), 2);
        let err = parse_groups(&["a=cpu".into(), "a=gpu:T4".into()]).expect_err("duplicate");
        assert!(err.contains("configured twice"), "{err}");
    }

    #[test]
    fn devices_match_models_by_word() {
        assert!(device_matches("Tesla T4", "T4"));
        assert!(device_matches("Tesla V100-SXM2-16GB", "v100"));
        assert!(device_matches("NVIDIA A100-SXM4-80GB", "A100"));
        assert!(!device_matches("NVIDIA A100-SXM4-80GB", "A10"));
        assert!(!device_matches("Tesla P40", "P4"));
    }

    fn inventory(names: &[&str]) -> GpuInventory {
        GpuInventory::of(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| GpuDevice {
                    ordinal: i as u32,
                    name: n.to_string(),
                    memory_bytes: 16 << 30,
                })
                .collect(),
        )
    }

    #[test]
    fn groups_take_their_devices_and_workers_their_kinds() {
        let r = Resources::new(
            vec![
                gpu("T4_8CORE", "T4", 1),
                gpu("t4_pair", "T4", 2),
                gpu("V100_8CORE", "V100", 1),
            ],
            inventory(&["Tesla T4", "Tesla T4", "NVIDIA A100"]),
        );
        assert_eq!(r.devices_of("T4_8CORE"), &[0]);
        assert_eq!(r.devices_of("t4_pair"), &[0, 1]);
        assert!(r.devices_of("V100_8CORE").is_empty());
        let workers: Vec<(u32, Vec<String>)> = r
            .gpu_workers()
            .into_iter()
            .map(|(d, k)| (d.ordinal, k))
            .collect();
        // The A100 belongs to no group: no worker for it.
        assert_eq!(
            workers,
            vec![
                (
                    0,
                    vec!["gpu:T4_8CORE".to_string(), "gpu:t4_pair".to_string()]
                ),
                (1, vec!["gpu:t4_pair".to_string()]),
            ]
        );
        let info = r.info();
        assert!(info.groups[0].available);
        assert!(!info.groups[2].available);
        assert_eq!(
            info.groups[2].note.as_deref(),
            Some("no V100 GPU discovered")
        );
    }

    #[test]
    fn no_gpu_means_no_gpu_workers() {
        let r = Resources::new(
            vec![gpu("T4_8CORE", "T4", 1)],
            GpuInventory::none(crate::control::gpu::NO_DRIVER),
        );
        assert!(r.gpu_workers().is_empty());
        assert!(r.devices_of("T4_8CORE").is_empty());
        let info = r.info();
        assert!(!info.groups[0].available);
        assert_eq!(
            info.groups[0].note.as_deref(),
            Some(crate::control::gpu::NO_DRIVER)
        );
    }

    #[test]
    fn job_kinds_follow_the_device() {
        let cpu: ServiceConfig = serde_json::from_value(serde_json::json!({
            "name": "a", "model_path": "upload://x/m.onnx", "processor": "onnx_cpu", "resource": "T4_8CORE"
        }))
        .expect("config");
        assert_eq!(job_kind(&cpu), "cpu");
        let gpu: ServiceConfig = serde_json::from_value(serde_json::json!({
            "name": "a", "model_path": "upload://x/m.onnx", "processor": "onnx_gpu", "resource": "T4_8CORE"
        }))
        .expect("config");
        assert_eq!(job_kind(&gpu), "gpu:T4_8CORE");
    }
}
