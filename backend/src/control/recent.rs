//! The last hour of predictions per service, for the team dashboard.
//!
//! Prometheus counters say "since start"; the dashboard needs "in the last
//! hour", so answered requests are also kept here in one-minute buckets.
//! A bucket keeps at most `SAMPLES_PER_MINUTE` latencies (reservoir
//! sampling beyond that), so memory per service stays bounded under any
//! load while the median stays representative.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::api::{ServiceSummary, TeamDashboard};

const WINDOW_MINUTES: u64 = 60;
const SAMPLES_PER_MINUTE: usize = 2048;

#[derive(Default)]
struct Bucket {
    minute: u64,
    count: u64,
    /// Answered with an error status (their latencies are not sampled).
    errors: u64,
    latencies_ms: Vec<f32>,
    /// The longest queue a request of this minute found.
    max_queue: u64,
}

#[derive(Default)]
struct Recent {
    services: HashMap<String, VecDeque<Bucket>>,
    /// State of the reservoir sampler (xorshift), no RNG dependency needed.
    seed: u64,
}

static RECENT: LazyLock<Mutex<Recent>> = LazyLock::new(|| {
    Mutex::new(Recent {
        seed: 0x9E37_79B9_7F4A_7C15,
        ..Recent::default()
    })
});

fn minute_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0)
}

impl Recent {
    #[cfg(test)]
    fn record_at(&mut self, service: &str, minute: u64, latency: Duration) {
        self.record_full(service, minute, Ok(latency), 0)
    }

    /// Counts one request of `service`: its latency when it succeeded, and
    /// the queue it found.
    fn record_full(
        &mut self,
        service: &str,
        minute: u64,
        outcome: Result<Duration, ()>,
        queue: u64,
    ) {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        let buckets = self.services.entry(service.to_string()).or_default();
        if buckets.back().is_none_or(|b| b.minute != minute) {
            buckets.push_back(Bucket {
                minute,
                ..Bucket::default()
            });
        }
        while buckets
            .front()
            .is_some_and(|b| b.minute + WINDOW_MINUTES <= minute)
        {
            buckets.pop_front();
        }
        let Some(b) = buckets.back_mut() else { return };
        b.count += 1;
        b.max_queue = b.max_queue.max(queue);
        let Ok(latency) = outcome else {
            b.errors += 1;
            return;
        };
        let ms = latency.as_secs_f32() * 1000.0;
        if b.latencies_ms.len() < SAMPLES_PER_MINUTE {
            b.latencies_ms.push(ms);
        } else {
            // Reservoir sampling: each of the `count` requests is kept with
            // equal probability.
            let k = (x % (b.count - b.errors)) as usize;
            if k < SAMPLES_PER_MINUTE {
                b.latencies_ms[k] = ms;
            }
        }
    }

    fn summary_at(&self, services: &[&str], minute: u64) -> Traffic {
        let (mut count, mut errors) = (0, 0);
        let mut all: Vec<f32> = Vec::new();
        for name in services {
            for b in self.services.get(*name).into_iter().flatten() {
                if b.minute + WINDOW_MINUTES > minute {
                    count += b.count;
                    errors += b.errors;
                    all.extend(&b.latencies_ms);
                }
            }
        }
        let mut all: Vec<f64> = all.into_iter().map(f64::from).collect();
        all.sort_by(f64::total_cmp);
        Traffic {
            requests: count,
            errors,
            p50_ms: median(all.clone()),
            p99_ms: quantile(&all, 0.99),
        }
    }
}

/// Requests, errors and the latency of those answered well, of a set of
/// services (or versions: [`crate::control::store::canary_key`]) over
/// the last hour.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Traffic {
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Records one prediction of `service` (a service, or one of its versions):
/// its latency, or that it failed, and the queue it found.
pub fn record(service: &str, outcome: Result<Duration, ()>, queue: u64) {
    let mut r = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    r.record_full(service, minute_now(), outcome, queue);
}

/// Minute by minute, the last hour of `service` on this node, oldest
/// first (minutes without requests included, as zeros).
pub fn per_minute(service: &str) -> Vec<shared::api::MinuteStats> {
    let r = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    r.per_minute_at(service, minute_now())
}

impl Recent {
    fn per_minute_at(&self, service: &str, now: u64) -> Vec<shared::api::MinuteStats> {
        let buckets = self.services.get(service);
        (now + 1 - WINDOW_MINUTES..=now)
            .map(|minute| {
                let b = buckets.and_then(|b| b.iter().find(|b| b.minute == minute));
                let mut lat: Vec<f64> = b
                    .map(|b| b.latencies_ms.iter().map(|&v| f64::from(v)).collect())
                    .unwrap_or_default();
                lat.sort_by(f64::total_cmp);
                shared::api::MinuteStats {
                    at: minute * 60,
                    requests: b.map_or(0, |b| b.count),
                    errors: b.map_or(0, |b| b.errors),
                    p50_ms: quantile(&lat, 0.5),
                    p99_ms: quantile(&lat, 0.99),
                    max_queue: b.map_or(0, |b| b.max_queue),
                }
            })
            .collect()
    }
}

/// Forgets a deleted service and its versions, so a new one of the same
/// name starts empty.
pub fn forget(service: &str) {
    let mut r = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    r.services
        .retain(|k, _| crate::control::store::split_key(k).0 != service);
}

pub fn last_hour(services: &[&str]) -> Traffic {
    let r = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    r.summary_at(services, minute_now())
}

/// The `q` quantile of sorted `v` (nearest rank).
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The team dashboard's aggregate numbers.
pub fn dashboard(team: String, services: Vec<ServiceSummary>, traffic: Traffic) -> TeamDashboard {
    let mut by_status = BTreeMap::new();
    for s in &services {
        *by_status.entry(s.status.as_str().to_string()).or_insert(0) += 1;
    }
    TeamDashboard {
        team,
        by_status,
        total_instances: services.iter().map(|s| s.instances).sum(),
        running_instances: services.iter().map(|s| s.running_instances).sum(),
        median_speedup: median(services.iter().filter_map(|s| s.speedup).collect()),
        requests_last_hour: traffic.requests,
        p50_ms_last_hour: traffic.p50_ms,
        services,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::api::ServiceStatus;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn only_the_last_hour_counts() {
        let mut r = Recent {
            seed: 1,
            ..Recent::default()
        };
        r.record_at("a", 100, ms(50));
        r.record_at("a", 130, ms(10));
        r.record_at("a", 130, ms(30));
        r.record_at("b", 130, ms(20));
        let t = r.summary_at(&["a"], 130);
        assert_eq!(t.requests, 3);
        assert_eq!(t.p50_ms.map(|v| v.round()), Some(30.0));
        // An hour after minute 100 its bucket no longer counts.
        let t = r.summary_at(&["a"], 160);
        assert_eq!(t.requests, 2);
        assert_eq!(t.p50_ms.map(|v| v.round()), Some(20.0));
        let t = r.summary_at(&["a", "b"], 130);
        assert_eq!(t.requests, 4);
        assert_eq!(r.summary_at(&["c"], 130), Traffic::default());
    }

    #[test]
    fn the_last_hour_minute_by_minute() {
        let mut r = Recent {
            seed: 1,
            ..Recent::default()
        };
        r.record_full("m", 100, Ok(ms(10)), 3);
        r.record_full("m", 100, Ok(ms(30)), 1);
        r.record_full("m", 130, Err(()), 0);
        let series = r.per_minute_at("m", 130);
        assert_eq!(series.len(), 60);
        assert_eq!(series[59].at, 130 * 60);
        let at = |m: u64| &series[(m - 71) as usize];
        assert_eq!(
            (at(100).requests, at(100).errors, at(100).max_queue),
            (2, 0, 3)
        );
        assert_eq!(at(100).p99_ms.map(f64::round), Some(30.0));
        assert_eq!(
            (at(130).requests, at(130).errors, at(130).p50_ms),
            (1, 1, None)
        );
        assert_eq!(at(101).requests, 0);
    }

    #[test]
    fn errors_are_counted_but_not_timed() {
        let mut r = Recent {
            seed: 1,
            ..Recent::default()
        };
        for i in 1..=100 {
            r.record_full("v", 7, Ok(ms(i)), 0);
        }
        r.record_full("v", 7, Err(()), 0);
        let t = r.summary_at(&["v"], 7);
        assert_eq!((t.requests, t.errors), (101, 1));
        assert_eq!(t.p99_ms.map(|v| v.round()), Some(99.0));
        assert_eq!(t.p50_ms.map(|v| v.round()), Some(51.0));
    }

    #[test]
    fn a_busy_minute_keeps_bounded_samples_and_exact_counts() {
        let mut r = Recent {
            seed: 7,
            ..Recent::default()
        };
        for i in 0..10_000u64 {
            r.record_at("a", 5, ms(if i % 2 == 0 { 1 } else { 9 }));
        }
        let b = &r.services["a"][0];
        assert_eq!(b.count, 10_000);
        assert_eq!(b.latencies_ms.len(), SAMPLES_PER_MINUTE);
        let slow = b.latencies_ms.iter().filter(|&&v| v > 5.0).count();
        // Half the requests were slow; the sample keeps roughly half.
        assert!((700..1350).contains(&slow), "{slow}");
    }

    #[test]
    fn dashboard_aggregates() {
        let s = |name: &str, status, inst, run, speedup| ServiceSummary {
            name: name.into(),
            status,
            processor: "onnx_cpu".into(),
            instances: inst,
            running_instances: run,
            optimization_level: None,
            speedup,
            created_at: String::new(),
            updated_at: String::new(),
            team: "ml".into(),
        };
        let d = dashboard(
            "ml".into(),
            vec![
                s("a", ServiceStatus::Running, 2, 2, Some(1.5)),
                s("b", ServiceStatus::Running, 1, 1, Some(3.0)),
                s("c", ServiceStatus::Failed, 1, 0, None),
                s("d", ServiceStatus::Stopped, 3, 0, Some(2.0)),
            ],
            Traffic {
                requests: 12,
                p50_ms: Some(4.0),
                ..Traffic::default()
            },
        );
        assert_eq!(d.by_status["Running"], 2);
        assert_eq!(d.by_status["Failed"], 1);
        assert_eq!(d.total_instances, 7);
        assert_eq!(d.running_instances, 3);
        assert_eq!(d.median_speedup, Some(2.0));
        assert_eq!(d.requests_last_hour, 12);
    }
}
