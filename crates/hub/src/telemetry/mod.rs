//! Logs, traces and metrics.
//!
//! - this module: the tracing subscriber (JSON or text logs, OpenTelemetry export), trace context in and out of
//!   events, and the Prometheus recorder;
//! - [`instruments`]: the catalog of every metric the hub exports, and the functions that record them;
//! - [`stats`]: the counts `/api/health/pubsub` reports.

pub mod instruments;
pub mod stats;

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Whether spans are exported (so the delivery path builds its per-event spans only then).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Installs the global tracing subscriber: logs filtered by `RUST_LOG` (default `info`), as JSON lines when `json`;
/// and OpenTelemetry traces over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the other standard `OTEL_*`
/// variables apply, `OTEL_TRACES_SAMPLER` among them). Each has its own filter: the spans exported do not depend
/// on the log level (`HUB_TRACE_FILTER`, default `info`). An incoming W3C `traceparent` continues its trace.
/// Returns the tracer provider, to shut down (and flush) on exit.
pub fn init_subscriber(json: bool) -> Option<SdkTracerProvider> {
    let log_filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").and_then(|_| match tracer_provider() {
        Ok(provider) => Some(provider),
        Err(e) => {
            eprintln!("OpenTelemetry export is off: {e}");
            None
        }
    });
    let trace_filter = EnvFilter::try_from_env("HUB_TRACE_FILTER").unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("realtime-hub")).with_filter(trace_filter));
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    let registry = tracing_subscriber::registry().with(otel);
    if json {
        registry.with(tracing_subscriber::fmt::layer().json().with_filter(log_filter())).init();
    } else {
        // Colours only for a terminal: log collectors store escape codes verbatim.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        registry.with(tracing_subscriber::fmt::layer().with_ansi(ansi).with_filter(log_filter())).init();
    }
    provider
}

/// The trace context a publisher stored with an event, to parent the hub's spans for it: only when spans are
/// exported and the publisher's span was sampled, so an unsampled flood costs nothing.
pub fn event_parent(traceparent: Option<&str>) -> Option<opentelemetry::Context> {
    let traceparent = traceparent.filter(|t| EXPORTING.load(Ordering::Relaxed) && t.ends_with("-01"))?;
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    Some(opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier)))
}

/// The W3C `traceparent` of `span` as exported, stored with events that carry no trace context of their own so
/// that their delivery joins the publishing request's trace (a service publishing over HTTP with OpenTelemetry sends
/// only a `traceparent` header). `None` when spans are not exported or `span` is not recorded.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !EXPORTING.load(Ordering::Relaxed) {
        return None;
    }
    let context = span.context();
    let span = context.span();
    let context = span.span_context();
    context
        .is_valid()
        .then(|| format!("00-{}-{}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8()))
}

/// An OTLP/HTTP exporter (protobuf, blocking client on its own thread) behind a batch processor.
/// The request's span for as long as its handler runs, not for the life of its response body: the middleware of
/// the streaming routes. Named and parented like `TracingLogger`'s (`HTTP request`, a W3C `traceparent` header
/// continues its trace), with the method, the route and the status.
pub async fn request_span(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::info_span!(
        "HTTP request",
        http.method = %req.method(),
        http.route = req.match_pattern().unwrap_or_default(),
        http.target = %req.uri().path_and_query().map_or("", |p| p.as_str()),
        otel.kind = "server",
        http.status_code = tracing::field::Empty,
    );
    let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
    if let Some(traceparent) = traceparent.filter(|_| EXPORTING.load(Ordering::Relaxed)) {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
        // A span that is not recorded (filtered out) has no parent to set.
        let _ = span.set_parent(parent);
    }
    let outcome = next.call(req).instrument(span.clone()).await;
    let status = match &outcome {
        Ok(response) => response.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    span.record("http.status_code", status.as_u16());
    outcome
}

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
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("hub_client_ack_lag_events".into()),
                    &[0.0, 1.0, 10.0, 100.0, 1000.0, 10000.0],
                )
            })
            .expect("the bucket lists are not empty")
            .install_recorder()
            .expect("the Prometheus recorder is installed once per process")
    })
}
