//! What is PostgreSQL's own: publishing inside the caller's transaction, transactions held open, the pool. The
//! guarantees every backend gives (cluster, faults, resume) are in `backends.rs`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use protocol::{NewEvent, Scope, Topic};
use rand::Rng;
use serde_json::json;

use crate::backends::{assert_exactly_once_in_order, events_with_markers};
use crate::helpers::{event, ids, spawn_pg_hub};

fn new_event(topic: &str, project: &str, n: u64) -> NewEvent {
    let payload = json!({"n": n}).as_object().cloned().unwrap();
    NewEvent::new(Topic::parse(topic).unwrap(), Scope::try_from([("project_id", project)]).unwrap(), payload)
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
        assert_exactly_once_in_order(&format!("subscriber {which}"), &got, expected);
    }
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
