//! The state every HTTP handler shares: the control plane's parts, the
//! running services and the deploy machinery.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::control::logbus::LogBus;
use crate::control::objects::Objects;
use crate::control::resources::Resources;
use crate::control::{Settings, Store};
use crate::deploy::placement::Hosting;
use crate::deploy::{BuildLocks, Cancels, Deployer};
use crate::serving::instances::Instances;

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub logs: LogBus,
    pub instances: Instances,
    /// Wakes idle workers when a job is queued.
    pub jobs_ready: Arc<Notify>,
    /// The configured resource groups and the GPUs discovered at start.
    pub resources: Arc<Resources>,
    /// The running deploy of each service, to cancel it (stop, modify, delete).
    pub cancels: Cancels,
    /// One lock per artifact key: two deploys of one key build it once.
    pub builds: BuildLocks,
    /// What this node runs of the instances placed on it.
    pub hosting: Hosting,
    /// Prediction bodies held in memory at once, in [`BUDGET_UNIT`]s: a
    /// flood of large requests is refused (503) instead of growing the
    /// server without bound.
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// The object store nodes share (`--store`), if any.
    pub objects: Option<Objects>,
    /// Counts the revocations of tokens, share links and memberships: open
    /// log streams look again at once whether their caller still may read
    /// (they also look every few seconds, for revocations on other nodes).
    /// Call [`AppState::revoke`] after one.
    /// (A generation count: a stream busy sending still sees a change.)
    pub revoked: tokio::sync::watch::Sender<u64>,
    /// Cancelled when the server is stopping (SIGTERM, Ctrl-C): readiness
    /// answers 503, workers claim no more jobs, connections drain.
    pub stopping: tokio_util::sync::CancellationToken,
}

impl AppState {
    /// Tells the open log streams that some access was revoked.
    pub fn revoke(&self) {
        self.revoked.send_modify(|n| *n += 1);
    }

    /// What the deploy worker needs of the server: handles to the same
    /// parts (each a cheap clone).
    pub fn deployer(&self) -> Deployer {
        Deployer {
            settings: self.settings.clone(),
            store: self.store.clone(),
            logs: self.logs.clone(),
            instances: self.instances.clone(),
            jobs_ready: self.jobs_ready.clone(),
            resources: self.resources.clone(),
            cancels: self.cancels.clone(),
            builds: self.builds.clone(),
            hosting: self.hosting.clone(),
            objects: self.objects.clone(),
            stopping: self.stopping.clone(),
        }
    }
}

/// The unit of [`AppState::body_budget`].
pub const BUDGET_UNIT: usize = 1 << 20;
/// Bytes of prediction bodies the server holds at once.
pub const BODY_BUDGET_BYTES: usize = 1 << 30;

/// Budget units for a body of `bytes`.
pub fn budget_units(bytes: usize) -> u32 {
    bytes.div_ceil(BUDGET_UNIT).max(1).min(u32::MAX as usize) as u32
}
