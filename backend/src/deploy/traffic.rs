//! Traffic splits between versions of a service (blue-green, canary). The
//! current version is served by the service's own instances; every other
//! version with a share runs instances of its own, placed under
//! [`canary_key`] like a service of their own, so nodes start, restart and
//! forward to them as to any service. A node routes to a version only once
//! its instances run there (`serving::instances::Instances::draw`), so
//! traffic moves to a version after it is ready. A deploy that changes the
//! current version (modify, rollback) ends the split; a promote gives one
//! version all the traffic and makes it current, and the split ends when
//! its deploy is done.

use crate::control::store::{canary_key, Weights};

use super::{placement, DeployError, Deployer};

/// The split as it takes effect: no split when no version but the current
/// one has a share.
fn effective(weights: &Weights, current: u32) -> Weights {
    if weights.iter().any(|(&v, &w)| v != current && w > 0) {
        weights
            .iter()
            .filter(|(_, &w)| w > 0)
            .map(|(&v, &w)| (v, w))
            .collect()
    } else {
        Weights::new()
    }
}

fn describe(weights: &Weights) -> String {
    weights
        .iter()
        .map(|(v, w)| format!("version {v} {w} %"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits the traffic of `name` as `weights` says (checked by the caller:
/// versions that exist, shares summing to 100): places the instances of
/// each version other than the current one that gets a share (a version
/// already placed keeps its instances), removes those of versions that
/// lost theirs, and records the split for every node's routing.
pub async fn set(state: &Deployer, name: &str, weights: &Weights) -> Result<(), DeployError> {
    let svc = state
        .store
        .get_service(name)
        .await?
        .ok_or_else(|| DeployError::NotFound(format!("no service named '{name}'")))?;
    let current = u32::try_from(svc.current_version).unwrap_or(0);
    let split = effective(weights, current);
    for &v in split.keys().filter(|&&v| v != current) {
        let row = state
            .store
            .version(name, i64::from(v))
            .await?
            .ok_or_else(|| DeployError::NotFound(format!("service '{name}' has no version {v}")))?;
        let artifact = row.artifact.ok_or_else(|| {
            DeployError::Conflict(format!(
                "version {v} of '{name}' was never deployed (it has no artifact); roll back to it once to build it"
            ))
        })?;
        let n = row.config.metadata.instance.max(1);
        let key = canary_key(name, v);
        let placed = state.store.placements(&key).await?;
        if placed.len() != n as usize || placed.iter().any(|p| p.artifact != artifact) {
            placement::place(state, &key, &row.config, &artifact, n).await?;
        }
    }
    for key in state.store.canary_keys(name).await? {
        let keep = split
            .keys()
            .any(|&v| v != current && canary_key(name, v) == key);
        if !keep {
            state.store.unplace(&key).await?;
        }
    }
    state.store.set_traffic(name, &split).await?;
    state.instances.set_split(name, split.clone());
    state.hosting.wake();
    let line = if split.is_empty() {
        format!("[OK] Traffic: version {current} serves every request")
    } else {
        format!("[OK] Traffic split: {}", describe(&split))
    };
    state.logs.line(name, None, &line).await?;
    Ok(())
}

/// Ends the split of `name`, if it has one: the current version serves
/// every request and the other versions' instances stop.
pub async fn end(state: &Deployer, name: &str) -> Result<(), DeployError> {
    if state.store.traffic(name).await?.is_empty()
        && state.store.canary_keys(name).await?.is_empty()
    {
        return Ok(());
    }
    set(state, name, &Weights::new()).await
}

/// After a deploy of `name`: a split that gives no version but the
/// (possibly new) current one a share has done its work (a promote) and
/// ends; otherwise the current version needs no instances beside its own.
pub async fn settle(state: &Deployer, name: &str) -> Result<(), DeployError> {
    let weights = state.store.traffic(name).await?;
    if weights.is_empty() {
        return Ok(());
    }
    let Some(svc) = state.store.get_service(name).await? else {
        return Ok(());
    };
    let current = u32::try_from(svc.current_version).unwrap_or(0);
    if effective(&weights, current).is_empty() {
        return set(state, name, &Weights::new()).await;
    }
    let key = canary_key(name, current);
    if state.store.canary_keys(name).await?.contains(&key) {
        state.store.unplace(&key).await?;
        state.hosting.wake();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_split_that_gives_only_the_current_version_a_share_is_no_split() {
        let w = |pairs: &[(u32, u32)]| pairs.iter().copied().collect::<Weights>();
        assert!(effective(&w(&[(2, 100)]), 2).is_empty());
        assert!(effective(&w(&[(2, 100), (1, 0)]), 2).is_empty());
        assert_eq!(
            effective(&w(&[(1, 90), (2, 10)]), 1),
            w(&[(1, 90), (2, 10)])
        );
        // A promote: all to version 3 while version 1 is still current.
        assert_eq!(effective(&w(&[(3, 100)]), 1), w(&[(3, 100)]));
        assert_eq!(effective(&w(&[(1, 0), (3, 100)]), 1), w(&[(3, 100)]));
    }
}
