//! Where a service's instances run. The deploy places each instance ("slot")
//! on a live node that can serve the service's resource group, in the
//! database; every node runs what is placed on it (`reconcile`, woken by
//! NOTIFY and a timer); the lease sweeper places the slots of a dead node
//! again on live ones. The database is the only record: a node that starts
//! runs its slots, and a node that is told nothing converges at its next
//! tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shared::api::ServiceStatus;
use shared::config::RollingStrategy;
use shared::ServiceConfig;

use crate::control::resources::job_kind;
use crate::control::store::{now_ms, split_key, NodeRow, Placement, ServiceRow};
use crate::serving::instances::{load_pool, ServicePool};

use super::{artifacts, DeployError, Deployer};

/// How long a deploy waits for its instances to start on their nodes.
const START_BUDGET: Duration = Duration::from_secs(600);

/// What this node runs, and the wake-up of its reconciler.
#[derive(Clone, Default)]
pub struct Hosting {
    wake: Arc<tokio::sync::Notify>,
    /// Service → (artifact, instances) of the pool this node loaded. The
    /// lock also keeps two reconciles of one node apart.
    loaded: Arc<tokio::sync::Mutex<HashMap<String, (String, u32)>>>,
}

impl Hosting {
    /// Asks this node's reconciler to look at its slots now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What wakes the reconciler, for the listener of other nodes' notes.
    pub fn waker(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }
}

/// The node of each of `n` slots. Slots already on an eligible node stay
/// there (a scale or a redeploy moves nothing it need not); the others go
/// to the eligible node with the fewest slots of any service, preferring
/// `me` (the deploying node, which has the artifact at hand) on a tie.
/// `load` counts every node's slots, `current` included. Empty when no
/// node is eligible.
pub fn plan(
    current: &[Placement],
    n: u32,
    eligible: &[String],
    load: &HashMap<String, u32>,
    me: &str,
) -> Vec<String> {
    if eligible.is_empty() {
        return Vec::new();
    }
    let mut load: HashMap<&str, u32> = eligible
        .iter()
        .map(|id| (id.as_str(), load.get(id).copied().unwrap_or(0)))
        .collect();
    for p in current {
        if let Some(c) = load.get_mut(p.node.as_str()) {
            *c = c.saturating_sub(1);
        }
    }
    let mut out: Vec<Option<String>> = vec![None; n as usize];
    for p in current {
        if let Some(slot) = out.get_mut(p.slot as usize) {
            if let Some(c) = load.get_mut(p.node.as_str()) {
                *c += 1;
                *slot = Some(p.node.clone());
            }
        }
    }
    out.into_iter()
        .map(|kept| {
            kept.unwrap_or_else(|| {
                let best = least_loaded(eligible, |id| load[id], Some(me))
                    .map(String::as_str)
                    .unwrap_or(me);
                if let Some(c) = load.get_mut(best) {
                    *c += 1;
                }
                best.to_string()
            })
        })
        .collect()
}

/// The eligible node with the fewest slots (`load`), `prefer` first on a
/// tie, then by id; `None` when none is eligible.
fn least_loaded<'a>(
    eligible: &'a [String],
    load: impl Fn(&str) -> u32,
    prefer: Option<&str>,
) -> Option<&'a String> {
    eligible
        .iter()
        .min_by_key(|id| (load(id), Some(id.as_str()) != prefer, id.as_str()))
}

/// The heartbeats older than this are a dead node's: two thirds of a lease,
/// so that one beat (a third of a lease apart) may come late, and a dead
/// node's slots are placed again within the lease (the orphan sweep runs a
/// sixth of a lease apart: at most five sixths of a lease after the death).
fn dead_before(state: &Deployer) -> i64 {
    now_ms() - (state.settings.job_lease * 2 / 3).as_millis() as i64
}

/// Live nodes: their last heartbeat is recent (see [`dead_before`]).
pub async fn live_nodes(state: &Deployer) -> Result<Vec<NodeRow>, DeployError> {
    Ok(state.store.live_nodes(dead_before(state)).await?)
}

/// The live nodes that can serve `cfg` (its resource group's kind).
fn eligible(nodes: &[NodeRow], cfg: &ServiceConfig) -> Vec<String> {
    let kind = job_kind(cfg);
    nodes
        .iter()
        .filter(|n| n.kinds.contains(&kind))
        .map(|n| n.id.clone())
        .collect()
}

/// Places `n` instances of service `name` running `artifact`, and returns
/// the placement it replaced (to put back if the new one does not start).
pub async fn place(
    state: &Deployer,
    name: &str,
    cfg: &ServiceConfig,
    artifact: &str,
    n: u32,
) -> Result<Vec<Placement>, DeployError> {
    let nodes = live_nodes(state).await?;
    let eligible = eligible(&nodes, cfg);
    let current = state.store.placements(name).await?;
    let load = state.store.slots_per_node().await?;
    let plan = plan(&current, n, &eligible, &load, &state.settings.node_id);
    if plan.is_empty() {
        return Err(DeployError::Unavailable(format!(
            "no live node can serve resource group '{}' (of {} live node(s))",
            job_kind(cfg),
            nodes.len()
        )));
    }
    state.store.place(name, artifact, &plan).await?;
    state.hosting.wake();
    let mut per_node: Vec<(String, u32)> = Vec::new();
    for id in &plan {
        match per_node.iter_mut().find(|(n, _)| n == id) {
            Some((_, c)) => *c += 1,
            None => per_node.push((id.clone(), 1)),
        }
    }
    let text: Vec<String> = per_node
        .iter()
        .map(|(id, c)| format!("{id} ×{c}"))
        .collect();
    let (service, beside) = split_key(name);
    let what = match beside {
        None => "Instances".to_string(),
        Some(v) => format!("Instances of version {v}"),
    };
    state
        .logs
        .line(
            service,
            None,
            &format!("[OK] {what} placed on node {}", text.join(", ")),
        )
        .await?;
    Ok(current)
}

/// Puts back the placement a failed deploy replaced (`previous`), or
/// removes the failed one when there was none.
pub async fn restore(
    state: &Deployer,
    name: &str,
    previous: &[Placement],
) -> Result<(), DeployError> {
    match previous.first() {
        Some(p) => {
            let nodes: Vec<String> = previous.iter().map(|p| p.node.clone()).collect();
            state.store.place(name, &p.artifact, &nodes).await?;
        }
        None => state.store.unplace(name).await?,
    }
    state.hosting.wake();
    Ok(())
}

/// Until the `n` instances of service `name` run `artifact` on their nodes,
/// logging `Waiting [Total, Pending, Running]` as they start; an instance
/// that fails to start fails the wait, naming its node and why.
pub async fn wait_running(
    state: &Deployer,
    name: &str,
    job: i64,
    artifact: &str,
    n: u32,
) -> Result<(), DeployError> {
    let deadline = tokio::time::Instant::now() + START_BUDGET;
    let mut shown = 0;
    loop {
        let slots = state.store.placements(name).await?;
        if slots.iter().any(|p| p.artifact != artifact) || slots.len() != n as usize {
            return Err(DeployError::Conflict(format!(
                "the instances of '{name}' were placed anew by another deploy"
            )));
        }
        if let Some(p) = slots.iter().find(|p| p.state == "failed") {
            return Err(DeployError::Unavailable(format!(
                "instance {} on node {} did not start: {}",
                p.slot,
                p.node,
                p.error.as_deref().unwrap_or("no reason given")
            )));
        }
        let running = slots.iter().filter(|p| p.state == "running").count() as u32;
        if running == n {
            return Ok(());
        }
        if running != shown {
            shown = running;
            state
                .logs
                .line(
                    name,
                    Some(job),
                    &format!(
                        "[OK] Waiting [Total: {n}, Pending: {}, Running: {running}]",
                        n - running
                    ),
                )
                .await?;
        }
        if tokio::time::Instant::now() >= deadline {
            let late: Vec<String> = slots
                .iter()
                .filter(|p| p.state != "running")
                .map(|p| format!("{} on node {}", p.slot, p.node))
                .collect();
            return Err(DeployError::Unavailable(format!(
                "instance(s) {} did not start within {} s",
                late.join(", "),
                START_BUDGET.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Makes this node run what is placed on it: for each service whose slots
/// here changed, grows or shrinks its pool (same artifact), rolls it over
/// to the new artifact as `metadata.rolling_strategy` says, or loads it;
/// drops the pools of services no longer placed here, and records each
/// slot's state.
pub async fn reconcile(state: &Deployer) -> Result<(), DeployError> {
    let me = &state.settings.node_id;
    let mut loaded = state.hosting.loaded.lock().await;
    state.instances.set_splits(state.store.all_traffic().await?);
    // A token rotated on another node (this node's rotations are taken at
    // once).
    for (name, token) in state.store.service_tokens().await? {
        state.instances.set_token(&name, &token);
    }
    let shares = state.store.node_shares(me).await?;
    let placed: Vec<&str> = shares.iter().map(|s| s.service.as_str()).collect();
    loaded.retain(|svc, _| {
        let keep = placed.contains(&svc.as_str());
        if !keep {
            state.instances.remove(svc);
        }
        keep
    });
    for share in &shares {
        let want = (share.artifact.clone(), share.count);
        let pending = share.count.saturating_sub(share.running + share.failed);
        // (A pool stopped through the API is gone before this node's
        // record of it: only a pool still here counts as loaded.)
        let here = state.instances.main(&share.service);
        if let (Some(pool), true) = (&here, loaded.get(&share.service) == Some(&want)) {
            if share.running < share.count {
                // Placed anew with what runs here already (a deploy of a
                // new version with the same artifact): same pool, numbered
                // with the version it serves now.
                match served(state, &share.service).await {
                    Ok((_, version, cfg)) => pool.serve_as(version, &cfg.metadata),
                    // Deleted meanwhile: its slots go at the next look.
                    Err(DeployError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                state
                    .store
                    .set_slots(&share.service, me, &share.artifact, "running", None)
                    .await?;
            }
            continue;
        }
        if pending == 0 && share.failed > 0 {
            // Failed here already; a new placement makes them pending again.
            continue;
        }
        let result = match (here, loaded.get(&share.service)) {
            (Some(pool), Some((artifact, _))) if *artifact == share.artifact => {
                resize(state, &share.service, pool, share.count).await
            }
            (Some(pool), Some(_)) => {
                roll(state, &share.service, pool, &share.artifact, share.count).await
            }
            _ => start(state, &share.service, &share.artifact, share.count).await,
        };
        match result {
            Ok(()) => {
                loaded.insert(share.service.clone(), want);
                state
                    .store
                    .set_slots(&share.service, me, &share.artifact, "running", None)
                    .await?;
            }
            Err(e) => {
                let msg = format!(
                    "could not start {} instance(s) on node {me}: {e}",
                    share.count
                );
                tracing::error!(service = %share.service, "{msg}");
                state
                    .store
                    .set_slots(&share.service, me, &share.artifact, "failed", Some(&msg))
                    .await?;
                state
                    .logs
                    .line(split_key(&share.service).0, None, &format!("[ERROR] {msg}"))
                    .await?;
                fail_if_down(state, &share.service, &msg).await?;
            }
        }
    }
    Ok(())
}

/// The pool of `count` instances of `key` (a service, or a version of one
/// served beside its current version: [`split_key`]) on `artifact`, loaded
/// here, numbered with its version.
async fn build(
    state: &Deployer,
    key: &str,
    artifact: &str,
    count: u32,
) -> Result<ServicePool, DeployError> {
    let dir = artifacts::local(state, artifact).await?.ok_or_else(|| {
        DeployError::NotFound(format!(
            "artifact {artifact} is neither in this node's data folder nor in the shared store"
        ))
    })?;
    let (svc, version, cfg) = served(state, key).await?;
    let mut pool = load_pool(
        &state.settings,
        &dir,
        key,
        count,
        svc.token.clone(),
        cfg.metadata.clone(),
        state.resources.serving_device(&cfg),
    )
    .await?;
    pool.name = svc.name;
    pool.set_version(version);
    Ok(pool)
}

/// Until the workers a pool was asked to retire have finished their calls
/// and stopped their runners (at most a minute: a call may be long).
async fn retired(pool: &ServicePool, left: usize) {
    let live = pool.batcher().live_workers();
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while live.load(std::sync::atomic::Ordering::SeqCst) > left && std::time::Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // And their processes gone, not only asked to go: the next step of a
    // rolling update starts a runner only once the surge is free again.
    while !pool.retired_runners_exited() && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The service of `key`, the version `key` serves and its config: the
/// service's current one, or the version served beside it.
async fn served(
    state: &Deployer,
    key: &str,
) -> Result<(ServiceRow, u32, ServiceConfig), DeployError> {
    let (name, beside) = split_key(key);
    let svc = state
        .store
        .get_service(name)
        .await?
        .ok_or_else(|| DeployError::NotFound(format!("no service named '{name}'")))?;
    match beside {
        None => {
            let (version, cfg) = (
                u32::try_from(svc.current_version).unwrap_or(0),
                svc.config.clone(),
            );
            Ok((svc, version, cfg))
        }
        Some(v) => {
            let row = state
                .store
                .version(name, i64::from(v))
                .await?
                .ok_or_else(|| {
                    DeployError::NotFound(format!("service '{name}' has no version {v}"))
                })?;
            Ok((svc, v, row.config))
        }
    }
}

/// Loads `count` instances of `key` on `artifact` here.
async fn start(state: &Deployer, key: &str, artifact: &str, count: u32) -> Result<(), DeployError> {
    let pool = build(state, key, artifact, count).await?;
    state.instances.put(key, pool);
    Ok(())
}

/// Grows or shrinks the pool of `key` to `count` instances in place (a
/// scale: same artifact), numbered with its version now.
async fn resize(
    state: &Deployer,
    key: &str,
    pool: Arc<ServicePool>,
    count: u32,
) -> Result<(), DeployError> {
    let (_, version, cfg) = served(state, key).await?;
    pool.serve_as(version, &cfg.metadata);
    let have = pool.len();
    let want = count.max(1) as usize;
    if want > have {
        let p = pool.clone();
        tokio::task::spawn_blocking(move || p.grow(want - have))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?
            .map_err(DeployError::Internal)?;
    } else {
        pool.shrink(have - want);
    }
    crate::control::metrics::set_instances(key, pool.len());
    Ok(())
}

/// Replaces the pool of `key` by one on `artifact`, in steps, as
/// `metadata.rolling_strategy` says: at most `max_surge` instances beyond
/// `count` at once, at most `max_unavailable` missing. New instances get
/// requests as soon as they are loaded (by their share of the instances);
/// old ones stop as new ones come, each after its current call. If a new
/// instance cannot start, the old pool is put back as it was.
async fn roll(
    state: &Deployer,
    key: &str,
    old: Arc<ServicePool>,
    artifact: &str,
    count: u32,
) -> Result<(), DeployError> {
    let (_, _, cfg) = served(state, key).await?;
    let n = count.max(1);
    let (surge, unavailable) = RollingStrategy::steps(cfg.metadata.rolling_strategy.as_ref(), n);
    let service = split_key(key).0;
    let original = old.len();
    state
        .logs
        .line(
            service,
            None,
            &format!("[OK] Rolling update of {n} instance(s): at most {surge} started beyond them at once, at most {unavailable} missing"),
        )
        .await?;
    let mut new: Option<Arc<ServicePool>> = None;
    let mut swapped = false;
    let outcome: Result<(), DeployError> = async {
        loop {
            let new_live = new.as_ref().map_or(0, |p| p.len() as u32);
            if new_live >= n {
                return Ok(());
            }
            let old_live = if swapped { 0 } else { old.len() as u32 };
            let floor = n.saturating_sub(unavailable);
            let down = (old_live + new_live).saturating_sub(floor).min(old_live);
            let old_live = match &new {
                // The old pool's last instances go by the swap: the new
                // pool takes every request from here on.
                Some(p) if down >= old_live && old_live > 0 => {
                    state.instances.put_shared(key, p.clone());
                    state.instances.set_incoming(key, None);
                    swapped = true;
                    0
                }
                _ if down > 0 => {
                    let left = old_live - old.shrink(down as usize) as u32;
                    retired(&old, left as usize).await;
                    left
                }
                _ => old_live,
            };
            let add = (n - new_live).min((n + surge).saturating_sub(old_live + new_live));
            if add == 0 {
                return Err(DeployError::Internal(format!(
                    "the rolling update cannot go on ({old_live} old, {new_live} new of {n})"
                )));
            }
            match &new {
                None => {
                    let pool = Arc::new(build(state, key, artifact, add).await?);
                    state.instances.set_incoming(key, Some(pool.clone()));
                    new = Some(pool);
                }
                Some(p) => {
                    let p = p.clone();
                    tokio::task::spawn_blocking(move || p.grow(add as usize))
                        .await
                        .map_err(|e| DeployError::Internal(e.to_string()))?
                        .map_err(DeployError::Internal)?;
                }
            }
            let new_live = new.as_ref().map_or(0, |p| p.len() as u32);
            let old_live = if swapped { 0 } else { old.len() as u32 };
            state
                .logs
                .line(
                    service,
                    None,
                    &format!("[OK] Rolling update: {new_live} of {n} new instance(s) up, {old_live} old serving"),
                )
                .await?;
        }
    }
    .await;
    match (outcome, new) {
        (Ok(()), Some(p)) => {
            if !swapped {
                state.instances.put_shared(key, p);
                state.instances.set_incoming(key, None);
            }
            Ok(())
        }
        (Ok(()), None) => Ok(()),
        (Err(e), _) => {
            // The old pool, as it was, serves on.
            state.instances.set_incoming(key, None);
            if swapped {
                state.instances.put_shared(key, old.clone());
            }
            let missing = original.saturating_sub(old.len());
            if missing > 0 {
                let o = old.clone();
                let _ = tokio::task::spawn_blocking(move || o.grow(missing)).await;
            }
            Err(e)
        }
    }
}

/// A running service none of whose instances runs anywhere any more is
/// failed, saying why (a deploy in progress reports its own failure).
async fn fail_if_down(state: &Deployer, name: &str, msg: &str) -> Result<(), DeployError> {
    let Some(svc) = state.store.get_service(name).await? else {
        return Ok(());
    };
    if svc.status == ServiceStatus::Running && svc.running == 0 {
        state
            .store
            .set_status(name, ServiceStatus::Failed, None, Some(msg))
            .await?;
    }
    Ok(())
}

/// Places the slots of dead nodes (not heard from within a lease) on live
/// nodes that can serve them; the store lets exactly one node move each.
pub async fn replace_orphans(state: &Deployer) -> Result<(), DeployError> {
    let orphans = state.store.orphaned_slots(dead_before(state)).await?;
    if orphans.is_empty() {
        return Ok(());
    }
    let nodes = live_nodes(state).await?;
    let mut load = state.store.slots_per_node().await?;
    for p in orphans {
        let (name, _) = split_key(&p.service);
        let Some(svc) = state.store.get_service(name).await? else {
            continue;
        };
        let eligible = eligible(&nodes, &svc.config);
        let Some(to) =
            least_loaded(&eligible, |id| load.get(id).copied().unwrap_or(0), None).cloned()
        else {
            tracing::warn!(service = %p.service, "no live node can take instance {} of node {}", p.slot, p.node);
            continue;
        };
        if state
            .store
            .move_slot(&p.service, p.slot, &p.node, &to)
            .await?
        {
            *load.entry(to.clone()).or_default() += 1;
            let line = format!(
                "[WARN] Node {} stopped heartbeating; instance {} is placed again on node {to}",
                p.node, p.slot
            );
            tracing::warn!(service = %p.service, "{line}");
            state.logs.line(name, None, &line).await?;
        }
    }
    state.hosting.wake();
    Ok(())
}

/// Runs [`reconcile`] whenever woken (a placement changed, here or — by
/// NOTIFY — on another node) and a third of a lease apart regardless; and
/// [`replace_orphans`] a sixth of a lease apart.
pub fn spawn_reconciler(state: &Deployer) {
    let sweeper = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(sweeper.settings.job_lease / 6).await;
            if let Err(e) = replace_orphans(&sweeper).await {
                tracing::warn!("placing the instances of dead nodes again: {e}");
            }
        }
    });
    let state = state.clone();
    tokio::spawn(async move {
        loop {
            let _ =
                tokio::time::timeout(state.settings.job_lease / 3, state.hosting.wake.notified())
                    .await;
            if let Err(e) = reconcile(&state).await {
                tracing::warn!("starting the instances placed on this node: {e}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(slot: u32, node: &str) -> Placement {
        Placement {
            service: "s".into(),
            slot,
            node: node.into(),
            artifact: "k".into(),
            state: "running".into(),
            error: None,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_new_service_spreads_over_the_least_loaded_nodes_deployer_first() {
        let load = HashMap::from([("b".to_string(), 0), ("c".to_string(), 5)]);
        assert_eq!(
            plan(&[], 1, &ids(&["a", "b", "c"]), &load, "b"),
            ids(&["b"])
        );
        assert_eq!(
            plan(&[], 3, &ids(&["a", "b", "c"]), &load, "b"),
            ids(&["b", "a", "b"])
        );
    }

    #[test]
    fn scaling_keeps_the_slots_that_are_on_live_nodes() {
        let current = [slot(0, "b"), slot(1, "dead")];
        let load = HashMap::from([("b".to_string(), 1)]);
        // Slot 1's node is gone: it goes to the idle node, slot 0 stays.
        assert_eq!(
            plan(&current, 3, &ids(&["a", "b"]), &load, "b"),
            ids(&["b", "a", "b"])
        );
        // Scaling down keeps the first slots where they are.
        assert_eq!(
            plan(&current, 1, &ids(&["a", "b"]), &load, "a"),
            ids(&["b"])
        );
    }

    #[test]
    fn no_eligible_node_places_nothing() {
        assert!(plan(&[], 2, &[], &HashMap::new(), "a").is_empty());
    }
}
