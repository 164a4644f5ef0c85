//! Validation of a service config: every problem at once, each with the JSON path of the field.
//!
//! Two layers:
//! - [`validate`] checks the rules of a typed [`ServiceConfig`] (names, devices, CUDA versions,
//!   resource groups, the one-model rule, shapes and ranges, ...).
//! - [`parse_and_validate`] reads raw JSON text. serde's typed deserialization stops at the first
//!   problem and says little about where, so it walks the JSON value itself: missing and unknown
//!   keys, wrong types, then every rule of [`validate`] on what could be read.
//!
//! # Paths
//! The document root is `$` (used for JSON syntax errors and a non-object document). Below it,
//! object keys are joined with `.` (`metadata.instance`, no leading `$.`) and array elements are
//! `[i]` (`plugins[0].command`). A key that is not an identifier (`[A-Za-z_][A-Za-z0-9_]*`), such
//! as a model file name, is written as a JSON string in brackets:
//! `plugins[0].config.model_info["frozen.pb"].input_shapes[1][0]`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{
    parse_range, parse_shape, Accuracy, Autoscaler, CronScaler, HealthCheck, Metadata, ModelInfo,
    OptimizationLevel, Plugin, PluginConfig, Quantization, RollingStrategy, Rpc, ScaleJob,
    ScaleStrategy, ServiceConfig, Share,
};
use crate::processor::{
    gpu_type_of_resource, parse_plugin_command, Device, PluginImage, Processor, PLUGIN_IMAGES,
    PROCESSORS,
};

/// One problem in a config: where (see the module docs for the path style) and what is expected.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, schemars::JsonSchema,
)]
#[error("{path}: {message}")]
pub struct ValidationError {
    pub path: String,
    pub message: String,
}

/// The path of the whole document.
pub const ROOT_PATH: &str = "$";

/// Most instances one service may ask for; more is far more likely a typo than a plan.
pub const MAX_INSTANCES: u32 = 64;

/// Shortest custom token; shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Parses config text and validates it, reporting all problems at once.
///
/// Returns the typed config only when there are no problems at all.
pub fn parse_and_validate(json: &str) -> Result<ServiceConfig, Vec<ValidationError>> {
    // Some Windows editors save UTF-8 with a byte-order mark; serde_json rejects it.
    let json = json.strip_prefix('\u{feff}').unwrap_or(json);
    let value: Value = serde_json::from_str(json)
        .map_err(|e| vec![error(ROOT_PATH, format!("invalid JSON: {e}"))])?;
    let mut reader = Reader::default();
    let config = reader.service(&value);
    let mut errors = reader.errors;
    // A rule failing on a placeholder (a missing or mistyped field) would only repeat the
    // structural error, so rules are reported only outside fields that already have one.
    let semantic: Vec<_> = validate(&config)
        .into_iter()
        .filter(|e| !errors.iter().any(|s| covers(&s.path, &e.path)))
        .collect();
    errors.extend(semantic);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// Checks every rule of a typed config and returns all violations (empty when valid).
pub fn validate(cfg: &ServiceConfig) -> Vec<ValidationError> {
    let mut r = Report::default();
    check_name(&mut r, &cfg.name);
    if cfg.model_path.trim().is_empty() {
        r.push(
            "model_path",
            "expected the model's location (a folder or an archive), got an empty string",
        );
    }
    if let Some(endpoint) = &cfg.oss_endpoint {
        check_oss_endpoint(&mut r, endpoint);
    }
    let processor = cfg.processor_info();
    if processor.is_none() {
        r.push(
            "processor",
            format!(
                "expected one of the processors {}; got {}",
                processor_names(),
                quote(&cfg.processor)
            ),
        );
    }
    check_metadata(&mut r, &cfg.metadata, processor);
    if let Some(resource) = &cfg.resource {
        if resource.trim().is_empty() {
            r.push(
                "resource",
                "expected a resource group name, got an empty string",
            );
        }
    }
    if let Some(token) = &cfg.token {
        check_token(&mut r, token);
    }
    check_plugins(&mut r, cfg, processor);
    if let Some(a) = &cfg.autoscaler {
        check_autoscaler(&mut r, a);
    }
    if let Some(c) = &cfg.cronscaler {
        check_cronscaler(&mut r, c);
    }
    check_file(&mut r, "warm_up_data_path".into(), &cfg.warm_up_data_path);
    r.0
}

// ---------------------------------------------------------------------------------------------
// Paths and errors
// ---------------------------------------------------------------------------------------------

fn error(path: impl Into<String>, message: impl Into<String>) -> ValidationError {
    ValidationError {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Default)]
struct Report(Vec<ValidationError>);

impl Report {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(error(path, message));
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `parent.key`, or `parent["key"]` when the key is not an identifier.
fn key_path(parent: &str, key: &str) -> String {
    if !is_identifier(key) {
        let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("{key:?}"));
        let parent = if parent == ROOT_PATH { "" } else { parent };
        format!("{parent}[{quoted}]")
    } else if parent == ROOT_PATH || parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn index_path(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Whether `path` is `ancestor` or lies inside it.
fn covers(ancestor: &str, path: &str) -> bool {
    ancestor == ROOT_PATH
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// A user value quoted for a message, shortened so a pasted blob cannot flood the output.
fn quote(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}…")
    }
}

fn processor_names() -> String {
    PROCESSORS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn image_list(images: impl Iterator<Item = PluginImage>) -> String {
    images
        .map(|i| match i.cuda {
            Some(cuda) => format!("{} ({}, CUDA {cuda})", i.image, i.device),
            None => format!("{} ({})", i.image, i.device),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Rules on the typed config
// ---------------------------------------------------------------------------------------------

fn check_name(r: &mut Report, name: &str) {
    let len = name.chars().count();
    let ok = (3..=63).contains(&len)
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        r.push(
            "name",
            format!(
                "expected 3 to 63 characters of lowercase letters, digits and '_', starting with \
                 a letter (it becomes /api/predict/<name>), got {}",
                quote(name)
            ),
        );
    }
}

/// An OSS endpoint is a host name (`oss-cn-hangzhou.aliyuncs.com`) or an
/// http(s) URL with no path.
fn check_oss_endpoint(r: &mut Report, endpoint: &str) {
    let host = match endpoint.split_once("://") {
        Some(("http" | "https", rest)) => rest.trim_end_matches('/'),
        Some(_) => {
            r.push(
                "oss_endpoint",
                format!(
                    "expected a host name like oss-cn-hangzhou.aliyuncs.com or an http(s):// URL, got {}",
                    quote(endpoint)
                ),
            );
            return;
        }
        None => endpoint,
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !ok {
        r.push(
            "oss_endpoint",
            format!(
                "expected a host name like oss-cn-hangzhou.aliyuncs.com or an http(s):// URL with no path, got {}",
                quote(endpoint)
            ),
        );
    }
}

fn check_token(r: &mut Report, token: &str) {
    if token.chars().count() < MIN_TOKEN_LEN {
        r.push(
            "token",
            format!(
                "expected at least {MIN_TOKEN_LEN} characters (omit the key to have one \
                 generated), got {}",
                token.chars().count()
            ),
        );
    } else if token.chars().any(char::is_whitespace) {
        r.push(
            "token",
            "expected a token without whitespace (it is sent in an HTTP header)",
        );
    }
}

/// Counts that mean "how many" must be at least 1 when given.
fn at_least_one(r: &mut Report, path: &str, value: Option<u64>, unit: &str) {
    if value == Some(0) {
        r.push(
            path,
            format!("expected at least 1 {unit}, got 0 (omit the key for the default)"),
        );
    }
}

fn check_cronscaler(r: &mut Report, c: &CronScaler) {
    if c.scale_jobs.is_empty() {
        r.push(
            "cronscaler.scale_jobs",
            "expected at least one job, e.g. {\"name\": \"day\", \"schedule\": \"0 8 * * *\", \"target_size\": 4}",
        );
    }
    let mut names = Vec::new();
    for (i, job) in c.scale_jobs.iter().enumerate() {
        let path = format!("cronscaler.scale_jobs[{i}]");
        if job.name.trim().is_empty() {
            r.push(
                format!("{path}.name"),
                "expected a name, got an empty string",
            );
        } else if names.contains(&job.name.as_str()) {
            r.push(
                format!("{path}.name"),
                format!("{} names another job already", quote(&job.name)),
            );
        }
        names.push(job.name.as_str());
        if let Err(e) = parse_schedule(&job.schedule) {
            r.push(format!("{path}.schedule"), e);
        }
        if !(1..=MAX_INSTANCES).contains(&job.target_size) {
            r.push(
                format!("{path}.target_size"),
                format!(
                    "expected 1 to {MAX_INSTANCES} instances, got {}",
                    job.target_size
                ),
            );
        }
    }
}

/// A cronscaler schedule: five cron fields, or six with seconds first, or an
/// alias such as `@hourly`; the error says what is wrong with it.
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    use std::str::FromStr;
    croner::Cron::from_str(schedule).map_err(|e| {
        format!(
            "expected a cron schedule (minute hour day-of-month month day-of-week, optionally seconds first), got {}: {e}",
            quote(schedule)
        )
    })
}

fn check_autoscaler(r: &mut Report, a: &Autoscaler) {
    if !(1..=MAX_INSTANCES).contains(&a.min) {
        r.push(
            "autoscaler.min",
            format!("expected 1 to {MAX_INSTANCES} instances, got {}", a.min),
        );
    }
    if !(1..=MAX_INSTANCES).contains(&a.max) || a.max < a.min {
        r.push(
            "autoscaler.max",
            format!(
                "expected {} to {MAX_INSTANCES} instances (not below min), got {}",
                a.min.max(1),
                a.max
            ),
        );
    }
    if a.scale_strategies.is_empty() {
        r.push(
            "autoscaler.scale_strategies",
            "expected at least one strategy, e.g. {\"metric_name\": \"qps\", \"threshold\": 50}",
        );
    }
    let mut seen = Vec::new();
    for (i, s) in a.scale_strategies.iter().enumerate() {
        let path = format!("autoscaler.scale_strategies[{i}]");
        if !SCALE_METRICS.contains(&s.metric_name.as_str()) {
            r.push(
                format!("{path}.metric_name"),
                format!(
                    "expected one of {}, got {}",
                    SCALE_METRICS.join(", "),
                    quote(&s.metric_name)
                ),
            );
        } else if seen.contains(&s.metric_name.as_str()) {
            r.push(
                format!("{path}.metric_name"),
                format!("{} is already a strategy", s.metric_name),
            );
        }
        seen.push(s.metric_name.as_str());
        if s.threshold() <= 0.0 {
            r.push(
                format!("{path}.threshold"),
                format!("expected a number above 0, got {}", s.threshold),
            );
        }
    }
}

fn check_metadata(r: &mut Report, m: &Metadata, processor: Option<Processor>) {
    if !(1..=MAX_INSTANCES).contains(&m.instance) {
        r.push(
            "metadata.instance",
            format!(
                "expected 1 to {MAX_INSTANCES} instances, got {}",
                m.instance
            ),
        );
    }
    at_least_one(r, "metadata.cpu", m.cpu.map(u64::from), "CPU core");
    at_least_one(r, "metadata.memory", m.memory, "MB of memory");
    at_least_one(r, "metadata.gpu_memory", m.gpu_memory, "GB of GPU memory");
    match (m.gpu, processor) {
        (Some(0), _) => at_least_one(r, "metadata.gpu", Some(0), "GPU"),
        (Some(_), Some(p)) if p.device == Device::Cpu => r.push(
            "metadata.gpu",
            format!(
                "expected no GPUs: processor {} serves on CPU (remove metadata.gpu or choose a \
                 GPU processor)",
                p.name
            ),
        ),
        _ => {}
    }
    if let (Some(cuda), Some(p)) = (&m.cuda, processor) {
        if let (Device::Gpu, Some(want)) = (p.device, p.cuda) {
            if cuda != want {
                r.push(
                    "metadata.cuda",
                    format!(
                        "expected \"{want}\", the CUDA version of processor {}, got {}",
                        p.name,
                        quote(cuda)
                    ),
                );
            }
        }
    }
    if let Some(rpc) = &m.rpc {
        check_rpc(r, rpc);
    }
    for (name, check) in [
        ("startup_check", &m.startup_check),
        ("readiness_check", &m.readiness_check),
        ("liveness_check", &m.liveness_check),
    ] {
        let Some(c) = check else { continue };
        let path = format!("metadata.{name}");
        for (field, value, range) in [
            ("period_seconds", c.period_seconds, 1..=3600),
            ("timeout_seconds", c.timeout_seconds, 1..=3600),
            ("initial_delay_seconds", c.initial_delay_seconds, 0..=86_400),
        ] {
            if let Some(v) = value.filter(|v| !range.contains(v)) {
                r.push(
                    format!("{path}.{field}"),
                    format!(
                        "expected {} to {} seconds, got {v}",
                        range.start(),
                        range.end()
                    ),
                );
            }
        }
        for (field, value) in [
            ("failure_threshold", c.failure_threshold),
            ("success_threshold", c.success_threshold),
        ] {
            if let Some(v) = value {
                if !(1..=100).contains(&v) {
                    r.push(
                        format!("{path}.{field}"),
                        format!("expected 1 to 100 probes, got {v}"),
                    );
                }
            }
        }
    }
}

fn check_rpc(r: &mut Report, rpc: &Rpc) {
    at_least_one(
        r,
        "metadata.rpc.max_batch_size",
        rpc.max_batch_size.map(u64::from),
        "request per batch",
    );
    at_least_one(
        r,
        "metadata.rpc.max_queue_size",
        rpc.max_queue_size.map(u64::from),
        "queued request",
    );
    if let Some(n) = rpc.max_queue_size.filter(|&n| n > MAX_QUEUE_SIZE) {
        r.push(
            "metadata.rpc.max_queue_size",
            format!(
                "expected at most {MAX_QUEUE_SIZE} queued requests per instance (each holds its inputs in \
                 the server's memory), got {n}"
            ),
        );
    }
    at_least_one(
        r,
        "metadata.rpc.io_threads",
        rpc.io_threads.map(u64::from),
        "I/O thread",
    );
    at_least_one(
        r,
        "metadata.rpc.worker_threads",
        rpc.worker_threads.map(u64::from),
        "worker thread",
    );
}

fn check_plugins(r: &mut Report, cfg: &ServiceConfig, processor: Option<Processor>) {
    if cfg.plugins.len() > 1 {
        r.push(
            "plugins",
            format!(
                "expected at most one plugin, got {}: EAS allows several plugins, but the Blade \
                 optimizer is the only plugin here and it optimizes a model once",
                cfg.plugins.len()
            ),
        );
    }
    for (i, plugin) in cfg.plugins.iter().enumerate() {
        check_plugin(r, &index_path("plugins", i), plugin, cfg, processor);
    }
}

fn check_plugin(
    r: &mut Report,
    base: &str,
    plugin: &Plugin,
    cfg: &ServiceConfig,
    processor: Option<Processor>,
) {
    let command_path = key_path(base, "command");
    let image_path = key_path(base, "image");
    let device = match parse_plugin_command(&plugin.command) {
        Ok(d) => Some(d),
        Err(msg) => {
            r.push(&command_path, msg);
            None
        }
    };
    let image = PluginImage::parse(&plugin.image);
    if image.is_none() {
        r.push(
            &image_path,
            format!(
                "unknown plugin image {}; expected one of: {}",
                quote(&plugin.image),
                image_list(PLUGIN_IMAGES.iter().copied())
            ),
        );
    }

    if let (Some(d), Some(img)) = (device, image) {
        if img.device != d {
            let fitting = PLUGIN_IMAGES.iter().copied().filter(|i| i.device == d);
            r.push(
                &image_path,
                format!(
                    "expected a {d} image, since the command optimizes for {d} (one of: {}), got \
                     a {} build",
                    image_list(fitting),
                    img.device
                ),
            );
        }
    }
    if let (Some(d), Some(p)) = (device, processor) {
        if p.device != d {
            r.push(
                &command_path,
                format!(
                    "expected --optimize_for {}: processor {} serves on {}, and a model is \
                     optimized for the hardware it is served on",
                    p.device, p.name, p.device
                ),
            );
        }
    }
    if let (Some(img), Some(p)) = (image, processor) {
        if let (Some(have), Some(want)) = (img.cuda, p.cuda) {
            if have != want {
                let fitting = PLUGIN_IMAGES
                    .iter()
                    .copied()
                    .filter(|i| i.cuda == Some(want));
                r.push(
                    &image_path,
                    format!(
                        "expected an image built for CUDA {want}, the version of processor {} \
                         ({}), got one built for CUDA {have}",
                        p.name,
                        image_list(fitting)
                    ),
                );
            }
        }
    }

    // The command says what the plugin targets; the image is the fallback when it does not parse.
    let plugin_device = device.or(image.map(|i| i.device));
    check_plugin_resource(r, base, plugin, cfg, plugin_device);

    let gpu_path = key_path(base, "gpu");
    match (plugin.gpu, plugin_device) {
        (Some(0), _) => at_least_one(r, &gpu_path, Some(0), "GPU"),
        (Some(_), Some(Device::Cpu)) => r.push(
            &gpu_path,
            "expected no GPUs: the plugin optimizes for CPU (remove gpu or use --optimize_for gpu)",
        ),
        _ => {}
    }

    if let Some(config) = &plugin.config {
        check_plugin_config(r, &key_path(base, "config"), config);
    }
}

fn check_plugin_resource(
    r: &mut Report,
    base: &str,
    plugin: &Plugin,
    cfg: &ServiceConfig,
    plugin_device: Option<Device>,
) {
    let path = key_path(base, "resource");
    let Some(resource) = &plugin.resource else {
        if plugin_device == Some(Device::Gpu) {
            r.push(
                path,
                "expected the resource group the optimization runs on, e.g. \"T4_8CORE\": it \
                 is required to optimize on GPU, and its GPU type must equal the service's",
            );
        }
        return;
    };
    if resource.trim().is_empty() {
        r.push(
            path,
            "expected a resource group name such as \"T4_8CORE\", got an empty string",
        );
        return;
    }
    let service = cfg.resource.as_deref().unwrap_or_default();
    if let (Some(mine), Some(theirs)) = (
        gpu_type_of_resource(resource),
        gpu_type_of_resource(service),
    ) {
        if mine != theirs {
            r.push(
                path,
                format!(
                    "expected a resource group with GPU type {theirs}, the GPU type of the \
                     service's resource {}: a model optimized on {mine} is tuned for the wrong GPU",
                    quote(service)
                ),
            );
        }
    }
}

fn check_plugin_config(r: &mut Report, base: &str, config: &PluginConfig) {
    let path = key_path(base, "model_info");
    let n = config.model_info.len();
    if n != 1 {
        let got = if n == 0 {
            "none".to_string()
        } else {
            config
                .model_info
                .keys()
                .map(|k| quote(k))
                .collect::<Vec<_>>()
                .join(", ")
        };
        r.push(
            &path,
            format!("expected exactly one model (only one model may be configured), got {got}"),
        );
    }
    for (file, info) in &config.model_info {
        let entry = key_path(&path, file);
        if let Some(why) = relative_path_problem(file) {
            let msg = format!(
                "expected the model's file name inside model_path, like \"frozen.pb\", \
                 got {}: {why}",
                quote(file)
            );
            r.push(&entry, msg);
        }
        check_model_info(r, &entry, info);
    }
}

/// Why `p` is not a file path inside `model_path`, if it is not.
fn relative_path_problem(p: &str) -> Option<&'static str> {
    let bytes = p.as_bytes();
    if p.trim().is_empty() {
        Some("it is empty")
    } else if p.contains("://") {
        Some("it is a URL; name a file inside model_path instead")
    } else if p.starts_with('/') || p.starts_with('\\') || (bytes.len() >= 2 && bytes[1] == b':') {
        Some("it is an absolute path")
    } else if p.split(['/', '\\']).any(|c| c == "..") {
        Some("'..' would leave model_path")
    } else {
        None
    }
}

fn check_file(r: &mut Report, path: String, file: &Option<String>) {
    if let Some(file) = file {
        if let Some(why) = relative_path_problem(file) {
            r.push(
                path,
                format!(
                    "expected a file path inside model_path, like \"data/test.npy\", got {}: {why}",
                    quote(file)
                ),
            );
        }
    }
}

fn check_model_info(r: &mut Report, base: &str, info: &ModelInfo) {
    check_names(r, &key_path(base, "inputs"), info.inputs.as_deref());
    check_names(r, &key_path(base, "outputs"), info.outputs.as_deref());
    check_file(r, key_path(base, "test_data"), &info.test_data);
    check_file(
        r,
        key_path(base, "calibration_dataset"),
        &info.calibration_dataset,
    );
    if let Some(sig) = &info.signature_name {
        if sig.trim().is_empty() || sig.len() > 256 || sig.chars().any(char::is_control) {
            r.push(
                key_path(base, "signature_name"),
                format!(
                    "expected the name of one of the SavedModel's signatures, like \
                     \"serving_default\" (1 to 256 characters, no control characters), got {}",
                    quote(sig)
                ),
            );
        }
    }

    // An empty `inputs` is already an error; counting against it would only cascade.
    let n_inputs = info.inputs.as_ref().map(Vec::len).filter(|&n| n > 0);
    let shapes_len = info.input_shapes.as_ref().and_then(|g| first_group_len(g));
    if let Some(groups) = &info.input_shapes {
        let expected = n_inputs
            .map(Expected::Inputs)
            .or(shapes_len.map(Expected::FirstGroup));
        check_groups(
            r,
            &key_path(base, "input_shapes"),
            groups,
            expected,
            "shape",
            parse_shape,
        );
    }
    if let Some(groups) = &info.input_ranges {
        let expected = n_inputs
            .map(Expected::Inputs)
            .or(shapes_len.map(Expected::Shapes))
            .or(first_group_len(groups).map(Expected::FirstGroup));
        check_groups(
            r,
            &key_path(base, "input_ranges"),
            groups,
            expected,
            "range",
            parse_range,
        );
    }

    if let Some(w) = info
        .quantization
        .as_ref()
        .and_then(|q| q.weight_adjustment.as_deref())
    {
        if w != "true" && w != "false" {
            r.push(
                key_path(&key_path(base, "quantization"), "weight_adjustment"),
                format!(
                    "expected the string \"true\" or \"false\", got {}",
                    quote(w)
                ),
            );
        }
    }
}

/// Input/output node names: a non-empty list of non-empty, distinct names.
fn check_names(r: &mut Report, path: &str, names: Option<&[String]>) {
    let Some(names) = names else { return };
    if names.is_empty() {
        r.push(
            path,
            "expected at least one node name (omit the key to use the model's own)",
        );
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        if name.trim().is_empty() {
            r.push(
                index_path(path, i),
                "expected a node name, got an empty string",
            );
        } else if let Some(j) = seen.iter().position(|s| *s == name.as_str()) {
            r.push(
                index_path(path, i),
                format!(
                    "expected distinct names, got {} again (the same as [{j}])",
                    quote(name)
                ),
            );
        }
        seen.push(name);
    }
}

fn first_group_len(groups: &[Vec<String>]) -> Option<usize> {
    groups.iter().map(Vec::len).find(|&n| n > 0)
}

/// Where the expected group length comes from, for the message.
#[derive(Clone, Copy)]
enum Expected {
    Inputs(usize),
    Shapes(usize),
    FirstGroup(usize),
}

fn check_groups<T>(
    r: &mut Report,
    path: &str,
    groups: &[Vec<String>],
    expected: Option<Expected>,
    what: &str,
    parse: fn(&str) -> Result<T, String>,
) {
    if groups.is_empty() {
        let msg = format!(
            "expected at least one group, with one {what} per input (omit the key if unknown)"
        );
        r.push(path, msg);
    }
    for (g, group) in groups.iter().enumerate() {
        let group_path = index_path(path, g);
        let n = group.len();
        if n == 0 {
            r.push(
                &group_path,
                format!("expected one {what} per input, got an empty group"),
            );
        } else if let Some(exp) = expected {
            let (want, why) = match exp {
                Expected::Inputs(k) => (k, format!("one per input, and inputs lists {k}")),
                Expected::Shapes(k) => (
                    k,
                    format!("one per input, like the groups of input_shapes ({k})"),
                ),
                Expected::FirstGroup(k) => (
                    k,
                    format!("every group has one per input, like the first ({k})"),
                ),
            };
            if n != want {
                r.push(
                    &group_path,
                    format!("expected {want} {what}s ({why}), got {n}"),
                );
            }
        }
        for (i, s) in group.iter().enumerate() {
            if let Err(msg) = parse(s) {
                r.push(index_path(&group_path, i), msg);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading raw JSON: missing keys, unknown keys, wrong types
// ---------------------------------------------------------------------------------------------

// The key lists mirror the structs in `config`; a test checks them against the JSON Schema.
const SERVICE_KEYS: &[&str] = &[
    "name",
    "model_path",
    "oss_endpoint",
    "processor",
    "metadata",
    "resource",
    "token",
    "plugins",
    "autoscaler",
    "cronscaler",
    "warm_up_data_path",
];
const CRONSCALER_KEYS: &[&str] = &["scale_jobs"];
const SCALE_JOB_KEYS: &[&str] = &["name", "schedule", "target_size"];
const AUTOSCALER_KEYS: &[&str] = &["min", "max", "scale_strategies"];
const SCALE_STRATEGY_KEYS: &[&str] = &["metric_name", "threshold"];
/// The most requests one instance may queue (`metadata.rpc.max_queue_size`).
pub const MAX_QUEUE_SIZE: u32 = 4096;
/// The metrics an autoscaler may scale on.
pub const SCALE_METRICS: &[&str] = &["qps", "cpu"];
const METADATA_KEYS: &[&str] = &[
    "instance",
    "cpu",
    "memory",
    "gpu",
    "gpu_memory",
    "cuda",
    "rpc",
    "rolling_strategy",
    "startup_check",
    "readiness_check",
    "liveness_check",
    "enable_grpc",
];
const ROLLING_KEYS: &[&str] = &["max_surge", "max_unavailable"];
const CHECK_KEYS: &[&str] = &[
    "initial_delay_seconds",
    "period_seconds",
    "timeout_seconds",
    "failure_threshold",
    "success_threshold",
];
/// How EAS's checks of custom images probe; here the probe is built in.
const CHECK_METHODS: &[&str] = &["http_get", "tcp_socket", "exec"];
const RPC_KEYS: &[&str] = &[
    "batching",
    "max_batch_size",
    "max_batch_timeout",
    "max_queue_size",
    "keepalive",
    "io_threads",
    "worker_threads",
];
const PLUGIN_KEYS: &[&str] = &["command", "image", "resource", "gpu", "config"];
const PLUGIN_CONFIG_KEYS: &[&str] = &["model_info"];
const MODEL_INFO_KEYS: &[&str] = &[
    "optimization_level",
    "inputs",
    "outputs",
    "test_data",
    "calibration_dataset",
    "input_shapes",
    "input_ranges",
    "quantization",
    "signature_name",
    "accuracy",
];
const QUANTIZATION_KEYS: &[&str] = &["weight_adjustment"];
const ACCURACY_KEYS: &[&str] = &[
    "max_rel_error",
    "min_cosine",
    "min_top1",
    "min_top_k",
    "top_k",
    "min_region_agreement",
    "region_threshold",
    "region_iou",
    "min_sequence_agreement",
    "ctc_blank",
    "outputs",
];

/// How a value is described in "expected X, got Y".
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", quote(s)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// One JSON object being read, with its path.
struct Obj<'v> {
    map: &'v Map<String, Value>,
    path: String,
}

impl<'v> Obj<'v> {
    fn get(&self, key: &str) -> (Option<&'v Value>, String) {
        (self.map.get(key), key_path(&self.path, key))
    }
}

/// Reads a JSON value into a (possibly partial) [`ServiceConfig`], collecting structural errors.
///
/// Where a field is missing or mistyped, a placeholder (empty string, default, empty list) stands
/// in, so that the rest can still be checked and list indices keep pointing at the right element.
#[derive(Default)]
struct Reader {
    errors: Vec<ValidationError>,
}

type Read<'v, T> = fn(&mut Reader, &'v Value, &str) -> Option<T>;

impl Reader {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(error(path, message));
    }

    fn type_error(&mut self, path: &str, expected: &str, got: &Value) {
        self.push(path, format!("expected {expected}, got {}", describe(got)));
    }

    fn map<'v>(&mut self, v: &'v Value, path: &str) -> Option<Obj<'v>> {
        match v.as_object() {
            Some(map) => Some(Obj {
                map,
                path: path.to_string(),
            }),
            None => {
                self.type_error(path, "an object", v);
                None
            }
        }
    }

    /// An object whose keys must all be in `allowed`; each unknown key is reported at its path.
    fn object<'v>(&mut self, v: &'v Value, path: &str, allowed: &[&str]) -> Option<Obj<'v>> {
        let obj = self.map(v, path)?;
        for key in obj.map.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.push(
                key_path(path, key),
                format!(
                    "unknown key {}; allowed keys: {}",
                    quote(key),
                    allowed.join(", ")
                ),
            );
        }
        Some(obj)
    }

    /// A key that must be present.
    fn required<'v, T>(&mut self, obj: &Obj<'v>, key: &str, read: Read<'v, T>) -> Option<T> {
        match obj.get(key) {
            (Some(v), path) => read(self, v, &path),
            (None, path) => {
                self.push(path, format!("missing required key {}", quote(key)));
                None
            }
        }
    }

    /// An `Option` field: absent and `null` both mean unset, as in serde.
    fn optional<'v, T>(&mut self, obj: &Obj<'v>, key: &str, read: Read<'v, T>) -> Option<T> {
        match obj.get(key) {
            (None | Some(Value::Null), _) => None,
            (Some(v), path) => read(self, v, &path),
        }
    }

    /// A field with a serde default: absent means the default, but `null` is a type error.
    fn defaulted<'v, T>(&mut self, obj: &Obj<'v>, key: &str, read: Read<'v, T>) -> Option<T> {
        match obj.get(key) {
            (None, _) => None,
            (Some(v), path) => read(self, v, &path),
        }
    }

    // --- scalars ---

    fn string(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.type_error(path, "a string", v);
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            _ => {
                self.type_error(path, "true or false", v);
                None
            }
        }
    }

    /// A count (`u32`); zero passes here and is judged by the rules.
    fn count(&mut self, v: &Value, path: &str) -> Option<u32> {
        match v.as_u64().map(u32::try_from) {
            Some(Ok(n)) => Some(n),
            _ => {
                self.type_error(
                    path,
                    &format!("a positive integer (at most {})", u32::MAX),
                    v,
                );
                None
            }
        }
    }

    /// A size or duration (`u64`).
    fn amount(&mut self, v: &Value, path: &str) -> Option<u64> {
        let n = v.as_u64();
        if n.is_none() {
            self.type_error(path, "a non-negative integer", v);
        }
        n
    }

    fn level(&mut self, v: &Value, path: &str) -> Option<OptimizationLevel> {
        match v.as_str() {
            Some("o1") => Some(OptimizationLevel::O1),
            Some("o2") => Some(OptimizationLevel::O2),
            _ => {
                self.type_error(path, "\"o1\" (lossless, the default) or \"o2\" (INT8)", v);
                None
            }
        }
    }

    /// The document makes this a string, not a JSON boolean; a boolean is the likely mistake.
    fn weight_adjustment(&mut self, v: &Value, path: &str) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.type_error(path, "the string \"true\" or \"false\"", v);
                None
            }
        }
    }

    // --- lists ---

    /// A list of strings; a non-string element is reported and stands in as "".
    fn strings(&mut self, v: &Value, path: &str) -> Option<Vec<String>> {
        let Some(items) = v.as_array() else {
            self.type_error(path, "a list of strings", v);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(self.string(item, &index_path(path, i)).unwrap_or_default());
        }
        Some(out)
    }

    /// A list of groups of strings (`input_shapes`, `input_ranges`).
    fn groups(&mut self, v: &Value, path: &str) -> Option<Vec<Vec<String>>> {
        let Some(items) = v.as_array() else {
            self.type_error(path, "a list of groups, e.g. [[\"1*512\", \"3*256\"]]", v);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(self.strings(item, &index_path(path, i)).unwrap_or_default());
        }
        Some(out)
    }

    // --- objects ---

    fn service(&mut self, v: &Value) -> ServiceConfig {
        let placeholder = ServiceConfig {
            name: String::new(),
            model_path: String::new(),
            oss_endpoint: None,
            processor: String::new(),
            metadata: Metadata::default(),
            resource: None,
            token: None,
            plugins: Vec::new(),
            autoscaler: None,
            cronscaler: None,
            warm_up_data_path: None,
        };
        let Some(obj) = self.object(v, ROOT_PATH, SERVICE_KEYS) else {
            return placeholder;
        };
        ServiceConfig {
            name: self
                .required(&obj, "name", Self::string)
                .unwrap_or_default(),
            model_path: self
                .required(&obj, "model_path", Self::string)
                .unwrap_or_default(),
            oss_endpoint: self.optional(&obj, "oss_endpoint", Self::string),
            processor: self
                .required(&obj, "processor", Self::string)
                .unwrap_or_default(),
            metadata: self
                .defaulted(&obj, "metadata", Self::metadata)
                .unwrap_or_default(),
            resource: self.optional(&obj, "resource", Self::string),
            token: self.optional(&obj, "token", Self::string),
            plugins: self
                .defaulted(&obj, "plugins", Self::plugins)
                .unwrap_or_default(),
            autoscaler: self.optional(&obj, "autoscaler", Self::autoscaler),
            cronscaler: self.optional(&obj, "cronscaler", Self::cronscaler),
            warm_up_data_path: self.optional(&obj, "warm_up_data_path", Self::string),
        }
    }

    fn cronscaler(&mut self, v: &Value, path: &str) -> Option<CronScaler> {
        let obj = self.object(v, path, CRONSCALER_KEYS)?;
        Some(CronScaler {
            scale_jobs: self
                .required(&obj, "scale_jobs", Self::scale_jobs)
                .unwrap_or_default(),
        })
    }

    fn scale_jobs(&mut self, v: &Value, path: &str) -> Option<Vec<ScaleJob>> {
        let Some(items) = v.as_array() else {
            self.type_error(
                path,
                "a list of {\"name\": …, \"schedule\": …, \"target_size\": …}",
                v,
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Some(obj) = self.object(item, &index_path(path, i), SCALE_JOB_KEYS) else {
                continue;
            };
            out.push(ScaleJob {
                name: self
                    .required(&obj, "name", Self::string)
                    .unwrap_or_default(),
                schedule: self
                    .required(&obj, "schedule", Self::string)
                    .unwrap_or_else(|| "* * * * *".into()),
                target_size: self.required(&obj, "target_size", Self::count).unwrap_or(1),
            });
        }
        Some(out)
    }

    fn autoscaler(&mut self, v: &Value, path: &str) -> Option<Autoscaler> {
        let obj = self.object(v, path, AUTOSCALER_KEYS)?;
        Some(Autoscaler {
            min: self.required(&obj, "min", Self::count).unwrap_or(1),
            max: self.required(&obj, "max", Self::count).unwrap_or(1),
            scale_strategies: self
                .required(&obj, "scale_strategies", Self::scale_strategies)
                .unwrap_or_default(),
        })
    }

    fn scale_strategies(&mut self, v: &Value, path: &str) -> Option<Vec<ScaleStrategy>> {
        let Some(items) = v.as_array() else {
            self.type_error(path, "a list of {\"metric_name\": …, \"threshold\": …}", v);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let p = index_path(path, i);
            let Some(obj) = self.object(item, &p, SCALE_STRATEGY_KEYS) else {
                continue;
            };
            out.push(ScaleStrategy {
                metric_name: self
                    .required(&obj, "metric_name", Self::string)
                    .unwrap_or_default(),
                threshold: self
                    .required(&obj, "threshold", Self::number)
                    .unwrap_or_else(|| 1.into()),
            });
        }
        Some(out)
    }

    /// Any JSON number, as written.
    fn number(&mut self, v: &Value, path: &str) -> Option<serde_json::Number> {
        match v {
            Value::Number(n) => Some(n.clone()),
            _ => {
                self.type_error(path, "a number", v);
                None
            }
        }
    }

    fn metadata(&mut self, v: &Value, path: &str) -> Option<Metadata> {
        let obj = self.object(v, path, METADATA_KEYS)?;
        Some(Metadata {
            instance: self.defaulted(&obj, "instance", Self::count).unwrap_or(1),
            cpu: self.optional(&obj, "cpu", Self::count),
            memory: self.optional(&obj, "memory", Self::amount),
            gpu: self.optional(&obj, "gpu", Self::count),
            gpu_memory: self.optional(&obj, "gpu_memory", Self::amount),
            cuda: self.optional(&obj, "cuda", Self::string),
            rpc: self.optional(&obj, "rpc", Self::rpc),
            rolling_strategy: self.optional(&obj, "rolling_strategy", Self::rolling_strategy),
            startup_check: self.optional(&obj, "startup_check", Self::health_check),
            readiness_check: self.optional(&obj, "readiness_check", Self::health_check),
            liveness_check: self.optional(&obj, "liveness_check", Self::health_check),
            enable_grpc: self.optional(&obj, "enable_grpc", Self::boolean),
        })
    }

    fn rolling_strategy(&mut self, v: &Value, path: &str) -> Option<RollingStrategy> {
        let obj = self.object(v, path, ROLLING_KEYS)?;
        Some(RollingStrategy {
            max_surge: self.optional(&obj, "max_surge", Self::share),
            max_unavailable: self.optional(&obj, "max_unavailable", Self::share),
        })
    }

    /// A count of instances, or `"N%"` of them (0 to 100).
    fn share(&mut self, v: &Value, path: &str) -> Option<Share> {
        if let Some(n) = v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            return Some(Share::Count(n));
        }
        let share = v.as_str().map(|s| Share::Percent(s.to_string()));
        match share.as_ref().and_then(Share::percent) {
            Some(p) if p <= 100 => share,
            _ => {
                self.type_error(
                    path,
                    "a number of instances, or a per cent of them as a string like \"25%\"",
                    v,
                );
                None
            }
        }
    }

    fn health_check(&mut self, v: &Value, path: &str) -> Option<HealthCheck> {
        let mut allowed = CHECK_KEYS.to_vec();
        allowed.extend(CHECK_METHODS);
        let obj = self.object(v, path, &allowed)?;
        for method in CHECK_METHODS {
            if let (Some(_), p) = obj.get(method) {
                self.push(
                    p,
                    format!(
                        "the probe is built in: each instance's runner answers it on a channel \
                         of its own; {} apply to EAS's custom images, which are not run here \
                         (remove the key, keep the timing fields)",
                        CHECK_METHODS.join(", ")
                    ),
                );
            }
        }
        Some(HealthCheck {
            initial_delay_seconds: self.optional(&obj, "initial_delay_seconds", Self::amount),
            period_seconds: self.optional(&obj, "period_seconds", Self::amount),
            timeout_seconds: self.optional(&obj, "timeout_seconds", Self::amount),
            failure_threshold: self.optional(&obj, "failure_threshold", Self::count),
            success_threshold: self.optional(&obj, "success_threshold", Self::count),
        })
    }

    fn rpc(&mut self, v: &Value, path: &str) -> Option<Rpc> {
        let obj = self.object(v, path, RPC_KEYS)?;
        Some(Rpc {
            batching: self.optional(&obj, "batching", Self::boolean),
            max_batch_size: self.optional(&obj, "max_batch_size", Self::count),
            max_batch_timeout: self.optional(&obj, "max_batch_timeout", Self::amount),
            max_queue_size: self.optional(&obj, "max_queue_size", Self::count),
            keepalive: self.optional(&obj, "keepalive", Self::amount),
            io_threads: self.optional(&obj, "io_threads", Self::count),
            worker_threads: self.optional(&obj, "worker_threads", Self::count),
        })
    }

    fn plugins(&mut self, v: &Value, path: &str) -> Option<Vec<Plugin>> {
        let Some(items) = v.as_array() else {
            self.type_error(path, "a list of plugin objects", v);
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            // A broken entry still takes its slot, so later plugins keep their indices.
            out.push(
                self.plugin(item, &index_path(path, i))
                    .unwrap_or_else(|| Plugin {
                        command: String::new(),
                        image: String::new(),
                        resource: None,
                        gpu: None,
                        config: None,
                    }),
            );
        }
        Some(out)
    }

    fn plugin(&mut self, v: &Value, path: &str) -> Option<Plugin> {
        let obj = self.object(v, path, PLUGIN_KEYS)?;
        Some(Plugin {
            command: self
                .required(&obj, "command", Self::string)
                .unwrap_or_default(),
            image: self
                .required(&obj, "image", Self::string)
                .unwrap_or_default(),
            resource: self.optional(&obj, "resource", Self::string),
            gpu: self.optional(&obj, "gpu", Self::count),
            config: self.optional(&obj, "config", Self::plugin_config),
        })
    }

    fn plugin_config(&mut self, v: &Value, path: &str) -> Option<PluginConfig> {
        let obj = self.object(v, path, PLUGIN_CONFIG_KEYS)?;
        Some(PluginConfig {
            model_info: self
                .required(&obj, "model_info", Self::model_info_map)
                .unwrap_or_default(),
        })
    }

    /// `model_info`: model file name → items. Keys are file names, so any key is allowed here.
    fn model_info_map(
        &mut self,
        v: &Value,
        path: &str,
    ) -> Option<std::collections::BTreeMap<String, ModelInfo>> {
        let obj = self.map(v, path)?;
        let mut out = std::collections::BTreeMap::new();
        for (file, item) in obj.map {
            let info = self
                .model_info(item, &key_path(path, file))
                .unwrap_or_default();
            out.insert(file.clone(), info);
        }
        Some(out)
    }

    fn model_info(&mut self, v: &Value, path: &str) -> Option<ModelInfo> {
        let obj = self.object(v, path, MODEL_INFO_KEYS)?;
        Some(ModelInfo {
            optimization_level: self.optional(&obj, "optimization_level", Self::level),
            inputs: self.optional(&obj, "inputs", Self::strings),
            outputs: self.optional(&obj, "outputs", Self::strings),
            test_data: self.optional(&obj, "test_data", Self::string),
            calibration_dataset: self.optional(&obj, "calibration_dataset", Self::string),
            input_shapes: self.optional(&obj, "input_shapes", Self::groups),
            input_ranges: self.optional(&obj, "input_ranges", Self::groups),
            quantization: self.optional(&obj, "quantization", Self::quantization),
            accuracy: self.optional(&obj, "accuracy", Self::accuracy),
            signature_name: self.optional(&obj, "signature_name", Self::string),
        })
    }

    fn accuracy(&mut self, v: &Value, path: &str) -> Option<Accuracy> {
        let obj = self.object(v, path, ACCURACY_KEYS)?;
        let acc = Accuracy {
            max_rel_error: self.optional(&obj, "max_rel_error", |s, v, p| {
                s.bounded(v, p, 0.0, f64::MAX)
            }),
            min_cosine: self.optional(&obj, "min_cosine", |s, v, p| s.bounded(v, p, -1.0, 1.0)),
            min_top1: self.optional(&obj, "min_top1", |s, v, p| s.bounded(v, p, 0.0, 1.0)),
            min_top_k: self.optional(&obj, "min_top_k", |s, v, p| s.bounded(v, p, 0.0, 1.0)),
            top_k: self.optional(&obj, "top_k", |s, v, p| {
                let k = s.count(v, p)?;
                if k == 0 {
                    s.push(p, "expected a positive integer (the k of min_top_k), got 0");
                    return None;
                }
                Some(k)
            }),
            min_region_agreement: self.optional(&obj, "min_region_agreement", |s, v, p| {
                s.bounded(v, p, 0.0, 1.0)
            }),
            region_threshold: self.optional(&obj, "region_threshold", |s, v, p| {
                s.bounded(v, p, f64::MIN, f64::MAX)
            }),
            region_iou: self.optional(&obj, "region_iou", |s, v, p| {
                let x = s.bounded(v, p, 0.0, 1.0)?;
                if x == 0.0 {
                    s.push(p, "expected a box IoU above 0 and at most 1, got 0");
                    return None;
                }
                Some(x)
            }),
            min_sequence_agreement: self.optional(&obj, "min_sequence_agreement", |s, v, p| {
                s.bounded(v, p, 0.0, 1.0)
            }),
            ctc_blank: self.optional(&obj, "ctc_blank", Self::count),
            outputs: self.optional(&obj, "outputs", Self::strings),
        };
        // A setting of a metric that is not enabled does nothing: say so.
        for (setting, metric) in [
            ("top_k", "min_top_k"),
            ("region_threshold", "min_region_agreement"),
            ("region_iou", "min_region_agreement"),
            ("ctc_blank", "min_sequence_agreement"),
        ] {
            let (set, path) = obj.get(setting);
            if set.is_some_and(|v| !v.is_null()) && obj.get(metric).0.is_none_or(Value::is_null) {
                self.push(
                    &path,
                    format!("{setting} has no effect without {metric}: set {metric} too (the share of agreement the gate requires)"),
                );
            }
        }
        Some(acc)
    }

    /// A finite number within [lo, hi].
    fn bounded(&mut self, v: &Value, path: &str, lo: f64, hi: f64) -> Option<f64> {
        match v.as_f64() {
            Some(x) if x.is_finite() && x >= lo && x <= hi => Some(x),
            Some(_) if v.is_number() => {
                let range = if hi == f64::MAX {
                    format!("at least {lo}")
                } else {
                    format!("between {lo} and {hi}")
                };
                self.push(
                    path,
                    format!("expected a number {range}, got {}", describe(v)),
                );
                None
            }
            _ => {
                self.type_error(path, "a number", v);
                None
            }
        }
    }

    fn quantization(&mut self, v: &Value, path: &str) -> Option<Quantization> {
        let obj = self.object(v, path, QUANTIZATION_KEYS)?;
        Some(Quantization {
            weight_adjustment: self.optional(&obj, "weight_adjustment", Self::weight_adjustment),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn oss_endpoint_is_a_host_or_an_http_url() {
        let with = |endpoint: &str| {
            parse_and_validate(
                &serde_json::json!({
                    "name": "svc", "model_path": "oss://bucket/m/", "processor": "onnx_cpu",
                    "oss_endpoint": endpoint,
                })
                .to_string(),
            )
        };
        for good in [
            "oss-cn-hangzhou.aliyuncs.com",
            "https://oss-cn-shanghai-internal.aliyuncs.com",
            "http://127.0.0.1:9000/",
        ] {
            assert_eq!(
                with(good).map(|c| c.oss_endpoint),
                Ok(Some(good.to_string()))
            );
        }
        for bad in ["", "ftp://host", "http://host/path", "a b", "https://"] {
            let errs = with(bad).unwrap_err();
            assert!(
                errs.iter().any(|e| e.path == "oss_endpoint"),
                "{bad}: {errs:?}"
            );
        }
    }

    #[test]
    fn signature_name_is_a_name_at_its_path() {
        let with = |v: serde_json::Value| {
            parse_and_validate(
                &serde_json::json!({
                    "name": "svc", "model_path": "m.tar.gz", "processor": "tensorflow_cpu_1.15",
                    "plugins": [{
                        "command": "blade --mode eas_plugin --optimize_for cpu",
                        "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cpu_latest",
                        "config": { "model_info": {
                        "export": { "signature_name": v }
                    } } }],
                })
                .to_string(),
            )
        };
        let got = with("scores".into()).map(|c| {
            c.plugins[0].config.as_ref().unwrap().model_info["export"]
                .signature_name
                .clone()
        });
        assert_eq!(got, Ok(Some("scores".to_string())));
        let path = "plugins[0].config.model_info.export.signature_name";
        for bad in [
            "".into(),
            " ".into(),
            "a\nb".into(),
            "x".repeat(300).into(),
            3.into(),
        ] {
            let errs = with(bad).unwrap_err();
            assert!(errs.iter().any(|e| e.path == path), "{errs:?}");
        }
    }

    #[test]
    fn enable_grpc_is_true_or_false() {
        let with = |v: serde_json::Value| {
            parse_and_validate(
                &serde_json::json!({
                    "name": "svc", "model_path": "m.onnx", "processor": "onnx_cpu",
                    "metadata": { "instance": 1, "enable_grpc": v },
                })
                .to_string(),
            )
        };
        assert_eq!(
            with(true.into()).map(|c| c.metadata.enable_grpc),
            Ok(Some(true))
        );
        let errs = with("yes".into()).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.path == "metadata.enable_grpc" && e.message.contains("true or false")),
            "{errs:?}"
        );
    }

    #[test]
    fn paths_are_rendered_consistently() {
        assert_eq!(key_path(ROOT_PATH, "name"), "name");
        assert_eq!(key_path("metadata", "instance"), "metadata.instance");
        assert_eq!(key_path(ROOT_PATH, "my-key"), "[\"my-key\"]");
        assert_eq!(
            key_path("a.model_info", "frozen.pb"),
            "a.model_info[\"frozen.pb\"]"
        );
        assert_eq!(key_path("m", "we\"ird"), "m[\"we\\\"ird\"]");
        assert_eq!(index_path("plugins", 3), "plugins[3]");
        assert!(covers("plugins[0]", "plugins[0].command"));
        assert!(covers("plugins[0]", "plugins[0][1]"));
        assert!(covers("plugins[0]", "plugins[0]"));
        assert!(!covers("plugins[1]", "plugins[10]"));
        assert!(!covers("name", "name_2"));
        assert!(covers(ROOT_PATH, "anything"));
        assert_eq!(error("a.b", "bad").to_string(), "a.b: bad");
    }

    #[test]
    fn key_lists_match_the_schema() {
        let schema = crate::config::json_schema();
        let props = |v: &Value| -> Vec<String> {
            v["properties"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        let owned = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(props(&schema), owned(SERVICE_KEYS));
        for (def, keys) in [
            ("Metadata", METADATA_KEYS),
            ("Rpc", RPC_KEYS),
            ("RollingStrategy", ROLLING_KEYS),
            ("HealthCheck", CHECK_KEYS),
            ("Plugin", PLUGIN_KEYS),
            ("PluginConfig", PLUGIN_CONFIG_KEYS),
            ("ModelInfo", MODEL_INFO_KEYS),
            ("Quantization", QUANTIZATION_KEYS),
            ("Accuracy", ACCURACY_KEYS),
        ] {
            assert_eq!(props(&schema["$defs"][def]), owned(keys), "{def}");
        }
    }
}
