//! The EAS service config (`service.json`) as typed data, its small string grammars (shapes,
//! ranges) and its JSON Schema.
//!
//! Field names and value forms follow the source document exactly, including its odd ones
//! (`weight_adjustment` is the *string* `"true"`), so that any file written for PAI-EAS loads and
//! serializes back unchanged. Typed deserialization alone gives poor errors; `validate` walks the
//! JSON itself and reports every problem with its path.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::processor::{parse_plugin_command, Device, Processor, PLUGIN_IMAGES, PROCESSORS};

/// One model service: what to serve, on what, and how to optimize it first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Whetstone service config (PAI-EAS service.json)")]
pub struct ServiceConfig {
    /// Service name: 3-63 characters, lowercase letters, digits and `_`, starting with a letter.
    /// The service answers at `/api/predict/<name>`.
    pub name: String,
    /// Where the model is: a folder or an archive (`oss://`, `s3://`, `file://`, `http(s)://`).
    pub model_path: String,
    /// The endpoint an `oss://` model_path is read from, like `oss-cn-hangzhou.aliyuncs.com`
    /// (or the http(s) URL of an S3-compatible endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oss_endpoint: Option<String>,
    /// The runtime that serves the model.
    #[schemars(schema_with = "processor_schema")]
    pub processor: String,
    /// Instances and the resources of each.
    #[serde(default)]
    pub metadata: Metadata,
    /// The resource group the service runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// A custom service token (at least 16 characters, no whitespace); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Pre-processing plugins; only the Blade optimizer plugin exists, at most once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
    /// Horizontal autoscaling: the server sets the instance count between `min` and `max` from
    /// the load (`metadata.instance` is the count to start with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<Autoscaler>,
    /// Scheduled scaling: at each job's times the instance count is set to its `target_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cronscaler: Option<CronScaler>,
    /// Requests replayed on each new instance before it is ready (a file inside `model_path`
    /// in a test data format: every sample is one request, at most 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_up_data_path: Option<String>,
}

/// EAS's `cronscaler`: instance counts set on a schedule (with an `autoscaler`, kept within its
/// `min`..`max`, and the autoscaler decides again from there).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CronScaler {
    /// The scheduled jobs; at least one.
    pub scale_jobs: Vec<ScaleJob>,
}

/// One scheduled scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleJob {
    /// A name, unique among the jobs (it names the job in the service's log).
    pub name: String,
    /// A cron schedule in UTC: five fields (minute hour day-of-month month day-of-week), or six with
    /// seconds first; `@hourly`-style aliases too.
    pub schedule: String,
    /// The instance count to set (1-64).
    pub target_size: u32,
}

/// EAS's `autoscaler`: desired instances = ceil(current × metric / threshold), the largest over
/// the strategies, unchanged while every metric is within 10 % of its threshold, kept between
/// `min` and `max` (a `metadata.instance` outside them is brought inside at the first decision).
/// Scaling out is at once; scaling in waits for a cool-down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Autoscaler {
    /// Fewest instances (at least 1).
    pub min: u32,
    /// Most instances (at most 64, not below `min`).
    pub max: u32,
    /// What to scale on; at least one.
    pub scale_strategies: Vec<ScaleStrategy>,
}

/// One autoscaling metric and its target per instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleStrategy {
    /// `qps` (requests per second per instance) or `cpu` (per cent of one instance's cores in use).
    pub metric_name: String,
    /// The metric's target per instance (above zero). Kept as written, so that a config
    /// serializes back unchanged.
    pub threshold: serde_json::Number,
}

impl Autoscaler {
    /// `n` kept within `min`..=`max` (a `max` below `min` counts as `min`).
    pub fn clamp(&self, n: u32) -> u32 {
        n.clamp(self.min, self.max.max(self.min))
    }
}

impl ScaleStrategy {
    /// The threshold as a float (0 when it cannot be one).
    pub fn threshold(&self) -> f64 {
        self.threshold.as_f64().unwrap_or(0.0)
    }
}

/// Instances and the resources of each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Number of instances (1-64).
    #[serde(default = "one")]
    pub instance: u32,
    /// CPU cores per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Memory per instance, in MB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// GPUs per instance (GPU processors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// GPU memory per instance, in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory: Option<u64>,
    /// CUDA version; must match the processor's, e.g. "10.0" for `tensorflow_gpu_1.15`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda: Option<String>,
    /// Serving options of the RPC layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<Rpc>,
    /// How an update replaces the instances: how many new ones may start at once beyond the
    /// count, and how many may be missing meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_strategy: Option<RollingStrategy>,
    /// How long an instance may take to load its model (and warm up) before it is failed:
    /// `initial_delay_seconds + period_seconds × failure_threshold` (default 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_check: Option<HealthCheck>,
    /// Probes of each running instance; one that fails `failure_threshold` in a row gets no
    /// requests until it passes `success_threshold` in a row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_check: Option<HealthCheck>,
    /// Probes of each running instance; one that fails `failure_threshold` in a row is killed
    /// and started again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_check: Option<HealthCheck>,
    /// Whether the service also answers KServe v2 over gRPC, on the server's `--grpc-addr`
    /// (default false, as on EAS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_grpc: Option<bool>,
}

/// EAS's `rolling_strategy`: each a count of instances, or a per cent of `metadata.instance`
/// as a string (`"25%"`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollingStrategy {
    /// New instances started at once beyond the count (default 2 %, at least 1; rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<Share>,
    /// Instances that may be missing during the update (default 0; rounded down). With both
    /// zero nothing could move: `max_surge` then counts as 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<Share>,
}

/// A number of instances, or a per cent of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Share {
    Count(u32),
    Percent(String),
}

impl Share {
    /// The per cent of a `"N%"` string.
    pub fn percent(&self) -> Option<u32> {
        match self {
            Share::Count(_) => None,
            Share::Percent(s) => s.trim().strip_suffix('%')?.trim().parse().ok(),
        }
    }

    /// The count this share is of `n` instances, a per cent rounded up or down.
    pub fn of(&self, n: u32, round_up: bool) -> u32 {
        match (self, self.percent()) {
            (Share::Count(c), _) => *c,
            (_, Some(p)) => {
                let x = u64::from(n) * u64::from(p);
                let q = if round_up { x.div_ceil(100) } else { x / 100 };
                q.min(u64::from(u32::MAX)) as u32
            }
            _ => 0,
        }
    }
}

impl RollingStrategy {
    /// (new instances started at once beyond `n`, instances that may be missing), as EAS
    /// reads them: surge defaults to 2 % rounded up (so 1 below 50 instances), unavailable to
    /// 0; with both 0, surge is 1.
    pub fn steps(strategy: Option<&RollingStrategy>, n: u32) -> (u32, u32) {
        let surge = strategy
            .and_then(|s| s.max_surge.as_ref())
            .map_or_else(|| (n * 2).div_ceil(100).max(1), |s| s.of(n, true));
        let unavailable = strategy
            .and_then(|s| s.max_unavailable.as_ref())
            .map_or(0, |s| s.of(n, false))
            .min(n.saturating_sub(1));
        if surge == 0 && unavailable == 0 {
            (1, 0)
        } else {
            (surge, unavailable)
        }
    }
}

/// A probe of an instance's runner process (it answers on a channel of its own, apart from the
/// requests). EAS's and Kubernetes' fields, with their defaults; the probe itself is built in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// Seconds after the instance starts before the first probe (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<u64>,
    /// Seconds between probes (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<u64>,
    /// Seconds a probe waits for the answer (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Failed probes in a row that count as failure (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// Passed probes in a row that count as success again (default 1; readiness only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u32>,
}

impl HealthCheck {
    pub fn initial_delay(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.initial_delay_seconds.unwrap_or(0))
    }
    pub fn period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.period_seconds.unwrap_or(10).max(1))
    }
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout_seconds.unwrap_or(1).max(1))
    }
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold.unwrap_or(3).max(1)
    }
    pub fn success_threshold(&self) -> u32 {
        self.success_threshold.unwrap_or(1).max(1)
    }
    /// The whole time a startup check allows.
    pub fn budget(&self) -> std::time::Duration {
        self.initial_delay() + self.period() * self.failure_threshold()
    }
}

fn one() -> u32 {
    1
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            instance: 1,
            cpu: None,
            memory: None,
            gpu: None,
            gpu_memory: None,
            cuda: None,
            rpc: None,
            rolling_strategy: None,
            startup_check: None,
            readiness_check: None,
            liveness_check: None,
            enable_grpc: None,
        }
    }
}

/// Serving options of the RPC layer (dynamic batching, queues, threads).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rpc {
    /// Whether requests are batched dynamically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<bool>,
    /// Largest batch the server forms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<u32>,
    /// How long to wait for a batch to fill, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch_timeout: Option<u64>,
    /// Requests queued per instance before new ones are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<u32>,
    /// Keep-alive of a request, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<u64>,
    /// Network I/O threads per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_threads: Option<u32>,
    /// Inference worker threads per instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<u32>,
}

/// One plugin entry: the Blade optimizer, run once at deploy time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    /// `blade --mode eas_plugin --optimize_for cpu` or `... gpu`.
    pub command: String,
    /// The optimizer build; its device and CUDA version must match the command and processor.
    #[schemars(schema_with = "image_schema")]
    pub image: String,
    /// The resource group the optimization runs on (required to optimize on GPU), e.g. `T4_8CORE`;
    /// its GPU type must equal the service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// GPUs for the optimization (GPU plugins only); usually 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// Advanced optimization items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PluginConfig>,
}

/// Advanced plugin items; only `model_info` exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Model file name (relative to `model_path`) → its optimization items. Exactly one model.
    pub model_info: BTreeMap<String, ModelInfo>,
}

/// How aggressively to optimize.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OptimizationLevel {
    /// No accuracy loss: FP32 optimizations, or FP16 within a minimal precision threshold.
    #[default]
    O1,
    /// INT8 quantization where the hardware supports it.
    O2,
}

/// Optimization items of the one configured model (the optimizer's `optimize()` parameters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    /// `o1` (default, lossless) or `o2` (INT8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimization_level: Option<OptimizationLevel>,
    /// Input node names; default: the nodes with no upstream node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
    /// Output node names; default: the nodes with no downstream node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<String>>,
    /// Test inputs file inside `model_path` (`.npy` of feed dicts, `.pth` of tensor tuples).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_data: Option<String>,
    /// Calibration inputs file inside `model_path`, for offline INT8 (o2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration_dataset: Option<String>,
    /// Groups of input shapes, one shape string per input, e.g. `[["1*512", "3*256"]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_shapes: Option<Vec<Vec<String>>>,
    /// Groups of input value ranges, one per input, e.g. `[["[0.1,0.4]", "[a,f]"]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_ranges: Option<Vec<Vec<String>>>,
    /// Quantization options (o2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
    /// The SavedModel signature to serve (TensorFlow processors, a
    /// SavedModel folder): default `serving_default`. Its input and output
    /// keys become the service's tensor names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_name: Option<String>,
    /// Whetstone extension: the accuracy gate each optimized candidate must
    /// pass, overriding the defaults (o1: relative error ≤ 1e-3 and cosine ≥
    /// 0.9999; o2: cosine ≥ 0.99 and top-1 agreement ≥ 0.99).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<Accuracy>,
}

/// Accuracy gate overrides (see [`ModelInfo::accuracy`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Accuracy {
    /// Largest allowed max|candidate - original| / max|original|, per output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rel_error: Option<f64>,
    /// Smallest allowed cosine similarity per output and sample (-1 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cosine: Option<f64>,
    /// Smallest allowed share of rows whose argmax agrees, for classifier-shaped outputs (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_top1: Option<f64>,
    /// Smallest allowed share of rows (of `[N, C]` outputs) whose original
    /// top-1 class is among the candidate's `top_k` best (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_top_k: Option<f64>,
    /// The k of `min_top_k` (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Detection and segmentation maps: each 2-D plane (the last two axes)
    /// of an output is thresholded at `region_threshold`, its connected
    /// regions (8-connected) boxed, and the original's boxes matched one to
    /// one with the candidate's at box IoU ≥ `region_iou`, as detection
    /// post-processing reads a map (a pixel flipped at a border moves a box
    /// a little; a region lost or split is a miss). The smallest allowed
    /// share of regions matched: matched / the larger of the two counts,
    /// over all planes and samples (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_region_agreement: Option<f64>,
    /// The threshold of `min_region_agreement` (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_threshold: Option<f64>,
    /// The box IoU of `min_region_agreement` (default 0.5, above 0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_iou: Option<f64>,
    /// Sequence (CTC) outputs `[…, T, C]`: the argmax over the last axis at
    /// each step, repeats collapsed and `ctc_blank` dropped — what a greedy
    /// CTC decoder reads. The smallest allowed share of sequences read
    /// exactly as the original's (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_sequence_agreement: Option<f64>,
    /// The blank class of `min_sequence_agreement` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctc_blank: Option<u32>,
    /// The outputs the top-k, region and sequence metrics look at (default:
    /// every output of the shape each expects unasked: `[N, C]` for top-k,
    /// `[N, C, H, W]` for regions, `[N, T, C]` for sequences; a named output
    /// may have any rank from 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<String>>,
}

/// Quantization options; only `weight_adjustment` exists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quantization {
    /// The *string* `"true"` or `"false"`: adjust weights to reduce precision loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["true", "false", null]))]
    pub weight_adjustment: Option<String>,
}

impl ServiceConfig {
    /// The processor this service names, if it is a known one.
    pub fn processor_info(&self) -> Option<Processor> {
        Processor::parse(&self.processor)
    }

    /// The Blade plugin (the first plugin; validation allows at most one).
    pub fn blade_plugin(&self) -> Option<&Plugin> {
        self.plugins.first()
    }

    /// The single configured model of the Blade plugin: its file name and items.
    pub fn model_info(&self) -> Option<(&str, &ModelInfo)> {
        let config = self.blade_plugin()?.config.as_ref()?;
        config
            .model_info
            .iter()
            .next()
            .map(|(k, v)| (k.as_str(), v))
    }
}

impl Plugin {
    /// The device `--optimize_for` names, when the command parses.
    pub fn optimize_for(&self) -> Option<Device> {
        parse_plugin_command(&self.command).ok()
    }
}

impl ModelInfo {
    /// The optimization level, `o1` when unset.
    pub fn level(&self) -> OptimizationLevel {
        self.optimization_level.unwrap_or_default()
    }

    /// `input_shapes` parsed: group → input → dims. Empty when unset.
    pub fn shapes(&self) -> Result<Vec<Vec<Vec<usize>>>, String> {
        parse_groups(self.input_shapes.as_deref(), parse_shape)
    }

    /// `input_ranges` parsed: group → input → range. Empty when unset.
    pub fn ranges(&self) -> Result<Vec<Vec<ValueRange>>, String> {
        parse_groups(self.input_ranges.as_deref(), parse_range)
    }
}

fn parse_groups<T>(
    groups: Option<&[Vec<String>]>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Vec<Vec<T>>, String> {
    groups
        .unwrap_or_default()
        .iter()
        .map(|group| group.iter().map(|s| parse(s)).collect())
        .collect()
}

impl Quantization {
    /// `weight_adjustment == "true"`; anything else (validation rejects it) counts as false.
    pub fn weight_adjustment(&self) -> bool {
        self.weight_adjustment.as_deref() == Some("true")
    }
}

/// Parses a shape string such as `"1*512"` into its dimensions.
pub fn parse_shape(s: &str) -> Result<Vec<usize>, String> {
    let expected =
        || format!("expected a shape like \"1*512\" (positive integers joined by '*'), got {s:?}");
    s.trim()
        .split('*')
        .map(|dim| {
            let dim = dim.trim();
            // `usize::from_str` would accept a leading '+'; a shape is digits only.
            if dim.is_empty() || !dim.bytes().all(|b| b.is_ascii_digit()) {
                return Err(expected());
            }
            match dim.parse::<usize>() {
                Ok(0) => Err(format!("{}: a dimension must be at least 1", expected())),
                Ok(n) => Ok(n),
                Err(_) => Err(format!("{}: dimension {dim} is too large", expected())),
            }
        })
        .collect()
}

/// The value range of one input: numbers, or characters (for string inputs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ValueRange {
    Numeric { lo: f64, hi: f64 },
    Chars { lo: char, hi: char },
}

/// Parses a range string such as `"[0.3,0.9]"` or `"[a,f]"`.
pub fn parse_range(s: &str) -> Result<ValueRange, String> {
    let expected = || {
        format!(
            "expected a range like \"[0.3,0.9]\" or \"[a,f]\" (two numbers or two single \
             characters in brackets, low first), got {s:?}"
        )
    };
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(expected)?;
    let (lo, hi) = inner.split_once(',').ok_or_else(expected)?;
    let (lo, hi) = (lo.trim(), hi.trim());
    let range = match (number(lo), number(hi), single_char(lo), single_char(hi)) {
        (Some(lo), Some(hi), _, _) => ValueRange::Numeric { lo, hi },
        // "[0,z]" mixes a number with a letter: almost surely a typo, not a character range.
        (None, None, Some(lo), Some(hi)) => ValueRange::Chars { lo, hi },
        _ => return Err(expected()),
    };
    let ordered = match range {
        ValueRange::Numeric { lo, hi } => lo <= hi,
        ValueRange::Chars { lo, hi } => lo <= hi,
    };
    if ordered {
        Ok(range)
    } else {
        Err(format!("{}: the low end is above the high end", expected()))
    }
}

fn number(s: &str) -> Option<f64> {
    // Rust also parses "inf" and "NaN"; a range needs finite ends.
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

fn single_char(s: &str) -> Option<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c != ',' && c != '[' && c != ']' => Some(c),
        _ => None,
    }
}

/// The JSON Schema of [`ServiceConfig`], for editors (`whet schema`).
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(ServiceConfig).to_value()
}

fn processor_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = PROCESSORS.iter().map(|p| p.name).collect();
    schemars::json_schema!({ "type": "string", "enum": names })
}

fn image_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let images: Vec<&str> = PLUGIN_IMAGES.iter().map(|i| i.image).collect();
    schemars::json_schema!({ "type": "string", "enum": images })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse() {
        assert_eq!(parse_shape("1*512"), Ok(vec![1, 512]));
        assert_eq!(parse_shape("8"), Ok(vec![8]));
        assert_eq!(parse_shape("  10*3*224*224 "), Ok(vec![10, 3, 224, 224]));
        assert_eq!(parse_shape("1 * 512"), Ok(vec![1, 512]));
    }

    #[test]
    fn shapes_reject() {
        for bad in [
            "",
            "  ",
            "1x512",
            "0*512",
            "1*0",
            "-1*512",
            "1*",
            "*1",
            "1**2",
            "+1",
            "1.5",
            "a",
            "1*99999999999999999999999",
        ] {
            let err = parse_shape(bad).expect_err(bad);
            assert!(
                err.starts_with("expected a shape like \"1*512\""),
                "{bad:?}: {err}"
            );
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
        assert_eq!(
            parse_shape("1x512"),
            Err(
                "expected a shape like \"1*512\" (positive integers joined by '*'), got \"1x512\""
                    .into()
            )
        );
        assert!(parse_shape("0").unwrap_or_default().is_empty());
        assert!(parse_shape("0")
            .err()
            .unwrap_or_default()
            .contains("at least 1"));
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(
            parse_range("[1,2]"),
            Ok(ValueRange::Numeric { lo: 1.0, hi: 2.0 })
        );
        assert_eq!(
            parse_range("[0.3,0.9]"),
            Ok(ValueRange::Numeric { lo: 0.3, hi: 0.9 })
        );
        assert_eq!(
            parse_range("[-1, 1]"),
            Ok(ValueRange::Numeric { lo: -1.0, hi: 1.0 })
        );
        assert_eq!(
            parse_range(" [ 2 , 2 ] "),
            Ok(ValueRange::Numeric { lo: 2.0, hi: 2.0 })
        );
        assert_eq!(
            parse_range("[1e-3,1e3]"),
            Ok(ValueRange::Numeric {
                lo: 0.001,
                hi: 1000.0
            })
        );
        assert_eq!(
            parse_range("[a,f]"),
            Ok(ValueRange::Chars { lo: 'a', hi: 'f' })
        );
        assert_eq!(
            parse_range("[h, l]"),
            Ok(ValueRange::Chars { lo: 'h', hi: 'l' })
        );
        assert_eq!(
            parse_range("[0,9]"),
            Ok(ValueRange::Numeric { lo: 0.0, hi: 9.0 })
        );
    }

    #[test]
    fn ranges_reject() {
        for bad in [
            "", "1,2", "[1,2", "1,2]", "[1]", "[1,2,3]", "[]", "[,]", "[2,1]", "[f,a]", "[ab,c]",
            "[0,z]", "[a,9]", "[inf,1]", "[0,NaN]", "(1,2)", "[1;2]",
        ] {
            let err = parse_range(bad).expect_err(bad);
            assert!(
                err.starts_with("expected a range like \"[0.3,0.9]\""),
                "{bad:?}: {err}"
            );
        }
        assert!(parse_range("[2,1]")
            .err()
            .unwrap_or_default()
            .contains("low end is above"));
    }

    #[test]
    fn helpers() {
        let cfg = ServiceConfig {
            name: "svc".into(),
            model_path: "file:///m/".into(),
            oss_endpoint: None,
            processor: "tensorflow_gpu_1.15".into(),
            metadata: Metadata::default(),
            resource: None,
            token: None,
            autoscaler: None,
            cronscaler: None,
            warm_up_data_path: None,
            plugins: vec![Plugin {
                command: "blade --mode eas_plugin --optimize_for gpu".into(),
                image: "x".into(),
                resource: None,
                gpu: None,
                config: Some(PluginConfig {
                    model_info: BTreeMap::from([(
                        "frozen.pb".to_string(),
                        ModelInfo {
                            input_shapes: Some(vec![vec!["1*2".into(), "3".into()]]),
                            input_ranges: Some(vec![vec!["[0,1]".into(), "[a,b]".into()]]),
                            quantization: Some(Quantization {
                                weight_adjustment: Some("true".into()),
                            }),
                            ..ModelInfo::default()
                        },
                    )]),
                }),
            }],
        };
        assert_eq!(cfg.processor_info().map(|p| p.device), Some(Device::Gpu));
        assert_eq!(
            cfg.blade_plugin().and_then(Plugin::optimize_for),
            Some(Device::Gpu)
        );
        let (file, info) = cfg.model_info().expect("one model");
        assert_eq!(file, "frozen.pb");
        assert_eq!(info.level(), OptimizationLevel::O1);
        assert_eq!(info.shapes(), Ok(vec![vec![vec![1, 2], vec![3]]]));
        assert_eq!(
            info.ranges(),
            Ok(vec![vec![
                ValueRange::Numeric { lo: 0.0, hi: 1.0 },
                ValueRange::Chars { lo: 'a', hi: 'b' }
            ]])
        );
        assert!(info
            .quantization
            .as_ref()
            .is_some_and(Quantization::weight_adjustment));
        assert!(!Quantization {
            weight_adjustment: Some("false".into())
        }
        .weight_adjustment());
        assert!(!Quantization::default().weight_adjustment());
        assert_eq!(ModelInfo::default().shapes(), Ok(vec![]));
        let bad = ModelInfo {
            input_shapes: Some(vec![vec!["1x2".into()]]),
            ..ModelInfo::default()
        };
        assert!(bad.shapes().is_err());
        let o2 = ModelInfo {
            optimization_level: Some(OptimizationLevel::O2),
            ..ModelInfo::default()
        };
        assert_eq!(o2.level(), OptimizationLevel::O2);
    }

    #[test]
    fn serde_keeps_the_users_forms() {
        let text = r#"{"name":"svc","model_path":"m","processor":"onnx_cpu","metadata":{"instance":2},
            "plugins":[{"command":"c","image":"i","config":{"model_info":{"m.onnx":{
            "optimization_level":"o2","quantization":{"weight_adjustment":"true"}}}}}]}"#;
        let cfg: ServiceConfig = serde_json::from_str(text).expect("parses");
        let back = serde_json::to_value(&cfg).expect("serializes");
        let orig: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(back, orig);
        // Defaults: metadata and instance may be omitted; empty optional parts are not emitted.
        let cfg: ServiceConfig =
            serde_json::from_str(r#"{"name":"svc","model_path":"m","processor":"onnx_cpu"}"#)
                .expect("parses");
        assert_eq!(cfg.metadata.instance, 1);
        let back = serde_json::to_value(&cfg).expect("serializes");
        assert_eq!(
            back,
            serde_json::json!({
                "name": "svc", "model_path": "m", "processor": "onnx_cpu",
                "metadata": { "instance": 1 }
            })
        );
        assert!(serde_json::from_str::<ServiceConfig>(
            r#"{"name":"s","model_path":"m","processor":"p","bogus":1}"#
        )
        .is_err());
    }

    #[test]
    fn schema_is_strict_and_complete() {
        let schema = json_schema();
        assert!(schema.is_object());
        assert_eq!(
            schema["additionalProperties"],
            serde_json::Value::Bool(false)
        );
        assert!(schema["properties"]["plugins"].is_object());
        let text = schema.to_string();
        for needle in [
            "plugins",
            "model_info",
            "weight_adjustment",
            "tensorflow_gpu_1.15",
            "cu110_latest",
            "\"o2\"",
        ] {
            assert!(text.contains(needle), "schema lacks {needle}");
        }
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        assert_eq!(required, vec!["name", "model_path", "processor"]);
        // Every object schema in $defs is closed too.
        let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
        for (name, def) in &defs {
            if def["type"] == "object" && name != "OptimizationLevel" {
                assert_eq!(
                    def["additionalProperties"],
                    serde_json::Value::Bool(false),
                    "{name}"
                );
            }
        }
        assert!(defs.contains_key("ModelInfo"));
    }
}
