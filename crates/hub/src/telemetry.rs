//! Logs, traces and metrics.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global tracing subscriber: `RUST_LOG` filters (default `info`), JSON lines when `json`, and
/// OpenTelemetry traces over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the other standard `OTEL_*`
/// variables apply). An incoming W3C `traceparent` continues its trace. Returns the tracer provider, to shut
/// down (and flush) on exit.
pub fn init_subscriber(json: bool) -> Option<SdkTracerProvider> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").and_then(|_| match tracer_provider() {
        Ok(provider) => Some(provider),
        Err(e) => {
            eprintln!("OpenTelemetry export is off: {e}");
            None
        }
    });
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("realtime-hub")));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    if json {
        registry.with(tracing_subscriber::fmt::layer().json()).init();
    } else {
        // Colours only for a terminal: log collectors store escape codes verbatim.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        registry.with(tracing_subscriber::fmt::layer().with_ansi(ansi)).init();
    }
    provider
}

/// An OTLP/HTTP exporter (protobuf, blocking client on its own thread) behind a batch processor.
fn tracer_provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = Resource::builder().with_service_name("realtime-hub").build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// The process-wide Prometheus recorder, installed on first use (every hub in a process shares it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let latency = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("hub_client_ack_lag_events".into()),
                    &[0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0],
                )
            })
            .expect("the bucket lists are not empty")
            .install_recorder()
            .expect("the Prometheus recorder is installed once per process");
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("hub_connections", "Open WebSocket and SSE connections.");
    describe_counter!("hub_events_published_total", "Events appended through POST /api/publish.");
    describe_counter!("hub_events_dispatched_total", "Events handed from the log to dispatch.");
    describe_counter!("hub_events_delivered_total", "Live events written to connections.");
    describe_counter!("hub_events_replayed_total", "Events written to connections by replay.");
    describe_counter!("hub_resets_total", "Resumes answered with reset (history truncated).");
    describe_counter!("hub_slow_consumer_closes_total", "Connections closed as slow consumers.");
    describe_counter!("hub_listener_reconnects_total", "Times the live feed of the log was lost and reopened.");
    describe_counter!("hub_protocol_violations_total", "Malformed or binary client frames.");
    describe_counter!("hub_rate_limited_total", "Requests refused by a rate limit.");
    describe_histogram!("hub_dispatch_lag_seconds", "Time from append to dispatch of a batch's newest event.");
    describe_histogram!("hub_publish_latency_seconds", "Time to answer POST /api/publish.");
    describe_histogram!("hub_client_ack_lag_events", "Events dispatched but not yet acknowledged by a client.");
}
