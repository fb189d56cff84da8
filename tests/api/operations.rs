//! Health, readiness, metrics and graceful shutdown.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{event, spawn_hub};

#[actix_web::test]
async fn health_endpoints_report_a_ready_memory_hub() {
    let hub = spawn_hub(|_| {}).await;
    hub.publish(event("a", json!({}), 1)).await;
    let _client = hub.ws("/ws?topics=a").await;

    let (healthz, _) = hub.get_json("/healthz").await;
    let (readyz, _) = hub.get_json("/readyz").await;
    let (status, pubsub) = hub.get_json("/api/health/pubsub").await;

    assert_eq!(healthz, 200);
    assert_eq!(readyz, 200);
    assert_eq!(status, 200);
    assert_eq!(pubsub["status"], "ok", "the PubSub layer's value");
    assert_eq!(pubsub["provider"], "memory");
    assert_eq!(pubsub["healthy"], true);
    assert_eq!(pubsub["node"], "test-node");
    assert_eq!(pubsub["stats"], json!({"connections":1,"subscriptions":1,"topics":1,"channels":1,"patterns":0}));
    assert_eq!(
        pubsub["log"],
        json!({"head":1,"earliest":1,"policies":[{"name":"default","topics":[],"retention_seconds":86400,
            "max_events":null,"presence":false,"oldest":1,"removed_through":0,"removed":0}]})
    );
    assert!(pubsub["auth"].as_str().unwrap().starts_with("development"));
    assert!(pubsub["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[actix_web::test]
async fn metrics_are_served_in_prometheus_text_format() {
    let hub = spawn_hub(|_| {}).await;
    let mut client = hub.ws("/ws?topics=a").await;
    client.expect("subscribed").await;
    hub.publish(event("a", json!({}), 1)).await;
    client.events(1).await;

    let text = hub.http.get(hub.url("/metrics")).send().await.unwrap().text().await.unwrap();

    for name in [
        "hub_events_published_total",
        "hub_events_dispatched_total",
        "hub_events_delivered_total",
        "hub_connections",
        "hub_publish_latency_seconds_bucket",
        "hub_dispatch_lag_seconds_bucket",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[actix_web::test]
async fn shutdown_fails_readiness_closes_sessions_with_1012_and_refuses_new_connections() {
    let hub = spawn_hub(|s| s.shutdown_grace = Duration::from_secs(2)).await;
    let mut client = hub.ws("/ws").await;
    let mut stream = hub.sse("/sse?topics=a", &[]).await;
    let ids = hub.publish(event("a", json!({}), 1)).await;

    hub.begin_shutdown();

    assert_eq!(client.expect_close(Duration::from_secs(5)).await, Some(1012));
    assert!(stream.ends_within(Duration::from_secs(5)).await, "the SSE stream is ended");
    assert_eq!(ids, vec![1]);
    let ready = hub.http.get(hub.url("/readyz")).send().await;
    if let Ok(response) = ready {
        assert_eq!(response.status(), 503);
    }
    assert!(hub.ws_raw("/ws").await.is_err(), "new connections are refused");
}

#[actix_web::test]
async fn sigterm_closes_websockets_with_1012_and_the_process_exits_within_the_grace_period() {
    let mut hub = crate::process::HubProcess::start(&[("HUB_SHUTDOWN_GRACE", "3s")]).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", hub.port)).await.unwrap();
    let published = reqwest::Client::new()
        .post(hub.url("/api/publish"))
        .header("content-type", "application/json")
        .body(event("a", json!({}), 1).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), 200, "answered before the signal");

    hub.terminate();
    let mut close_code = None;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(&mut socket)).await
    {
        if let tokio_tungstenite::tungstenite::Message::Close(frame) = message {
            close_code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    let exit = hub.exited_within(Duration::from_secs(6)).await;

    assert_eq!(close_code, Some(1012));
    assert!(exit.is_some_and(|status| status.success()), "the hub exits cleanly after SIGTERM: {exit:?}");
}

#[actix_web::test]
async fn hub_migrate_applies_the_migrations_and_exits() {
    let db = test_db!();

    let status = tokio::process::Command::new(crate::process::hub_binary())
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .status()
        .await
        .unwrap();

    assert!(status.success());
    let pool = db.pool().await;
    let head: i64 = sqlx::query_scalar("SELECT head FROM realtime_log_state").fetch_one(&pool).await.unwrap();
    assert_eq!(head, 0);
}

/// A minimal OTLP/HTTP collector: answers 200 to every request and hands over each body.
pub async fn collector() -> (u16, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (bodies, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    // One request: headers, then Content-Length bytes of body; keep-alive allows more.
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let headers = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                    let length: usize = headers
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < end + 4 + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = bodies.send(buffer[end + 4..end + 4 + length].to_vec());
                    buffer.drain(..end + 4 + length);
                    if socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, received)
}

#[actix_web::test]
async fn an_incoming_traceparent_continues_in_the_spans_the_hub_exports() {
    let (port, mut exported) = collector().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let hub = crate::process::HubProcess::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    // A plain request, and a streaming one (its span covers the handler, not the stream it opens).
    let plain = "4bf92f3577b34da6a3ce929d0e0e4736";
    let streaming = "5ce03f4688c45eb7b4df030e1f1f5847";
    let bytes_of =
        |id: &str| -> Vec<u8> { (0..16).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap()).collect() };
    let client = reqwest::Client::new();
    let answer = client
        .get(hub.url("/healthz"))
        .header("traceparent", format!("00-{plain}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let stream = client
        .get(hub.url("/sse?topics=a"))
        .header("traceparent", format!("00-{streaming}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);

    let mut missing = vec![bytes_of(plain), bytes_of(streaming)];
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(body) = exported.recv().await {
            missing.retain(|id| !body.windows(16).any(|w| w == id.as_slice()));
            if missing.is_empty() {
                return true;
            }
        }
        false
    })
    .await;
    drop(stream);
    hub.stop_and_read_output().await;
    assert_eq!(found, Ok(true), "an incoming trace id was in no exported span");
}
