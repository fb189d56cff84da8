//! The publisher crate against real hubs: the transactional outbox, HTTP retries, log streams, redaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use publisher::events::{
    CustomEvent, DeployEvent, DeployId, DeployScope, DeployStatus, Env, ProjectId, RunEvent, RunId, RunScope,
    RunStatus, SystemError,
};
use publisher::{ChunkChecker, Error, HttpSink, LogStreamWriter, LogTarget, PgSink, Publisher, RetryPolicy};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{ids, spawn_hub, spawn_pg_hub};
use crate::process::HubProcess;
use crate::tokens::{SECRET, hs256};

fn run_scope(run: &str) -> RunScope {
    RunScope::new(ProjectId::new("p1").unwrap(), RunId::new(run).unwrap())
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_elapsed: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        request_timeout: Duration::from_secs(2),
    }
}

#[actix_web::test]
async fn publish_in_publishes_if_and_only_if_the_transaction_commits() {
    let db = test_db!();
    let hub = spawn_pg_hub(&db.url, |_| {}).await;
    let pool = db.pool().await;
    let publisher = Publisher::new(PgSink::new(pool.clone()));
    let mut client = hub.ws("/ws?topics=run.events&project_id=p1").await;
    client.expect("subscribed").await;

    let mut rolled_back = pool.begin().await.unwrap();
    publisher.publish_in(&mut rolled_back, RunEvent::new(run_scope("r1"), RunStatus::Running)).await.unwrap();
    rolled_back.rollback().await.unwrap();
    let mut committed = pool.begin().await.unwrap();
    publisher.publish_in(&mut committed, RunEvent::new(run_scope("r2"), RunStatus::Succeeded)).await.unwrap();
    committed.commit().await.unwrap();
    publisher.sink().wake();

    let got = client.events(1).await;
    assert_eq!(got[0]["scope"]["run_id"], "r2");
    assert_eq!(got[0]["payload"]["status"], "succeeded");
    client.expect_silence(Duration::from_millis(400)).await;
}

/// A proxy that forwards everything but, for the first connection, drops the hub's answer: the request is
/// processed, the client sees a broken connection and retries.
async fn answer_dropping_proxy(hub_port: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
            tokio::spawn(async move {
                let mut hub = TcpStream::connect(("127.0.0.1", hub_port)).await.unwrap();
                if first {
                    let mut request = vec![0u8; 64 * 1024];
                    let n = client.read(&mut request).await.unwrap();
                    hub.write_all(&request[..n]).await.unwrap();
                    let mut answer = [0u8; 1];
                    let _ = hub.read(&mut answer).await; // the hub has answered: it stored the events
                    return; // dropping both ends loses the answer
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut hub).await;
            });
        }
    });
    (port, connections)
}

#[actix_web::test]
async fn the_http_sink_retried_after_a_lost_answer_stores_the_event_once() {
    let hub = spawn_hub(|_| {}).await;
    let (proxy, connections) = answer_dropping_proxy(hub.port).await;
    let publisher = Publisher::new(HttpSink::new(&format!("http://127.0.0.1:{proxy}")).with_retry(fast_retry()));

    let published = publisher.publish(SystemError::new("scheduler", "queue stalled")).await.unwrap();

    assert!(connections.load(Ordering::SeqCst) >= 2, "the first answer was dropped and the sink retried");
    assert_eq!(published.ids.unwrap().iter().map(|i| i.get()).collect::<Vec<_>>(), vec![1]);
    let (_, health) = hub.get_json("/api/health/pubsub").await;
    assert_eq!(health["log"]["head"], 1, "stored once");
}

#[actix_web::test]
async fn the_http_sink_fails_clearly_when_the_hub_stays_down_refuses_or_its_buffer_is_full() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let retry = RetryPolicy { max_elapsed: Duration::from_millis(600), ..fast_retry() };
    let down = Publisher::new(HttpSink::new(&format!("http://127.0.0.1:{closed}")).with_retry(retry).with_buffer(1));

    let (first, second) = tokio::join!(down.publish(SystemError::new("a", "b")), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        down.publish(SystemError::new("a", "c")).await
    });
    let secured = spawn_hub(|s| s.jwt_secret = Some(SECRET.into())).await;
    let refused = Publisher::new(HttpSink::new(&format!("http://127.0.0.1:{}", secured.port)))
        .publish(SystemError::new("a", "b"))
        .await;

    assert!(matches!(first, Err(Error::Unavailable(_))), "{first:?}");
    assert!(matches!(second, Err(Error::BufferFull { capacity: 1 })), "{second:?}");
    assert!(matches!(refused, Err(Error::Rejected { status: 401, .. })), "{refused:?}");
}

#[actix_web::test]
async fn a_log_stream_arrives_complete_in_order_with_eos_last() {
    let hub = spawn_hub(|_| {}).await;
    let mut client = hub.ws("/ws?topics=run.logs&run_id=r7").await;
    client.expect("subscribed").await;
    let publisher = Publisher::new(HttpSink::new(&format!("http://127.0.0.1:{}", hub.port)));
    let text: String = (0..200).map(|i| format!("step {i}: compiling ünïcödé crate {i} ✓\n")).collect();

    let mut writer =
        LogStreamWriter::new(&publisher, LogTarget::Run(run_scope("r7"))).with_limits(256, Duration::from_secs(60));
    for piece in text.as_bytes().chunks(37) {
        writer.write(piece).await.unwrap();
    }
    let chunks = writer.finish().await.unwrap();

    let got = client.events(chunks as usize).await;
    let mut checker = ChunkChecker::new();
    let mut joined = String::new();
    for event in &got {
        checker.accept(event["seq"].as_u64().unwrap(), event["payload"]["eos"] == true).expect("no missing chunk");
        joined.push_str(event["payload"]["chunk"].as_str().unwrap());
    }
    assert_eq!(joined, text);
    assert!(checker.ended());
    assert_eq!(got.last().unwrap()["payload"]["eos"], true);
    assert!(got[..got.len() - 1].iter().all(|e| e["payload"]["eos"] == false));
    assert!(ids(&got).windows(2).all(|w| w[0] < w[1]));
}

/// Secrets, one per field that can carry text, through the publisher crate and through raw HTTP publish.
const SECRETS: [&str; 9] = [
    "hunter2-pass-9f8e",
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
    "AKIAIOSFODNN7EXAMPLE",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "s3cr3tP4ssw0rd",
    "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsZWFrIn0.c2lnbmF0dXJlLXg",
    "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY",
    "correct-horse-battery-staple",
];

#[actix_web::test]
async fn a_secret_in_any_field_never_reaches_a_subscriber_the_database_or_a_log_line() {
    let db = test_db!();
    let hub = HubProcess::start(&[
        ("HUB_BACKEND", "postgres"),
        ("DATABASE_URL", &db.url),
        ("HUB_DB_POOL_SIZE", "2"),
        ("HUB_JWT_SECRET", SECRET),
        ("RUST_LOG", "debug"),
    ])
    .await;
    let token = hs256(&crate::tokens::claims(&["*"], json!({}), &["*"], 3600));
    let url = format!("ws://127.0.0.1:{}/ws?topics=*&since=0&access_token={token}", hub.port);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.expect("subscribes with a query token");
    let publisher = Publisher::new(HttpSink::new(&format!("http://127.0.0.1:{}", hub.port)).with_token(&token));
    let [s0, s1, s2, s3, s4, s5, s6, s7, s8] = SECRETS;

    let mut run = RunEvent::new(run_scope("r1"), RunStatus::Failed);
    run.message = Some(format!("login failed with password={s0}"));
    run.step = Some(format!("push {s1}"));
    run.details.insert("api_key".into(), json!(s2));
    let mut deploy = DeployEvent::new(
        DeployScope {
            env: Some(Env::new("prod").unwrap()),
            ..DeployScope::new(ProjectId::new("p1").unwrap(), DeployId::new("d1").unwrap())
        },
        DeployStatus::Failed,
    );
    deploy
        .details
        .insert("config".into(), json!({"stripe": {"secret_key": s3}, "db": format!("postgres://app:{s4}@db/app")}));
    let mut error = SystemError::new("billing", format!("slack said no to {s5}"));
    error.details.insert("headers".into(), json!({"Authorization": format!("Bearer {s6}")}));
    let custom = CustomEvent::new(
        "chat:1",
        [("project_id", "p1")],
        &json!({"text": format!("export AWS_SECRET_ACCESS_KEY={s7}")}),
    )
    .unwrap()
    .with_correlation_id(format!("req token={s8}"));
    publisher.publish(run).await.unwrap();
    publisher.publish(deploy).await.unwrap();
    publisher.publish(error).await.unwrap();
    publisher.publish(custom).await.unwrap();
    let mut writer = LogStreamWriter::new(&publisher, LogTarget::Run(run_scope("r1")));
    writer.write(format!("$ deploy --token {s1}\nDB_PASSWORD={s4}\n").as_bytes()).await.unwrap();
    writer.finish().await.unwrap();
    // Raw HTTP, for the hub's own redaction: secrets in the scope, key, correlation id and nested payload.
    let raw = json!([{"topic":"audit.feature","scope":{"project_id":"p1","session_token":s0},
                      "key":format!("k-{s3}"),"correlation_id":format!("Bearer {s6}"),
                      "payload":{"nested":[{"password":s8},{"note":format!("ghtoken {s1}")}]}}]);
    let answer = reqwest::Client::new()
        .post(hub.url("/api/publish"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(raw.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let mut received = String::new();
    let mut events = 0;
    while events < 6 {
        use futures_util::StreamExt;
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.unwrap().unwrap().unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            events += usize::from(text.as_str().contains(r#""type":"event""#));
            received.push_str(text.as_str());
        }
    }
    let pool = db.pool().await;
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT row_to_json(e)::text FROM realtime_events e").fetch_all(&pool).await.unwrap();
    let logs = hub.stop_and_read_output().await;

    assert!(received.contains("[REDACTED]"));
    assert_eq!(stored.len(), 6);
    for secret in SECRETS {
        assert!(!received.contains(secret), "{secret} reached a subscriber");
        assert!(!stored.iter().any(|row| row.contains(secret)), "{secret} reached the database");
        assert!(!logs.contains(secret), "{secret} reached the hub's logs");
    }
    assert!(!logs.contains(&token), "the query token reached the hub's logs");
    assert!(logs.contains("http.target=/ws?topics=*&since=0"), "the request was logged, without its token");
    let _: Value = serde_json::from_str(&stored[0]).unwrap();
}
