//! The embedded SQLite store: services, the job queue, logs, artifacts, tokens.
//!
//! Every write that must not be half-done (a service and its first job) goes
//! through one transaction, so a rejected or crashed request leaves nothing.

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use shared::api::{LogLine, ModelSignature, ServiceStatus};
use shared::ServiceConfig;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

mod accounts;
pub use accounts::UserRow;

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
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
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
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: i64,
    pub service: String,
    /// The config this job deploys (a snapshot: the service's may change).
    pub config: ServiceConfig,
    pub stage: Option<String>,
    pub attempts: i64,
}

#[derive(Debug, Clone)]
pub struct ArtifactRow {
    pub key: String,
    pub dir: String,
    pub optimized: bool,
    pub report: Option<String>,
}

fn service_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ServiceRow, StoreError> {
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
    })
}

fn job_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        id: r.try_get("id")?,
        service: r.try_get("service")?,
        config: json_column(r, "config")?,
        stage: r.try_get("stage")?,
        attempts: r.try_get("attempts")?,
    })
}

/// A JSON column read back as its type.
fn json_column<T: serde::de::DeserializeOwned>(
    r: &sqlx::sqlite::SqliteRow,
    column: &str,
) -> Result<T, StoreError> {
    let text: String = r.try_get(column)?;
    parse_json(column, &text)
}

fn parse_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
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
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(Store { pool })
    }

    // ---- services and jobs --------------------------------------------------

    pub async fn get_service(&self, name: &str) -> Result<Option<ServiceRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM services WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(service_from_row).transpose()
    }

    pub async fn list_services(&self) -> Result<Vec<ServiceRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM services ORDER BY created_at, name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(service_from_row).collect()
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
    ) -> Result<i64, StoreError> {
        let (name, instances) = (cfg.name.as_str(), cfg.metadata.instance);
        let config = to_json("config", cfg)?;
        let signature = to_json("signature", &model.signature)?;
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM services WHERE name = ?")
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
             VALUES (?, ?, 'Creating', 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(name)
        .bind(&config)
        .bind(token)
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
        let id = insert_job(&mut tx, name, &config, job).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Queues a redeploy with a new config (modify, scale, start), sized by
    /// its `metadata.instance`. Fails with `Conflict` while another job of
    /// the service is pending.
    pub async fn queue_redeploy(
        &self,
        name: &str,
        cfg: &ServiceConfig,
        job: &str,
        model: Option<&ResolvedModel>,
    ) -> Result<i64, StoreError> {
        let instances = cfg.metadata.instance;
        let config = to_json("config", cfg)?;
        let signature = model
            .map(|m| to_json("signature", &m.signature))
            .transpose()?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT status FROM services WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Err(StoreError::NotFound(format!("no service named '{name}'")));
        };
        let pending =
            sqlx::query("SELECT 1 FROM jobs WHERE service = ? AND state IN ('queued','running')")
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
        sqlx::query("UPDATE services SET config = ?, instances = ?, status = ?, stage = 'queued', message = NULL, updated_at = ? WHERE name = ?")
            .bind(&config)
            .bind(instances as i64)
            .bind(next)
            .bind(now())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if let Some(m) = model {
            sqlx::query("UPDATE services SET model_dir = ?, model_file = ?, model_sha256 = ?, signature = ? WHERE name = ?")
                .bind(&m.dir)
                .bind(&m.file)
                .bind(&m.sha256)
                .bind(&signature)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        let id = insert_job(&mut tx, name, &config, job).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn has_pending_job(&self, name: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM jobs WHERE service = ? AND state IN ('queued','running')")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    pub async fn delete_service(&self, name: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for q in [
            "DELETE FROM services WHERE name = ?",
            "DELETE FROM jobs WHERE service = ?",
            "DELETE FROM logs WHERE service = ?",
            // A later service of the same name must not be shown to old links.
            "DELETE FROM share_links WHERE service = ?",
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
            "UPDATE services SET status = ?, stage = ?, message = ?, updated_at = ? WHERE name = ?",
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
        sqlx::query("UPDATE services SET running = ?, artifact = COALESCE(?, artifact), updated_at = ? WHERE name = ?")
            .bind(running as i64)
            .bind(artifact)
            .bind(now())
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Claims the oldest queued job of one of `kinds` (see
    /// `resources::job_kind`) whose service has no running job.
    pub async fn claim_job(&self, kinds: &[String]) -> Result<Option<JobRow>, StoreError> {
        // The kinds go in as one JSON array, so the statement stays fixed.
        let kinds = to_json("kinds", &kinds)?;
        let row = sqlx::query(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued'
                         AND kind IN (SELECT value FROM json_each(?))
                         AND service NOT IN (SELECT service FROM jobs WHERE state = 'running')
                         ORDER BY id LIMIT 1)
             RETURNING id, service, config, stage, attempts",
        )
        .bind(now())
        .bind(kinds)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    pub async fn set_job_stage(
        &self,
        id: i64,
        service: &str,
        stage: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET stage = ? WHERE id = ?")
            .bind(stage)
            .bind(id)
            .execute(&self.pool)
            .await?;
        sqlx::query("UPDATE services SET stage = ?, updated_at = ? WHERE name = ?")
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
        sqlx::query("UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE id = ?")
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
        let rows = sqlx::query("SELECT id, service, config, stage, attempts FROM jobs WHERE state = 'running' ORDER BY id").fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Queued jobs of a kind that none of `kinds` (what this server's workers
    /// take) is: a GPU deploy queued before a restart that lost its GPUs.
    pub async fn unclaimable_jobs(&self, kinds: &[String]) -> Result<Vec<JobRow>, StoreError> {
        let kinds = to_json("kinds", &kinds)?;
        let rows = sqlx::query(
            "SELECT id, service, config, stage, attempts FROM jobs WHERE state = 'queued'
             AND kind NOT IN (SELECT value FROM json_each(?)) ORDER BY id",
        )
        .bind(kinds)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    pub async fn requeue_job(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET state = 'queued' WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn count_jobs(&self, service: &str, state: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM jobs WHERE service = ? AND state = ?")
                .bind(service)
                .bind(state)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }

    // ---- logs -------------------------------------------------------------

    pub async fn append_log(
        &self,
        service: &str,
        job_id: Option<i64>,
        line: &str,
    ) -> Result<LogLine, StoreError> {
        let ts = now();
        let row = sqlx::query(
            "INSERT INTO logs (service, job_id, ts, line) VALUES (?, ?, ?, ?) RETURNING id",
        )
        .bind(service)
        .bind(job_id)
        .bind(&ts)
        .bind(line)
        .fetch_one(&self.pool)
        .await?;
        Ok(LogLine {
            id: row.try_get("id")?,
            ts,
            line: line.to_string(),
        })
    }

    pub async fn logs_after(
        &self,
        service: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, ts, line FROM logs WHERE service = ? AND id > ? ORDER BY id LIMIT ?",
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
        let row = sqlx::query("SELECT key, dir, optimized, report FROM artifacts WHERE key = ?")
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
        sqlx::query("INSERT OR REPLACE INTO artifacts (key, dir, model_sha256, optimized, report, created_at) VALUES (?, ?, ?, ?, ?, ?)")
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
            sqlx::query("SELECT COUNT(*) FROM artifacts WHERE optimized = ?")
                .bind(optimized as i64)
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }
}

async fn insert_job(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    service: &str,
    config: &str,
    kind: &str,
) -> Result<i64, StoreError> {
    let row = sqlx::query("INSERT INTO jobs (service, config, state, created_at, kind) VALUES (?, ?, 'queued', ?, ?) RETURNING id")
        .bind(service)
        .bind(config)
        .bind(now())
        .bind(kind)
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get("id")?)
}
