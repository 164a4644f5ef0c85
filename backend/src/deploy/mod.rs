//! The deploy worker pool. A deploy is a durable job done in stages:
//! schedule → fetch → plugin → start. Each stage is idempotent and recorded
//! in the job row, so a server killed mid-deploy resumes at the stage it was
//! in. The optimization runs in a child process (`whet optimize`), so a crash
//! or out-of-memory in a native engine cannot take the server down.

pub mod artifacts;
pub mod autoscale;
pub mod gc;
pub mod inspect;
pub mod nodes;
pub mod placement;
pub mod remote;
pub mod resolve;
pub mod traffic;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use optimizer::artifact;
use optimizer::optimize::TargetDevice;
use shared::api::{ModelSignature, ServiceStatus};
use shared::processor::Runtime;
use shared::ServiceConfig;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::control::logbus::LogBus;
use crate::control::resources::Resources;
use crate::control::store::{now_ms, Dialect, JobRow, ResolvedModel, StoreError};
use crate::control::{Settings, Store};
use crate::serving::instances::Instances;

/// What a deploy can fail with. The HTTP edge maps each kind to a status
/// (a create or modify that resolves a model fails before it is stored);
/// a deploy job's failure becomes its log line and the service's message.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    BadRequest(String),
    /// The config or model does not hold; each problem names its field.
    #[error("the service config has {} problem(s)", .0.len())]
    Invalid(Vec<shared::ValidationError>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Starting the service's instances failed.
    #[error("{0}")]
    Serving(#[from] crate::serving::ServingError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The shared object store failed (unreachable, refused, …).
    #[error("{0}")]
    Objects(#[from] crate::control::objects::ObjectsError),
    #[error("{0}")]
    Internal(String),
}

impl DeployError {
    /// One problem with the field at `path`.
    pub fn invalid(path: &str, message: impl Into<String>) -> DeployError {
        DeployError::Invalid(vec![shared::ValidationError {
            path: path.to_string(),
            message: message.into(),
        }])
    }
}

/// What the deploy worker needs of the server: handles to the store, the
/// logs, the running services and the locks of builds in flight.
#[derive(Clone)]
pub struct Deployer {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub logs: LogBus,
    pub instances: Instances,
    /// Wakes idle workers when a job is queued.
    pub jobs_ready: Arc<tokio::sync::Notify>,
    pub resources: Arc<Resources>,
    pub cancels: Cancels,
    pub builds: BuildLocks,
    pub hosting: placement::Hosting,
    /// The object store nodes share (`--store`), if any.
    pub objects: Option<crate::control::objects::Objects>,
    /// Cancelled when the server is stopping (SIGTERM): workers claim no
    /// more jobs.
    pub stopping: CancellationToken,
}

/// The running deploy of each service and why it was cancelled, if it was.
#[derive(Clone, Default)]
pub struct Cancels(Arc<Mutex<HashMap<String, Cancel>>>);

struct Cancel {
    job: i64,
    token: CancellationToken,
    reason: Option<String>,
}

impl Cancels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cancel>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(&self, name: &str, job: i64) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(
            name.to_string(),
            Cancel {
                job,
                token: token.clone(),
                reason: None,
            },
        );
        token
    }

    /// Forgets `job`'s entry, never a later job's of the same service.
    fn unregister(&self, name: &str, job: i64) {
        let mut map = self.lock();
        if map.get(name).is_some_and(|c| c.job == job) {
            map.remove(name);
        }
    }

    fn reason(&self, name: &str) -> Option<String> {
        self.lock().get(name).and_then(|c| c.reason.clone())
    }

    /// Cancels the running deploy of `name`: its child processes are
    /// killed and its job fails with `reason`. `false` if none runs here.
    pub fn cancel(&self, name: &str, reason: &str) -> bool {
        let mut map = self.lock();
        match map.get_mut(name) {
            Some(c) => {
                c.reason = Some(reason.to_string());
                c.token.cancel();
                true
            }
            None => false,
        }
    }
}

/// Checks what only the server can check: the processor is one this server
/// runs, and the model resolves, loads, and has the declared inputs/outputs.
pub async fn check_deployable(
    settings: &Arc<Settings>,
    resources: &Resources,
    objects: Option<&crate::control::objects::Objects>,
    cfg: &ServiceConfig,
) -> Result<ResolvedModel, DeployError> {
    let Some(proc) = cfg.processor_info() else {
        return Err(DeployError::invalid(
            "processor",
            format!("unknown processor '{}'", cfg.processor),
        ));
    };
    // ONNX runs as is; TensorFlow frozen graphs are imported to ONNX when
    // the model is resolved. TorchScript needs libtorch: only a server built
    // with the `torch` feature serves it.
    if proc.runtime == Runtime::PyTorch && !cfg!(feature = "torch") {
        return Err(DeployError::invalid(
            "processor",
            format!(
                "processor '{}' serves TorchScript, which this server is not built with: {} (or deploy an ONNX export, torch.onnx.export, with onnx_cpu)",
                proc.name,
                optimizer::engine::TORCH_FEATURE_HINT
            ),
        ));
    }
    // Resource groups against the server's configuration, and GPUs against
    // what was discovered at start (a GPU deploy with no GPU is refused here,
    // so GPU jobs are only ever queued for a GPU worker that exists).
    resources.check(cfg).map_err(DeployError::Invalid)?;
    // A GPU PyTorch service needs libtorch's CUDA backend too (its CUDA
    // libraries are a separate install): refuse it here, with how to get
    // it, rather than fail in the plugin stage.
    #[cfg(feature = "torch")]
    if proc.runtime == Runtime::PyTorch && proc.device == shared::processor::Device::Gpu {
        // The first probe loads libtorch's CUDA libraries: off the runtime.
        let status = tokio::task::spawn_blocking(optimizer::torch::cuda::probe)
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?;
        if let optimizer::torch::cuda::TorchCuda::Unavailable(why) = status {
            return Err(DeployError::invalid(
                "processor",
                format!(
                    "processor '{}' serves TorchScript on a GPU: {why}",
                    proc.name
                ),
            ));
        }
    }
    let fetched = remote::materialize(settings, objects, cfg).await?;
    let settings = settings.clone();
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || resolve::resolve(&settings, &cfg, fetched))
        .await
        .map_err(|e| DeployError::Internal(e.to_string()))?
}

/// Every problem a deploy of `cfg` would meet that can be told without
/// touching the model: the config's own rules, a processor this server
/// does not run, resource groups and GPUs it does not have, a model path it
/// cannot read (an upload it does not hold, a `file://` outside its model
/// roots, a placeholder). What the console shows before Deploy.
pub fn preflight(
    settings: &Settings,
    resources: &Resources,
    objects: bool,
    text: &str,
) -> Vec<shared::ValidationError> {
    let cfg = match shared::parse_and_validate(text) {
        Ok(cfg) => cfg,
        Err(problems) => return problems,
    };
    let mut problems = Vec::new();
    if let Some(proc) = cfg.processor_info() {
        if proc.runtime == Runtime::PyTorch && !cfg!(feature = "torch") {
            problems.push(shared::ValidationError {
                path: "processor".into(),
                message: format!(
                    "processor '{}' serves TorchScript, which this server is not built with",
                    proc.name
                ),
            });
        }
    }
    if let Err(e) = resources.check(&cfg) {
        problems.extend(e);
    }
    // An upload may be in the shared store rather than here.
    let upload_elsewhere = objects && cfg.model_path.starts_with("upload://");
    if !upload_elsewhere {
        match resolve::model_path_problem(settings, &cfg.model_path) {
            Some(DeployError::Invalid(v)) => problems.extend(v),
            Some(e) => problems.push(shared::ValidationError {
                path: "model_path".into(),
                message: e.to_string(),
            }),
            None => {}
        }
    }
    problems
}

/// Cancels the running deploy of `name`, if any, and waits until its job
/// has ended (stop, modify and delete then proceed as on an idle service).
pub async fn cancel_and_wait(
    state: &Deployer,
    name: &str,
    reason: &str,
) -> Result<(), DeployError> {
    if !state.cancels.cancel(name, reason) {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while state.store.count_jobs(name, "running").await? > 0 {
        if tokio::time::Instant::now() >= deadline {
            return Err(DeployError::Conflict(format!(
                "the deploy of '{name}' was cancelled but has not ended yet; retry in a moment"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// One async lock per artifact key.
#[derive(Clone, Default)]
pub struct BuildLocks(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl BuildLocks {
    fn of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the locks nobody holds, so the map stays small.
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key.to_string()).or_default().clone()
    }
}

const STAGES: [&str; 4] = ["schedule", "fetch", "plugin", "start"];
/// A job interrupted this many times (server restarts) is failed, not retried.
pub const MAX_ATTEMPTS: i64 = 3;

/// What a worker runs jobs on, and so which job kinds it claims.
#[derive(Debug, Clone)]
pub struct WorkerSlot {
    /// Job kinds it claims (`resources::job_kind`).
    pub kinds: Vec<String>,
    /// The CUDA device of a GPU worker; `None` for the CPU pool.
    pub gpu: Option<crate::control::gpu::GpuDevice>,
}

impl WorkerSlot {
    pub fn cpu() -> WorkerSlot {
        WorkerSlot {
            kinds: vec![crate::control::resources::CPU_KIND.to_string()],
            gpu: None,
        }
    }
}

/// Starts the CPU pool (`--workers`) and one GPU worker per discovered device
/// that a GPU resource group uses (none without GPUs).
pub fn spawn_workers(state: &Deployer) {
    let mut slots: Vec<WorkerSlot> = (0..state.settings.cpu_workers.max(1))
        .map(|_| WorkerSlot::cpu())
        .collect();
    for (gpu, kinds) in state.resources.gpu_workers() {
        tracing::info!(device = gpu.ordinal, name = %gpu.name, ?kinds, "GPU deploy worker");
        slots.push(WorkerSlot {
            kinds,
            gpu: Some(gpu),
        });
    }
    for (i, slot) in slots.into_iter().enumerate() {
        let state = state.clone();
        tokio::spawn(async move { worker_loop(state, i, slot).await });
    }
}

async fn worker_loop(state: Deployer, idx: usize, slot: WorkerSlot) {
    loop {
        if state.stopping.is_cancelled() {
            return;
        }
        let until = now_ms() + state.settings.job_lease.as_millis() as i64;
        match state
            .store
            .claim_job(&slot.kinds, &state.settings.node_id, until)
            .await
        {
            Ok(Some(job)) => {
                tracing::info!(worker = idx, job = job.id, service = %job.service, "claimed deploy job");
                run_job(&state, job, &slot).await;
                // Another job of the same service may have been waiting for this one.
                state.jobs_ready.notify_waiters();
            }
            Ok(None) => {
                tokio::select! {
                    _ = state.stopping.cancelled() => return,
                    _ = state.jobs_ready.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
            Err(e) => {
                tracing::error!("claiming a job: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// The server is stopping: each deploy this node runs is left running at
/// its recorded stage, to be resumed there by the next server on this data
/// folder (SQLite) or by another node once its lease runs out
/// (PostgreSQL). Says so in each one's log.
pub async fn leave_running(state: &Deployer) {
    let jobs = match state.store.interrupted_jobs().await {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!("listing the running deploys at shutdown: {e}");
            return;
        }
    };
    for job in jobs
        .iter()
        .filter(|j| j.node.as_deref() == Some(state.settings.node_id.as_str()))
    {
        let stage = job.stage.as_deref().unwrap_or("schedule");
        log_line(
            state,
            job,
            &format!("[WARN] Server stopping: the deploy resumes at stage {stage} when a server takes it up"),
        )
        .await;
    }
}

/// A job whose node stopped (a restart, or a node that died): back in the
/// queue to resume at its recorded stage, or failed after too many tries.
/// The caller has already made sure that no live node holds it.
pub(crate) async fn resume_or_fail(
    state: &Deployer,
    job: &JobRow,
    what: &str,
) -> Result<(), DeployError> {
    let stage = job.stage.clone().unwrap_or_else(|| "schedule".into());
    if job.attempts >= MAX_ATTEMPTS {
        let msg = format!(
            "deploy interrupted {} times (last: {what}, at stage {stage}); giving up",
            job.attempts
        );
        log_line(state, job, &format!("[ERROR] {msg}")).await;
        state.store.finish_job(job.id, false, Some(&msg)).await?;
        let status = if state
            .store
            .get_service(&job.service)
            .await?
            .is_some_and(|s| s.artifact.is_some())
        {
            ServiceStatus::Running
        } else {
            ServiceStatus::Failed
        };
        state
            .store
            .set_status(&job.service, status, None, Some(&msg))
            .await?;
    } else {
        log_line(
            state,
            job,
            &format!("[OK] {what}: resuming the deploy at stage {stage}"),
        )
        .await;
        state.store.requeue_job(job.id).await?;
    }
    Ok(())
}

/// At start-up: re-queue jobs a dead server was running (or fail them after
/// too many tries), and bring back the instances of running services.
/// `addr` is the address this node advertises (see [`Store::adopt_slots`]).
pub async fn recover(state: &Deployer, addr: &str) -> Result<(), DeployError> {
    // Builds cut short by the last shutdown: never recorded, never served.
    // Nodes sharing PostgreSQL may share the data folder too, and another
    // live node's build may be under way there: only a build folder older
    // than any build can run is surely abandoned.
    let abandoned = match state.store.dialect() {
        Dialect::Sqlite => Duration::ZERO,
        Dialect::Postgres => state.settings.optimize_timeout + state.settings.job_lease,
    };
    if let Ok(mut rd) = tokio::fs::read_dir(state.settings.artifacts_dir()).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            let age = e
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .unwrap_or(Duration::MAX);
            if e.file_name().to_string_lossy().starts_with(".tmp-") && age >= abandoned {
                let _ = tokio::fs::remove_dir_all(e.path()).await;
            }
        }
    }
    // SQLite belongs to this one node, so whatever was running is a dead
    // process's. Nodes sharing PostgreSQL take over only jobs whose lease ran
    // out: the others' holders are alive (`nodes::spawn_lease_sweeper` keeps
    // looking).
    match state.store.dialect() {
        Dialect::Sqlite => {
            for job in state.store.interrupted_jobs().await? {
                resume_or_fail(state, &job, "Server restarted").await?;
            }
        }
        Dialect::Postgres => nodes::take_over_expired(state).await?,
    }
    // A GPU deploy queued before a restart that lost its GPUs (or its group)
    // would wait forever: fail it, saying why.
    let served = state.resources.served_kinds();
    for job in state.store.unclaimable_jobs(&served).await? {
        let gpus = state.resources.gpus();
        let why = if gpus.is_empty() {
            gpus.reason().to_string()
        } else {
            "its resource group is not configured, or none of its GPUs was found".to_string()
        };
        let msg =
            format!("no worker of this server can run this GPU deploy after the restart: {why}");
        log_line(state, &job, &format!("[ERROR] {msg}")).await;
        state.store.finish_job(job.id, false, Some(&msg)).await?;
        let had_artifact = state
            .store
            .get_service(&job.service)
            .await?
            .is_some_and(|s| s.artifact.is_some());
        let status = if had_artifact {
            ServiceStatus::Running
        } else {
            ServiceStatus::Failed
        };
        state
            .store
            .set_status(&job.service, status, None, Some(&msg))
            .await?;
    }
    // Services that were serving keep serving (the ones mid-redeploy with
    // their previous artifact until the redeploy finishes): this node takes
    // the slots of the process it replaces and starts them now; a database
    // from before placements existed gets its running services placed here.
    let adopted = state
        .store
        .adopt_slots(&state.settings.node_id, addr)
        .await?;
    if adopted > 0 {
        tracing::info!("took over {adopted} instance slot(s) of this node's previous process");
    }
    for svc in state.store.list_services().await? {
        let serving = matches!(svc.status, ServiceStatus::Running | ServiceStatus::Updating);
        let Some(key) = svc.artifact.as_deref().filter(|_| serving) else {
            continue;
        };
        if state.store.placements(&svc.name).await?.is_empty() {
            let n = svc.instances.max(1);
            if let Err(e) = placement::place(state, &svc.name, &svc.config, key, n).await {
                let msg = format!("could not restart instances after a server restart: {e}");
                state
                    .logs
                    .line(&svc.name, None, &format!("[ERROR] {msg}"))
                    .await?;
                state
                    .store
                    .set_status(&svc.name, ServiceStatus::Failed, None, Some(&msg))
                    .await?;
            }
        }
    }
    placement::reconcile(state).await?;
    Ok(())
}

/// How long a deploy waits for a database it lost (a restart, a failover)
/// before it fails.
const OUTAGE_BUDGET: Duration = Duration::from_secs(120);

/// Runs the deploy; when the database could not be reached on the way, waits
/// until it answers and runs the deploy again from the stage it recorded
/// (the stages are idempotent, as for a job taken over from a dead node),
/// for up to [`OUTAGE_BUDGET`].
async fn deploy_through_outages(
    state: &Deployer,
    job: &JobRow,
    slot: &WorkerSlot,
) -> Result<(), DeployError> {
    let deadline = tokio::time::Instant::now() + OUTAGE_BUDGET;
    let mut job = job.clone();
    loop {
        match deploy(state, &job, slot).await {
            Err(DeployError::Store(e))
                if e.is_transient() && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(job = job.id, service = %job.service, "database unreachable during the deploy: {e}");
                job = loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match state.store.get_job(job.id).await {
                        Ok(Some(now)) => break now,
                        Ok(None) => {
                            return Err(DeployError::NotFound(format!(
                                "deploy job {} is gone",
                                job.id
                            )))
                        }
                        Err(e) if e.is_transient() && tokio::time::Instant::now() < deadline => {}
                        Err(e) => return Err(e.into()),
                    }
                };
                let stage = job.stage.clone().unwrap_or_else(|| "schedule".into());
                state
                    .logs
                    .line(
                        &job.service,
                        Some(job.id),
                        &format!("[WARN] The database could not be reached for a while; resuming the deploy at stage {stage}"),
                    )
                    .await?;
            }
            other => return other,
        }
    }
}

async fn run_job(state: &Deployer, job: JobRow, slot: &WorkerSlot) {
    let name = job.service.clone();
    let started = std::time::Instant::now();
    let token = state.cancels.register(&name, job.id);
    // Cancelling drops the deploy future: its child processes are killed
    // with it (kill_on_drop). Work already handed to a blocking thread
    // (runners loading at `start`) finishes there, and its pool is then
    // dropped, which kills its runners.
    let result = tokio::select! {
        r = deploy_through_outages(state, &job, slot) => r,
        () = token.cancelled() => Err(DeployError::Conflict(format!(
            "deploy cancelled: {}",
            state.cancels.reason(&name).unwrap_or_else(|| "by request".into())
        ))),
        () = nodes::hold_lease(state, job.id) => {
            // Another node has the job now (or will, once it sees the lease
            // ran out): stop here and record nothing of its end.
            state.cancels.unregister(&name, job.id);
            let line = format!(
                "[WARN] Node {} lost its lease on this deploy; another node resumes it",
                state.settings.node_id
            );
            tracing::warn!(job = job.id, service = %name, "lost the job's lease");
            if let Err(e) = state.logs.line(&name, Some(job.id), &line).await {
                tracing::error!(job = job.id, "logging a lost lease: {e}");
            }
            return;
        }
    };
    crate::control::metrics::observe_deploy(result.is_ok(), started.elapsed());
    record_end(state, &job, result).await;
    state.cancels.unregister(&name, job.id);
}

/// How long the end of a job is retried. Until it is stored the job reads as
/// running, and the service can be neither stopped, modified nor deleted.
const FINISH_BUDGET: Duration = Duration::from_secs(600);
/// How long the final status is retried before the job is finished anyway.
const STATUS_BUDGET: Duration = Duration::from_secs(30);

/// Runs `op` until it succeeds or `budget` is spent (backing off from 100 ms
/// to 5 s), whatever the error: for the writes that end a job, which are safe
/// to repeat and which nothing else would ever make.
async fn persist<F, Fut>(budget: Duration, what: &str, mut op: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut wait = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(()) => return true,
            Err(e) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!("{what}: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!("{what}: {e}; giving up");
                return false;
            }
        }
    }
}

/// A line of `job`'s log where the job's own record matters more: a line
/// that cannot be stored is reported to the server's log, and the caller
/// goes on to record the job's state.
async fn log_line(state: &Deployer, job: &JobRow, line: &str) {
    if let Err(e) = state.logs.line(&job.service, Some(job.id), line).await {
        tracing::error!(job = job.id, service = %job.service, "storing the log line {line:?}: {e}");
    }
}

/// Records how a deploy ended. The job's own row comes first in importance:
/// a log line or a status that cannot be written is reported here and does
/// not keep the job running; the job's end is retried until it is stored.
async fn record_end(state: &Deployer, job: &JobRow, result: Result<(), DeployError>) {
    let name = job.service.as_str();
    let what = format!("recording the end of deploy job {} of '{name}'", job.id);
    match result {
        Ok(()) => {
            persist(FINISH_BUDGET, &what, || {
                state.store.finish_job(job.id, true, None)
            })
            .await;
            state.logs.end(name, ServiceStatus::Running, None);
        }
        Err(e) => {
            let msg = match &e {
                DeployError::Invalid(v) => v
                    .iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            };
            log_line(state, job, &format!("[ERROR] {msg}")).await;
            // A failed redeploy leaves the previous instances serving
            // (`placement::restore` put them back).
            let placed = match state.store.placements(name).await {
                Ok(p) => !p.is_empty(),
                Err(e) => {
                    tracing::error!(job = job.id, service = name, "reading the placements: {e}");
                    state
                        .store
                        .get_service(name)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|s| s.artifact.is_some())
                }
            };
            let status = if placed {
                ServiceStatus::Running
            } else {
                ServiceStatus::Failed
            };
            // Status before the job's end: log streams read them in the
            // opposite order and must see the final status.
            persist(STATUS_BUDGET, &what, || {
                state.store.set_status(name, status, None, Some(&msg))
            })
            .await;
            persist(FINISH_BUDGET, &what, || {
                state.store.finish_job(job.id, false, Some(&msg))
            })
            .await;
            state.logs.end(name, status, Some(msg));
        }
    }
}

fn stage_index(stage: Option<&str>) -> usize {
    stage
        .and_then(|s| STAGES.iter().position(|x| *x == s))
        .unwrap_or(0)
}

async fn deploy(state: &Deployer, job: &JobRow, slot: &WorkerSlot) -> Result<(), DeployError> {
    let name = job.service.as_str();
    let log = |line: String| async move { state.logs.line(name, Some(job.id), &line).await };
    let cfg = &job.config;
    let resume = stage_index(job.stage.as_deref());

    // schedule
    if resume == 0 {
        state.store.set_job_stage(job.id, name, "schedule").await?;
        let node = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        match &slot.gpu {
            None => log(format!("[OK] Scheduling process to node {node}")).await?,
            Some(g) => {
                log(format!(
                    "[OK] Scheduling process to node {node}, GPU {} ({})",
                    g.ordinal, g.name
                ))
                .await?
            }
        };
    }

    // fetch: the create/modify call already resolved and checked the model;
    // here we make sure it is still there and report it.
    let svc = state
        .store
        .get_service(name)
        .await?
        .ok_or_else(|| DeployError::NotFound(format!("service '{name}' was deleted")))?;
    let (Some(mut model_dir), Some(mut model_file), Some(model_sha), Some(signature)) = (
        svc.model_dir.clone(),
        svc.model_file.clone(),
        svc.model_sha256.clone(),
        svc.signature.clone(),
    ) else {
        return Err(DeployError::Internal(
            "the service has no resolved model".into(),
        ));
    };
    if !Path::new(&model_file).is_file() {
        // Resolved on another node (or this node's copy is gone): resolve
        // it here, from the shared store or the model path, and make sure
        // it is the model that was checked when the service was created.
        let here = check_deployable(
            &state.settings,
            &state.resources,
            state.objects.as_ref(),
            cfg,
        )
        .await?;
        if here.sha256 != model_sha {
            return Err(DeployError::Conflict(format!(
                "the model at {} changed since the service was created or modified (SHA-256 {} then, {} now); modify the service to deploy it",
                cfg.model_path, model_sha, here.sha256
            )));
        }
        model_dir = here.dir;
        model_file = here.file;
    } else if cfg.model_path.starts_with("file://") {
        // A folder of the server's that others may write: what was checked
        // at create may have been replaced since (a link to elsewhere).
        let (dir, file) = (PathBuf::from(&model_dir), PathBuf::from(&model_file));
        let settings = state.settings.clone();
        let sha = model_sha.clone();
        let (dir, file) = tokio::task::spawn_blocking(move || {
            resolve::recheck_file_model(&settings, &dir, &file, &sha)
        })
        .await
        .map_err(|e| DeployError::Internal(e.to_string()))??;
        model_dir = dir.display().to_string();
        model_file = file.display().to_string();
    }
    if resume <= 1 {
        state.store.set_job_stage(job.id, name, "fetch").await?;
        let what = match cfg.model_path.split_once("://") {
            Some(("oss", _)) => "oss file",
            Some(("s3", _)) => "s3 file",
            _ => "model file",
        };
        log(format!("[OK] Downloading {what}: {}", cfg.model_path)).await?;
        // The engine that will serve this model, as the processor.
        let engine = match optimizer::engine::EngineKind::of_model(Path::new(&model_file)) {
            optimizer::engine::EngineKind::TorchScript => "libtorch 2.13 (TorchScript)".to_string(),
            optimizer::engine::EngineKind::OnnxRuntime => optimizer::runtime::describe(),
        };
        log(format!(
            "[OK] Fetching processor from [{} for {}]",
            engine, cfg.processor
        ))
        .await?;
        log("[OK] Successfully downloaded all artifacts".into()).await?;
        log(format!(
            "[OK] Model {}: {}",
            file_label(&model_file),
            optimizer::optimize::describe_signature(&signature)
        ))
        .await?;
    }

    // plugin (or the plain artifact when no plugin is configured)
    state.store.set_job_stage(job.id, name, "plugin").await?;
    // A GPU worker builds and serves for its device; the target (and so the
    // artifact key) names the GPU model, so CPU and GPU artifacts never mix.
    let device = match &slot.gpu {
        None => TargetDevice::Cpu,
        Some(g) => TargetDevice::Cuda {
            device_id: g.ordinal as i32,
            name: g.name.clone(),
        },
    };
    let target = device.target();
    let plugin = cfg.blade_plugin();
    let mut opt_config = match (plugin, cfg.model_info()) {
        (Some(p), info) => serde_json::json!({
            "command": p.command,
            "model_info": info.map(|(k, v)| serde_json::json!({ k: v })),
        }),
        (None, _) => serde_json::json!({ "plugin": null }),
    };
    // The warm-up file is copied into the artifact: which one is part of it.
    if let Some(w) = &cfg.warm_up_data_path {
        opt_config["warm_up_data_path"] = serde_json::json!(w);
    }
    let warm_up = cfg
        .warm_up_data_path
        .as_ref()
        .map(|w| PathBuf::from(&model_dir).join(w));
    // The key covers the bytes of every file the optimizer may read (the
    // model folder: external data, test and calibration data), not only
    // their names: another team's data never decides this model.
    let inputs = {
        let dir = PathBuf::from(&model_dir);
        // Four levels deep, as far as model files are searched.
        tokio::task::spawn_blocking(move || resolve::folder_digest(&dir, 4))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))??
    };
    let opt_config = serde_json::json!({ "optimization": opt_config, "inputs": inputs });
    let key = artifact::artifact_key(&model_sha, &opt_config, &target);
    // Two deploys of one key build it once: the second waits here and
    // then finds the first one's artifact.
    let build_lock = state.builds.of(&key);
    let _building = build_lock.lock().await;
    let existing = match state.store.get_artifact(&key).await? {
        Some(_) => artifacts::local(state, &key).await?,
        None => None,
    };
    // After this the artifact is in this node's folder (and published to the
    // shared store, where the other nodes it is placed on fetch it).
    let _local_dir: PathBuf = match (existing, plugin) {
        (Some(dir), Some(_)) => {
            log(format!("[OK] Reusing optimized artifact {}: this model and optimization config were optimized before", &key[..12])).await?;
            dir
        }
        (Some(dir), None) => dir,
        (None, Some(p)) => {
            log(format!(
                "[OK] Running plugin eas-plugin-{}: {}",
                &key[..8],
                p.image
            ))
            .await?;
            let dir = run_plugin(
                state,
                job,
                cfg,
                Path::new(&model_dir),
                Path::new(&model_file),
                &key,
                &device,
            )
            .await?;
            let report = std::fs::read_to_string(dir.join(artifact::REPORT_FILE)).ok();
            artifacts::publish(state, &key, &dir).await?;
            state
                .store
                .put_artifact(
                    &key,
                    &dir.display().to_string(),
                    &model_sha,
                    true,
                    report.as_deref(),
                )
                .await?;
            dir
        }
        (None, None) => {
            let dir = plain_artifact(
                state,
                &key,
                Path::new(&model_file),
                signature.clone(),
                &device,
                warm_up.as_deref(),
            )
            .await?;
            artifacts::publish(state, &key, &dir).await?;
            state
                .store
                .put_artifact(&key, &dir.display().to_string(), &model_sha, false, None)
                .await?;
            dir
        }
    };

    // start
    state.store.set_job_stage(job.id, name, "start").await?;
    let n = cfg.metadata.instance.max(1);
    log("[OK] Successfully created ingress".into()).await?;
    log("[OK] Successfully synchronized resources".into()).await?;
    log(format!(
        "[OK] Waiting [Total: {n}, Pending: {n}, Running: 0]"
    ))
    .await?;
    let previous = placement::place(state, name, cfg, &key, n).await?;
    if let Err(e) = placement::wait_running(state, name, job.id, &key, n).await {
        placement::restore(state, name, &previous).await?;
        return Err(e);
    }
    // The service may have been deleted while we loaded.
    if state.store.get_service(name).await?.is_none() {
        return Err(DeployError::NotFound(format!(
            "service '{name}' was deleted during the deploy"
        )));
    }
    state.store.set_running(name, n, Some(&key)).await?;
    log(format!(
        "[OK] Running [Total: {n}, Pending: 0, Running: {n}]"
    ))
    .await?;
    if let Some(line) = state.instances.get(name).and_then(|p| p.batching_note()) {
        log(line).await?;
    }
    state
        .store
        .set_status(name, ServiceStatus::Running, None, None)
        .await?;
    log("[OK] Service is running".into()).await?;
    traffic::settle(state, name).await?;
    Ok(())
}

fn file_label(p: &str) -> String {
    Path::new(p)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.to_string())
}

/// An artifact for a service without a plugin: the model as given, served
/// with ONNX Runtime's default optimizations.
async fn plain_artifact(
    state: &Deployer,
    key: &str,
    model: &Path,
    signature: ModelSignature,
    device: &TargetDevice,
    warm_up: Option<&Path>,
) -> Result<PathBuf, DeployError> {
    let dir = state.settings.artifacts_dir().join(key);
    let tmp = build_dir(state, key);
    tokio::fs::create_dir_all(&tmp).await?;
    let (t, m, provider, target) = (
        tmp.clone(),
        model.to_path_buf(),
        device.provider(),
        device.target(),
    );
    tokio::task::spawn_blocking(move || {
        artifact::write_original(&t, &m, signature, provider, target)
    })
    .await
    .map_err(|e| DeployError::Internal(e.to_string()))?
    .map_err(|e| DeployError::Internal(e.to_string()))?;
    install(&tmp, &dir, warm_up).await?;
    Ok(dir)
}

/// Runs `whet optimize` in a child process and streams its progress lines
/// into the deploy log. The child exits when its stdin closes, i.e. when this
/// server dies, so no orphan keeps optimizing after a crash.
async fn run_plugin(
    state: &Deployer,
    job: &JobRow,
    cfg: &ServiceConfig,
    model_dir: &Path,
    model_file: &Path,
    key: &str,
    device: &TargetDevice,
) -> Result<PathBuf, DeployError> {
    let warm_up = cfg.warm_up_data_path.as_ref().map(|w| model_dir.join(w));
    let dir = state.settings.artifacts_dir().join(key);
    let tmp = build_dir(state, key);
    tokio::fs::create_dir_all(&tmp).await?;
    let result = optimize_into(state, job, cfg, model_dir, model_file, &tmp, device).await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        return Err(e);
    }
    let _ = tokio::fs::remove_file(tmp.join("model_info.json")).await;
    install(&tmp, &dir, warm_up.as_deref()).await?;
    Ok(dir)
}

/// Fetches something into `tmp` (with `fetch`, which also checks what it
/// fetched), then renames it to `dest`, so that a reader finds `dest` whole
/// or not at all. Whatever fails, `tmp` is removed; a failure is no failure
/// when `arrived` finds `dest` put in place meanwhile by another fetch of
/// the same thing. The one way the shared store's objects (artifacts,
/// uploads, remote models) reach a node's folders.
pub(crate) async fn fetch_into_place(
    tmp: &Path,
    dest: &Path,
    fetch: impl std::future::Future<Output = Result<(), DeployError>>,
    arrived: impl Fn(&Path) -> bool,
) -> Result<(), DeployError> {
    let io = |e: std::io::Error| DeployError::Internal(format!("{}: {e}", dest.display()));
    let done = async {
        fetch.await?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io)?;
        }
        tokio::fs::rename(tmp, dest).await.map_err(io)
    }
    .await;
    if let Err(e) = done {
        if tokio::fs::remove_dir_all(tmp).await.is_err() {
            let _ = tokio::fs::remove_file(tmp).await;
        }
        if !arrived(dest) {
            return Err(e);
        }
    }
    Ok(())
}

/// A build folder of its own for each build (a crashed build's leftovers
/// never mix with the next one's files).
fn build_dir(state: &Deployer, key: &str) -> PathBuf {
    state
        .settings
        .artifacts_dir()
        .join(format!(".tmp-{key}-{:016x}", rand::random::<u64>()))
}

/// Seals a finished build (checksums, fsync of files and folder), then
/// renames it to its key and fsyncs the artifacts folder: a folder the
/// database names is complete and verifiable. A `warm_up` file is copied
/// in first and named in the metadata, so every runner of it replays it.
async fn install(tmp: &Path, dir: &Path, warm_up: Option<&Path>) -> Result<(), DeployError> {
    if let Some(src) = warm_up {
        let name = format!(
            "{}.{}",
            artifact::WARM_UP_STEM,
            src.extension().and_then(|e| e.to_str()).unwrap_or("data")
        );
        tokio::fs::copy(src, tmp.join(&name)).await.map_err(|e| {
            DeployError::Invalid(vec![shared::ValidationError {
                path: "warm_up_data_path".into(),
                message: format!("copying {}: {e}", src.display()),
            }])
        })?;
        let mut meta = artifact::ArtifactMeta::read(tmp)
            .map_err(|e| DeployError::Internal(format!("the built artifact's metadata: {e}")))?;
        meta.warm_up = Some(name);
        meta.write(tmp)
            .map_err(|e| DeployError::Internal(format!("writing the artifact's metadata: {e}")))?;
    }
    let t = tmp.to_path_buf();
    tokio::task::spawn_blocking(move || artifact::seal(&t))
        .await
        .map_err(|e| DeployError::Internal(e.to_string()))?
        .map_err(|e| DeployError::Internal(format!("sealing the artifact: {e}")))?;
    let _ = tokio::fs::remove_dir_all(dir).await;
    tokio::fs::rename(tmp, dir).await?;
    if let Some(parent) = dir.parent() {
        let p = parent.to_path_buf();
        tokio::task::spawn_blocking(move || std::fs::File::open(&p).and_then(|f| f.sync_all()))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))??;
    }
    Ok(())
}

/// Runs the optimizer child into `tmp`: stdout lines go to the deploy log;
/// bounded by the memory ceiling and the wall-clock limit; killed when the
/// deploy is cancelled (this future dropped) or the server dies.
#[allow(clippy::too_many_arguments)]
async fn optimize_into(
    state: &Deployer,
    job: &JobRow,
    cfg: &ServiceConfig,
    model_dir: &Path,
    model_file: &Path,
    tmp: &Path,
    device: &TargetDevice,
) -> Result<(), DeployError> {
    let mut cmd = tokio::process::Command::new(&state.settings.whet_exe);
    cmd.arg("optimize")
        .arg(model_file)
        .arg("--out")
        .arg(tmp)
        .arg("--data-dir")
        .arg(model_dir)
        .arg("--plain")
        .arg("--exit-with-stdin")
        .arg("--device")
        .arg(device.provider().to_string());
    if let Some((_, info)) = cfg.model_info() {
        let spec = tmp.join("model_info.json");
        tokio::fs::write(
            &spec,
            serde_json::to_vec(info).map_err(|e| DeployError::Internal(e.to_string()))?,
        )
        .await?;
        cmd.arg("--model-info").arg(&spec);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let memory_mb = cfg
        .metadata
        .memory
        .or(Some(state.settings.child_memory_mib).filter(|&m| m > 0));
    let hook = crate::sandbox::pre_exec_hook(crate::sandbox::Limits {
        memory_bytes: memory_mb.map(|m| m << 20),
        oom_score_adj: 1000,
    });
    // SAFETY: the hook only makes async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(hook);
    }
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        DeployError::Internal(format!(
            "starting the optimizer ({}): {e}",
            state.settings.whet_exe.display()
        ))
    })?;
    // Keep stdin open for the child's lifetime (dropping it tells the child to stop).
    let _stdin = child.stdin.take();
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| DeployError::Internal("optimizer stdout".into()))?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| DeployError::Internal("optimizer stderr".into()))?;
    let err_tail = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut tail: Vec<String> = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            tail.push(l);
            if tail.len() > 20 {
                tail.remove(0);
            }
        }
        tail
    });
    let limit = state.settings.optimize_timeout;
    let streamed = tokio::time::timeout(limit, async {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            if !line.trim().is_empty() {
                state.logs.line(&job.service, Some(job.id), &line).await?;
            }
        }
        Ok::<_, DeployError>(child.wait().await?)
    })
    .await;
    let status = match streamed {
        Ok(status) => status?,
        Err(_) => {
            let _ = child.kill().await;
            return Err(DeployError::BadRequest(format!(
                "plugin failed: the optimizer ran longer than {} (the server's --optimize-timeout) and was stopped",
                humantime::format_duration(limit)
            )));
        }
    };
    crate::control::metrics::observe_optimization(status.success(), started.elapsed());
    let tail = err_tail.await.unwrap_or_default();
    if !status.success() {
        use std::os::unix::process::ExitStatusExt;
        let last = tail.iter().rev().find(|l| !l.trim().is_empty()).cloned();
        let memory = memory_mb
            .map(|m| format!(" ({m} MB: metadata.memory, else the server's --child-memory-mb)"))
            .unwrap_or_default();
        let reason = match (status.signal(), last) {
            (Some(9), _) => format!("the optimizer was killed (out of memory{memory}?)"),
            (Some(6), Some(l)) if l.contains("memory allocation") => {
                format!("the optimizer ran out of memory{memory}: {l}")
            }
            (_, Some(l)) => l,
            (_, None) => format!("exit status {status}"),
        };
        return Err(DeployError::BadRequest(format!("plugin failed: {reason}")));
    }
    Ok(())
}
