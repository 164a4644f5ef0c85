//! The settings of one `whet serve` process: where its data lives, how
//! many deploys run at once, and the limits of the children it starts.

use std::path::PathBuf;

/// Settings of one `whet serve` process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// `--database`: a `sqlite://` or `postgres://` URL; `None` is the
    /// embedded SQLite file in the data folder.
    pub database: Option<String>,
    /// `--store`: `s3://BUCKET/PREFIX` or a folder that nodes share; `None`:
    /// the data folder is the only copy of an artifact.
    pub store: Option<String>,
    /// Deploy jobs run at once (CPU worker pool size).
    pub cpu_workers: usize,
    /// Folders `file://` model paths may point into.
    pub model_roots: Vec<PathBuf>,
    /// Largest upload or unpacked archive accepted, in bytes.
    pub max_model_bytes: u64,
    /// The executable that runs the child processes: `inspect`,
    /// `optimize` and one `runner` per service instance.
    pub whet_exe: PathBuf,
    /// The account children that touch a user's model switch to (`None`
    /// when the server is not root: they keep its user, under Landlock).
    pub runner_account: Option<runner::sandbox::Account>,
    /// Memory ceiling of an optimizer or inspection child when the config
    /// gives no `metadata.memory`, in MiB (0: none).
    pub child_memory_mib: u64,
    /// Wall-clock limit of one optimizer run.
    pub optimize_timeout: std::time::Duration,
    /// Wall-clock limit of inspecting a model at create/modify.
    pub inspect_timeout: std::time::Duration,
    /// This node's name among the nodes sharing the database (unique per
    /// process: host, pid and a random suffix).
    pub node_id: String,
    /// How long a node's claim on a deploy job lasts unless renewed (it
    /// renews a third of the way through); a job whose lease runs out is
    /// taken over by another node.
    pub job_lease: std::time::Duration,
    /// The first admin token when the store has none (`--admin-token`);
    /// random when unset.
    pub admin_token: Option<String>,
    /// HOST:PORT at which other nodes reach this one (`--advertise`).
    pub advertise: Option<String>,
    /// Batching waits for a batch to fill only while more requests are
    /// coming (`--batch-wait adaptive`, the default), else for the whole
    /// `max_batch_timeout`.
    pub adaptive_batching: bool,
    /// How often the autoscaler measures and decides.
    pub autoscale_period: std::time::Duration,
    /// How long the autoscaler must keep asking for fewer instances before
    /// it scales in.
    pub scale_in_delay: std::time::Duration,
    /// What the collector keeps (`deploy::gc`), and how often it runs.
    pub gc: GcPolicy,
    pub gc_period: std::time::Duration,
    /// Bytes of models and artifacts one team's services may keep (every
    /// version counted), or none.
    pub team_quota_bytes: Option<u64>,
    /// The certificate and key the server answers TLS with (`--tls-cert`,
    /// `--tls-key`); none: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The key prediction tokens are sealed with (`control::sealing`): this
    /// file, or `DATA/secret-key` (made at the first start) when none.
    pub secret_key_file: Option<PathBuf>,
    /// Or the key itself, as 64 hex digits (`--secret-key`).
    pub secret_key: Option<String>,
}

/// What the collector (`deploy::gc`) keeps, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct GcPolicy {
    /// Files younger than this are kept whatever refers to them.
    pub grace: std::time::Duration,
    /// Log lines older than this go.
    pub log_retention: std::time::Duration,
    /// Of each service's log, the last this many lines are kept.
    pub log_max_lines: i64,
}

/// The certificate chain and key a server answers TLS with (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Settings {
    /// Settings with the server's defaults for everything but the data
    /// folder and the `whet` executable.
    pub fn new(data_dir: PathBuf, whet_exe: PathBuf) -> Settings {
        Settings {
            data_dir,
            database: None,
            store: None,
            cpu_workers: 1,
            model_roots: vec![],
            max_model_bytes: 8192 << 20,
            whet_exe,
            runner_account: None,
            child_memory_mib: 16 << 10,
            optimize_timeout: std::time::Duration::from_secs(3600),
            inspect_timeout: std::time::Duration::from_secs(120),
            node_id: node_id(),
            job_lease: std::time::Duration::from_secs(30),
            admin_token: None,
            advertise: None,
            adaptive_batching: true,
            autoscale_period: std::time::Duration::from_secs(5),
            scale_in_delay: std::time::Duration::from_secs(300),
            gc: GcPolicy {
                grace: std::time::Duration::from_secs(3600),
                log_retention: std::time::Duration::from_secs(30 * 86400),
                log_max_lines: 20_000,
            },
            gc_period: std::time::Duration::from_secs(3600),
            team_quota_bytes: None,
            tls: None,
            secret_key_file: None,
            secret_key: None,
        }
    }
}

impl Settings {
    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }
    pub fn models_dir(&self) -> PathBuf {
        self.data_dir.join("models")
    }
    /// `https` when the server answers TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
    pub fn artifacts_dir(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }
    /// The database URL the store opens.
    pub fn database_url(&self) -> String {
        self.database.clone().unwrap_or_else(|| {
            crate::control::store::sqlite_url(&self.data_dir.join("whetstone.db"))
        })
    }
}

/// `HOST-PID-XXXX`: readable in logs, and unique even for two processes of
/// one host or a pid reused after a restart.
fn node_id() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}
