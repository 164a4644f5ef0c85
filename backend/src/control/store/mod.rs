//! The store: services, the job queue, logs, artifacts, accounts. SQLite in
//! the data folder by default, or PostgreSQL (`whet serve --database
//! postgres://…`) so that several nodes share one.
//!
//! One set of statements serves both through sqlx's `Any` driver: parameters
//! are `$N` (SQLite reads them as `?N`), upserts are `ON CONFLICT`, new ids
//! come back through `RETURNING`. The few places that must differ ask
//! [`Dialect`]. Both databases get the same schema from their own migration
//! folder (`migrations/sqlite`, `migrations/postgres`, numbered alike).
//!
//! Every write that must not be half-done (a service and its first job) goes
//! through one transaction, so a rejected or crashed request leaves nothing.

use std::path::Path;

use serde::{Deserialize, Serialize};
use shared::api::{LogLine, ModelSignature, ServiceStatus};
use shared::ServiceConfig;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

mod accounts;
mod nodes;
mod traffic;
pub use accounts::UserRow;
pub use nodes::{NodeRow, NodeShare, Placement, PLACE_CHANNEL};
pub use traffic::{canary_key, split_key, Weights};

/// What the store can fail with. Conflicts and missing rows are the
/// caller's to explain; the rest is the database's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// A stored value that does not read back (a column out of its domain).
    #[error("store: {0}")]
    Corrupt(String),
    /// The `--database` URL is not one the store can use.
    #[error("{0}")]
    Url(String),
    #[error("database: {0}")]
    Database(sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        match &e {
            // Callers look before they insert; two nodes (or two requests)
            // that both looked first meet here, and the loser is told so.
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(
                "it was just created by another request; look again and retry".into(),
            ),
            _ => StoreError::Database(e),
        }
    }
}

impl StoreError {
    /// Whether the database could not be reached (connection lost or
    /// refused, the server shutting down or restarting), as opposed to a
    /// statement it refused: worth trying again shortly.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
                // SQLSTATE class 08 (connection exception) and 57P
                // (operator intervention: shutdown, restart, crash).
                sqlx::Error::Database(d) => d
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Runs `op` again while the database cannot be reached, for up to `budget`
/// (backing off from 100 ms to 2 s); any other error, or one after the
/// budget, is returned. For writes a deploy cannot do without and that are
/// safe to repeat, so a database restart does not fail the deploy.
pub async fn retry_transient<T, F, Fut>(
    budget: std::time::Duration,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        match op().await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!("database unreachable, retrying in {wait:?}: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Which database the store speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The dialect a `--database` URL names, or what was expected.
    pub fn of_url(url: &str) -> Result<Dialect, String> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else {
            Err(format!(
                "--database: expected sqlite://PATH or postgres://USER@HOST:PORT/DB, got '{}'",
                redact(url)
            ))
        }
    }
}

/// Milliseconds since the Unix epoch: leases and heartbeats are compared as
/// numbers, in one clock for all nodes (their clocks must agree to well
/// within a lease).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    /// Seals prediction tokens at rest (`with_sealer`); without one (tests
    /// of the store alone) they are kept as they are.
    sealer: Option<std::sync::Arc<crate::control::sealing::Sealer>>,
}

/// A service row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceRow {
    pub name: String,
    /// The config as accepted (validated before it was stored).
    pub config: ServiceConfig,
    pub status: ServiceStatus,
    pub stage: Option<String>,
    pub message: Option<String>,
    pub token: String,
    pub instances: u32,
    pub running: u32,
    pub model_dir: Option<String>,
    pub model_file: Option<String>,
    pub model_sha256: Option<String>,
    pub signature: Option<ModelSignature>,
    pub artifact: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The team the service belongs to.
    pub team: String,
    /// The version served (see [`VersionRow`]).
    pub current_version: i64,
}

/// Model folders, artifact keys and uploads that something stored names.
#[derive(Debug, Clone, Default)]
pub struct Referenced {
    pub model_dirs: std::collections::BTreeSet<String>,
    pub artifacts: std::collections::BTreeSet<String>,
    /// The SHA-256 of each `upload://SHA/NAME` a config names: a redeploy
    /// or rollback resolves it again.
    pub uploads: std::collections::BTreeSet<String>,
}

impl Referenced {
    fn add(&mut self, row: &AnyRow) -> Result<(), StoreError> {
        let text = |c: &str| row.try_get::<Option<String>, _>(c).ok().flatten();
        if let Some(d) = text("model_dir") {
            self.model_dirs.insert(d);
        }
        if let Some(a) = text("artifact") {
            self.artifacts.insert(a);
        }
        if let Some(config) = text("config") {
            for (i, _) in config.match_indices("upload://") {
                let sha: String = config[i + "upload://".len()..]
                    .chars()
                    .take_while(char::is_ascii_hexdigit)
                    .collect();
                if !sha.is_empty() {
                    self.uploads.insert(sha);
                }
            }
        }
        Ok(())
    }
}

/// One version of a service: what a create or modify asked for.
#[derive(Debug, Clone)]
pub struct VersionRow {
    pub version: i64,
    pub config: ServiceConfig,
    /// The model it resolved to (absent only for rows written before
    /// versions existed by a service that had no model yet).
    pub model: Option<ResolvedModel>,
    /// The artifact it deployed, once it has.
    pub artifact: Option<String>,
    pub author: String,
    pub created_at: String,
}

/// What one node measured of a service over the autoscaler's last period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeLoad {
    /// Requests its instances answered per second.
    pub qps: f64,
    /// Average CPU use of its instances, per cent of each one's cores
    /// (`None` when it could not be read).
    pub cpu: Option<f64>,
    /// Instances of the service it runs.
    pub instances: u32,
}

/// What a redeploy does to the service's versions.
#[derive(Debug, Clone, Copy)]
pub enum VersionChange<'a> {
    /// Scale, stop, start: the same version.
    Same,
    /// A modify: a new latest version, served from now on.
    New { author: &'a str },
    /// A rollback (or forward again): serve this existing version.
    Switch(i64),
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub service: String,
    /// The config this job deploys (a snapshot: the service's may change).
    pub config: ServiceConfig,
    pub stage: Option<String>,
    pub attempts: i64,
    /// The node that holds (or last held) the job's lease.
    pub node: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ArtifactRow {
    pub key: String,
    pub dir: String,
    pub optimized: bool,
    pub report: Option<String>,
}

fn service_from_row(r: &AnyRow) -> Result<ServiceRow, StoreError> {
    let status: String = r.try_get("status")?;
    Ok(ServiceRow {
        name: r.try_get("name")?,
        config: json_column(r, "config")?,
        status: ServiceStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("bad status {status} in store")))?,
        stage: r.try_get("stage")?,
        message: r.try_get("message")?,
        token: r.try_get("token")?,
        instances: r.try_get::<i64, _>("instances")? as u32,
        running: r.try_get::<i64, _>("running")? as u32,
        model_dir: r.try_get("model_dir")?,
        model_file: r.try_get("model_file")?,
        model_sha256: r.try_get("model_sha256")?,
        signature: r
            .try_get::<Option<String>, _>("signature")?
            .map(|s| parse_json("signature", &s))
            .transpose()?,
        artifact: r.try_get("artifact")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        team: r.try_get("team")?,
        current_version: r.try_get("current_version")?,
    })
}

fn version_from_row(r: &AnyRow) -> Result<VersionRow, StoreError> {
    let model = match (
        r.try_get::<Option<String>, _>("model_dir")?,
        r.try_get::<Option<String>, _>("model_file")?,
        r.try_get::<Option<String>, _>("model_sha256")?,
        r.try_get::<Option<String>, _>("signature")?,
    ) {
        (Some(dir), Some(file), Some(sha256), Some(sig)) => Some(ResolvedModel {
            dir,
            file,
            sha256,
            signature: parse_json("signature", &sig)?,
        }),
        _ => None,
    };
    Ok(VersionRow {
        version: r.try_get("version")?,
        config: json_column(r, "config")?,
        model,
        artifact: r.try_get("artifact")?,
        author: r.try_get("author")?,
        created_at: r.try_get("created_at")?,
    })
}

/// The highest version number of `service` (0 when it has none), read
/// through `db` (the pool, or a transaction that is about to add one).
async fn max_version<'e, E>(db: E, service: &str) -> Result<i64, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let v: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM versions WHERE service = $1")
        .bind(service)
        .fetch_one(db)
        .await?
        .try_get("v")?;
    Ok(v.unwrap_or(0))
}

/// Records version `version` of `service` inside a transaction.
#[allow(clippy::too_many_arguments)]
async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    service: &str,
    version: i64,
    config: &str,
    model: &ResolvedModel,
    signature: &str,
    author: &str,
    at: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO versions (service, version, config, model_dir, model_file, model_sha256, signature, author, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(service)
    .bind(version)
    .bind(config)
    .bind(&model.dir)
    .bind(&model.file)
    .bind(&model.sha256)
    .bind(signature)
    .bind(author)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn job_from_row(r: &AnyRow) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        id: r.try_get("id")?,
        service: r.try_get("service")?,
        config: json_column(r, "config")?,
        stage: r.try_get("stage")?,
        attempts: r.try_get("attempts")?,
        node: r.try_get("node")?,
    })
}

/// A JSON column read back as its type.
fn json_column<T: serde::de::DeserializeOwned>(r: &AnyRow, column: &str) -> Result<T, StoreError> {
    let text: String = r.try_get(column)?;
    parse_json(column, &text)
}

fn parse_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

/// A config as stored: without its `token`, which is the service's token
/// (sealed in its row), not kept in the clear beside it.
fn config_json(cfg: &ServiceConfig) -> Result<String, StoreError> {
    let mut cfg = cfg.clone();
    cfg.token = None;
    to_json("config", &cfg)
}

fn to_json<T: Serialize>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The model a new job will deploy, resolved before anything is stored.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub dir: String,
    pub file: String,
    pub sha256: String,
    pub signature: ModelSignature,
}

impl Store {
    /// The embedded default: a SQLite file (created when missing).
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Store::connect(&sqlite_url(path)).await
    }

    /// `sqlite://PATH` or `postgres://user@host:port/db` (`postgresql://`
    /// too): connects, and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of_url(url).map_err(StoreError::Url)?;
        let opts: AnyConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Url(format!("--database {}: {e}", redact(url))))?;
        let pool = AnyPoolOptions::new()
            .max_connections(match dialect {
                // One writer at a time in SQLite: more connections only wait.
                Dialect::Sqlite => 4,
                Dialect::Postgres => 16,
            })
            .acquire_timeout(std::time::Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        // What the embedded store has always run with: WAL so
                        // readers never wait for the writer, a busy wait
                        // instead of an error when they meet, and the
                        // foreign keys the schema declares enforced.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            conn.execute(pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        match dialect {
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        let store = Store {
            pool,
            dialect,
            sealer: None,
        };
        // SQL cannot hash portably: links kept in the clear by an older
        // server are hashed here, once.
        store.hash_share_tokens().await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// This store, sealing prediction tokens with `sealer` from now on; the
    /// tokens an older server kept in the clear (in the services' rows and
    /// in the configs of services, versions and jobs) are sealed or
    /// removed now.
    pub async fn with_sealer(
        mut self,
        sealer: std::sync::Arc<crate::control::sealing::Sealer>,
    ) -> Result<Store, StoreError> {
        self.sealer = Some(sealer);
        let rows = sqlx::query("SELECT name, token FROM services")
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            let (name, token): (String, String) = (r.try_get("name")?, r.try_get("token")?);
            // A key that does not open what is stored stops the start here,
            // rather than every request later.
            self.open_token(&token)?;
            if !crate::control::sealing::Sealer::is_sealed(&token) {
                sqlx::query("UPDATE services SET token = $1 WHERE name = $2")
                    .bind(self.seal_token(&token)?)
                    .bind(&name)
                    .execute(&self.pool)
                    .await?;
            }
        }
        // A config's own `token` is the service's token, applied at create
        // or modify: it is not kept in the configs.
        for (table, key) in [
            ("services", "name"),
            ("versions", "service || '#' || version"),
            ("jobs", "id"),
        ] {
            let sql =
                format!("SELECT {key} AS k, config FROM {table} WHERE config LIKE '%\"token\"%'");
            for r in sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&self.pool)
                .await?
            {
                let config: String = r.try_get("config")?;
                let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&config) else {
                    continue;
                };
                if v.as_object_mut().and_then(|o| o.remove("token")).is_none() {
                    continue;
                }
                let update = format!("UPDATE {table} SET config = $1 WHERE config = $2");
                sqlx::query(sqlx::AssertSqlSafe(update))
                    .bind(v.to_string())
                    .bind(&config)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(self)
    }

    fn seal_token(&self, token: &str) -> Result<String, StoreError> {
        match &self.sealer {
            Some(s) => s.seal(token).map_err(StoreError::Corrupt),
            None => Ok(token.to_string()),
        }
    }

    fn open_token(&self, stored: &str) -> Result<String, StoreError> {
        match &self.sealer {
            Some(s) => s.open(stored).map_err(StoreError::Corrupt),
            None => Ok(stored.to_string()),
        }
    }

    fn opened(&self, mut row: ServiceRow) -> Result<ServiceRow, StoreError> {
        row.token = self.open_token(&row.token)?;
        Ok(row)
    }

    /// Tells the other nodes (PostgreSQL's NOTIFY on `channel`); nothing on
    /// SQLite, where this node is the only one.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if self.dialect == Dialect::Postgres {
            sqlx::query(NOTIFY)
                .bind(channel)
                .bind(payload)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// `select` that locks the rows it reads until the transaction ends
    /// (PostgreSQL; a SQLite write transaction already excludes every other
    /// writer).
    fn locking(&self, select: &'static str) -> sqlx::AssertSqlSafe<String> {
        sqlx::AssertSqlSafe(match self.dialect {
            Dialect::Sqlite => select.to_string(),
            Dialect::Postgres => format!("{select} FOR UPDATE"),
        })
    }

    /// A transaction that will write. SQLite's plain `BEGIN` takes a read
    /// snapshot first; if another connection writes before this one's first
    /// write, the upgrade fails at once with "database is locked" (the busy
    /// timeout cannot help: the snapshot is already stale). `BEGIN IMMEDIATE`
    /// takes the write lock up front and waits its turn instead.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    // ---- services and jobs --------------------------------------------------

    pub async fn get_service(&self, name: &str) -> Result<Option<ServiceRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM services WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(|r| service_from_row(r).and_then(|s| self.opened(s)))
            .transpose()
    }

    pub async fn list_services(&self) -> Result<Vec<ServiceRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM services ORDER BY created_at, name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| service_from_row(r).and_then(|s| self.opened(s)))
            .collect()
    }

    /// Inserts a new service (named and sized by its config) and its first
    /// deploy job atomically. Returns the job id, or `Conflict` when the name
    /// is taken. `job` says which worker pool deploys it (the caller's rule,
    /// `resources::job_kind`).
    pub async fn create_service(
        &self,
        cfg: &ServiceConfig,
        job: &str,
        token: &str,
        model: &ResolvedModel,
        team: &str,
        author: &str,
    ) -> Result<i64, StoreError> {
        let (name, instances) = (cfg.name.as_str(), cfg.metadata.instance);
        let config = config_json(cfg)?;
        let signature = to_json("signature", &model.signature)?;
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM services WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_some() {
            return Err(StoreError::Conflict(format!(
                "a service named '{name}' already exists; use `whet modify` to redeploy it"
            )));
        }
        let ts = now();
        sqlx::query(
            "INSERT INTO services (name, config, status, stage, token, instances, model_dir, model_file, model_sha256, signature, created_at, updated_at, team)
             VALUES ($1, $2, 'Creating', 'queued', $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(name)
        .bind(&config)
        .bind(self.seal_token(token)?)
        .bind(instances as i64)
        .bind(&model.dir)
        .bind(&model.file)
        .bind(&model.sha256)
        .bind(&signature)
        .bind(&ts)
        .bind(&ts)
        .bind(team)
        .execute(&mut *tx)
        .await?;
        // A name deleted and created again starts its versions afresh.
        sqlx::query("DELETE FROM versions WHERE service = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        insert_version(&mut tx, name, 1, &config, model, &signature, author, &ts).await?;
        let id = insert_job(&mut tx, self.dialect, name, &config, job).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Queues a redeploy with a new config (modify, scale, start, rollback),
    /// sized by its `metadata.instance`; `version` says what it does to the
    /// service's versions. Fails with `Conflict` while another job of the
    /// service is pending.
    pub async fn queue_redeploy(
        &self,
        name: &str,
        cfg: &ServiceConfig,
        job: &str,
        model: Option<&ResolvedModel>,
        version: VersionChange<'_>,
    ) -> Result<i64, StoreError> {
        let instances = cfg.metadata.instance;
        let config = config_json(cfg)?;
        let signature = model
            .map(|m| to_json("signature", &m.signature))
            .transpose()?;
        let mut tx = self.begin_write().await?;
        // Locked until commit, so two modifies of one service (on two nodes)
        // cannot both find no pending job.
        let row = sqlx::query(self.locking("SELECT status FROM services WHERE name = $1"))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(format!("no service named '{name}'")));
        };
        let pending =
            sqlx::query("SELECT 1 FROM jobs WHERE service = $1 AND state IN ('queued','running')")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        if pending.is_some() {
            return Err(StoreError::Conflict(format!(
                "a deploy of '{name}' is already in progress; wait for it to finish"
            )));
        }
        let status: String = row.try_get("status")?;
        let next = if status == "Running" {
            "Updating"
        } else {
            "Creating"
        };
        sqlx::query("UPDATE services SET config = $1, instances = $2, status = $3, stage = 'queued', message = NULL, updated_at = $4 WHERE name = $5")
            .bind(&config)
            .bind(instances as i64)
            .bind(next)
            .bind(now())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if let Some(m) = model {
            sqlx::query("UPDATE services SET model_dir = $1, model_file = $2, model_sha256 = $3, signature = $4 WHERE name = $5")
                .bind(&m.dir)
                .bind(&m.file)
                .bind(&m.sha256)
                .bind(&signature)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        let serve = match version {
            VersionChange::Same => None,
            VersionChange::Switch(n) => Some(n),
            VersionChange::New { author } => {
                let (Some(m), Some(sig)) = (model, &signature) else {
                    return Err(StoreError::Corrupt(
                        "a new version needs the model it resolved to".into(),
                    ));
                };
                let next = max_version(&mut *tx, name).await? + 1;
                insert_version(&mut tx, name, next, &config, m, sig, author, &now()).await?;
                Some(next)
            }
        };
        if let Some(n) = serve {
            sqlx::query("UPDATE services SET current_version = $1 WHERE name = $2")
                .bind(n)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        let id = insert_job(&mut tx, self.dialect, name, &config, job).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Sets service `name`'s prediction token (a rotation), and tells the
    /// other nodes, which take it at their next look at their placements.
    /// False when there is no such service.
    pub async fn set_service_token(&self, name: &str, token: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("UPDATE services SET token = $1, updated_at = $2 WHERE name = $3")
            .bind(self.seal_token(token)?)
            .bind(now())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        self.notify_placed(&mut tx, name).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// Every service's prediction token, by name.
    pub async fn service_tokens(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT name, token FROM services")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let token: String = r.try_get("token")?;
                Ok((r.try_get("name")?, self.open_token(&token)?))
            })
            .collect()
    }

    pub async fn has_pending_job(&self, name: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM jobs WHERE service = $1 AND state IN ('queued','running')")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Deletes a service and everything of it, unless a deploy of it is
    /// running: `Conflict` then. The look and the delete are one write
    /// transaction, so a worker cannot claim a queued job in between and go
    /// on deploying (and logging) a service that is gone; its lines would
    /// land in the log of a later service of the same name.
    pub async fn delete_service(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        // PostgreSQL: the row locks make a claim that is under way finish
        // first (its job is then seen running) or skip these jobs.
        let running = sqlx::query(self.locking("SELECT state FROM jobs WHERE service = $1"))
            .bind(name)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("state"))
            .collect::<Result<Vec<_>, _>>()?
            .iter()
            .any(|s| s == "running");
        if running {
            return Err(StoreError::Conflict(format!(
                "a deploy of '{name}' is running; delete it after it finishes"
            )));
        }
        for q in [
            "DELETE FROM services WHERE name = $1",
            "DELETE FROM jobs WHERE service = $1",
            "DELETE FROM logs WHERE service = $1",
            // A later service of the same name must not be shown to old links.
            "DELETE FROM share_links WHERE service = $1",
            "DELETE FROM placements WHERE service = $1",
            "DELETE FROM versions WHERE service = $1",
            "DELETE FROM service_load WHERE service = $1",
            "DELETE FROM traffic WHERE service = $1",
            // The instances of versions served beside the current one.
            "DELETE FROM placements WHERE substr(service, 1, length($1) + 2) = $1 || '#v'",
        ] {
            sqlx::query(q).bind(name).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_status(
        &self,
        name: &str,
        status: ServiceStatus,
        stage: Option<&str>,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE services SET status = $1, stage = $2, message = $3, updated_at = $4 WHERE name = $5",
        )
        .bind(status.as_str())
        .bind(stage)
        .bind(message)
        .bind(now())
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_running(
        &self,
        name: &str,
        running: u32,
        artifact: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE services SET running = $1, artifact = COALESCE($2, artifact), updated_at = $3 WHERE name = $4")
            .bind(running as i64)
            .bind(artifact)
            .bind(now())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if let Some(key) = artifact {
            // The version served has deployed this artifact: a rollback to
            // it serves the same one.
            sqlx::query(
                "UPDATE versions SET artifact = $1 WHERE service = $2
                 AND version = (SELECT current_version FROM services WHERE name = $2)",
            )
            .bind(key)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records the load node `node` measured on `service` at `at_ms`.
    pub async fn report_load(
        &self,
        service: &str,
        node: &str,
        load: &NodeLoad,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO service_load (service, node, qps, cpu, instances, at_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (service, node) DO UPDATE SET qps = excluded.qps, cpu = excluded.cpu,
             instances = excluded.instances, at_ms = excluded.at_ms",
        )
        .bind(service)
        .bind(node)
        .bind(load.qps)
        .bind(load.cpu)
        .bind(i64::from(load.instances))
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The loads of `service` reported at or after `since_ms`, one per node.
    pub async fn service_loads(
        &self,
        service: &str,
        since_ms: i64,
    ) -> Result<Vec<NodeLoad>, StoreError> {
        let rows = sqlx::query(
            "SELECT qps, cpu, instances FROM service_load WHERE service = $1 AND at_ms >= $2 ORDER BY node",
        )
        .bind(service)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeLoad {
                    qps: r.try_get("qps")?,
                    cpu: r.try_get("cpu")?,
                    instances: u32::try_from(r.try_get::<i64, _>("instances")?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Every version of `name`, oldest first.
    pub async fn versions(&self, name: &str) -> Result<Vec<VersionRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM versions WHERE service = $1 ORDER BY version")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Version `version` of `name`, if there is one.
    pub async fn version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<Option<VersionRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM versions WHERE service = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// The highest version number of `name` (0 when it has none).
    pub async fn latest_version(&self, name: &str) -> Result<i64, StoreError> {
        max_version(&self.pool, name).await
    }

    /// Claims the oldest queued job of one of `kinds` (see
    /// `resources::job_kind`) whose service has no running job.
    /// The claiming `node` holds the job's lease until `lease_until` (Unix
    /// ms) and renews it with [`Store::renew_lease`] while it works.
    pub async fn claim_job(
        &self,
        kinds: &[String],
        node: &str,
        lease_until: i64,
    ) -> Result<Option<JobRow>, StoreError> {
        if kinds.is_empty() {
            return Ok(None);
        }
        // PostgreSQL: nodes that claim at once skip each other's locked rows
        // instead of queueing behind them. SQLite has one writer at a time,
        // so the statement is atomic as it is.
        let lock = match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = $1,
                             node = $2, lease_until = $3
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued'
                         AND kind IN ({})
                         AND service NOT IN (SELECT service FROM jobs WHERE state = 'running')
                         ORDER BY id LIMIT 1{lock})
             RETURNING id, service, config, stage, attempts, node",
            params(4, kinds.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now())
            .bind(node)
            .bind(lease_until);
        for k in kinds {
            q = q.bind(k);
        }
        let row = q.fetch_optional(&self.pool).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    pub async fn set_job_stage(
        &self,
        id: i64,
        service: &str,
        stage: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET stage = $1 WHERE id = $2")
            .bind(stage)
            .bind(id)
            .execute(&self.pool)
            .await?;
        sqlx::query("UPDATE services SET stage = $1, updated_at = $2 WHERE name = $3")
            .bind(stage)
            .bind(now())
            .bind(service)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn finish_job(
        &self,
        id: i64,
        ok: bool,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET state = $1, error = $2, finished_at = $3 WHERE id = $4")
            .bind(if ok { "done" } else { "failed" })
            .bind(error)
            .bind(now())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Jobs a previous server process was running when it died.
    pub async fn interrupted_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query("SELECT id, service, config, stage, attempts, node FROM jobs WHERE state = 'running' ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Queued jobs of a kind that none of `kinds` (what this server's workers
    /// take) is: a GPU deploy queued before a restart that lost its GPUs.
    pub async fn unclaimable_jobs(&self, kinds: &[String]) -> Result<Vec<JobRow>, StoreError> {
        let not_ours = if kinds.is_empty() {
            String::new()
        } else {
            format!(" AND kind NOT IN ({})", params(1, kinds.len()))
        };
        let sql = format!(
            "SELECT id, service, config, stage, attempts, node FROM jobs WHERE state = 'queued'{not_ours} ORDER BY id"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for k in kinds {
            q = q.bind(k);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn requeue_job(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET state = 'queued' WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Extends `node`'s lease on running job `id`; false when the node no
    /// longer holds it (the lease ran out and another node took the job over,
    /// or the job ended).
    pub async fn renew_lease(&self, id: i64, node: &str, until: i64) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND node = $3 AND state = 'running'",
        )
        .bind(until)
        .bind(id)
        .bind(node)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Running jobs whose lease ran out before `now_ms` (or that have none:
    /// claimed before leases existed).
    /// Job `id` as it is stored now.
    pub async fn get_job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, service, config, stage, attempts, node FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    pub async fn expired_jobs(&self, now_ms: i64) -> Result<Vec<JobRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, service, config, stage, attempts, node FROM jobs WHERE state = 'running'
             AND (lease_until IS NULL OR lease_until < $1) ORDER BY id",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Moves an expired job's lease to `node` (until `until`), so that it
    /// alone decides what happens to the job next; false when the job was
    /// not expired any more (renewed, ended, or taken over first), so exactly
    /// one node takes each job over.
    pub async fn take_over(
        &self,
        id: i64,
        now_ms: i64,
        node: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE jobs SET node = $3, lease_until = $4
             WHERE id = $1 AND state = 'running' AND (lease_until IS NULL OR lease_until < $2)",
        )
        .bind(id)
        .bind(now_ms)
        .bind(node)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn count_jobs(&self, service: &str, state: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM jobs WHERE service = $1 AND state = $2")
                .bind(service)
                .bind(state)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }

    // ---- logs -------------------------------------------------------------

    /// Stores a log line; `None` when it names a job that no longer exists
    /// (its service was deleted): the line is dropped rather than shown in
    /// the log of a later service of the same name.
    pub async fn append_log(
        &self,
        service: &str,
        job_id: Option<i64>,
        line: &str,
    ) -> Result<Option<LogLine>, StoreError> {
        let ts = now();
        let row = sqlx::query(
            "INSERT INTO logs (service, job_id, ts, line)
             SELECT $1, CAST($2 AS BIGINT), $3, $4
             WHERE CAST($2 AS BIGINT) IS NULL
                OR EXISTS (SELECT 1 FROM jobs WHERE id = CAST($2 AS BIGINT) AND service = $1)
             RETURNING id",
        )
        .bind(service)
        .bind(job_id)
        .bind(&ts)
        .bind(line)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(LogLine {
                id: row.try_get("id")?,
                ts,
                line: line.to_string(),
            })
        })
        .transpose()
    }

    /// Deletes log lines written before `before` (an RFC 3339 time, as
    /// [`now`] writes them), and of each service all but its last `keep`
    /// lines. Returns how many lines went.
    pub async fn prune_logs(&self, before: &str, keep: i64) -> Result<u64, StoreError> {
        let mut gone = sqlx::query("DELETE FROM logs WHERE ts < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let over = sqlx::query("SELECT service FROM logs GROUP BY service HAVING COUNT(*) > $1")
            .bind(keep)
            .fetch_all(&self.pool)
            .await?;
        for row in over {
            let service: String = row.try_get("service")?;
            // The id of the oldest line kept; every line before it goes.
            gone += sqlx::query(
                "DELETE FROM logs WHERE service = $1 AND id < (
                     SELECT id FROM logs WHERE service = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .bind(&service)
            .bind(keep - 1)
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(gone)
    }

    /// What stored files are in use: the model folders and artifact keys
    /// that any service, version or placement names.
    pub async fn referenced(&self) -> Result<Referenced, StoreError> {
        let mut r = Referenced::default();
        for q in [
            "SELECT model_dir, artifact, config FROM services",
            "SELECT model_dir, artifact, config FROM versions",
            "SELECT CAST(NULL AS TEXT) AS model_dir, artifact, CAST(NULL AS TEXT) AS config FROM placements",
            // A job's config names its model before any row records it.
            "SELECT CAST(NULL AS TEXT) AS model_dir, CAST(NULL AS TEXT) AS artifact, config FROM jobs WHERE state IN ('queued', 'running')",
        ] {
            for row in sqlx::query(q).fetch_all(&self.pool).await? {
                r.add(&row)?;
            }
        }
        Ok(r)
    }

    /// Forgets a collected artifact (its folder is gone).
    pub async fn delete_artifact(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM artifacts WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The model folders and artifact keys of the services of `team`, in
    /// every version: what counts against its storage quota.
    pub async fn team_storage(&self, team: &str) -> Result<Referenced, StoreError> {
        let mut r = Referenced::default();
        let rows = sqlx::query(
            "SELECT v.model_dir, v.artifact, CAST(NULL AS TEXT) AS config FROM versions v JOIN services s ON s.name = v.service
             WHERE s.team = $1",
        )
        .bind(team)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            r.add(&row)?;
        }
        Ok(r)
    }

    pub async fn logs_after(
        &self,
        service: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ts, line FROM logs WHERE service = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(service)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LogLine {
                    id: r.try_get("id")?,
                    ts: r.try_get("ts")?,
                    line: r.try_get("line")?,
                })
            })
            .collect()
    }

    // ---- artifacts ----------------------------------------------------------

    pub async fn get_artifact(&self, key: &str) -> Result<Option<ArtifactRow>, StoreError> {
        let row = sqlx::query("SELECT key, dir, optimized, report FROM artifacts WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| -> Result<ArtifactRow, sqlx::Error> {
                Ok(ArtifactRow {
                    key: r.try_get("key")?,
                    dir: r.try_get("dir")?,
                    optimized: r.try_get::<i64, _>("optimized")? != 0,
                    report: r.try_get("report")?,
                })
            })
            .transpose()?)
    }

    pub async fn put_artifact(
        &self,
        key: &str,
        dir: &str,
        model_sha256: &str,
        optimized: bool,
        report: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO artifacts (key, dir, model_sha256, optimized, report, created_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (key) DO UPDATE SET dir = excluded.dir, model_sha256 = excluded.model_sha256,
             optimized = excluded.optimized, report = excluded.report, created_at = excluded.created_at",
        )
            .bind(key)
            .bind(dir)
            .bind(model_sha256)
            .bind(optimized as i64)
            .bind(report)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn count_artifacts(&self, optimized: bool) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM artifacts WHERE optimized = $1")
                .bind(optimized as i64)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }
}

async fn insert_job(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    dialect: Dialect,
    service: &str,
    config: &str,
    kind: &str,
) -> Result<i64, StoreError> {
    let row = sqlx::query("INSERT INTO jobs (service, config, state, created_at, kind) VALUES ($1, $2, 'queued', $3, $4) RETURNING id")
        .bind(service)
        .bind(config)
        .bind(now())
        .bind(kind)
        .fetch_one(&mut **tx)
        .await?;
    if dialect == Dialect::Postgres {
        // Wakes the idle workers of every node when the job is committed.
        sqlx::query(NOTIFY)
            .bind(JOB_CHANNEL)
            .bind("")
            .execute(&mut **tx)
            .await?;
    }
    Ok(row.try_get("id")?)
}

/// The LISTEN/NOTIFY channel of queued deploy jobs (the payload is empty);
/// `control::notify` listens on both.
pub const JOB_CHANNEL: &str = "whet_jobs";
/// The channel of log lines stored and deploys ended (`LogBus`'s notes).
pub const LOG_CHANNEL: &str = "whet_logs";

/// PostgreSQL's NOTIFY with bound arguments (the channel, the payload);
/// delivered when the transaction commits. `pg_notify` returns `void`,
/// which the `Any` driver cannot decode, so only a count comes back.
const NOTIFY: &str = "SELECT count(*) FROM (SELECT pg_notify($1, $2)) AS sent";

/// `$from, $from+1, …` (`n` of them): the placeholders of a list bound one
/// value each.
fn params(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The SQLite URL of a file, with the characters a URL would read otherwise
/// (`%`, `?`, `#`, space) escaped; sqlx decodes them back.
pub fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    for c in path.display().to_string().chars() {
        match c {
            '%' | '?' | '#' | ' ' => url.push_str(&format!("%{:02X}", c as u32)),
            c => url.push(c),
        }
    }
    url.push_str("?mode=rwc");
    url
}

/// A database URL fit for a log or an error: without its password.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
