//! Prometheus metrics, served at `GET /metrics` in the text exposition format.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub engine_seconds: HistogramVec,
    pub instances: IntGaugeVec,
    pub deploy_seconds: HistogramVec,
    pub optimization_seconds: HistogramVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
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
    let engine_seconds = HistogramVec::new(
        HistogramOpts::new(
            "engine_duration_seconds",
            "Engine call time of a prediction",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
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
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(request_seconds.clone()))?;
    registry.register(Box::new(engine_seconds.clone()))?;
    registry.register(Box::new(instances.clone()))?;
    registry.register(Box::new(deploy_seconds.clone()))?;
    registry.register(Box::new(optimization_seconds.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        request_seconds,
        engine_seconds,
        instances,
        deploy_seconds,
        optimization_seconds,
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

pub fn observe_request(
    service: &str,
    protocol: &str,
    code: u16,
    total: Duration,
    engine: Option<Duration>,
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
            .with_label_values(&[service])
            .observe(e.as_secs_f64());
    }
}

pub fn set_instances(service: &str, n: usize) {
    if let Some(m) = get() {
        m.instances.with_label_values(&[service]).set(n as i64);
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

/// The exposition text.
pub fn render() -> String {
    let Some(m) = get() else { return String::new() };
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut buf) {
        tracing::error!("encoding metrics: {e}");
    }
    String::from_utf8_lossy(&buf).into_owned()
}
