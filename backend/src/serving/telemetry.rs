//! Traces of predictions over OpenTelemetry, exported with OTLP/HTTP to
//! `--otlp-endpoint` (off without it). Each prediction is a server span
//! (continuing the caller's W3C `traceparent` when it sends one) with a
//! child span for each part of its way: waiting in the queue, waiting for
//! its batch to fill, the engine call. The batcher measures those parts on
//! its own thread, so the spans are made afterwards with the measured
//! times. The SDK's batch processor exports from a thread of its own.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

use crate::serving::execute::Timing;

static TELEMETRY: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

/// Starts exporting traces to `endpoint` (an OTLP/HTTP traces URL, like
/// `http://collector:4318/v1/traces`), keeping `ratio` of the traces that
/// no caller decided for (a caller's sampled flag is followed).
pub fn init(endpoint: &str, ratio: f64, node: &str) -> Result<(), String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
    // Exported a second after they end, not the SDK's default five.
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_secs(1))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("whetstone")
                .with_attribute(KeyValue::new("service.instance.id", node.to_string()))
                .build(),
        )
        .build();
    let tracer = provider.tracer("whetstone");
    TELEMETRY
        .set((provider, tracer))
        .map_err(|_| "tracing was set up twice".to_string())
}

/// Exports what is pending (at shutdown).
pub fn flush() {
    if let Some((provider, _)) = TELEMETRY.get() {
        let _ = provider.force_flush();
    }
}

/// The trace of one prediction, from its arrival.
pub struct PredictionTrace {
    cx: Context,
    trace_id: String,
}

/// Starts the trace of a prediction of `service` that arrived at `at`;
/// `None` when tracing is off.
pub fn start(
    headers: &HeaderMap,
    service: &str,
    protocol: &str,
    at: SystemTime,
) -> Option<PredictionTrace> {
    let (_, tracer) = TELEMETRY.get()?;
    let parent = opentelemetry_sdk::propagation::TraceContextPropagator::new()
        .extract(&opentelemetry_http::HeaderExtractor(headers));
    let span = tracer
        .span_builder(format!("predict {service}"))
        .with_kind(SpanKind::Server)
        .with_start_time(at)
        .with_attributes([
            KeyValue::new("whet.service", service.to_string()),
            KeyValue::new("whet.protocol", protocol.to_string()),
        ])
        .start_with_context(tracer, &parent);
    // Display pads the id to 32 hex digits.
    let trace_id = span.span_context().trace_id().to_string();
    Some(PredictionTrace {
        cx: parent.with_span(span),
        trace_id,
    })
}

impl PredictionTrace {
    /// The id to give the caller (`X-Trace-Id`) and the request log.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// Ends the trace: the parts of the way `timing` measured as child
    /// spans, the answer's status and the version that served it.
    pub fn finish(
        self,
        status: u16,
        version: Option<u32>,
        timing: Option<Timing>,
        end: SystemTime,
    ) {
        let Some((_, tracer)) = TELEMETRY.get() else {
            return;
        };
        if let Some(t) = timing {
            let engine_start = t.started_at;
            let taken = engine_start - t.gathered;
            let parts = [
                ("queue", engine_start - t.queued, taken),
                ("batch", taken, engine_start),
                ("engine", engine_start, engine_start + t.engine),
            ];
            for (name, from, to) in parts {
                let mut span = tracer
                    .span_builder(name)
                    .with_kind(SpanKind::Internal)
                    .with_start_time(from)
                    .with_attributes([KeyValue::new("whet.batch_rows", t.batch_rows as i64)])
                    .start_with_context(tracer, &self.cx);
                span.end_with_timestamp(to);
            }
        }
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some(v) = version {
            span.set_attribute(KeyValue::new("whet.version", i64::from(v)));
        }
        if status >= 500 {
            span.set_status(opentelemetry::trace::Status::error(format!(
                "status {status}"
            )));
        }
        span.end_with_timestamp(end);
    }
}
