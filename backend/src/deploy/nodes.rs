//! Nodes that share one database: each says it is alive, holds a lease on
//! the deploy job it runs and renews it while it works, and takes over the
//! jobs of a node that stopped renewing (it died, or lost the database for
//! longer than a lease). At-least-once: a taken-over job resumes at its
//! recorded stage, and the stages are idempotent.

use std::time::Duration;

use crate::control::store::now_ms;

use super::{resume_or_fail, DeployError, Deployer};

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// Records this node as alive now, with the job kinds (resource groups) it
/// can serve, and keeps doing so a third of a lease apart (a failed beat is
/// logged and retried at the next).
pub async fn heartbeat(state: &Deployer, addr: &str) -> Result<(), DeployError> {
    let (store, node) = (state.store.clone(), state.settings.node_id.clone());
    let addr = addr.to_string();
    let kinds = state.resources.served_kinds();
    store.node_heartbeat(&node, &addr, &kinds, now_ms()).await?;
    let every = state.settings.job_lease / 3;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = store.node_heartbeat(&node, &addr, &kinds, now_ms()).await {
                tracing::warn!("node heartbeat: {e}");
            }
        }
    });
    Ok(())
}

/// Until the lease of job `id` is lost: renews it a third of a lease apart.
/// Completes when another node holds the job now, or when the lease ran out
/// because the database could not be reached to renew it; never completes
/// while the lease is held.
pub async fn hold_lease(state: &Deployer, id: i64) {
    let lease = state.settings.job_lease;
    let node = &state.settings.node_id;
    let mut held_until = now_ms() + ms(lease);
    loop {
        tokio::time::sleep(lease / 3).await;
        let until = now_ms() + ms(lease);
        match state.store.renew_lease(id, node, until).await {
            Ok(true) => held_until = until,
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(job = id, "renewing the job's lease: {e}");
                if now_ms() >= held_until {
                    return;
                }
            }
        }
    }
}

/// Takes over every job whose lease ran out and puts it back in the queue
/// (or fails it after too many tries); the store lets exactly one node take
/// each over.
pub async fn take_over_expired(state: &Deployer) -> Result<(), DeployError> {
    let now = now_ms();
    for job in state.store.expired_jobs(now).await? {
        let (node, until) = (&state.settings.node_id, now + ms(state.settings.job_lease));
        if state.store.take_over(job.id, now, node, until).await? {
            let who = job.node.as_deref().unwrap_or("a node");
            let what = format!(
                "Node {who} stopped renewing its lease; node {} takes the deploy over",
                state.settings.node_id
            );
            tracing::warn!(job = job.id, service = %job.service, "{what}");
            resume_or_fail(state, &job, &what).await?;
            state.jobs_ready.notify_waiters();
        }
    }
    Ok(())
}

/// Looks for expired leases half a lease apart, for as long as the server
/// runs.
pub fn spawn_lease_sweeper(state: &Deployer) {
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(state.settings.job_lease / 2).await;
            if let Err(e) = take_over_expired(&state).await {
                tracing::warn!("taking over expired deploy jobs: {e}");
            }
        }
    });
}
