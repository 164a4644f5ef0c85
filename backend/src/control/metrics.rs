//! Prometheus metrics, served at `GET /metrics` in the text exposition format.
//!
//! Ours carry the `whet_` prefix; the process metrics of the standard
//! collector (`process_resident_memory_bytes`, CPU seconds, open files) keep
//! their usual names so load tests and dashboards find them as usual.
//! Failed requests are `whet_requests_total` with a non-2xx `code`. The
//! same requests by the version that served them (a traffic split's
//! versions side by side) are `whet_version_requests_total` and
//! `whet_version_request_duration_seconds`.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// The process collector, outside the prefixed registry.
    process: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub version_requests: IntCounterVec,
    pub version_seconds: HistogramVec,
    pub queue_seconds: HistogramVec,
    pub engine_seconds: HistogramVec,
    pub batch_size: HistogramVec,
    pub queue_depth: IntGaugeVec,
    pub instances: IntGaugeVec,
    pub deploy_seconds: HistogramVec,
    pub optimization_seconds: HistogramVec,
    pub runner_restarts: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const DEPLOY_BUCKETS: &[f64] = &[1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("whet".into()), None)?;
    let requests = IntCounterVec::new(
        Opts::new(
            "requests_total",
            "Prediction requests by service, protocol and HTTP status",
        ),
        &["service", "protocol", "code"],
    )?;
    let request_seconds = HistogramVec::new(
        HistogramOpts::new(
            "request_duration_seconds",
            "Prediction request time, parsing to answer",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["service", "protocol"],
    )?;
    let version_requests = IntCounterVec::new(
        Opts::new(
            "version_requests_total",
            "Prediction requests by service, the version that served them and HTTP status",
        ),
        &["service", "version", "code"],
    )?;
    let version_seconds = HistogramVec::new(
        HistogramOpts::new(
            "version_request_duration_seconds",
            "Prediction request time by service and the version that served it",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["service", "version"],
    )?;
    let queue_seconds = HistogramVec::new(
        HistogramOpts::new(
            "queue_duration_seconds",
            "Time a prediction waited in the service's queue (and for its batch to fill)",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["service", "protocol"],
    )?;
    let engine_seconds = HistogramVec::new(
        HistogramOpts::new(
            "engine_duration_seconds",
            "Engine call time of a prediction (the whole batch's call when batched)",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
        &["service", "protocol"],
    )?;
    let batch_size = HistogramVec::new(
        HistogramOpts::new(
            "batch_size",
            "Rows per engine call (requests merged by dynamic batching)",
        )
        .buckets(BATCH_BUCKETS.to_vec()),
        &["service"],
    )?;
    let queue_depth = IntGaugeVec::new(
        Opts::new("queue_depth", "Predictions waiting in the service's queue"),
        &["service"],
    )?;
    let instances = IntGaugeVec::new(
        Opts::new("instances", "Serving instances per service"),
        &["service"],
    )?;
    let deploy_seconds = HistogramVec::new(
        HistogramOpts::new("deploy_duration_seconds", "Deploy job time, by outcome")
            .buckets(DEPLOY_BUCKETS.to_vec()),
        &["outcome"],
    )?;
    let optimization_seconds = HistogramVec::new(
        HistogramOpts::new(
            "optimization_duration_seconds",
            "Plugin (optimizer) run time, by outcome",
        )
        .buckets(DEPLOY_BUCKETS.to_vec()),
        &["outcome"],
    )?;
    let runner_restarts = IntCounterVec::new(
        Opts::new(
            "runner_restarts_total",
            "Runner processes started again after they ended, per service",
        ),
        &["service"],
    )?;
    registry.register(Box::new(runner_restarts.clone()))?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(request_seconds.clone()))?;
    registry.register(Box::new(version_requests.clone()))?;
    registry.register(Box::new(version_seconds.clone()))?;
    registry.register(Box::new(queue_seconds.clone()))?;
    registry.register(Box::new(engine_seconds.clone()))?;
    registry.register(Box::new(batch_size.clone()))?;
    registry.register(Box::new(queue_depth.clone()))?;
    registry.register(Box::new(instances.clone()))?;
    registry.register(Box::new(deploy_seconds.clone()))?;
    registry.register(Box::new(optimization_seconds.clone()))?;
    let process = Registry::new();
    // The collector reads /proc; elsewhere there are no process metrics.
    #[cfg(target_os = "linux")]
    process.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(Metrics {
        registry,
        process,
        requests,
        request_seconds,
        version_requests,
        version_seconds,
        queue_seconds,
        engine_seconds,
        batch_size,
        queue_depth,
        instances,
        deploy_seconds,
        optimization_seconds,
        runner_restarts,
    })
}

/// The process-wide metrics (`None` only if the fixed definitions above were invalid).
pub fn get() -> Option<&'static Metrics> {
    static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| match build() {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::error!("metrics disabled: {e}");
                None
            }
        })
        .as_ref()
}

/// Where one prediction's time went: total, and for an answered one the
/// time queued and in the engine.
pub fn observe_request(
    service: &str,
    protocol: &str,
    code: u16,
    total: Duration,
    engine: Option<Duration>,
    queued: Option<Duration>,
) {
    let Some(m) = get() else { return };
    m.requests
        .with_label_values(&[service, protocol, &code.to_string()])
        .inc();
    m.request_seconds
        .with_label_values(&[service, protocol])
        .observe(total.as_secs_f64());
    if let Some(e) = engine {
        m.engine_seconds
            .with_label_values(&[service, protocol])
            .observe(e.as_secs_f64());
    }
    if let Some(q) = queued {
        m.queue_seconds
            .with_label_values(&[service, protocol])
            .observe(q.as_secs_f64());
    }
}

/// A prediction again, by the version of the service that served it.
pub fn observe_version(service: &str, version: u32, code: u16, total: Duration) {
    let Some(m) = get() else { return };
    let v = version.to_string();
    m.version_requests
        .with_label_values(&[service, &v, &code.to_string()])
        .inc();
    m.version_seconds
        .with_label_values(&[service, &v])
        .observe(total.as_secs_f64());
}

/// A service queue's own series, resolved once so the batcher's hot path
/// does no label lookups.
pub struct QueueMetrics {
    pub batch_size: Histogram,
    pub queue_depth: IntGauge,
}

pub fn queue_metrics(service: &str) -> Option<QueueMetrics> {
    let m = get()?;
    Some(QueueMetrics {
        batch_size: m.batch_size.with_label_values(&[service]),
        queue_depth: m.queue_depth.with_label_values(&[service]),
    })
}

pub fn set_instances(service: &str, n: usize) {
    if let Some(m) = get() {
        m.instances.with_label_values(&[service]).set(n as i64);
        if n == 0 {
            m.queue_depth.with_label_values(&[service]).set(0);
        }
    }
}

pub fn observe_deploy(ok: bool, took: Duration) {
    if let Some(m) = get() {
        m.deploy_seconds
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .observe(took.as_secs_f64());
    }
}

pub fn observe_optimization(ok: bool, took: Duration) {
    if let Some(m) = get() {
        m.optimization_seconds
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .observe(took.as_secs_f64());
    }
}

/// `label` is `service/instance`.
pub fn observe_runner_restart(label: &str) {
    if let Some(m) = get() {
        let service = label.rsplit_once('/').map_or(label, |(s, _)| s);
        m.runner_restarts.with_label_values(&[service]).inc();
    }
}

/// The exposition text, with the series of a service only where
/// `visible(service)` (the server-wide ones always).
pub fn render(visible: impl Fn(&str) -> bool) -> String {
    let Some(m) = get() else { return String::new() };
    let mut buf = Vec::new();
    let mut families = m.registry.gather();
    families.extend(m.process.gather());
    for f in &mut families {
        f.mut_metric().retain(|metric| {
            metric
                .get_label()
                .iter()
                .find(|l| l.name() == "service")
                .is_none_or(|l| visible(l.value()))
        });
    }
    families.retain(|f| !f.get_metric().is_empty());
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!("encoding metrics: {e}");
    }
    String::from_utf8_lossy(&buf).into_owned()
}
