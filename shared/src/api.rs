//! Types that cross the wire: REST bodies, log events, the optimization report,
//! and the KServe v2 inference request/response shapes used by `/api/predict`.
//!
//! Pure data (serde only) so the server, the CLI and the console agree byte for byte.

use serde::{Deserialize, Serialize};

use crate::config::ServiceConfig;
use crate::validate::ValidationError;

/// Lifecycle of a service, as shown by `whet list` and the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ServiceStatus {
    /// A deploy job is queued or running for a service that never ran.
    Creating,
    /// A redeploy/scale job is running; the previous instances keep serving.
    Updating,
    Running,
    Stopped,
    Failed,
}

impl ServiceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Creating => "Creating",
            ServiceStatus::Updating => "Updating",
            ServiceStatus::Running => "Running",
            ServiceStatus::Stopped => "Stopped",
            ServiceStatus::Failed => "Failed",
        }
    }

    pub fn parse(s: &str) -> Option<ServiceStatus> {
        Some(match s {
            "Creating" => ServiceStatus::Creating,
            "Updating" => ServiceStatus::Updating,
            "Running" => ServiceStatus::Running,
            "Stopped" => ServiceStatus::Stopped,
            "Failed" => ServiceStatus::Failed,
            _ => return None,
        })
    }

    /// True while a deploy job may still change the service.
    pub fn is_transient(self) -> bool {
        matches!(self, ServiceStatus::Creating | ServiceStatus::Updating)
    }
}

/// One input or output of a model as the engine sees it. `shape` uses -1 for
/// dynamic dimensions, as KServe v2 metadata does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TensorSpec {
    pub name: String,
    /// KServe v2 datatype name: FP32, INT64, …
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// What `inspect` found in a model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModelSignature {
    pub format: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Summary row of `GET /api/v2/services`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceSummary {
    pub name: String,
    pub status: ServiceStatus,
    pub processor: String,
    pub instances: u32,
    pub running_instances: u32,
    pub optimization_level: Option<String>,
    pub speedup: Option<f64>,
    pub created_at: String,
    pub updated_at: String,
}

/// `GET /api/v2/services/{name}` and the answer to create/modify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceDetail {
    #[serde(flatten)]
    pub summary: ServiceSummary,
    /// Path of the prediction endpoint, e.g. `/api/predict/my_model`.
    pub endpoint: String,
    /// The service's own prediction token (management callers only).
    pub token: String,
    pub stage: Option<String>,
    pub message: Option<String>,
    pub config: ServiceConfig,
    pub signature: Option<ModelSignature>,
    pub artifact: Option<String>,
    pub report: Option<OptimizationReport>,
}

/// One line of a deploy log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogLine {
    pub id: i64,
    /// RFC 3339 UTC timestamp.
    pub ts: String,
    pub line: String,
}

/// `GET /api/v2/services/{name}/logs?after=ID&limit=N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// Pass as `after` to get the next page; None when this page was the end.
    pub next: Option<i64>,
}

/// Messages on `GET /api/v2/services/{name}/logs/stream` (one JSON object per
/// WebSocket text frame).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LogEvent {
    Line(LogLine),
    /// The deploy ended; the stream closes after this frame.
    End {
        status: ServiceStatus,
        message: Option<String>,
    },
}

/// Error body of every management call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApiError {
    pub error: String,
    /// Path-tagged config problems (422 only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ValidationError>,
}

/// `POST /api/v2/services/{name}/scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScaleRequest {
    pub instances: u32,
}

/// Answer of `POST /api/v2/uploads`: the `model_path` to put in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UploadResponse {
    pub model_path: String,
    pub sha256: String,
    pub bytes: u64,
}

// ---------------------------------------------------------------------------
// KServe v2 / Open Inference Protocol JSON shapes.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InferTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    /// Row-major flat (or nested) list of values.
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InferRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub inputs: Vec<InferTensor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RequestedOutput {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InferResponse {
    pub model_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<InferTensor>,
}

// ---------------------------------------------------------------------------
// The optimization report (stored with the artifact, shown by `whet desc`).

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OptimizationReport {
    pub optimizer_version: String,
    pub context: ReportContext,
    pub diagnosis: Diagnosis,
    pub candidates: Vec<CandidateReport>,
    /// Name of the candidate that was picked.
    pub selected: String,
    /// p50 latency of the baseline on the first shape group, milliseconds.
    pub baseline_ms: f64,
    pub optimized_ms: f64,
    pub speedup: f64,
    pub total_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReportContext {
    pub engine: String,
    pub target: String,
    pub cpu: String,
    pub cores: usize,
    pub threads: usize,
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Diagnosis {
    /// "test_data: <file> (N samples)" or "synthesized from input_shapes" …
    pub test_data_source: String,
    pub samples: usize,
    /// The shape groups timed, one entry per group, e.g. `["1*128,1*128,1*128"]`.
    pub shape_groups: Vec<String>,
    pub shape_variation: bool,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum CandidateStatus {
    Selected,
    Passed,
    /// Failed the accuracy gate or could not run; see `message`.
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CandidateReport {
    pub name: String,
    pub description: String,
    pub status: CandidateStatus,
    pub message: Option<String>,
    /// Worst over outputs and samples.
    pub max_rel_error: Option<f64>,
    pub min_cosine: Option<f64>,
    pub latency: Vec<ShapeLatency>,
    /// Baseline p50 / this p50 on the first shape group.
    pub speedup: Option<f64>,
    pub size_bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShapeLatency {
    pub shapes: String,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub runs: usize,
}
