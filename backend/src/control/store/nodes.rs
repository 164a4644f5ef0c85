//! Nodes that share the database, and where each service's instances are
//! placed: one `placements` row per instance ("slot"), naming the node that
//! runs it, the artifact it runs and whether it is up.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now, Dialect, Store, StoreError, NOTIFY};

/// The LISTEN/NOTIFY channel of placement changes (the payload is the
/// service's name): every node looks at what it should run now.
pub const PLACE_CHANNEL: &str = "whet_placements";

/// A node heard from recently.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub id: String,
    pub addr: String,
    /// The job kinds (resource groups) it can serve (`resources::job_kind`).
    pub kinds: Vec<String>,
}

/// One instance of a service, placed on a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub service: String,
    pub slot: u32,
    pub node: String,
    pub artifact: String,
    /// `pending`, `running` or `failed`.
    pub state: String,
    pub error: Option<String>,
}

/// What one node should run of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeShare {
    pub service: String,
    pub artifact: String,
    pub count: u32,
    /// How many of them are recorded as running, and as failed to start.
    pub running: u32,
    pub failed: u32,
}

fn placement(r: &AnyRow) -> Result<Placement, StoreError> {
    Ok(Placement {
        service: r.try_get("service")?,
        slot: r.try_get::<i64, _>("slot")?.max(0) as u32,
        node: r.try_get("node")?,
        artifact: r.try_get("artifact")?,
        state: r.try_get("state")?,
        error: r.try_get("error")?,
    })
}

const RUNNING_COUNT: &str = "UPDATE services SET running = \
     (SELECT COUNT(*) FROM placements WHERE service = $1 AND state = 'running'), updated_at = $2 \
     WHERE name = $3";

/// Brings `services.running` of `service` in line with its running slots.
async fn recount(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    service: &str,
) -> Result<(), StoreError> {
    sqlx::query(RUNNING_COUNT)
        .bind(service)
        .bind(now())
        .bind(service)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// Tells every node (NOTIFY on PostgreSQL, at commit) that the slots
    /// of `service` changed.
    pub(super) async fn notify_placed(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        service: &str,
    ) -> Result<(), StoreError> {
        if self.dialect == Dialect::Postgres {
            sqlx::query(NOTIFY)
                .bind(PLACE_CHANNEL)
                .bind(service)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Records that node `id` (listening on `addr`, serving `kinds`) is
    /// alive at `now_ms`.
    pub async fn node_heartbeat(
        &self,
        id: &str,
        addr: &str,
        kinds: &[String],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nodes (id, addr, started_at, heartbeat_at, kinds) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET addr = excluded.addr, heartbeat_at = excluded.heartbeat_at,
             kinds = excluded.kinds",
        )
        .bind(id)
        .bind(addr)
        .bind(now())
        .bind(now_ms)
        .bind(kinds.join(","))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Nodes heard from at or after `since_ms`, by id.
    pub async fn live_nodes(&self, since_ms: i64) -> Result<Vec<NodeRow>, StoreError> {
        let rows =
            sqlx::query("SELECT id, addr, kinds FROM nodes WHERE heartbeat_at >= $1 ORDER BY id")
                .bind(since_ms)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let kinds: String = r.try_get("kinds")?;
                Ok(NodeRow {
                    id: r.try_get("id")?,
                    addr: r.try_get("addr")?,
                    kinds: kinds
                        .split(',')
                        .filter(|k| !k.is_empty())
                        .map(String::from)
                        .collect(),
                })
            })
            .collect()
    }

    /// At a node's start: takes over the slots of the processes it replaces
    /// — on SQLite every other node's (the database is this node's alone),
    /// on PostgreSQL those of earlier nodes that advertised the same address
    /// (two live nodes cannot listen on one address, so they are dead) —
    /// and forgets those nodes. Returns how many slots it took.
    pub async fn adopt_slots(&self, me: &str, addr: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let moved = match self.dialect {
            Dialect::Sqlite => sqlx::query(
                "UPDATE placements SET node = $1, state = 'pending', error = NULL WHERE node <> $2",
            )
            .bind(me)
            .bind(me)
            .execute(&mut *tx)
            .await?,
            Dialect::Postgres => {
                sqlx::query(
                    "UPDATE placements SET node = $1, state = 'pending', error = NULL
                     WHERE node IN (SELECT id FROM nodes WHERE addr = $2 AND id <> $1)",
                )
                .bind(me)
                .bind(addr)
                .execute(&mut *tx)
                .await?
            }
        }
        .rows_affected();
        sqlx::query("DELETE FROM nodes WHERE addr = $1 AND id <> $2")
            .bind(addr)
            .bind(me)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(moved)
    }

    /// The slots of `service`, by slot.
    pub async fn placements(&self, service: &str) -> Result<Vec<Placement>, StoreError> {
        let rows = sqlx::query("SELECT * FROM placements WHERE service = $1 ORDER BY slot")
            .bind(service)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(placement).collect()
    }

    /// How many slots each node holds, of every service.
    pub async fn slots_per_node(&self) -> Result<HashMap<String, u32>, StoreError> {
        let rows = sqlx::query("SELECT node, COUNT(*) AS n FROM placements GROUP BY node")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("node")?, r.try_get::<i64, _>("n")?.max(0) as u32)))
            .collect()
    }

    /// Places `service` anew: slot `i` of `nodes` on `nodes[i]`, all
    /// running `artifact`, pending until their node starts them. Tells the
    /// other nodes when committed.
    pub async fn place(
        &self,
        service: &str,
        artifact: &str,
        nodes: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM placements WHERE service = $1")
            .bind(service)
            .execute(&mut *tx)
            .await?;
        for (slot, node) in nodes.iter().enumerate() {
            sqlx::query(
                "INSERT INTO placements (service, slot, node, artifact, state) VALUES ($1, $2, $3, $4, 'pending')",
            )
            .bind(service)
            .bind(slot as i64)
            .bind(node)
            .bind(artifact)
            .execute(&mut *tx)
            .await?;
        }
        self.notify_placed(&mut tx, service).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes every slot of `service` (stopped or deleted): its nodes drop
    /// its instances.
    pub async fn unplace(&self, service: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM placements WHERE service = $1")
            .bind(service)
            .execute(&mut *tx)
            .await?;
        recount(&mut tx, service).await?;
        self.notify_placed(&mut tx, service).await?;
        tx.commit().await?;
        Ok(())
    }

    /// What `node` should run: its slots, by service and artifact.
    pub async fn node_shares(&self, node: &str) -> Result<Vec<NodeShare>, StoreError> {
        let rows = sqlx::query(
            "SELECT service, artifact, COUNT(*) AS n,
                    SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END) AS up,
                    SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END) AS down
             FROM placements WHERE node = $1 GROUP BY service, artifact ORDER BY service",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeShare {
                    service: r.try_get("service")?,
                    artifact: r.try_get("artifact")?,
                    count: r.try_get::<i64, _>("n")?.max(0) as u32,
                    running: r.try_get::<i64, _>("up")?.max(0) as u32,
                    failed: r.try_get::<i64, _>("down")?.max(0) as u32,
                })
            })
            .collect()
    }

    /// Records the state of `node`'s slots of `service` that run
    /// `artifact` (a stale report about an older artifact changes nothing),
    /// and the service's count of running instances.
    pub async fn set_slots(
        &self,
        service: &str,
        node: &str,
        artifact: &str,
        state: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "UPDATE placements SET state = $1, error = $2 WHERE service = $3 AND node = $4 AND artifact = $5",
        )
        .bind(state)
        .bind(error)
        .bind(service)
        .bind(node)
        .bind(artifact)
        .execute(&mut *tx)
        .await?;
        recount(&mut tx, service).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Slots on nodes not heard from since `since_ms` (dead, or gone).
    pub async fn orphaned_slots(&self, since_ms: i64) -> Result<Vec<Placement>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM placements WHERE node NOT IN
             (SELECT id FROM nodes WHERE heartbeat_at >= $1) ORDER BY service, slot",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(placement).collect()
    }

    /// Moves slot `slot` of `service` from node `from` to node `to`, pending
    /// there; false when it is not on `from` any more (another node moved it
    /// first, or the service was placed anew), so each slot moves once.
    pub async fn move_slot(
        &self,
        service: &str,
        slot: u32,
        from: &str,
        to: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query(
            "UPDATE placements SET node = $1, state = 'pending', error = NULL
             WHERE service = $2 AND slot = $3 AND node = $4",
        )
        .bind(to)
        .bind(service)
        .bind(slot as i64)
        .bind(from)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        recount(&mut tx, service).await?;
        if moved {
            self.notify_placed(&mut tx, service).await?;
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// The addresses of the live nodes (heartbeat at or after `since_ms`)
    /// that hold a slot of `service`, other than node `except`, and whether
    /// one of its slots there runs (during an update a node serves with its
    /// previous pool until its new one is up, so a pending slot still
    /// answers, unless it is a node's first). (The
    /// dead processes a node replaced were forgotten by [`Store::adopt_slots`]
    /// so a node never forwards to its own address.)
    pub async fn host_addrs(
        &self,
        service: &str,
        except: &str,
        since_ms: i64,
    ) -> Result<Vec<(String, bool)>, StoreError> {
        let rows = sqlx::query(
            "SELECT n.addr, SUM(CASE WHEN p.state = 'running' THEN 1 ELSE 0 END) AS up \
             FROM placements p JOIN nodes n ON n.id = p.node \
             WHERE p.service = $1 AND p.state <> 'failed' AND p.node <> $2 \
             AND n.heartbeat_at >= $3 GROUP BY n.addr ORDER BY n.addr",
        )
        .bind(service)
        .bind(except)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("addr")?, r.try_get::<i64, _>("up")? != 0)))
            .collect()
    }
}
