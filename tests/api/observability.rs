//! What an SRE sees: one trace from a worker's publish to the hub's fan-out, every metric from start-up, and no
//! secret in any log line.

use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use publisher::events::{ProjectId, RunEvent, RunId, RunScope, RunStatus};
use publisher::{HttpSink, Publisher};
use serde_json::json;

use crate::helpers::{event, spawn_hub, ws_at};
use crate::operations::collector;
use crate::process::HubProcess;

/// Reads exported bodies until one holds every needle, or `wait` passes.
async fn exported_with(exported: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>, needles: &[&[u8]]) -> bool {
    let mut seen = vec![false; needles.len()];
    tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(body) = exported.recv().await {
            // Spans of one trace may come in several exports: each needle once, anywhere.
            for (i, needle) in needles.iter().enumerate() {
                seen[i] |= body.windows(needle.len()).any(|w| w == *needle);
            }
            if seen.iter().all(|s| *s) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[actix_web::test]
async fn a_workers_publish_and_the_hubs_append_and_fan_out_are_one_trace_even_at_log_level_warn() {
    let (port, mut exported) = collector().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let hub = HubProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("RUST_LOG", "warn"),
    ])
    .await;
    let mut client = ws_at(hub.port, "/ws?topics=run.events&project_id=p1").await;
    client.expect("subscribed").await;
    let trace_id = TraceId::from_hex("5bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let worker_span = SpanContext::new(
        trace_id,
        SpanId::from_hex("10f067aa0ba902b7").unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );

    let publisher = Publisher::new(HttpSink::new(&hub.url("")));
    let scope = RunScope::new(ProjectId::new("p1").unwrap(), RunId::new("r1").unwrap());
    {
        let _worker = opentelemetry::Context::current().with_remote_span_context(worker_span).attach();
        publisher.publish(RunEvent::new(scope, RunStatus::Running)).await.unwrap();
    }
    client.expect("event").await;

    let trace_bytes = trace_id.to_bytes();
    let one_story = exported_with(&mut exported, &[&trace_bytes, b"hub.append", b"hub.deliver"]).await;
    hub.stop_and_read_output().await;
    assert!(one_story, "the worker's trace id, the append span and the delivery span were not all exported");
}

/// One exported span: its name, trace, own id and parent.
#[derive(Debug, Clone)]
struct ExportedSpan {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

/// Decodes OTLP/HTTP protobuf bodies into spans, until `done` holds of the spans so far or `wait` passes.
async fn exported_spans(
    exported: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    wait: Duration,
    done: impl Fn(&[ExportedSpan]) -> bool,
) -> Vec<ExportedSpan> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let mut spans = Vec::new();
    let _ = tokio::time::timeout(wait, async {
        while let Some(body) = exported.recv().await {
            let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("an OTLP protobuf body");
            let all = request.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
            spans.extend(all.map(|s| ExportedSpan {
                name: s.name,
                trace_id: s.trace_id,
                span_id: s.span_id,
                parent_span_id: s.parent_span_id,
            }));
            if done(&spans) {
                return;
            }
        }
    })
    .await;
    spans
}

/// A Node, Go or Python service publishing over HTTP sends only a `traceparent` header: the hub's append span
/// continues the caller's trace and each event's delivery is a child of that append, at log level warn. A caller
/// whose trace is not sampled gets no spans.
#[actix_web::test]
async fn a_raw_http_publish_with_a_traceparent_header_is_traced_through_append_to_delivery() {
    let (port, mut exported) = collector().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let hub = HubProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("RUST_LOG", "warn"),
    ])
    .await;
    let mut client = ws_at(hub.port, "/ws?topics=chat:*").await;
    client.expect("subscribed").await;
    let http = reqwest::Client::new();
    let publish = |traceparent: &'static str, n: u64| {
        http.post(hub.url("/api/publish"))
            .header("content-type", "application/json")
            .header("traceparent", traceparent)
            .body(json!([event("chat:1", json!({}), n), event("chat:2", json!({}), n + 1)]).to_string())
            .send()
    };
    let unsampled = TraceId::from_hex("6bf92f3577b34da6a3ce929d0e0e4736").unwrap().to_bytes().to_vec();
    let sampled = TraceId::from_hex("7bf92f3577b34da6a3ce929d0e0e4736").unwrap().to_bytes().to_vec();

    assert_eq!(publish("00-6bf92f3577b34da6a3ce929d0e0e4736-20f067aa0ba902b7-00", 1).await.unwrap().status(), 200);
    assert_eq!(publish("00-7bf92f3577b34da6a3ce929d0e0e4736-30f067aa0ba902b7-01", 3).await.unwrap().status(), 200);
    client.events(4).await;
    let delivered_in =
        |spans: &[ExportedSpan]| spans.iter().filter(|s| s.name == "hub.deliver" && s.trace_id == sampled).count();
    let spans = exported_spans(&mut exported, Duration::from_secs(15), |spans| delivered_in(spans) >= 2).await;
    hub.stop_and_read_output().await;

    let append = spans.iter().find(|s| s.name == "hub.append" && s.trace_id == sampled);
    let append = append.unwrap_or_else(|| panic!("no hub.append span in the caller's trace: {spans:#?}"));
    let deliveries: Vec<_> = spans.iter().filter(|s| s.name == "hub.deliver" && s.trace_id == sampled).collect();
    assert_eq!(deliveries.len(), 2, "one delivery span per event of the request: {spans:#?}");
    assert!(deliveries.iter().all(|d| d.parent_span_id == append.span_id), "deliveries are children of the append");
    assert!(!spans.iter().any(|s| s.trace_id == unsampled), "the unsampled caller's trace was exported");
}

/// Every documented metric, read from docs/OBSERVABILITY.md's catalog (but those that exist only with database
/// sources configured).
fn documented_metrics() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OBSERVABILITY.md")).unwrap();
    doc.lines()
        .filter(|l| !l.contains("(with sources)"))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| name.starts_with("hub_") || name.starts_with("pubsub_"))
        .map(str::to_owned)
        .collect()
}

/// Parses Prometheus text: (series name with labels, value); fails on a line that is neither.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l}"));
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("not a number: {l}")))
        })
        .collect()
}

fn value(samples: &[(String, f64)], series: &str) -> f64 {
    samples.iter().find(|(s, _)| s == series).map_or_else(|| panic!("no series {series}"), |(_, v)| *v)
}

#[actix_web::test]
async fn every_documented_metric_is_there_from_start_up_and_moves_as_events_flow() {
    let hub = spawn_hub(|_| {}).await;
    let text = hub.http.get(hub.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let samples = parse_prometheus(&text);
    let documented = documented_metrics();
    assert!(documented.len() >= 20, "the catalog lists the metrics: {documented:?}");
    for name in &documented {
        assert!(
            samples
                .iter()
                .any(|(s, _)| s == name || s.starts_with(&format!("{name}{{")) || s.starts_with(&format!("{name}_"))),
            "{name} is documented but not exported at start-up"
        );
    }
    for (series, _) in &samples {
        assert!(!series.contains("topic=") && !series.contains("user") && !series.contains("session"), "{series}");
    }
    let before = value(&samples, "pubsub_messages_received_total");
    let published_before = value(&samples, "hub_events_published_total");

    let mut client = hub.ws("/ws?topics=a&since=0").await;
    client.expect("subscribed").await;
    client.expect("live").await;
    hub.publish(json!([event("a", json!({}), 1), event("a", json!({}), 2)])).await;
    client.events(2).await;
    let after = parse_prometheus(&hub.http.get(hub.url("/metrics")).send().await.unwrap().text().await.unwrap());

    assert!(value(&after, "hub_events_published_total") >= published_before + 2.0);
    assert!(value(&after, "pubsub_messages_published_total") >= published_before + 2.0);
    assert!(value(&after, "pubsub_messages_received_total") >= before + 2.0);
    assert!(value(&after, "hub_subscriptions{transport=\"websocket\"}") >= 1.0);
    assert!(value(&after, "hub_client_resumes_total{transport=\"websocket\"}") >= 1.0);
    assert!(value(&after, "hub_connections{transport=\"websocket\"}") >= 1.0);
}

#[actix_web::test]
async fn the_health_answer_keeps_its_fields_and_adds_the_pubsub_layers() {
    let hub = spawn_hub(|_| {}).await;
    let _client = hub.ws("/ws?topics=run.*,chat:1").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, health) = hub.get_json("/api/health/pubsub").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["provider"], "memory");
    assert_eq!(health["instanceId"], "test-node");
    assert_eq!(health["stats"]["channels"], 1, "chat:1");
    assert_eq!(health["stats"]["patterns"], 1, "run.*");
    for field in ["healthy", "node", "log", "timestamp"] {
        assert!(!health[field].is_null(), "{field}");
    }
}

#[actix_web::test]
async fn no_token_secret_or_connection_string_reaches_the_log_even_at_debug() {
    let db = test_db!();
    let db_password = "db-pass-4f1d9c";
    let url = db.url.replacen("postgres://postgres@", &format!("postgres://postgres:{db_password}@"), 1);
    assert_ne!(url, db.url, "the test database URL names the postgres user");
    let jwt_secret = "jwt-secret-7a0c55e2b9d14e6f8a3b";
    let hub = HubProcess::start(&[
        ("HUB_BACKEND", "postgres"),
        ("DATABASE_URL", &url),
        ("HUB_JWT_SECRET", jwt_secret),
        ("RUST_LOG", "debug"),
        ("HUB_LOG_JSON", "1"),
    ])
    .await;
    let claims = crate::tokens::claims(&["a"], json!({}), &["a"], 600);
    let token = crate::tokens::hs256_with(&claims, jwt_secret);
    let payload_secret = "sk_live_51HxQv2abcdEFGHijklMNOP";

    let mut by_query = ws_at(hub.port, &format!("/ws?topics=a&access_token={token}")).await;
    by_query.expect("subscribed").await;
    let published = reqwest::Client::new()
        .post(hub.url("/api/publish"))
        .bearer_auth(&token)
        .json(&json!({"topic": "a", "payload": {"api_key": payload_secret, "note": format!("key {payload_secret}")}}))
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200);
    by_query.expect("event").await;
    let refused =
        reqwest::Client::new().get(hub.url("/api/events?after=0")).bearer_auth(format!("{token}x")).send().await;
    assert_eq!(refused.unwrap().status(), 401);
    let output = hub.stop_and_read_output().await;

    assert!(output.lines().count() > 10, "the hub logged at debug:\n{output}");
    assert!(output.lines().filter(|l| !l.is_empty()).all(|l| l.starts_with('{')), "JSON lines only");
    for (what, secret) in [
        ("database password", db_password),
        ("JWT secret", jwt_secret),
        ("token", token.as_str()),
        ("payload secret", payload_secret),
    ] {
        assert!(!output.contains(secret), "the {what} is in the log");
    }
    let signature = token.rsplit('.').next().unwrap();
    assert!(!output.contains(signature), "a token's signature is in the log");
}

/// Two hubs on PostgreSQL under a steady publish load; each gets SIGTERM in turn and comes back. Subscribers follow
/// whichever hub is up, resuming from the last id they have: every event arrives at every subscriber exactly once.
#[actix_web::test]
async fn a_rolling_restart_under_load_delivers_every_event_exactly_once() {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    let db = test_db!();
    let env = [
        ("HUB_BACKEND", "postgres"),
        ("DATABASE_URL", db.url.as_str()),
        ("HUB_DB_POOL_SIZE", "3"),
        ("HUB_SHUTDOWN_GRACE", "2s"),
    ];
    let mut hubs = [HubProcess::start(&env).await, HubProcess::start(&env).await];
    let up: Arc<Mutex<Vec<u16>>> = Arc::new(Mutex::new(hubs.iter().map(|h| h.port).collect()));
    const EVENTS: u64 = 300;

    let subscribers: Vec<_> = (0..4)
        .map(|s| {
            let up = up.clone();
            tokio::spawn(async move {
                let mut markers = Vec::new();
                let mut last: Option<u64> = None;
                let mut reconnects = 0;
                while markers.len() < EVENTS as usize {
                    let port = {
                        let ports = up.lock().unwrap();
                        ports[(s + reconnects) % ports.len()]
                    };
                    let since = last.map(|id| format!("&since={id}")).unwrap_or_default();
                    let url = format!("ws://127.0.0.1:{port}/ws?topics=load{since}");
                    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
                        reconnects += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    use futures_util::StreamExt;
                    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
                        let tokio_tungstenite::tungstenite::Message::Text(text) = message else { continue };
                        let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                        if frame["type"] == "event" {
                            last = frame["id"].as_u64();
                            markers.push(frame["payload"]["n"].as_u64().unwrap());
                        }
                        if markers.len() == EVENTS as usize {
                            break;
                        }
                    }
                    if last.is_none() {
                        last = Some(0); // connected before the first event: resume from the start
                    }
                    reconnects += 1;
                }
                markers
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let publisher = {
        let up = up.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 0..EVENTS {
                // A retry after a lost answer must not store the event twice: the idempotency key says so.
                let body = json!({"topic": "load", "payload": {"n": n}, "idempotency_key": format!("load-{n}")});
                let mut attempt = 0;
                loop {
                    let port = {
                        let ports = up.lock().unwrap();
                        ports[(n as usize + attempt) % ports.len()]
                    };
                    let sent = http.post(format!("http://127.0.0.1:{port}/api/publish")).json(&body).send().await;
                    if sent.is_ok_and(|r| r.status() == 200) {
                        break;
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    for (which, hub) in hubs.iter_mut().enumerate() {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let old_port = hub.port;
        hub.terminate();
        assert!(hub.exited_within(Duration::from_secs(10)).await.is_some(), "hub {which} drains and exits");
        up.lock().unwrap().retain(|p| *p != old_port);
        let restarted = HubProcess::start(&env).await;
        up.lock().unwrap().push(restarted.port);
        *hub = restarted;
    }
    publisher.await.unwrap();

    for (s, subscriber) in subscribers.into_iter().enumerate() {
        let markers = tokio::time::timeout(Duration::from_secs(60), subscriber).await.expect("in time").unwrap();
        let unique: BTreeSet<u64> = markers.iter().copied().collect();
        assert_eq!(unique.len(), markers.len(), "subscriber {s}: duplicates");
        assert_eq!(unique, (0..EVENTS).collect::<BTreeSet<_>>(), "subscriber {s}: missing events");
    }
}
