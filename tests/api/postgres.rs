//! The PostgreSQL event log under several hubs, concurrency and faults.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use protocol::{NewEvent, Scope, Topic};
use rand::Rng;
use serde_json::{Value, json};

use crate::db::Cluster;
use crate::helpers::{WsClient, event, ids, spawn_pg_hub};

/// Reads events until every payload marker of `expected` has arrived (failing on a timeout), then checks that
/// nothing more comes; returns the events in arrival order.
async fn events_with_markers(client: &mut WsClient, expected: &BTreeSet<u64>) -> Vec<Value> {
    let mut got = Vec::new();
    let mut seen = BTreeSet::new();
    while !expected.is_subset(&seen) {
        let frame = client.next_json().await;
        if frame["type"] == "event" {
            seen.insert(frame["payload"]["n"].as_u64().unwrap());
            got.push(frame);
        }
    }
    client.expect_silence(Duration::from_millis(300)).await;
    got
}

fn new_event(topic: &str, project: &str, n: u64) -> NewEvent {
    let payload = json!({"n": n}).as_object().cloned().unwrap();
    NewEvent::new(Topic::parse(topic).unwrap(), Scope::try_from([("project_id", project)]).unwrap(), payload)
}

#[actix_web::test]
async fn an_event_published_on_hub_b_reaches_a_subscriber_on_hub_a() {
    let db = test_db!();
    let hub_a = spawn_pg_hub(&db.url, |_| {}).await;
    let hub_b = spawn_pg_hub(&db.url, |_| {}).await;
    let mut client = hub_a.ws("/ws?topics=run.*&project_id=p1").await;
    client.expect("subscribed").await;

    let published = hub_b.publish(event("run.events", json!({"project_id":"p1"}), 1)).await;

    let got = client.events(1).await;
    assert_eq!(ids(&got), published);
    assert_eq!(got[0]["payload"], json!({"n":1}));
}

/// Publishers on both hubs and inside their own transactions (held open at random, so commits interleave in any
/// order) while subscribers on both hubs listen: each subscriber gets every matching event once, in id order.
#[actix_web::test]
async fn concurrent_publishers_with_transactions_held_open_lose_nothing_and_keep_order_on_every_hub() {
    let db = test_db!();
    let hub_a = spawn_pg_hub(&db.url, |s| s.workers = Some(2)).await;
    let hub_b = spawn_pg_hub(&db.url, |s| s.workers = Some(2)).await;
    let pool = db.pool().await;
    let mut subscribers = vec![
        hub_a.ws("/ws?topics=*").await,
        hub_a.ws("/ws?topics=chat:*&project_id=p1").await,
        hub_b.ws("/ws?topics=*").await,
        hub_b.ws("/ws?topics=chat:*,run.logs&project_id=p1").await,
    ];
    for client in &mut subscribers {
        client.expect("subscribed").await;
    }

    let over_http = [&hub_a, &hub_b].into_iter().enumerate().map(|(h, hub)| async move {
        for i in 0..40u64 {
            let n = 10_000 * (h as u64 + 1) + i;
            let batch = json!([
                event("chat:1", json!({"project_id":"p1"}), n),
                event("run.logs", json!({"project_id":"p2"}), n + 5000)
            ]);
            hub.publish(batch).await;
        }
    });
    let in_transactions = (0..3u64).map(|t| {
        let pool = pool.clone();
        async move {
            for i in 0..25u64 {
                let n = 100_000 * (t + 1) + i;
                let mut tx = pool.begin().await.unwrap();
                storage::postgres::enqueue_with(&mut *tx, &[new_event("chat:2", "p1", n)]).await.unwrap();
                let hold = rand::rng().random_range(0..40);
                tokio::time::sleep(Duration::from_millis(hold)).await;
                tx.commit().await.unwrap();
            }
        }
    });
    tokio::join!(join_all(over_http), join_all(in_transactions));

    let all: BTreeSet<u64> = (0..2u64)
        .flat_map(|h| (0..40).flat_map(move |i| [10_000 * (h + 1) + i, 10_000 * (h + 1) + i + 5000]))
        .chain((0..3u64).flat_map(|t| (0..25).map(move |i| 100_000 * (t + 1) + i)))
        .collect();
    let p1_chat: BTreeSet<u64> = all.iter().copied().filter(|n| (n % 10_000) < 5000 || *n >= 100_000).collect();
    for (which, client) in subscribers.iter_mut().enumerate() {
        let expected = if which % 2 == 0 { &all } else { &p1_chat };
        let got = events_with_markers(client, expected).await;
        let got_ids = ids(&got);
        assert!(got_ids.windows(2).all(|w| w[0] < w[1]), "subscriber {which}: ids not strictly increasing");
        let markers: Vec<u64> = got.iter().map(|e| e["payload"]["n"].as_u64().unwrap()).collect();
        let unique: BTreeSet<u64> = markers.iter().copied().collect();
        assert_eq!(unique.len(), markers.len(), "subscriber {which}: duplicates");
        assert_eq!(&unique, expected, "subscriber {which}: missing or extra events");
    }
}

#[actix_web::test]
async fn killing_the_listening_connection_during_a_burst_loses_nothing() {
    let db = test_db!();
    let hub = spawn_pg_hub(&db.url, |_| {}).await;
    let pool = db.pool().await;
    let mut client = hub.ws("/ws?topics=a").await;
    client.expect("subscribed").await;

    let mut expected = Vec::new();
    for round in 0..20u64 {
        let batch: Vec<Value> = (0..10).map(|i| event("a", json!({}), round * 10 + i)).collect();
        expected.extend(hub.publish(json!(batch)).await);
        if round % 5 == 2 {
            // Wait for the (re)opened listener, then kill it mid-burst.
            hub.wait_ready(200, Duration::from_secs(10)).await;
            let killed: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND pid <> pg_backend_pid()) k",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            assert_eq!(killed, 1, "the one listening connection is killed");
        }
    }
    hub.wait_ready(200, Duration::from_secs(10)).await;

    let got = client.events(expected.len()).await;
    assert_eq!(ids(&got), expected);
    client.expect_silence(Duration::from_millis(300)).await;
}

#[actix_web::test]
async fn a_client_of_a_killed_hub_resumes_on_another_hub_without_loss() {
    let db = test_db!();
    let hub_a = spawn_pg_hub(&db.url, |_| {}).await;
    let hub_b = spawn_pg_hub(&db.url, |_| {}).await;
    let mut client = hub_a.ws("/ws?topics=run.logs").await;
    client.expect("subscribed").await;
    let mut published = Vec::new();
    for n in 0..10 {
        published.extend(hub_b.publish(event("run.logs", json!({"run_id":"r1"}), n)).await);
    }
    let before = client.events(5).await;
    let last_seen = *ids(&before).last().unwrap();

    hub_a.kill().await;
    for n in 10..20 {
        published.extend(hub_b.publish(event("run.logs", json!({"run_id":"r1"}), n)).await);
    }
    let mut resumed = hub_b.ws(&format!("/ws?topics=run.logs&since={last_seen}")).await;
    resumed.expect("subscribed").await;
    let rest = resumed.events(published.len() - 5).await;
    resumed.expect("live").await;

    assert_eq!(ids(&rest), published[5..].to_vec());
}

#[actix_web::test]
async fn a_postgres_restart_makes_the_hub_unready_then_it_recovers_and_delivers_everything() {
    let Some(cluster) = Cluster::start().await else {
        assert!(std::env::var("HUB_REQUIRE_PG").is_err(), "HUB_REQUIRE_PG=1 but no initdb for a throwaway cluster");
        return eprintln!("skipped: no initdb");
    };
    let hub = spawn_pg_hub(&cluster.url("postgres"), |_| {}).await;
    let mut client = hub.ws("/ws?topics=a").await;
    client.expect("subscribed").await;
    let before = hub.publish(json!([event("a", json!({}), 1), event("a", json!({}), 2)])).await;
    assert_eq!(ids(&client.events(2).await), before);

    cluster.stop().await;
    hub.wait_ready(503, Duration::from_secs(10)).await;
    let refused = hub.publish_raw(event("a", json!({}), 3).to_string()).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    cluster.start_again().await;
    hub.wait_ready(200, Duration::from_secs(15)).await;
    let after = hub.publish(json!([event("a", json!({}), 4), event("a", json!({}), 5)])).await;

    assert_eq!(ids(&client.events(2).await), after);
    assert_eq!(after[0], before[1] + 1, "ids continue densely after the restart");
}

#[actix_web::test]
async fn a_write_transaction_held_open_elsewhere_does_not_delay_delivery() {
    let db = test_db!();
    let hub = spawn_pg_hub(&db.url, |_| {}).await;
    let pool = db.pool().await;
    let mut client = hub.ws("/ws?topics=*").await;
    client.expect("subscribed").await;
    let mut open = pool.begin().await.unwrap();
    sqlx::query("CREATE TABLE unrelated (x int)").execute(&mut *open).await.unwrap();
    storage::postgres::enqueue_with(&mut *open, &[new_event("held", "p1", 0)]).await.unwrap();
    let holder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        open.commit().await.unwrap();
    });

    let mut latencies = Vec::new();
    for n in 1..=5 {
        let started = Instant::now();
        let published = hub.publish(event("a", json!({}), n)).await;
        let got = client.events(1).await;
        latencies.push(started.elapsed());
        assert_eq!(ids(&got), published);
    }
    holder.await.unwrap();
    let held = client.events(1).await;

    let slowest = latencies.iter().max().unwrap();
    assert!(*slowest < Duration::from_secs(2), "delivery waited for the open transaction: {latencies:?}");
    assert_eq!(held[0]["topic"], "held", "the held transaction's event arrives once it commits");
}

#[actix_web::test]
async fn a_resume_point_older_than_the_retention_gets_a_reset() {
    let db = test_db!();
    let hub = spawn_pg_hub(&db.url, |s| {
        s.retention = Some(Duration::from_millis(500));
        s.retention_interval = Duration::from_millis(100);
    })
    .await;
    hub.publish(json!([event("a", json!({}), 1), event("a", json!({}), 2), event("a", json!({}), 3)])).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    let fresh = hub.publish(event("a", json!({}), 4)).await;

    let mut client = hub.ws("/ws?topics=a&since=1").await;
    client.expect("subscribed").await;
    let reset = client.expect("reset").await;
    client.expect("live").await;

    assert_eq!(reset["reason"], "history_truncated");
    assert_eq!(reset["earliest_id"], fresh[0]);
    assert_eq!(reset["head"], fresh[0]);
}

#[actix_web::test]
async fn replay_reads_the_log_with_the_subscription_filter() {
    let db = test_db!();
    let hub = spawn_pg_hub(&db.url, |s| s.scope_keys = vec!["color".into()]).await;
    let mut wanted = Vec::new();
    for n in 0..30u64 {
        let project = if n % 3 == 0 { "p1" } else { "p2" };
        let topic = if n % 2 == 0 { "run.logs" } else { "audit_log.x" };
        let id = hub.publish(event(topic, json!({"project_id": project, "color": "blue"}), n)).await[0];
        if project == "p1" {
            wanted.push(id);
        }
    }

    let mut client = hub.ws("/ws?topics=run.*,audit_log.*&project_id=p1&color=blue&since=0").await;
    client.expect("subscribed").await;

    assert_eq!(ids(&client.events(wanted.len()).await), wanted);
    client.expect("live").await;
    let mut underscore = hub.ws("/ws?topics=auditXlog.*&since=0").await;
    underscore.expect("subscribed").await;
    underscore.expect("live").await;
}

/// The hub's connections are opened and warmed at start-up and run without JIT: compiling a log read took 175 ms
/// once the planner's estimates passed `jit_above_cost`, a stall on live delivery.
#[actix_web::test]
async fn the_hub_pool_opens_its_connections_up_front_and_runs_without_jit() {
    let db = test_db!();
    let pool = storage::postgres::connect_pool(&db.url, 3, "hub-test").await.unwrap();
    let jit: String = sqlx::query_scalar("SHOW jit").fetch_one(&pool).await.unwrap();
    assert_eq!(jit, "off");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.size() < 3 {
        assert!(Instant::now() < deadline, "the pool holds {} connections, not 3", pool.size());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pool.close().await;
}
