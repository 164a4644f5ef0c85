//! Calibration: activation ranges from sample data, streamed one sample at a
//! time so memory stays bounded by (tensors observed × histogram bins), never
//! by samples × activation sizes.

use std::collections::HashMap;

use crate::data::Sample;
use crate::engine::{Engine, GraphLevel, SessionSettings};
use crate::error::{OptimizerError, Result};
use crate::onnx::{self, ModelProto, TypeProto, TypeTensor, TypeValue, ValueInfoProto};
use crate::tensor::TensorData;

/// How a range is chosen from the observed values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The observed minimum and maximum.
    MinMax,
    /// Clip to the given percentile of |x| (e.g. 99.99), ignoring rare outliers.
    Percentile(f64),
    /// The clipping threshold minimizing the KL divergence between the
    /// float and the 8-bit histogram (TensorRT's entropy calibration).
    Entropy,
}

impl Method {
    pub fn label(&self) -> String {
        match self {
            Method::MinMax => "minmax".into(),
            Method::Percentile(p) => format!("percentile{p}"),
            Method::Entropy => "entropy".into(),
        }
    }

    fn needs_histogram(&self) -> bool {
        !matches!(self, Method::MinMax)
    }
}

/// A float range to quantize a tensor over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

const BINS: usize = 2048;

struct Hist {
    /// Histogram of |x| over [0, limit].
    limit: f32,
    counts: Vec<u64>,
}

/// A model that also outputs every observed tensor.
fn observing_model(model: &ModelProto, tensors: &[String]) -> ModelProto {
    let mut m = model.clone();
    let g = onnx::graph_mut(&mut m);
    // Graph inputs are read from the samples themselves: asking ORT to output
    // an input hands back a view of the caller's buffer.
    let existing: std::collections::HashSet<String> = g
        .output
        .iter()
        .chain(&g.input)
        .map(|o| o.name.clone())
        .collect();
    for t in tensors.iter().filter(|t| !existing.contains(*t)) {
        g.output.push(ValueInfoProto {
            name: t.clone(),
            // Element type only: ORT infers the shape.
            r#type: Some(TypeProto {
                value: Some(TypeValue::TensorType(TypeTensor {
                    elem_type: onnx::data_type::FLOAT,
                    shape: None,
                })),
                denotation: String::new(),
            }),
            ..Default::default()
        });
    }
    m
}

/// Observes `tensors` over `samples` and returns one range per tensor.
pub fn calibrate(
    model: &ModelProto,
    tensors: &[String],
    samples: &[Sample],
    method: Method,
    threads: usize,
) -> Result<HashMap<String, Range>> {
    Ok(calibrate_all(model, tensors, samples, &[method], threads)?.remove(0))
}

/// Ranges for several methods at once: one MinMax pass, then (when any
/// method needs it) one histogram pass shared by all of them.
pub fn calibrate_all(
    model: &ModelProto,
    tensors: &[String],
    samples: &[Sample],
    methods: &[Method],
    threads: usize,
) -> Result<Vec<HashMap<String, Range>>> {
    if samples.is_empty() {
        return Err(OptimizerError::Config(
            "calibration needs at least one sample".into(),
        ));
    }
    let obs = observing_model(model, tensors);
    let mut engine = Engine::from_bytes(
        &onnx::to_bytes(&obs),
        &SessionSettings::new(GraphLevel::Basic, threads),
    )?;
    let mut ranges: HashMap<String, Range> = HashMap::new();
    let mut run = |sample: &Sample, f: &mut dyn FnMut(&str, &[f32])| -> Result<()> {
        for (name, t) in sample {
            if let TensorData::F32(v) = &t.data {
                f(name, v);
            }
        }
        for (name, t) in engine.run(sample)? {
            if let TensorData::F32(v) = &t.data {
                f(&name, v);
            }
        }
        Ok(())
    };
    for s in samples {
        run(s, &mut |name, v| {
            if !tensors.iter().any(|t| t == name) || v.is_empty() {
                return;
            }
            let (lo, hi) = v
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                    if x.is_finite() {
                        (a.min(x), b.max(x))
                    } else {
                        (a, b)
                    }
                });
            let r = ranges
                .entry(name.to_string())
                .or_insert(Range { min: lo, max: hi });
            r.min = r.min.min(lo);
            r.max = r.max.max(hi);
        })?;
    }
    if !methods.iter().any(Method::needs_histogram) {
        return Ok(methods.iter().map(|_| ranges.clone()).collect());
    }
    let mut hists: HashMap<String, Hist> = ranges
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                Hist {
                    limit: r.min.abs().max(r.max.abs()).max(1e-12),
                    counts: vec![0; BINS],
                },
            )
        })
        .collect();
    for s in samples {
        run(s, &mut |name, v| {
            if let Some(h) = hists.get_mut(name) {
                let scale = BINS as f32 / h.limit;
                for &x in v.iter().filter(|x| x.is_finite()) {
                    let b = ((x.abs() * scale) as usize).min(BINS - 1);
                    h.counts[b] += 1;
                }
            }
        })?;
    }
    let mut all = Vec::with_capacity(methods.len());
    for method in methods {
        let mut clipped = ranges.clone();
        for (name, h) in &hists {
            let threshold = match *method {
                Method::Percentile(p) => percentile_threshold(h, p),
                Method::Entropy => entropy_threshold(h),
                Method::MinMax => h.limit,
            };
            if let Some(r) = clipped.get_mut(name) {
                // Symmetric clipping of |x|, applied to each side that exists.
                r.min = r.min.max(-threshold);
                r.max = r.max.min(threshold);
            }
        }
        all.push(clipped);
    }
    Ok(all)
}

/// Per-channel (last axis) max |x| of each tensor over the samples, streamed:
/// the activation statistics SmoothQuant's scale migration needs.
pub fn channel_absmax(
    model: &ModelProto,
    tensors: &[String],
    samples: &[Sample],
    threads: usize,
) -> Result<HashMap<String, Vec<f32>>> {
    let obs = observing_model(model, tensors);
    let mut engine = Engine::from_bytes(
        &onnx::to_bytes(&obs),
        &SessionSettings::new(GraphLevel::Basic, threads),
    )?;
    let mut out: HashMap<String, Vec<f32>> = HashMap::new();
    let mut fold = |name: &str, t: &crate::tensor::Tensor| {
        let (TensorData::F32(v), Some(&c)) = (&t.data, t.shape.last()) else {
            return;
        };
        if c == 0 || !tensors.iter().any(|x| x == name) {
            return;
        }
        let m = out.entry(name.to_string()).or_insert_with(|| vec![0.0; c]);
        if m.len() != c {
            return;
        }
        for (i, x) in v.iter().enumerate() {
            if x.is_finite() {
                m[i % c] = m[i % c].max(x.abs());
            }
        }
    };
    for s in samples {
        for (name, t) in s {
            fold(name, t);
        }
        for (name, t) in engine.run(s)? {
            fold(&name, &t);
        }
    }
    Ok(out)
}

fn percentile_threshold(h: &Hist, p: f64) -> f32 {
    let total: u64 = h.counts.iter().sum();
    let want = (total as f64 * p / 100.0).ceil() as u64;
    let mut acc = 0u64;
    for (i, c) in h.counts.iter().enumerate() {
        acc += c;
        if acc >= want {
            return (i + 1) as f32 * h.limit / BINS as f32;
        }
    }
    h.limit
}

/// KL-divergence calibration over a histogram of |x| with 128 target levels
/// (the positive half of 8 bits).
fn entropy_threshold(h: &Hist) -> f32 {
    const LEVELS: usize = 128;
    let total: f64 = h.counts.iter().map(|&c| c as f64).sum();
    if total == 0.0 {
        return h.limit;
    }
    let mut best = (f64::INFINITY, BINS);
    // Candidate thresholds at every 16th bin from LEVELS on, to keep it cheap.
    for i in (LEVELS..=BINS).step_by(16) {
        let mut p: Vec<f64> = h.counts[..i].iter().map(|&c| c as f64).collect();
        let outliers: f64 = h.counts[i..].iter().map(|&c| c as f64).sum();
        p[i - 1] += outliers;
        // Quantize the first i bins into LEVELS levels, then expand back.
        let mut q = vec![0.0f64; i];
        let per = i as f64 / LEVELS as f64;
        for l in 0..LEVELS {
            let (a, b) = (
                (l as f64 * per) as usize,
                (((l + 1) as f64 * per) as usize).min(i),
            );
            // Non-zero is judged on the reference distribution (outliers
            // merged in), so the clipped mass has somewhere to go in q.
            let nonzero = p[a..b].iter().filter(|&&c| c > 0.0).count();
            if nonzero == 0 {
                continue;
            }
            let sum: f64 = p[a..b].iter().sum();
            for j in a..b {
                if p[j] > 0.0 {
                    q[j] = sum / nonzero as f64;
                }
            }
        }
        let (ps, qs): (f64, f64) = (p.iter().sum(), q.iter().sum());
        if qs == 0.0 {
            continue;
        }
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(pv, _)| **pv > 0.0)
            .map(|(pv, qv)| {
                let (pn, qn) = (pv / ps, (qv / qs).max(1e-12));
                pn * (pn / qn).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, i);
        }
    }
    best.1 as f32 * h.limit / BINS as f32
}

/// Per-channel (axis 1: NCHW channels, or the features of [N, C]) mean of
/// each tensor over the samples, streamed.
pub fn channel_means(
    model: &ModelProto,
    tensors: &[String],
    samples: &[Sample],
    threads: usize,
) -> Result<HashMap<String, Vec<f64>>> {
    let obs = observing_model(model, tensors);
    let mut engine = Engine::from_bytes(
        &onnx::to_bytes(&obs),
        &SessionSettings::new(GraphLevel::Basic, threads),
    )?;
    let mut sums: HashMap<String, (Vec<f64>, u64)> = HashMap::new();
    for s in samples {
        // Graph inputs come from the sample itself (see observing_model).
        let outputs = engine.run(s)?;
        for (name, t) in s.iter().cloned().chain(outputs) {
            let (TensorData::F32(v), Some(&c)) = (&t.data, t.shape.get(1)) else {
                continue;
            };
            if c == 0 || !tensors.contains(&name) {
                continue;
            }
            let inner: usize = t.shape[2..].iter().product();
            let (acc, n) = sums.entry(name).or_insert_with(|| (vec![0.0; c], 0));
            if acc.len() != c {
                continue;
            }
            for (i, x) in v.iter().enumerate() {
                acc[(i / inner.max(1)) % c] += *x as f64;
            }
            *n += (v.len() / c) as u64;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(k, (acc, n))| (k, acc.into_iter().map(|a| a / n.max(1) as f64).collect()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values: &[f32]) -> Hist {
        let limit = values.iter().fold(0f32, |a, v| a.max(v.abs()));
        let mut counts = vec![0; BINS];
        for v in values {
            counts[((v.abs() * BINS as f32 / limit) as usize).min(BINS - 1)] += 1;
        }
        Hist { limit, counts }
    }

    #[test]
    fn percentile_ignores_a_rare_outlier() {
        let mut v: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32 / 100.0).collect();
        v.push(100.0);
        let t = percentile_threshold(&hist(&v), 99.9);
        assert!(t < 2.0, "threshold {t} follows the outlier");
    }

    #[test]
    fn entropy_clips_a_long_tail_but_keeps_the_bulk() {
        let mut v: Vec<f32> = (0..20_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        v.extend((0..5).map(|i| 50.0 + i as f32));
        let t = entropy_threshold(&hist(&v));
        assert!((0.9..54.0).contains(&t), "threshold {t}");
    }
}
