//! Shared server state and settings.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::instances::Instances;
use crate::logbus::LogBus;
use crate::store::Store;

/// Settings of one `whet serve` process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// Deploy jobs run at once (CPU worker pool size).
    pub cpu_workers: usize,
    /// Folders `file://` model paths may point into.
    pub model_roots: Vec<PathBuf>,
    /// Largest upload or unpacked archive accepted, in bytes.
    pub max_model_bytes: u64,
    /// The executable that runs `optimize` child processes.
    pub whet_exe: PathBuf,
}

impl Settings {
    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }
    pub fn models_dir(&self) -> PathBuf {
        self.data_dir.join("models")
    }
    pub fn artifacts_dir(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }
}

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub logs: LogBus,
    pub instances: Instances,
    /// Wakes idle workers when a job is queued.
    pub jobs_ready: Arc<Notify>,
    /// The configured resource groups and the GPUs discovered at start.
    pub resources: Arc<crate::resources::Resources>,
}
