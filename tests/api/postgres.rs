//! What is PostgreSQL's own: publishing inside the caller's transaction, transactions held open, the pool. The
//! guarantees every backend gives (cluster, faults, resume) are in `backends.rs`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use protocol::{NewEvent, Scope, Topic};
use rand::Rng;
use serde_json::{Value, json};

use crate::backends::{assert_exactly_once_in_order, events_with_markers};
use crate::helpers::{event, ids, spawn_pg_hub, ws_at};

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

/// A small transaction's notification carries its events, and every hub delivers them without reading the log; a
/// large one (more than 32 events, or past PostgreSQL's 8000-byte payload) is read from the log. Either way a
/// subscriber gets every event once, in order, exactly as a replay from the log renders it.
#[actix_web::test]
async fn small_transactions_reach_every_hub_in_their_notification_and_render_as_the_log_does() {
    let db = test_db!();
    // Its own process, so that its metrics count only this test's events.
    let watched = crate::process::HubProcess::start(&[
        ("HUB_BACKEND", "postgres"),
        ("DATABASE_URL", db.url.as_str()),
        ("HUB_DB_POOL_SIZE", "3"),
    ])
    .await;
    let other = spawn_pg_hub(&db.url, |_| {}).await;
    let mut live = ws_at(watched.port, "/ws?topics=*").await;
    live.expect("subscribed").await;
    let http = reqwest::Client::new();

    let with_payload =
        |topic: &str, payload: Value| json!({"topic": topic, "scope": {"org_id": "o1"}, "payload": payload});
    let large_payload = json!({"text": "x".repeat(9000)});
    let mut received = Vec::new();
    let (mut small, mut published) = (0, 0);
    for (step, batch) in [
        vec![event("a", json!({}), 1)],
        (2..5).map(|n| event("a", json!({"project_id": "p1"}), n)).collect(),
        (5..45).map(|n| event("b", json!({}), n)).collect(),
        vec![with_payload("c", large_payload.clone())],
        vec![with_payload("a", json!({"n": 46, "é": [1.50, null, {"k": "v, w"}], "long key": true}))],
        vec![event("a", json!({}), 47)],
    ]
    .into_iter()
    .enumerate()
    {
        let count = batch.len();
        if step == 4 {
            let answer = http.post(watched.url("/api/publish")).json(&batch[0]).send().await.unwrap();
            assert_eq!(answer.status(), 200);
        } else {
            other.publish(json!(batch)).await;
        }
        if count <= 32 && step != 3 {
            small += count;
        }
        published += count;
        received.extend(live.events(count).await);
    }

    assert_eq!(ids(&received), (1..=published as u64).collect::<Vec<_>>(), "every event once, in order");
    assert_eq!(received[44]["payload"], large_payload);
    let mut replay = ws_at(watched.port, "/ws?topics=*&since=0").await;
    replay.expect("subscribed").await;
    assert_eq!(replay.events(published).await, received, "live events are rendered as the log renders them");
    let metrics = http.get(watched.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let carried: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hub_pg_carried_events_total "))
        .expect("the metric is exported")
        .parse()
        .unwrap();
    // A read of the log once a second, should it fall between a commit and its notification, takes that
    // notification's events first.
    assert!((small - 2..=small).contains(&carried), "{carried} of the {small} events of small transactions carried");
}

/// PostgreSQL's notification queue is one for the whole server, and a listener that does not read holds all of it.
/// Notifications of up to 8000 bytes, not a few dozen, would fill it far sooner, so they carry events only while the
/// queue is under 1 % full: with a listener stalled in an open transaction and 95 MB of other notifications behind it, a
/// notification carries only the head; once the listener goes on, events are carried again.
#[actix_web::test]
async fn notifications_stop_carrying_events_while_a_stalled_listener_holds_the_queue() {
    // The queue is the server's: filling it on the shared server would change every other test's notifications.
    let Some(log) = crate::backends::TestLog::throwaway(crate::backends::LogKind::Postgres).await else { return };
    let url = log.env().into_iter().find(|(name, _)| *name == "DATABASE_URL").unwrap().1;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(3).connect(&url).await.unwrap();
    storage::postgres::migrate(&pool).await.unwrap();
    let mut watcher = sqlx::postgres::PgListener::connect_with(&pool).await.unwrap();
    watcher.listen(storage::postgres::EVENTS_CHANNEL).await.unwrap();
    let mut next_payload = async || {
        let notification = tokio::time::timeout(Duration::from_secs(10), watcher.recv()).await.unwrap().unwrap();
        notification.payload().to_owned()
    };
    let append = async |n| storage::postgres::append_with(&pool, &[new_event("a", "p1", n)]).await.unwrap()[0].get();

    let first = append(1).await;
    assert!(next_payload().await.starts_with(r#"{"events""#), "a small transaction carries its events");
    let mut stalled = pool.begin().await.unwrap();
    sqlx::query("LISTEN anything").execute(&mut *stalled).await.unwrap();
    sqlx::query("SELECT pg_notify('filler', repeat('x', 7900) || g) FROM generate_series(1, 12000) AS g")
        .execute(&pool)
        .await
        .unwrap();
    let usage: f64 = sqlx::query_scalar("SELECT pg_notification_queue_usage()").fetch_one(&pool).await.unwrap();
    assert!(usage >= 0.01, "the queue is {usage} full");
    let held = append(2).await;
    assert_eq!(next_payload().await, held.to_string(), "only the head while the queue is held");

    stalled.commit().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 3;
    loop {
        // PostgreSQL frees the queue's read pages when a notification starts a new one every fourth page.
        sqlx::query("SELECT pg_notify('filler', repeat('y', 7900) || g) FROM generate_series(1, 8) AS g")
            .execute(&pool)
            .await
            .unwrap();
        append(n).await;
        if next_payload().await.starts_with(r#"{"events""#) {
            break;
        }
        assert!(Instant::now() < deadline, "events are not carried again once the listener goes on");
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((first, held), (1, 2));
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

/// Whether the hub at `url` says it is the cluster's sequencer.
async fn is_sequencer(client: &reqwest::Client, url: String) -> bool {
    match client.get(url).send().await {
        Ok(response) => response.json::<serde_json::Value>().await.is_ok_and(|h| h["log"]["sequencer"] == true),
        Err(_) => false,
    }
}

/// A hub process on the database `url`, the first of its cluster: once it says it holds the sequencer lock.
async fn start_sequencer(url: &str) -> crate::process::HubProcess {
    let env = [("HUB_BACKEND", "postgres"), ("DATABASE_URL", url), ("HUB_DB_POOL_SIZE", "3")];
    let sequencer = crate::process::HubProcess::start(&env).await;
    let http = reqwest::Client::new();
    while !is_sequencer(&http, sequencer.url("/api/health/pubsub")).await {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sequencer
}

/// `hub_sequencer` is 1 on the hub that holds the sequencer lock, from start-up: the log sets it as it connects,
/// before the hub's recorder was installed until 2026-12-07, so the series was missing on a fresh hub.
#[actix_web::test]
async fn the_sequencing_hub_says_so_in_its_metrics_from_start_up() {
    let db = test_db!();
    let sequencer = start_sequencer(&db.url).await;
    let metrics = reqwest::get(sequencer.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "hub_sequencer 1"), "{metrics}");
}

/// The marker of the `k`-th event of the batch whose first event is marked `n` (above every other marker).
fn marker(n: u64, k: u64) -> u64 {
    10_000_000 + n * 100 + k
}

/// The hub holding the sequencer lock is SIGKILLed while eight publishers write (four over HTTP to the other hubs,
/// four inside their own transactions through the inbox): another hub takes over, every publish is answered, and
/// every subscriber gets every event once, in order, with dense ids.
#[actix_web::test]
async fn sigkilling_the_sequencing_hub_while_eight_publishers_write_loses_and_doubles_nothing() {
    let db = test_db!();
    let sequencer = start_sequencer(&db.url).await;
    let http = reqwest::Client::new();
    let hubs = [spawn_pg_hub(&db.url, |_| {}).await, spawn_pg_hub(&db.url, |_| {}).await];
    let pool = db.pool().await;
    let mut subscribers = vec![
        hubs[0].ws("/ws?topics=*").await,
        hubs[1].ws("/ws?topics=*").await,
        hubs[1].ws("/ws?topics=chat:*&project_id=p1").await,
    ];
    for client in &mut subscribers {
        client.expect("subscribed").await;
    }

    // Publishes answered so far, of 480.
    let done = std::sync::atomic::AtomicUsize::new(0);
    let done = &done;
    let over_http = (0..4u64).map(|p| {
        let hub = &hubs[p as usize % 2];
        async move {
            for i in 0..60u64 {
                let n = 1000 * (p + 1) + i;
                // Single events, and batches: of two, and on the second hub of 50 (two publishers there, so its
                // two appends in flight overlap).
                let body = if i % 2 == 0 {
                    event("chat:1", json!({"project_id":"p1"}), n)
                } else {
                    let batch = if p % 2 == 1 { 50 } else { 2 };
                    let rest = (1..batch).map(|k| event("run.logs", json!({}), marker(n, k)));
                    json!(
                        std::iter::once(event("chat:1", json!({"project_id":"p2"}), n)).chain(rest).collect::<Vec<_>>()
                    )
                };
                hub.publish(body).await;
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let in_transactions = (0..4u64).map(|t| {
        let pool = pool.clone();
        async move {
            for i in 0..60u64 {
                let n = 100_000 * (t + 1) + i;
                let mut tx = pool.begin().await.unwrap();
                storage::postgres::enqueue_with(&mut *tx, &[new_event("chat:2", "p1", n)]).await.unwrap();
                tx.commit().await.unwrap();
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let kill = async {
        while done.load(std::sync::atomic::Ordering::Relaxed) < 160 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sequencer.stop_and_read_output().await; // SIGKILL
        let killed_at = Instant::now();
        let done_at_kill = done.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            for hub in &hubs {
                if is_sequencer(&http, hub.url("/api/health/pubsub")).await {
                    return (killed_at.elapsed(), done_at_kill);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let ((), (), (takeover, done_at_kill)) = tokio::join!(
        async {
            join_all(over_http).await;
        },
        async {
            join_all(in_transactions).await;
        },
        kill
    );
    assert!(done_at_kill < 400, "the sequencer was killed while the publishers wrote ({done_at_kill} of 480 done)");
    eprintln!("another hub took over as the sequencer {takeover:?} after the SIGKILL");
    assert!(takeover < Duration::from_secs(3), "no hub took over as the sequencer: {takeover:?}");

    let all: BTreeSet<u64> = (0..4u64)
        .flat_map(|p| {
            (0..60).flat_map(move |i| {
                let n = 1000 * (p + 1) + i;
                let batch = if i % 2 == 0 {
                    1
                } else if p % 2 == 1 {
                    50
                } else {
                    2
                };
                std::iter::once(n).chain((1..batch).map(move |k| marker(n, k)))
            })
        })
        .chain((0..4u64).flat_map(|t| (0..60).map(move |i| 100_000 * (t + 1) + i)))
        .collect();
    let p1_chat: BTreeSet<u64> =
        all.iter().copied().filter(|n| (100_000..1_000_000).contains(n) || (*n < 100_000 && n % 2 == 0)).collect();
    for (which, client) in subscribers.iter_mut().enumerate() {
        let expected = if which < 2 { &all } else { &p1_chat };
        let got = events_with_markers(client, expected).await;
        assert_exactly_once_in_order(&format!("subscriber {which}"), &got, expected);
        if which < 2 {
            let got_ids = ids(&got);
            assert!(got_ids.windows(2).all(|w| w[1] == w[0] + 1), "subscriber {which}: ids have gaps: {got_ids:?}");
        }
    }
}

/// A hub that is not the sequencer stores its own publishes, under the head row's lock: with the sequencer's
/// process frozen (SIGSTOP: its lock and its connections held, nothing moved), publishes through another hub are
/// answered and delivered at once, in order. Through the inbox, each waited 500 ms for the sequencer before its
/// hub stepped in.
#[actix_web::test]
async fn a_hub_publishes_and_delivers_at_once_while_the_sequencer_is_frozen() {
    let db = test_db!();
    let sequencer = start_sequencer(&db.url).await;
    let hub = spawn_pg_hub(&db.url, |_| {}).await;
    let mut subscriber = hub.ws("/ws?topics=run.status").await;
    subscriber.expect("subscribed").await;

    sequencer.signal("STOP");
    let mut took = Vec::new();
    let mut answered = Vec::new();
    for n in 0..10 {
        let started = Instant::now();
        answered.extend(hub.publish(event("run.status", json!({}), n)).await);
        took.push(started.elapsed());
    }
    let got = subscriber.events(10).await;
    sequencer.signal("CONT");

    took.sort();
    assert!(took[5] < Duration::from_millis(250), "publishes waited for the frozen sequencer: {took:?}");
    assert!(answered.windows(2).all(|w| w[1] == w[0] + 1), "ids not dense and increasing: {answered:?}");
    assert_eq!(ids(&got), answered);
}

/// A database of the first scheme (every publish under the head lock) moves to the sequencer with `hub migrate`:
/// its ids stay, a service still calling `realtime_append` and a hub of the previous release moving the inbox
/// keep working beside the new hubs, and the ids go on, dense.
#[actix_web::test]
async fn a_log_of_the_first_scheme_keeps_its_ids_and_its_old_callers_after_hub_migrate() {
    let db = test_db!();
    let pool = db.pool().await;
    // Only the first migration, as a database of the first release has it.
    let first = std::env::temp_dir().join(format!("hub-first-migration-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&first).unwrap();
    let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/storage/migrations");
    std::fs::copy(migrations.join("20261122000001_event_log.sql"), first.join("20261122000001_event_log.sql")).unwrap();
    sqlx::migrate::Migrator::new(first.as_path()).await.unwrap().run(&pool).await.unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    let old_append = |n: u64| {
        let pool = pool.clone();
        async move { storage::postgres::append_with(&pool, &[new_event("chat:1", "p1", n)]).await.unwrap()[0].get() }
    };
    let before = [old_append(1).await, old_append(2).await];
    assert_eq!(before, [1, 2]);
    storage::postgres::enqueue_with(&pool, &[new_event("chat:1", "p1", 3)]).await.unwrap();

    let migrate = tokio::process::Command::new(crate::process::hub_binary())
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    assert!(migrate.status.success(), "hub migrate failed: {}", String::from_utf8_lossy(&migrate.stderr));
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version").fetch_all(&pool).await.unwrap();
    assert_eq!(applied, [20261122000001, 20261124000001, 20261206000001, 20261207000001, 20261207000002]);

    // Still the old callers: a hub of the previous release moves the inbox, a service appends under the lock.
    let moved: i32 = sqlx::query_scalar("SELECT realtime_move_inbox(100)").fetch_one(&pool).await.unwrap();
    assert_eq!(moved, 1);
    assert_eq!(old_append(4).await, 4);

    let hub = spawn_pg_hub(&db.url, |_| {}).await;
    let mut client = hub.ws("/ws?topics=*&since=0").await;
    client.expect("subscribed").await;
    let history = client.events(4).await;
    client.expect("live").await;
    let published = hub.publish(event("chat:1", json!({"project_id":"p1"}), 5)).await;
    let live = client.events(1).await;
    storage::postgres::enqueue_with(&pool, &[new_event("chat:1", "p1", 6)]).await.unwrap();
    let from_inbox = client.events(1).await;
    assert_eq!(old_append(7).await, 7, "realtime_append still works beside the sequencer");
    let last = client.events(1).await;

    assert_eq!(ids(&history), [1, 2, 3, 4]);
    let markers: Vec<u64> = history.iter().map(|e| e["payload"]["n"].as_u64().unwrap()).collect();
    assert_eq!(markers, [1, 2, 3, 4]);
    assert_eq!(published, [5]);
    assert_eq!(ids(&live), [5]);
    assert_eq!((ids(&from_inbox), from_inbox[0]["payload"]["n"].as_u64()), (vec![6], Some(6)));
    assert_eq!(ids(&last), [7]);
}

#[actix_web::test]
async fn a_subscription_made_while_postgres_restarts_waits_for_it_instead_of_failing() {
    // Arrange: a hub on a PostgreSQL of the test's own, one event in it, then PostgreSQL down.
    let Some(cluster) = crate::db::Cluster::start().await else {
        assert_ne!(std::env::var("HUB_REQUIRE_PG").as_deref(), Ok("1"), "HUB_REQUIRE_PG=1 but there is no initdb");
        return eprintln!("skipped: no initdb");
    };
    let hub = spawn_pg_hub(&cluster.url("postgres"), |_| {}).await;
    let first = hub.publish(event("a", json!({}), 1)).await;
    cluster.stop().await;

    // Act: subscribe while it is down; it comes back later than the pool waits for a connection (5 s).
    let mut ws = hub.ws("/ws?topics=a&since=0").await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    cluster.start_again().await;

    // Assert: the subscription waited and replays, with no error frame; live events follow.
    let mut frames = Vec::new();
    while !frames.iter().any(|f: &serde_json::Value| f["type"] == "live") {
        match ws.next_within(Duration::from_secs(20)).await {
            Some(crate::helpers::Incoming::Json(frame)) => frames.push(frame),
            other => panic!("the subscription never went live: {other:?} after {frames:?}"),
        }
    }
    assert!(frames.iter().all(|f| f["type"] != "error"), "{frames:?}");
    let replayed: Vec<u64> =
        frames.iter().filter(|f| f["type"] == "event").map(|f| f["id"].as_u64().unwrap()).collect();
    assert_eq!(replayed, first);
    let second = hub.publish(event("a", json!({}), 2)).await;
    assert_eq!(ids(&[ws.expect("event").await]), second);
}

#[actix_web::test]
async fn at_a_few_events_a_second_the_sequencer_still_vacuums_the_inbox_within_seconds() {
    // Arrange: a hub (the sequencer) and a service publishing through the crate into the inbox, slowly.
    let db = test_db!();
    let _hub = spawn_pg_hub(&db.url, |_| {}).await;
    let pool = db.pool().await;
    let publisher = publisher::Publisher::new(publisher::PgSink::new(pool.clone()));

    // Act: one event a second for longer than the longest gap between two vacuums of the inbox.
    for n in 0..13 {
        let event = publisher::events::CustomEvent::new("slow", [], &json!({"n": n})).unwrap();
        publisher.publish(event).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Assert: the inbox was vacuumed, though far fewer rows than VACUUM_EVERY were moved (and autovacuum may be
    // off, as on this project's machines).
    let vacuumed: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'realtime_inbox'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(vacuumed.is_some(), "the inbox was never vacuumed");
}

/// The network to PostgreSQL goes silent (a failover that moved the address, a NAT that dropped the flows): no
/// connection is closed, none answers. Without deadlines the hub waited on those connections for as long as TCP
/// retransmits (minutes; for ever here): publishes hung and `/readyz` said ready throughout.
#[actix_web::test]
async fn a_hub_cut_off_from_postgres_without_a_word_refuses_in_seconds_and_recovers_once_it_answers() {
    // Arrange: a hub reaching its database through a proxy that can cut the network, a live subscriber.
    let db = test_db!();
    let (proxy, url) = crate::partition::SilentProxy::for_database(&db.url).await;
    let hub = spawn_pg_hub(&url, |s| s.db_timeout = Duration::from_secs(2)).await;
    let mut ws = hub.ws("/ws?topics=a").await;
    ws.expect("subscribed").await;
    let first = hub.publish(event("a", json!({}), 1)).await;
    assert_eq!(ids(&[ws.expect("event").await]), first);

    // Act: the network goes silent.
    proxy.cut();
    let started = Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(30), hub.publish_as(&event("a", json!({}), 2), None)).await;

    // Assert: the publish is refused as unavailable within the deadline and the pool's wait, not left hanging;
    // the hub stops saying it is ready.
    let (status, answer) = refused.expect("the publish hung on a silent connection");
    assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("unavailable")), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(12), "refused only after {:?}", started.elapsed());
    hub.wait_ready(503, Duration::from_secs(10)).await;

    // Act: the network answers again; the connections open before the cut stay silent.
    proxy.heal();
    let healed = Instant::now();

    // Assert: within seconds the hub is ready, publishes, and the subscriber gets what is published with
    // nothing lost or doubled (the log is the truth: every event after the first, in order).
    hub.wait_ready(200, Duration::from_secs(15)).await;
    let third = loop {
        let (status, answer) = hub.publish_as(&event("a", json!({}), 3), None).await;
        if status == 200 {
            break answer["ids"][0].as_u64().expect("an id");
        }
        assert!(healed.elapsed() < Duration::from_secs(15), "still refused after the network healed: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut got = Vec::new();
    while got.last() != Some(&third) {
        match ws.next_within(Duration::from_secs(20)).await {
            Some(crate::helpers::Incoming::Json(frame)) if frame["type"] == "event" => got.extend(ids(&[frame])),
            other => panic!("the subscriber got {other:?} after {got:?}, waiting for {third}"),
        }
    }
    let (_, log) = hub.get_json("/api/events?topics=a&after=0&wait=0").await;
    let stored: Vec<u64> = log["events"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!([first.clone(), got].concat(), stored);
}

/// The pages of a pattern subscription are read along the log's primary key. PostgreSQL's generic plan for the
/// prepared read takes `id > $1` for a third of the log and scans the whole table instead: in a 30-minute soak
/// that read 17 billion rows, every page a scan of the log as it had grown, and latency crept up by a third.
#[actix_web::test]
async fn the_pages_of_a_pattern_subscription_are_read_by_the_index_not_by_scanning_the_log() {
    // Arrange: a log of 3,000 events over eight topics.
    let db = test_db!();
    let hub = spawn_pg_hub(&db.url, |_| {}).await;
    for batch in 0..10 {
        let events: Vec<_> = (0..300).map(|n| event(&format!("run.t{}", n % 8), json!({}), batch * 300 + n)).collect();
        hub.publish(json!(events)).await;
    }
    let pool = db.pool().await;
    let scans = async || -> i64 {
        // A backend reports its counters within a second while busy, within ten once idle.
        tokio::time::sleep(Duration::from_secs(11)).await;
        sqlx::query_scalar("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'realtime_events'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = scans().await;

    // Act: long-polls for a pattern, from near the head, enough for every pool connection to plan the read
    // generically (PostgreSQL does after five executions).
    for _ in 0..30 {
        let (status, page) = hub.get_json("/api/events?topics=run.*&after=2900&wait=0").await;
        assert_eq!((status, page["events"].as_array().map(Vec::len)), (200, Some(100)), "{page}");
    }

    // Assert: no page scanned the log.
    assert_eq!(scans().await - before, 0, "pages for a pattern scanned the whole log");
}

/// Reads near the head come from the hub's window of newest events, not the log's table: with the table locked
/// (as a migration taking an exclusive lock would), a long-poll, a WebSocket resume and an SSE resume a moment
/// back are answered at once, while a long-poll from before the window still waits for the table.
#[actix_web::test]
async fn reads_near_the_head_are_answered_from_the_hubs_window_while_the_log_table_is_locked() {
    let db = test_db!();
    let hub = spawn_pg_hub(&db.url, |s| s.recent_events = 3).await;
    let mut follower = hub.ws("/ws?topics=*").await;
    follower.expect("subscribed").await;
    let published = hub
        .publish(json!([
            event("a", json!({}), 1),
            event("b", json!({}), 2),
            event("a", json!({}), 3),
            event("a", json!({}), 4)
        ]))
        .await;
    follower.events(4).await;
    let pool = db.pool().await;
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE realtime_events IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();

    let near = format!("/api/events?topics=a&after={}&wait=0", published[0]);
    let (status, poll) = tokio::time::timeout(Duration::from_secs(2), hub.get_json(&near))
        .await
        .expect("a long-poll inside the window waited for the table");
    let resumed = tokio::time::timeout(Duration::from_secs(2), async {
        let mut ws = hub.ws(&format!("/ws?topics=a&since={}", published[1])).await;
        ws.expect("subscribed").await;
        let replayed = ws.events(2).await;
        ws.expect("live").await;
        let position = published[1].to_string();
        let mut sse = hub.sse("/sse?topics=a", &[("Last-Event-ID", position.as_str())]).await;
        let streamed = [sse.next_event().await, sse.next_event().await];
        (replayed, streamed.map(|block| block.id.unwrap().parse::<u64>().unwrap()))
    })
    .await
    .expect("a resume inside the window waited for the table");
    let far = format!("/api/events?topics=a&after={}&wait=0", published[0] - 1);
    let before_window = tokio::time::timeout(Duration::from_millis(1500), hub.get_json(&far)).await;
    lock.rollback().await.unwrap();

    assert_eq!(status, 200, "{poll}");
    assert_eq!(ids(poll["events"].as_array().unwrap()), vec![published[2], published[3]]);
    assert_eq!(poll["next_after"], published[3]);
    assert_eq!(ids(&resumed.0), vec![published[2], published[3]]);
    assert_eq!(resumed.1, [published[2], published[3]]);
    assert!(before_window.is_err(), "a read from before the window is the table's: {before_window:?}");
}

/// A long-poll from before the window of newest events reads the table, then waits on the window: the window
/// starting later than the request's `after` is not a loss. Every event in between was read (none matched), so
/// the request waits and answers the next match, without a `reset`. (Found by the fault storm: a hub restarted
/// has a window that starts at its restart, and its filtered long-polls were told `reset` for nothing lost.)
#[actix_web::test]
async fn a_long_poll_from_before_the_window_waits_without_a_reset_for_what_was_never_lost() {
    let db = test_db!();
    let hub = spawn_pg_hub(&db.url, |s| s.recent_events = 3).await;
    let mut follower = hub.ws("/ws?topics=*").await;
    follower.expect("subscribed").await;
    let others = hub.publish(json!((0..5).map(|n| event("b", json!({}), n)).collect::<Vec<_>>())).await;
    follower.events(5).await;

    let from_before_the_window = format!("/api/events?topics=a&after={}&wait=10", others[0]);
    let waiting = hub.get_json(&from_before_the_window);
    let publish = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hub.publish(event("a", json!({}), 9)).await
    };
    let ((status, answer), published) = tokio::join!(waiting, publish);

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reset"], Value::Null, "nothing after {} was lost: {answer}", others[0]);
    assert_eq!(ids(answer["events"].as_array().unwrap()), published);
    assert_eq!(answer["next_after"], published[0]);
}
