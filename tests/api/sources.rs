//! Database sources: the feature-flag service's rows (examples/feature-flags) reach browsers in the seed's shape,
//! exactly once, under concurrent and out-of-order commits, across a hub's death.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rand::Rng;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::db::TestDb;
use crate::helpers::{TestHub, WsClient, spawn_pg_hub};
use crate::process::HubProcess;
use crate::tokens::{SECRET, claims, hs256};

const SCHEMA: &str = include_str!("../../examples/feature-flags/schema.sql");
const SOURCES: &str = include_str!("../../examples/feature-flags/sources.toml");

/// The example's tables and view, with environments prod and staging of project abc, and prod of project xyz.
async fn flags_database(db: &TestDb) -> PgPool {
    let pool = db.pool().await;
    sqlx::raw_sql(SCHEMA).execute(&pool).await.expect("the example schema applies");
    sqlx::query("INSERT INTO environments VALUES ('e-prod', 'abc', 'prod'), ('e-stg', 'abc', 'staging'), ('e-x', 'xyz', 'prod')")
        .execute(&pool)
        .await
        .unwrap();
    pool
}

/// The example's sources file with another poll interval, and with or without its notification channel.
fn sources_file(poll: &str, notify: bool) -> PathBuf {
    let text = SOURCES.replace("poll_interval = \"1s\"", &format!("poll_interval = \"{poll}\""));
    let text = if notify { text } else { text.replace("notify_channel = \"realtime_sources\"", "") };
    let path = std::env::temp_dir().join(format!("hub-sources-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, text).unwrap();
    path
}

async fn flags_hub(db: &TestDb, sources: &Path) -> TestHub {
    let sources = sources.to_str().unwrap().to_owned();
    spawn_pg_hub(&db.url, move |s| {
        s.sources = Some(sources);
        s.jwt_secret = Some(SECRET.into());
    })
    .await
}

/// What the feature-flag browsers hold: their project, the flags topics, the payload profile.
fn browser_token(project: &str) -> String {
    let mut claims = claims(&["flags.*"], json!({"project_id": [project]}), &[], 3600);
    claims["profile"] = json!("payload");
    hs256(&claims)
}

async fn browser(port: u16, query: &str) -> WsClient {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{port}/api/ws?{query}").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {}", browser_token("abc")).parse().unwrap());
    let (stream, _) = tokio_tungstenite::connect_async(request).await.expect("the upgrade succeeds");
    let mut client = WsClient::from_stream(stream);
    client.expect("welcome").await;
    client.expect("subscribed").await;
    client
}

async fn audit(pool: &PgPool, environment: &str, entity_id: &str, action: &str) {
    sqlx::query("INSERT INTO audit_log (project_id, environment_id, entity, entity_id, action) SELECT project_id, id, 'feature', $2, $3 FROM environments WHERE id = $1")
        .bind(environment)
        .bind(entity_id)
        .bind(action)
        .execute(pool)
        .await
        .unwrap();
}

/// Reads messages until `count` have come, failing on a timeout; then checks that nothing more comes.
async fn messages(client: &mut WsClient, count: usize) -> Vec<Value> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        got.push(client.next_json().await);
    }
    client.expect_silence(Duration::from_millis(1500)).await;
    got
}

#[actix_web::test]
async fn an_audit_row_reaches_the_browser_of_its_project_and_environment_as_feature_updated_within_a_poll() {
    let db = test_db!();
    let pool = flags_database(&db).await;
    let hub = flags_hub(&db, &sources_file("1s", false)).await;
    let mut client = browser(hub.port, "project_id=abc&env=prod").await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // the source's cursor starts from when it first polls

    audit(&pool, "e-stg", "f0", "updated").await;
    audit(&pool, "e-x", "f0", "updated").await;
    let written = Instant::now();
    audit(&pool, "e-prod", "f1", "updated").await;
    let message = client.next_json().await;
    let waited = written.elapsed();

    let timestamp = message["timestamp"].as_str().unwrap().to_owned();
    assert_eq!(
        message,
        json!({"source":"audit","type":"feature_updated","timestamp":timestamp,"project_id":"abc","environment":"prod",
               "entity":"feature","entity_id":"f1","action":"updated"})
    );
    assert!(timestamp.ends_with('Z') && timestamp.len() >= 20, "UTC with a Z: {timestamp}");
    assert!(waited < Duration::from_millis(1800), "delivered within a poll interval (1 s) and some slack: {waited:?}");
    client.expect_silence(Duration::from_millis(1500)).await; // not staging, not project xyz

    let refused = hub.ws_with_token("/api/ws?project_id=xyz&env=prod", Some(&browser_token("abc"))).await;
    assert!(refused.is_err(), "a browser of project abc cannot listen to project xyz");
}

#[actix_web::test]
async fn pending_changes_and_deletions_arrive_with_their_types() {
    let db = test_db!();
    let pool = flags_database(&db).await;
    let hub = flags_hub(&db, &sources_file("200ms", true)).await;
    let mut client = browser(hub.port, "project_id=abc&env=prod").await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut tx = pool.begin().await.unwrap();
    let change: i64 = sqlx::query_scalar(
        "INSERT INTO pending_changes (project_id, environment_id) VALUES ('abc', 'e-prod') RETURNING id",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO pending_change_entities (pending_change_id, entity, entity_id) VALUES ($1, 'feature', 'f9')",
    )
    .bind(change)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    audit(&pool, "e-prod", "f2", "deleted").await;

    let got = messages(&mut client, 2).await;
    let types: Vec<&str> = got.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["pending_change_created", "feature_deleted"]);
    assert_eq!(got[0]["source"], "pending");
    assert_eq!(got[0]["entity_id"], "f9");
}

/// A transaction takes its `created_at` (its start time) first, another commits a later row meanwhile; the first
/// commits last. The naive `created_at > last_seen` would skip it; the source delivers both, once each.
#[actix_web::test]
async fn a_transaction_that_took_its_time_first_but_commits_last_is_delivered_exactly_once() {
    let db = test_db!();
    let pool = flags_database(&db).await;
    let hub = flags_hub(&db, &sources_file("100ms", false)).await;
    let mut client = browser(hub.port, "project_id=abc&env=prod").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut early = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO audit_log (project_id, environment_id, entity, entity_id, action) VALUES ('abc', 'e-prod', 'feature', 'early', 'updated')")
        .execute(&mut *early)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    audit(&pool, "e-prod", "late", "updated").await;
    tokio::time::sleep(Duration::from_millis(800)).await; // several polls while the early row is invisible
    early.commit().await.unwrap();

    let got = messages(&mut client, 2).await;
    let ids: Vec<&str> = got.iter().map(|m| m["entity_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["early", "late"], "both, once each, in the order of their times");
}

#[actix_web::test]
async fn two_thousand_rows_from_eight_concurrent_writers_are_delivered_exactly_once() {
    let db = test_db!();
    let pool = flags_database(&db).await;
    let hub = flags_hub(&db, &sources_file("100ms", true)).await;
    let mut client = browser(hub.port, "project_id=abc&env=prod").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let writers = (0..8).map(|w| {
        let pool = pool.clone();
        async move {
            let mut written = 0;
            while written < 250 {
                // Transactions of 1 to 10 rows, held open for up to 20 ms: commits interleave in any order.
                let rows = rand::rng().random_range(1..=10).min(250 - written);
                let mut tx = pool.begin().await.unwrap();
                for i in written..written + rows {
                    sqlx::query("INSERT INTO audit_log (project_id, environment_id, entity, entity_id, action) VALUES ('abc', 'e-prod', 'feature', $1, 'updated')")
                        .bind(format!("w{w}-{i}"))
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..20))).await;
                tx.commit().await.unwrap();
                written += rows;
            }
        }
    });
    join_all(writers).await;

    let got = messages(&mut client, 2000).await;
    let unique: BTreeSet<&str> = got.iter().map(|m| m["entity_id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), 2000, "every row exactly once");
    let expected: BTreeSet<String> = (0..8).flat_map(|w| (0..250).map(move |i| format!("w{w}-{i}"))).collect();
    assert!(unique.iter().all(|id| expected.contains(*id)));
}

/// The hub polling the source is SIGKILLed while rows keep coming: the other hub takes the source over from the
/// persisted cursor, and the browser gets every row exactly once.
#[actix_web::test]
async fn a_source_fails_over_to_the_second_hub_when_the_first_is_killed() {
    let db = test_db!();
    let pool = flags_database(&db).await;
    let sources = sources_file("100ms", true);
    let env = [
        ("HUB_BACKEND", "postgres"),
        ("DATABASE_URL", db.url.as_str()),
        ("HUB_SOURCES", sources.to_str().unwrap()),
        ("HUB_DB_POOL_SIZE", "3"),
    ];
    let first = HubProcess::start(&env).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the first hub takes the source's lock
    let second = flags_hub(&db, &sources).await;
    let mut client = browser(second.port, "project_id=abc&env=prod").await;

    let writer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                audit(&pool, "e-prod", &format!("r{i}"), "updated").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    first.stop_and_read_output().await; // SIGKILL, mid-stream
    writer.await.unwrap();

    let got = messages(&mut client, 60).await;
    let ids: Vec<String> = got.iter().map(|m| m["entity_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, (0..60).map(|i| format!("r{i}")).collect::<Vec<_>>(), "every row once, in order");
}
