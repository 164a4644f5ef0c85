//! The autoscaler (the config's `autoscaler`, EAS's rule). Every node, once
//! a period, measures the services it serves — requests answered per second
//! and the CPU its runner processes used — and writes that to the store;
//! the live node with the smallest id adds the nodes' figures up and sets
//! each service's instance count:
//!
//! desired = ceil(current × metric / threshold), the largest over the
//! strategies; a metric within 10 % of its threshold asks for no change;
//! kept within `min`..=`max`. Scaling out happens at once; scaling in only
//! once every decision for a whole cool-down (`--scale-in-delay`) asked for
//! fewer instances, so a short lull does not drop instances a returning
//! load needs. A service with a deploy in progress is left alone.
//!
//! The same node runs the `cronscaler`: a job whose schedule (UTC) fell due
//! since its last look sets the count to the job's `target_size` (within
//! the autoscaler's bounds when there is one), as soon as no deploy of the
//! service is in progress.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use shared::config::{Autoscaler, CronScaler, ScaleJob};

use crate::control::store::{now_ms, NodeLoad, ServiceRow, VersionChange};
use shared::api::ServiceStatus;

use super::Deployer;

/// A metric within this fraction of its threshold asks for no change.
const TOLERANCE: f64 = 0.1;

/// What the instances of one service did over the last period, all nodes
/// together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Requests answered per second, all instances.
    pub qps: f64,
    /// Average CPU use per instance, per cent of its cores.
    pub cpu: Option<f64>,
}

/// The instance count the rule asks for, given `current` instances under
/// `load` (see the module's doc).
pub fn desired(a: &Autoscaler, current: u32, load: Load) -> u32 {
    let current = current.max(1);
    let mut want: Option<u32> = None;
    for s in &a.scale_strategies {
        let per_instance = match s.metric_name.as_str() {
            "qps" => load.qps / f64::from(current),
            "cpu" => match load.cpu {
                Some(c) => c,
                None => continue,
            },
            _ => continue,
        };
        let ratio = per_instance / s.threshold();
        // (The epsilon keeps 11 against 10 inside the band despite rounding.)
        let n = if (ratio - 1.0).abs() <= TOLERANCE + 1e-9 {
            current
        } else {
            // An f64 far above any count saturates; NaN (no threshold) is 0.
            (f64::from(current) * ratio)
                .ceil()
                .clamp(0.0, f64::from(u32::MAX)) as u32
        };
        want = Some(want.map_or(n, |w| w.max(n)));
    }
    a.clamp(want.unwrap_or(current))
}

/// The figures of every node, added up: requests per second summed, CPU
/// averaged over the instances that reported it.
pub fn combine(loads: &[NodeLoad]) -> Load {
    let qps = loads.iter().map(|l| l.qps).sum();
    let (weighted, instances) = loads
        .iter()
        .filter_map(|l| l.cpu.map(|c| (c * f64::from(l.instances), l.instances)))
        .fold((0.0, 0u32), |(w, n), (c, i)| (w + c, n + i));
    Load {
        qps,
        cpu: (instances > 0).then(|| weighted / f64::from(instances)),
    }
}

/// The job of `c` that fell due in (`since`, `now`] — the one due last
/// when several did — with the time it was due.
pub fn due_job(
    c: &CronScaler,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(&ScaleJob, DateTime<Utc>)> {
    c.scale_jobs
        .iter()
        .filter_map(|job| {
            // Validated at deploy; a schedule that no longer parses is skipped.
            let cron = shared::validate::parse_schedule(&job.schedule).ok()?;
            // The last occurrence up to now: step from `since` while the
            // next one is still not after `now`.
            // (Bounded: a look spans a period, and a per-second schedule
            // over a very long one keeps its last 10 000 steps' answer.)
            let mut at = None;
            let mut from = since;
            for _ in 0..10_000 {
                match cron.find_next_occurrence(&from, false) {
                    Ok(next) if next <= now => {
                        at = Some(next);
                        from = next;
                    }
                    _ => break,
                }
            }
            at.map(|t| (job, t))
        })
        .max_by_key(|(_, t)| *t)
}

/// Scale-in decisions waiting out their cool-down: since when each service
/// has asked for fewer instances.
#[derive(Default)]
pub struct CoolDown(HashMap<String, Instant>);

impl CoolDown {
    /// The count to set now, if any: `want` at once when it is more than
    /// `current`; when it is fewer, only after every decision for `delay`
    /// asked for fewer.
    pub fn decide(
        &mut self,
        service: &str,
        current: u32,
        want: u32,
        now: Instant,
        delay: Duration,
    ) -> Option<u32> {
        if want >= current {
            self.0.remove(service);
            return (want > current).then_some(want);
        }
        let since = *self.0.entry(service.to_string()).or_insert(now);
        if now.duration_since(since) >= delay {
            self.0.remove(service);
            Some(want)
        } else {
            None
        }
    }
}

/// What this node measured last period, per service: (answered count, CPU
/// seconds of each runner by pid) at an instant.
struct Sample {
    at: Instant,
    answered: HashMap<String, u64>,
    cpu: HashMap<u32, f64>,
}

impl Sample {
    fn take(pids: impl Iterator<Item = u32>) -> Sample {
        Sample {
            at: Instant::now(),
            answered: crate::control::load::counts(),
            cpu: pids
                .filter_map(|p| crate::control::load::cpu_seconds(p).map(|s| (p, s)))
                .collect(),
        }
    }
}

/// Starts the autoscaler on this node (see the module's doc).
pub fn spawn(state: &Deployer) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut scaler = Scaler::default();
        loop {
            tokio::time::sleep(state.settings.autoscale_period).await;
            if let Err(e) = tick(&state, &mut scaler).await {
                tracing::warn!("autoscaler: {e}");
            }
        }
    });
}

/// What the deciding node remembers between periods.
#[derive(Default)]
struct Scaler {
    /// This node's counters at the last period.
    last: Option<Sample>,
    cool: CoolDown,
    /// When the cron jobs were last looked at.
    cron_since: Option<DateTime<Utc>>,
    /// Cron jobs due but not applied yet (a deploy was in progress): per
    /// service, the job's name and size.
    cron_due: HashMap<String, (String, u32)>,
}

async fn tick(state: &Deployer, scaler: &mut Scaler) -> Result<(), super::DeployError> {
    let Scaler {
        last,
        cool,
        cron_since,
        cron_due,
    } = scaler;
    let services: Vec<ServiceRow> = state
        .store
        .list_services()
        .await?
        .into_iter()
        .filter(|s| s.config.autoscaler.is_some() || s.config.cronscaler.is_some())
        .collect();
    // This node's share: the runner processes of its local instances, and
    // the cores each instance has.
    let pools: Vec<(String, Vec<u32>, u32)> = services
        .iter()
        .filter_map(|s| {
            let pool = state.instances.get(&s.name)?;
            let pids = pool.runner_states().iter().filter_map(|r| r.pid).collect();
            let cores = s.config.metadata.cpu.unwrap_or(1).max(1);
            Some((s.name.clone(), pids, cores))
        })
        .collect();
    let now = Sample::take(pools.iter().flat_map(|(_, p, _)| p.iter().copied()));
    if let Some(before) = last.as_ref() {
        let secs = now.at.duration_since(before.at).as_secs_f64().max(1e-3);
        for (name, pids, cores) in &pools {
            let count = |s: &Sample| s.answered.get(name).copied().unwrap_or(0);
            let qps = count(&now).saturating_sub(count(before)) as f64 / secs;
            let used: Vec<f64> = pids
                .iter()
                .filter_map(|p| Some(now.cpu.get(p)? - before.cpu.get(p)?))
                .collect();
            let cpu = (!used.is_empty()).then(|| {
                used.iter().sum::<f64>() / used.len() as f64 / secs / f64::from(*cores) * 100.0
            });
            let load = NodeLoad {
                qps,
                cpu,
                instances: u32::try_from(pids.len()).unwrap_or(u32::MAX),
            };
            state
                .store
                .report_load(name, &state.settings.node_id, &load, now_ms())
                .await?;
        }
    }
    *last = Some(now);
    if !leads(state).await? {
        *cron_since = None;
        return Ok(());
    }
    let wall = Utc::now();
    if let Some(since) = *cron_since {
        for s in &services {
            if let Some(c) = &s.config.cronscaler {
                if let Some((job, _)) = due_job(c, since, wall) {
                    cron_due.insert(s.name.clone(), (job.name.clone(), job.target_size));
                }
            }
        }
    }
    *cron_since = Some(wall);
    let fresh_since = now_ms() - 3 * state.settings.autoscale_period.as_millis() as i64;
    for s in services {
        if s.status != ServiceStatus::Running {
            // A stopped service starts with its own count, not a stale job's.
            cron_due.remove(&s.name);
            continue;
        }
        if state.store.has_pending_job(&s.name).await? {
            continue;
        }
        if let Some((job, size)) = cron_due.remove(&s.name) {
            let to = s.config.autoscaler.as_ref().map_or(size, |a| a.clamp(size));
            // The autoscaler decides afresh from the scheduled count.
            cool.0.remove(&s.name);
            if to != s.config.metadata.instance {
                let why = format!("[OK] Cron scaler: job {job:?} is due");
                scale(state, &s, to, &why).await?;
            }
            continue;
        }
        let Some(a) = &s.config.autoscaler else {
            continue;
        };
        let loads = state.store.service_loads(&s.name, fresh_since).await?;
        if loads.is_empty() {
            continue;
        }
        let load = combine(&loads);
        let current = s.config.metadata.instance;
        let want = desired(a, current, load);
        let Some(to) = cool.decide(
            &s.name,
            current,
            want,
            Instant::now(),
            state.settings.scale_in_delay,
        ) else {
            continue;
        };
        let cpu = load
            .cpu
            .map(|c| format!(", CPU {c:.0} % per instance"))
            .unwrap_or_default();
        let why = format!("[OK] Autoscaler: {:.1} requests/s{cpu}", load.qps);
        scale(state, &s, to, &why).await?;
    }
    Ok(())
}

/// Whether this node decides: the live node with the smallest id.
async fn leads(state: &Deployer) -> Result<bool, super::DeployError> {
    let nodes = super::placement::live_nodes(state).await?;
    Ok(nodes.first().is_none_or(|n| n.id == state.settings.node_id))
}

/// Redeploys `s` with `to` instances, as `whet scale` does, logging `why`.
async fn scale(
    state: &Deployer,
    s: &ServiceRow,
    to: u32,
    why: &str,
) -> Result<(), super::DeployError> {
    let mut cfg = s.config.clone();
    let from = cfg.metadata.instance;
    cfg.metadata.instance = to;
    if state.resources.check(&cfg).is_err() {
        // The group cannot hold that many now; try again next period.
        return Ok(());
    }
    let kind = crate::control::resources::job_kind(&cfg);
    let job = match state
        .store
        .queue_redeploy(&s.name, &cfg, &kind, None, VersionChange::Same)
        .await
    {
        Ok(job) => job,
        // A user's deploy got there first: theirs wins.
        Err(crate::control::store::StoreError::Conflict(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    state
        .logs
        .line(
            &s.name,
            Some(job),
            &format!("{why}: scaling from {from} to {to} instance(s)"),
        )
        .await?;
    state.jobs_ready.notify_waiters();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::{ScaleJob, ScaleStrategy};

    fn scaler(min: u32, max: u32, strategies: &[(&str, f64)]) -> Autoscaler {
        Autoscaler {
            min,
            max,
            scale_strategies: strategies
                .iter()
                .map(|(m, t)| ScaleStrategy {
                    metric_name: m.to_string(),
                    threshold: serde_json::Number::from_f64(*t).expect("finite"),
                })
                .collect(),
        }
    }

    fn load(qps: f64, cpu: Option<f64>) -> Load {
        Load { qps, cpu }
    }

    #[test]
    fn the_rule_scales_by_the_ratio_within_min_and_max() {
        let a = scaler(1, 10, &[("qps", 10.0)]);
        // 2 instances at 35 qps each (70 in all) against 10: ceil(2 × 3.5) = 7.
        assert_eq!(desired(&a, 2, load(70.0, None)), 7);
        // Far above: max. No load: min.
        assert_eq!(desired(&a, 2, load(1e9, None)), 10);
        assert_eq!(desired(&a, 4, load(0.0, None)), 1);
        // Half the threshold: half the instances.
        assert_eq!(desired(&a, 4, load(20.0, None)), 2);
    }

    #[test]
    fn within_ten_per_cent_of_the_threshold_nothing_changes() {
        let a = scaler(1, 10, &[("qps", 10.0)]);
        for qps in [27.0, 30.0, 33.0] {
            assert_eq!(desired(&a, 3, load(qps, None)), 3, "{qps}");
        }
        assert_eq!(desired(&a, 3, load(34.0, None)), 4);
        assert_eq!(desired(&a, 3, load(26.0, None)), 3, "ceil(3 × 0.867) = 3");
        assert_eq!(desired(&a, 3, load(19.0, None)), 2);
    }

    #[test]
    fn the_largest_strategy_wins_and_a_missing_metric_is_skipped() {
        let a = scaler(1, 8, &[("qps", 100.0), ("cpu", 50.0)]);
        // qps asks for 1, CPU at 150 % of its threshold for ceil(2 × 3) = 6.
        assert_eq!(desired(&a, 2, load(10.0, Some(150.0))), 6);
        // No CPU reading: qps alone decides.
        assert_eq!(desired(&a, 2, load(10.0, None)), 1);
        // Never below min.
        let b = scaler(3, 8, &[("cpu", 50.0)]);
        assert_eq!(desired(&b, 4, load(0.0, Some(1.0))), 3);
    }

    #[test]
    fn nodes_add_up_and_cpu_is_averaged_per_instance() {
        let l = combine(&[
            NodeLoad {
                qps: 10.0,
                cpu: Some(20.0),
                instances: 1,
            },
            NodeLoad {
                qps: 30.0,
                cpu: Some(80.0),
                instances: 3,
            },
            NodeLoad {
                qps: 5.0,
                cpu: None,
                instances: 1,
            },
        ]);
        assert_eq!(l.qps, 45.0);
        assert_eq!(l.cpu, Some((20.0 + 240.0) / 4.0));
        assert_eq!(combine(&[]).cpu, None);
    }

    #[test]
    fn a_cron_job_is_due_once_its_time_passes_and_the_latest_wins() {
        let c = CronScaler {
            scale_jobs: vec![
                ScaleJob {
                    name: "morning".into(),
                    schedule: "0 8 * * *".into(),
                    target_size: 4,
                },
                ScaleJob {
                    name: "evening".into(),
                    schedule: "0 20 * * *".into(),
                    target_size: 1,
                },
            ],
        };
        let t = |h: u32, m: u32| {
            DateTime::parse_from_rfc3339(&format!("2026-12-04T{h:02}:{m:02}:00Z"))
                .unwrap()
                .with_timezone(&Utc)
        };
        assert!(due_job(&c, t(7, 0), t(7, 59)).is_none());
        let (job, at) = due_job(&c, t(7, 59), t(8, 0)).expect("due at 8:00");
        assert_eq!((job.name.as_str(), at), ("morning", t(8, 0)));
        // Already looked at 8:00: not due again until the evening.
        assert!(due_job(&c, t(8, 0), t(19, 0)).is_none());
        // Asleep across both: the later one is what holds now.
        let (job, _) = due_job(&c, t(7, 0), t(21, 0)).expect("due");
        assert_eq!((job.name.as_str(), job.target_size), ("evening", 1));
    }

    #[test]
    fn scaling_out_is_at_once_and_in_only_after_the_cool_down() {
        let mut c = CoolDown::default();
        let t0 = Instant::now();
        let delay = Duration::from_secs(30);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(c.decide("s", 1, 3, at(0), delay), Some(3));
        assert_eq!(c.decide("s", 3, 3, at(1), delay), None);
        // Fewer asked at 10 s: not before 40 s.
        assert_eq!(c.decide("s", 3, 1, at(10), delay), None);
        assert_eq!(c.decide("s", 3, 2, at(39), delay), None);
        assert_eq!(c.decide("s", 3, 1, at(40), delay), Some(1));
        // A load that returns during the cool-down restarts it.
        assert_eq!(c.decide("s", 3, 1, at(50), delay), None);
        assert_eq!(c.decide("s", 3, 3, at(60), delay), None);
        assert_eq!(c.decide("s", 3, 1, at(70), delay), None);
        assert_eq!(c.decide("s", 3, 1, at(99), delay), None);
        assert_eq!(c.decide("s", 3, 1, at(100), delay), Some(1));
    }
}
