//! Latency measurement of one engine on one input set.

use std::time::{Duration, Instant};

use shared::api::ShapeLatency;

use crate::data::Sample;
use crate::engine::InferenceEngine;
use crate::error::Result;

/// How long to time each (candidate, shape) pair.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub warmup: usize,
    pub min_runs: usize,
    pub max_runs: usize,
    pub time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            warmup: 2,
            min_runs: 5,
            max_runs: 200,
            time: Duration::from_millis(1500),
        }
    }
}

/// Runs `sample` until the budget is spent; p50/p90 of the timed runs.
pub fn time(
    engine: &mut (impl InferenceEngine + ?Sized),
    sample: &Sample,
    label: &str,
    budget: &Budget,
) -> Result<ShapeLatency> {
    for _ in 0..budget.warmup {
        engine.run(sample)?;
    }
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < budget.max_runs
        && (times.len() < budget.min_runs || start.elapsed() < budget.time)
    {
        let t = Instant::now();
        engine.run(sample)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(ShapeLatency {
        shapes: label.to_string(),
        p50_ms: percentile(&mut times, 0.5),
        p90_ms: percentile(&mut times, 0.9),
        runs: times.len(),
    })
}

/// Nearest-rank percentile; sorts in place.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let idx = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    values[idx]
}

/// The SIMD flags of this CPU that decide engine speed (machines of our
/// kind differ: some have AVX-512 VNNI, some only AVX2), for a benchmark
/// to print beside its figures.
#[cfg(any(test, feature = "internals"))]
pub fn cpu_flags() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let have: Vec<&str> = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "amx_tile",
    ]
    .into_iter()
    .filter(|f| flags.split_whitespace().any(|x| x == *f))
    .collect();
    if have.is_empty() {
        "none of avx2/avx512/vnni".into()
    } else {
        have.join(" ")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentile_is_nearest_rank() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(super::percentile(&mut v, 0.5), 3.0);
        assert_eq!(super::percentile(&mut v, 0.9), 5.0);
        assert!(super::percentile(&mut [], 0.5).is_nan());
    }
}
