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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ModelSignature {
    pub format: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl ModelSignature {
    /// A TorchScript module deployed with no test data and no
    /// `input_shapes` (a plain PyTorch deploy): its inputs are not
    /// declared, so a request's inputs are passed to it by position, in the
    /// order given, whatever their datatypes and shapes — as EAS's PyTorch
    /// processor does — and its outputs are what it returns.
    pub fn open_inputs(&self) -> bool {
        self.format == "torchscript" && self.inputs.is_empty()
    }

    /// The signature of such a module.
    pub fn open_torchscript() -> ModelSignature {
        ModelSignature {
            format: "torchscript".into(),
            inputs: vec![],
            outputs: vec![],
        }
    }
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
    /// The team the service belongs to.
    #[serde(default)]
    pub team: String,
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
    /// The runner process of each instance this node runs (empty when it
    /// runs none).
    #[serde(default)]
    pub runners: Vec<RunnerState>,
    /// Where each instance is placed, across all nodes.
    #[serde(default)]
    pub placements: Vec<InstancePlacement>,
    /// The version served (EAS's `current_version`); below the latest after
    /// a rollback.
    #[serde(default)]
    pub current_version: u32,
    /// The highest version (EAS's `latest_version`): every create and
    /// modify makes one.
    #[serde(default)]
    pub latest_version: u32,
}

fn yes() -> bool {
    true
}

/// One version of a service (`GET /api/v2/services/{name}/versions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceVersion {
    pub version: u32,
    /// Whether this is the version served.
    pub current: bool,
    /// Who made it (the account that created or modified the service).
    pub author: String,
    /// RFC 3339.
    pub created_at: String,
    /// The artifact it deployed (absent until its deploy finished).
    pub artifact: Option<String>,
    /// The config as accepted.
    pub config: ServiceConfig,
}

/// `POST /api/v2/gc`: what a sweep collected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GcReport {
    /// Paths removed, relative to the data folder.
    pub removed: Vec<String>,
    pub bytes_freed: u64,
    pub log_lines_removed: u64,
}

/// `POST /api/v2/services/{name}/token`: the service's new prediction
/// token. The old one is refused from this answer on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RotatedToken {
    pub token: String,
}

/// `POST /api/v2/services/{name}/rollback`: serve an earlier version again
/// (its config and artifact; no optimization when the artifact is kept).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RollbackRequest {
    /// The version to serve; absent: the one before the current.
    #[serde(default)]
    pub version: Option<u32>,
}

/// `PUT /api/v2/services/{name}/traffic`: the share of requests, in per
/// cent (summing to 100), of each version named; the others get none. A
/// version other than the current one is served by instances of its own
/// (its config's `metadata.instance`), started before it gets a request.
/// `{"weights": {"<current>": 100}}` ends the split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrafficRequest {
    pub weights: std::collections::BTreeMap<u32, u32>,
}

/// One version's share of a traffic split, and how it has done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrafficVersion {
    pub version: u32,
    /// Per cent of new requests it gets.
    pub weight: u32,
    /// Whether it is the version the service's own instances serve.
    pub current: bool,
    /// Its instances, and how many of them are running.
    pub instances: u32,
    pub running: u32,
    /// Requests it answered in the last hour on this node, of them errors,
    /// and the latency of the good ones.
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Why one of its instances could not start, if one could not.
    #[serde(default)]
    pub error: Option<String>,
}

/// `GET /api/v2/services/{name}/traffic`: how requests are split between
/// versions (one version at 100 when there is no split).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TrafficSplit {
    pub service: String,
    pub current_version: u32,
    pub versions: Vec<TrafficVersion>,
}

/// `POST /api/v2/services/{name}/promote`: a version of the split gets all
/// the traffic and becomes the current version; the split ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PromoteRequest {
    /// The version to promote; absent: the split's version other than the
    /// current one with the largest share.
    #[serde(default)]
    pub version: Option<u32>,
}

/// `POST /api/v2/services/check`: what a deploy of the config would meet
/// on this server, told without touching the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ConfigCheck {
    pub problems: Vec<crate::ValidationError>,
}

/// One minute of a service's predictions on the node that answered
/// (`GET /api/v2/services/{name}/metrics`: the last hour).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MinuteStats {
    /// The minute's start, in seconds since the Unix epoch.
    pub at: u64,
    pub requests: u64,
    pub errors: u64,
    /// Latency of the requests answered well (none in a minute without).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The longest queue a request of the minute found.
    pub max_queue: u64,
}

/// One prediction kept in a service's request log
/// (`GET /api/v2/services/{name}/requests`): sampled, and every failed one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RequestSample {
    /// When it was answered (RFC 3339, UTC).
    pub at: String,
    /// `eas` or `kserve`.
    pub protocol: String,
    /// The version of the service that served it (none when it never got
    /// to one).
    pub version: Option<u32>,
    pub status: u16,
    pub latency_ms: f64,
    /// Its trace's id (32 hex digits) when tracing is on.
    pub trace_id: Option<String>,
    /// The request body and the answer (or the error), cut to 4 KiB; a
    /// body that is not text by its size.
    pub request: String,
    pub response: String,
}

/// One instance of a service, placed on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstancePlacement {
    pub instance: u32,
    /// The node that runs it (its id: host, process id and a random tag).
    pub node: String,
    /// `pending` (placed, starting), `running` or `failed` (see `error`).
    pub state: String,
    pub error: Option<String>,
}

/// One instance's runner process, as the server supervises it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunnerState {
    pub instance: u32,
    /// The process id while one runs.
    pub pid: Option<u32>,
    /// Loaded and answering.
    pub up: bool,
    /// How many times it was started again after it ended.
    pub restarts: u32,
    /// Why it last ended ("killed by signal 9 …", "exited with code 1: …").
    pub last_exit: Option<String>,
    /// How it is confined (account, Landlock).
    pub sandbox: String,
    /// Up and passing its readiness check (when the config has one): it
    /// gets requests.
    #[serde(default = "yes")]
    pub ready: bool,
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
// Users, teams, roles, share links.

/// A user's role in one team. Every service belongs to one team, and every
/// management call checks the caller's role there.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees the team's services, logs and reports.
    Viewer,
    /// Also deploys, modifies, scales, stops, starts, deletes and shares.
    Deployer,
    /// Also manages the team's members.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "deployer" => Role::Deployer,
            "admin" => Role::Admin,
            _ => return None,
        })
    }

    pub fn can_deploy(self) -> bool {
        self >= Role::Deployer
    }

    pub fn can_manage(self) -> bool {
        self == Role::Admin
    }
}

/// The rule for user and team names (they appear in URLs): 1 to 63
/// characters of lowercase letters, digits, '_' and '-', starting with a
/// letter. Returns what was expected when `name` breaks it.
pub fn check_account_name(what: &str, name: &str) -> Result<(), String> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name: expected 1 to 63 characters of lowercase letters, digits, '_' and '-', starting with a letter, got {name:?}"
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TeamRole {
    pub team: String,
    pub role: Role,
}

/// The WebSocket subprotocol of the server's log streams.
pub const WS_PROTOCOL: &str = "whet.v1";
/// The subprotocol that carries an API token where a browser cannot send a
/// header (a WebSocket): this prefix, then the token's bytes in hex.
pub const WS_TOKEN_PREFIX: &str = "whet.token.";

/// `GET /api/v2/me`: who the caller's token belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Me {
    pub user: String,
    /// Site admins act as admin of every team and manage users and teams.
    pub site_admin: bool,
    pub teams: Vec<TeamRole>,
    /// The id of the API token this request was made with (among the user's
    /// tokens), so that a client can tell which one it is using.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<i64>,
}

impl Me {
    /// The caller's role in `team` (site admins are admin everywhere).
    pub fn role_in(&self, team: &str) -> Option<Role> {
        if self.site_admin {
            return Some(Role::Admin);
        }
        self.teams.iter().find(|t| t.team == team).map(|t| t.role)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Member {
    pub user: String,
    pub role: Role,
}

/// `GET /api/v2/teams/{team}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TeamDetail {
    pub name: String,
    pub created_at: String,
    pub members: Vec<Member>,
    /// The caller's role in this team.
    pub your_role: Role,
    /// Whether viewers see the services' secrets: prediction tokens (and a
    /// token in a config) and share links. Deployers and admins always do.
    #[serde(default)]
    pub viewers_see_secrets: bool,
}

/// `PATCH /api/v2/teams/{team}`: a team's settings (team admins).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TeamSettings {
    /// Let viewers see the services' prediction tokens and share links.
    #[serde(default)]
    pub viewers_see_secrets: Option<bool>,
}

/// `POST /api/v2/teams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateTeam {
    pub name: String,
}

/// `PUT /api/v2/teams/{team}/members/{user}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SetMember {
    pub role: Role,
}

/// `GET /api/v2/users` rows and `GET /api/v2/users/{user}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UserInfo {
    pub name: String,
    pub site_admin: bool,
    pub created_at: String,
    pub teams: Vec<TeamRole>,
}

/// `POST /api/v2/users` (site admins only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub site_admin: bool,
}

/// `POST /api/v2/users/{user}/tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CreateToken {
    /// A label, e.g. "laptop" or "ci".
    pub name: String,
}

/// An API token as listed: never the token itself (only its hash is kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// The answer to creating a token: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NewToken {
    pub id: i64,
    pub name: String,
    pub token: String,
}

/// A read-only link to one deployment: `/s/{token}` in the console,
/// `/api/v2/shared/{token}` in the API. Revoked links answer 404. Only a
/// hash of the token is stored: the token and URL are in the answer that
/// creates the link, and never again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShareLink {
    /// Names the link in lists and revocations (the start of its token's
    /// hash).
    pub id: String,
    /// The link's token, in the answer that creates it only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Console path of the link, `/s/{token}`, in the answer that creates
    /// it only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub service: String,
    pub created_at: String,
    pub created_by: String,
}

/// `GET /api/v2/shared/{token}`: what a share link shows (no prediction
/// token, no config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SharedService {
    pub summary: ServiceSummary,
    pub stage: Option<String>,
    pub message: Option<String>,
    pub report: Option<OptimizationReport>,
}

/// `GET /api/v2/teams/{team}/dashboard`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TeamDashboard {
    pub team: String,
    pub services: Vec<ServiceSummary>,
    /// Service count per status name ("Running", "Failed", …).
    pub by_status: std::collections::BTreeMap<String, u32>,
    pub total_instances: u32,
    pub running_instances: u32,
    /// Median of the services' report speedups (None when no report yet).
    pub median_speedup: Option<f64>,
    /// Predictions answered in the last hour, all services of the team.
    pub requests_last_hour: u64,
    /// p50 latency of those predictions, milliseconds (None without traffic).
    pub p50_ms_last_hour: Option<f64>,
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
    /// Name of the candidate speedups are measured against: for ONNX,
    /// `ort-default` (ONNX Runtime's default session, every graph
    /// optimization on: what a user gets without Whetstone); the model as
    /// given otherwise, and in reports written before there was a choice.
    #[serde(default = "original_name")]
    pub baseline: String,
    /// p50 latency of the baseline on the first shape group, milliseconds.
    pub baseline_ms: f64,
    pub optimized_ms: f64,
    pub speedup: f64,
    pub total_seconds: f64,
}

fn original_name() -> String {
    "original".into()
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
    /// Share of classifier rows whose argmax agrees with the original's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top1: Option<f64>,
    /// The optional gate metrics of `model_info.accuracy`, when set: the
    /// share of rows whose original top-1 is in the candidate's top k, of
    /// map regions matched by box IoU, of sequences read alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_agreement: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_agreement: Option<f64>,
    pub latency: Vec<ShapeLatency>,
    /// Baseline p50 / this p50 on the first shape group.
    pub speedup: Option<f64>,
    pub size_bytes: u64,
    pub seconds: f64,
    /// The gate it was judged by: the largest relative error and the
    /// smallest cosine allowed (absent when not checked, and in reports
    /// written before they were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_max_rel_error: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_min_cosine: Option<f64>,
}

/// The numbers a report leads with, all from the candidate rows: the
/// baseline's and the selected candidate's p50 on the first shape group,
/// and their ratio — the numbers the table and the chart show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headline {
    pub baseline_ms: f64,
    pub optimized_ms: f64,
    pub speedup: f64,
}

impl OptimizationReport {
    fn row(&self, name: &str) -> Option<&CandidateReport> {
        self.candidates.iter().find(|c| c.name == name)
    }

    /// The headline numbers, from the rows (a report whose rows lack them
    /// keeps its own fields).
    pub fn headline(&self) -> Headline {
        let first = |c: &CandidateReport| c.latency.first().map(|l| l.p50_ms);
        let baseline = self.row(&self.baseline).and_then(first);
        let selected = self.row(&self.selected).and_then(first);
        match (baseline, selected) {
            (Some(b), Some(s)) if b > 0.0 && s > 0.0 => Headline {
                baseline_ms: b,
                optimized_ms: s,
                speedup: b / s,
            },
            _ => Headline {
                baseline_ms: self.baseline_ms,
                optimized_ms: self.optimized_ms,
                speedup: self.speedup,
            },
        }
    }

    /// What is served, in words: "FP32 (lossless)", "FP16 …", "INT8
    /// weights and activations (static, calibrated), with 3 of 52 layers
    /// kept in float".
    pub fn served_precision(&self) -> String {
        let Some(selected) = self.row(&self.selected) else {
            return "unknown".into();
        };
        // A thread-count variant serves the candidate it was made from.
        let base = selected.name.split('@').next().unwrap_or(&selected.name);
        let row = self.row(base).unwrap_or(selected);
        let name = row.name.to_ascii_lowercase();
        let kept = kept_in_float(&row.description);
        if name.contains("int8") {
            let kind = if name.contains("dynamic") {
                "INT8 weights, activations quantized per call (dynamic)"
            } else {
                "INT8 weights and activations (static, calibrated)"
            };
            match kept {
                Some((k, n)) => format!("{kind}, with {k} of {n} layers kept in float"),
                None => kind.to_string(),
            }
        } else if name.contains("fp16") {
            "FP16 (numerically sensitive operations kept in FP32)".into()
        } else {
            "FP32 (lossless)".into()
        }
    }

    /// The candidate table as CSV (one row per candidate, a p50 and p90
    /// column per shape group).
    pub fn to_csv(&self) -> String {
        let mut groups: Vec<&str> = self
            .diagnosis
            .shape_groups
            .iter()
            .map(String::as_str)
            .collect();
        for c in &self.candidates {
            for l in &c.latency {
                if !groups.contains(&l.shapes.as_str()) {
                    groups.push(&l.shapes);
                }
            }
        }
        let field = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let num = |x: Option<f64>| x.map(|x| x.to_string()).unwrap_or_default();
        let mut head = vec!["candidate".to_string(), "status".into()];
        for g in &groups {
            head.push(field(&format!("p50_ms {g}")));
            head.push(field(&format!("p90_ms {g}")));
        }
        head.extend(
            [
                "max_rel_error",
                "min_cosine",
                "agreement",
                "speedup",
                "size_bytes",
                "seconds",
                "note",
            ]
            .map(String::from),
        );
        let mut out = head.join(",") + "\n";
        for c in &self.candidates {
            let mut row = vec![
                field(&c.name),
                match c.status {
                    CandidateStatus::Selected => "selected",
                    CandidateStatus::Passed => "passed",
                    CandidateStatus::Rejected => "rejected",
                }
                .to_string(),
            ];
            for g in &groups {
                let l = c.latency.iter().find(|l| l.shapes == *g);
                row.push(num(l.map(|l| l.p50_ms)));
                row.push(num(l.map(|l| l.p90_ms)));
            }
            row.push(num(c.max_rel_error));
            row.push(num(c.min_cosine));
            row.push(field(&c.agreements().join("; ")));
            row.push(num(c.speedup));
            row.push(c.size_bytes.to_string());
            row.push(c.seconds.to_string());
            row.push(field(c.message.as_deref().unwrap_or_default()));
            out += &(row.join(",") + "\n");
        }
        out
    }
}

/// "with the 3 most sensitive of 52 nodes kept in float" → (3, 52).
fn kept_in_float(description: &str) -> Option<(usize, usize)> {
    let rest = description.split("with the ").nth(1)?;
    let mut words = rest.split_whitespace();
    let k = words.next()?.parse().ok()?;
    let of = rest.split(" of ").nth(1)?;
    let n = of.split_whitespace().next()?.parse().ok()?;
    description.contains("kept in float").then_some((k, n))
}

impl CandidateReport {
    /// The agreement metrics the candidate was measured by, in words:
    /// `["top-1 100.0%", "regions 98.5%"]`.
    pub fn agreements(&self) -> Vec<String> {
        [
            ("top-1", self.top1),
            ("top-k", self.top_k),
            ("regions", self.region_agreement),
            ("sequences", self.sequence_agreement),
        ]
        .iter()
        .filter_map(|(what, v)| v.map(|v| format!("{what} {:.1}%", v * 100.0)))
        .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ShapeLatency {
    pub shapes: String,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub runs: usize,
}

/// The file in a server's data folder that holds its admin token (mode
/// 0600); a CLI on the same machine reads it when given no token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// The default data folder of `whet serve` (and where the CLI looks for
/// the admin token): `$XDG_DATA_HOME/whetstone/data`, else
/// `$HOME/.local/share/whetstone/data`. The caller reads the variables.
pub fn default_data_dir(
    xdg_data_home: Option<std::path::PathBuf>,
    home: Option<std::path::PathBuf>,
) -> std::path::PathBuf {
    xdg_data_home
        .or_else(|| home.map(|h| h.join(".local/share")))
        .unwrap_or_else(|| std::path::PathBuf::from("."))
        .join("whetstone/data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        assert!(Role::Admin.can_deploy() && Role::Admin.can_manage());
        assert!(Role::Deployer.can_deploy() && !Role::Deployer.can_manage());
        assert!(!Role::Viewer.can_deploy() && !Role::Viewer.can_manage());
        for r in [Role::Viewer, Role::Deployer, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        assert_eq!(Role::parse("owner"), None);
    }

    #[test]
    fn site_admins_are_admin_of_every_team() {
        let me = Me {
            user: "ann".into(),
            site_admin: false,
            teams: vec![TeamRole {
                team: "ml".into(),
                role: Role::Viewer,
            }],
            token_id: None,
        };
        assert_eq!(me.role_in("ml"), Some(Role::Viewer));
        assert_eq!(me.role_in("web"), None);
        let admin = Me {
            site_admin: true,
            ..me
        };
        assert_eq!(admin.role_in("web"), Some(Role::Admin));
    }

    #[test]
    fn account_names_are_url_safe() {
        assert!(check_account_name("user", "ann").is_ok());
        assert!(check_account_name("team", "ml-research_2").is_ok());
        for bad in ["", "Ann", "9lives", "a/b", "a b", &"x".repeat(64)] {
            let e = check_account_name("team", bad).unwrap_err();
            assert!(e.starts_with("team name: expected"), "{e}");
        }
    }
}
