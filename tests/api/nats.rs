//! What is NATS JetStream's own: a three-node cluster losing the stream's leader or the server a hub is connected
//! to, a stream deleted and created again, and start-up errors. The guarantees every backend gives (cluster,
//! faults, resume) run on NATS too, in `backends.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use hub::Application;
use hub::settings::{Backend, Settings};
use serde_json::{Value, json};

use crate::backends::{assert_exactly_once_in_order, events_with_markers};
use crate::helpers::{TestHub, event, ids, spawn_hub};
use crate::natsd::{TestStream, delete_stream};

async fn spawn_nats_hub(urls: &str, stream: &str, replicas: usize) -> TestHub {
    let (urls, stream) = (urls.to_owned(), stream.to_owned());
    spawn_hub(move |s| {
        s.backend = Some(Backend::Nats);
        s.nats_url = Some(urls);
        s.nats_stream = stream;
        s.nats_replicas = replicas;
        s.workers = Some(2);
    })
    .await
}

/// Publishes `batch` until it is stored, retrying a 503 (a leader election) with the same idempotency keys, as a
/// service following the contract would; returns the ids.
async fn publish_until_stored(hub: &TestHub, batch: &Value) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let response = hub.publish_raw(batch.to_string()).await;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.expect("the answer is JSON");
        match status {
            200 => return answer["ids"].as_array().expect("ids").iter().map(|id| id.as_u64().unwrap()).collect(),
            503 => assert_eq!(answer["error"]["code"], "unavailable", "{answer}"),
            other => panic!("publish answered {other}: {answer}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "the publish was not stored within a minute: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n`'s event, with an idempotency key so that a retried publish is stored once.
fn keyed(topic: &str, n: u64) -> Value {
    let mut event = event(topic, json!({"project_id": if n.is_multiple_of(3) { "p1" } else { "p2" }}), n);
    event["idempotency_key"] = json!(format!("test-{n}"));
    event
}

#[actix_web::test]
async fn two_hubs_and_eight_publishers_lose_nothing_while_the_streams_leader_is_killed_and_comes_back() {
    let mut cluster = throwaway_nats!(3);
    let stream = "leader_loss";
    let hub_a = spawn_nats_hub(&cluster.urls(), stream, 3).await;
    let hub_b = spawn_nats_hub(&cluster.urls(), stream, 3).await;
    let mut subscribers = vec![
        hub_a.ws("/ws?topics=*").await,
        hub_a.ws("/ws?topics=chat:*&project_id=p1").await,
        hub_b.ws("/ws?topics=*").await,
        hub_b.ws("/ws?topics=chat:*&project_id=p1").await,
    ];
    for client in &mut subscribers {
        client.expect("subscribed").await;
    }
    let leader = cluster.stream_leader(stream).await.expect("the stream has a leader");

    let publishers = (0..8u64).map(|p| {
        let hub = if p % 2 == 0 { &hub_a } else { &hub_b };
        async move {
            for i in 0..40u64 {
                let n = 1000 * (p + 1) + 2 * i;
                publish_until_stored(hub, &json!([keyed("chat:1", n), keyed("run.logs", n + 1)])).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let publishing = async {
        join_all(publishers).await;
        tokio::time::Instant::now()
    };
    let fault = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.node_mut(&leader).kill().await;
        let killed_at = tokio::time::Instant::now();
        let new_leader = cluster.wait_for_stream_leader(stream, Some(&leader), Duration::from_secs(15)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.node_mut(&leader).start().await;
        (new_leader, killed_at)
    };
    let (published_at, (new_leader, killed_at)) = tokio::join!(publishing, fault);
    assert!(killed_at < published_at, "the leader was killed while the publishers were still publishing");

    let all: BTreeSet<u64> = (0..8u64).flat_map(|p| (0..80).map(move |i| 1000 * (p + 1) + i)).collect();
    let p1_chat: BTreeSet<u64> = all.iter().copied().filter(|n| n % 2 == 0 && n % 3 == 0).collect();
    for (which, client) in subscribers.iter_mut().enumerate() {
        let expected = if which % 2 == 0 { &all } else { &p1_chat };
        let got = events_with_markers(client, expected).await;
        assert_exactly_once_in_order(&format!("subscriber {which}"), &got, expected);
        if which % 2 == 0 {
            let got_ids = ids(&got);
            assert!(got_ids.windows(2).all(|w| w[1] == w[0] + 1), "subscriber {which}: ids have gaps");
        }
    }
    assert_ne!(new_leader, leader, "the stream moved to another node");
    hub_a.wait_ready(200, Duration::from_secs(15)).await;
    hub_b.wait_ready(200, Duration::from_secs(15)).await;
}

/// While the stream has no leader (here: two of three nodes gone, so no quorum), neither the live feed nor a read
/// of the stream is answered; clients reconnecting to a hub then get what they missed from the hub's window of
/// newest events at once, on every transport, and what is stored once the stream is back reaches them live.
#[actix_web::test]
async fn clients_reconnecting_while_the_stream_has_no_leader_get_what_they_missed_at_once() {
    let mut cluster = throwaway_nats!(3);
    let stream = "no_quorum";
    let hub = spawn_nats_hub(&cluster.urls(), stream, 3).await;
    let published = hub.publish(json!((1..=5).map(|n| event("a", json!({}), n)).collect::<Vec<_>>())).await;
    let mut watcher = hub.ws("/ws?topics=a&since=0").await;
    watcher.expect("subscribed").await;
    assert_eq!(ids(&watcher.events(5).await), published, "the window holds the five events");
    watcher.expect("live").await;

    let leader = cluster.stream_leader(stream).await.expect("the stream has a leader");
    let other = cluster.nodes.iter().map(|n| n.name.clone()).find(|n| *n != leader).expect("three nodes");
    cluster.node_mut(&leader).kill().await;
    cluster.node_mut(&other).kill().await;
    hub.wait_ready(503, Duration::from_secs(30)).await;

    // Act: a WebSocket, an SSE stream and a long-poll resume from the second event, within the window.
    let started = tokio::time::Instant::now();
    let since = published[1];
    let mut ws = hub.ws(&format!("/ws?topics=a&since={since}")).await;
    let subscribed = ws.expect("subscribed").await;
    let ws_got = ws.events(3).await;
    let live = ws.expect("live").await;
    let mut sse = hub.sse("/sse?topics=a", &[("Last-Event-ID", &since.to_string())]).await;
    let sse_got = sse_ids(&mut sse, 3).await;
    let (status, page) = hub.get_json(&format!("/api/events?topics=a&after={since}&wait=0")).await;
    let waited = started.elapsed();

    // Assert: answered from the window, without waiting for the stream, each event once and in order.
    assert_eq!(subscribed["head"], published[4], "{subscribed}");
    assert_eq!(ids(&ws_got), published[2..].to_vec());
    assert_eq!(live["last_id"], published[4], "{live}");
    assert_eq!(sse_got, published[2..].to_vec());
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(page["events"].as_array().expect("events")), published[2..].to_vec(), "{page}");
    assert!(waited < Duration::from_secs(5), "the clients waited {waited:?} for a stream with no leader");

    // What is stored once the stream has its quorum again reaches every one of them live, after the window.
    cluster.node_mut(&leader).start().await;
    cluster.node_mut(&other).start().await;
    let later = publish_until_stored(&hub, &json!([keyed("a", 6), keyed("a", 7)])).await;
    assert_eq!(ids(&ws.events(2).await), later);
    assert_eq!(ids(&watcher.events(2).await), later);
    assert_eq!(sse_ids(&mut sse, 2).await, later);
}

/// The ids of the next `n` events of an SSE stream (the blocks with an `id:`), skipping its control blocks.
async fn sse_ids(sse: &mut crate::helpers::SseClient, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < n {
        if let Some(id) = sse.next_event().await.id {
            ids.push(id.parse().expect("a numeric id"));
        }
    }
    ids
}

#[actix_web::test]
async fn a_hub_whose_nats_server_is_killed_moves_to_another_and_its_subscribers_lose_nothing() {
    let mut cluster = throwaway_nats!(3);
    let stream = "server_loss";
    // Hub A knows only n0 and learns the others from it, as a client of one seed URL does.
    let hub_a = spawn_nats_hub(&cluster.nodes[0].url(), stream, 3).await;
    let hub_b = spawn_nats_hub(&cluster.nodes[1].url(), stream, 3).await;
    let mut client = hub_a.ws("/ws?topics=a").await;
    client.expect("subscribed").await;
    let mut published = hub_b.publish(json!([event("a", json!({}), 1), event("a", json!({}), 2)])).await;
    assert_eq!(ids(&client.events(2).await), published);

    cluster.nodes[0].kill().await;
    cluster.wait_for_stream_leader(stream, Some("n0"), Duration::from_secs(15)).await;
    for n in 3..13 {
        published.extend(publish_until_stored(&hub_b, &json!([keyed("a", n)])).await);
    }

    let rest = client.events(10).await;
    assert_eq!(ids(&rest), published[2..].to_vec(), "every event once, in order, after the move");
    hub_a.wait_ready(200, Duration::from_secs(15)).await;
    let (_, health) = hub_a.get_json("/api/health/pubsub").await;
    assert_eq!(health["provider"], "nats");
    assert_eq!(health["log"]["stream"], stream);
    assert_eq!(health["log"]["replicas"], 3);
    assert!(health["log"]["leader"].is_string(), "{health}");
    let (passed, smoke) = crate::smoke::smoke(hub_a.port, None).await;
    assert!(passed, "{smoke}");
    assert!(smoke.contains(&format!("provider nats, stream {stream}, leader n")), "{smoke}");
    assert!(smoke.contains("3 replicas"), "{smoke}");
}

/// An operator deletes the stream and it is created again: sequences would start over, so the new stream starts
/// above every id handed out before and every reader is told with a reset.
#[actix_web::test]
async fn a_stream_deleted_and_created_again_is_a_new_epoch_that_resets_every_reader_and_reuses_no_id() {
    let Some(stream) = TestStream::create().await else { return eprintln!("skipped: no NATS") };
    let hub = spawn_nats_hub(&stream.url, &stream.name, 1).await;
    let mut live = hub.ws("/ws?topics=a").await;
    live.expect("subscribed").await;
    let before = hub.publish(json!([event("a", json!({}), 1), event("a", json!({}), 2)])).await;
    assert_eq!(ids(&live.events(2).await), before);

    delete_stream(&stream.url, &stream.name).await.expect("the stream is deleted");
    let after = hub.publish(json!([event("a", json!({}), 3), event("a", json!({}), 4)])).await;

    let reset = live.expect("reset").await;
    assert_eq!(reset["reason"], "history_truncated");
    assert!(reset["earliest_id"].as_u64().unwrap() > before[1], "the new epoch starts above old ids: {reset}");
    assert_eq!(ids(&live.events(2).await), after);
    assert!(after[0] > before[1], "ids never go back: {after:?} after {before:?}");
    let mut resumed = hub.ws(&format!("/ws?topics=a&since={}", before[0])).await;
    resumed.expect("subscribed").await;
    let told = resumed.expect("reset").await;
    resumed.expect("live").await;
    assert_eq!(told["earliest_id"], after[0], "the new epoch's history is what is retained");
}

/// A request's events are one atomic batch: one event the stream refuses (over its message size) keeps the whole
/// batch out, and nothing of it is stored.
#[actix_web::test]
async fn a_batch_with_one_refused_event_is_stored_not_at_all() {
    let Some(stream) = TestStream::create().await else { return eprintln!("skipped: no NATS") };
    let hub = spawn_nats_hub(&stream.url, &stream.name, 1).await;
    // The stream refuses messages over 1,000 bytes, as an operator's limit would: the middle event fails for good.
    let js = async_nats::jetstream::new(async_nats::connect(stream.url.as_str()).await.unwrap());
    let mut config = js.get_stream(&stream.name).await.unwrap().info().await.unwrap().config.clone();
    config.max_message_size = 1000;
    js.update_stream(config).await.unwrap();
    let first = hub.publish(event("a", json!({}), 1)).await;
    let mut refused = event("a", json!({}), 3);
    refused["payload"]["pad"] = json!("x".repeat(2000));

    let response =
        hub.publish_raw(json!([event("a", json!({}), 2), refused, event("a", json!({}), 4)]).to_string()).await;
    let last = hub.publish(event("a", json!({}), 5)).await;

    assert_eq!(response.status().as_u16(), 503);
    let (_, page) = hub.get_json("/api/events?topics=a&after=0&wait=0").await;
    let stored: Vec<u64> =
        page["events"].as_array().unwrap().iter().map(|e| e["payload"]["n"].as_u64().unwrap()).collect();
    assert_eq!(stored, [1, 5], "nothing of the refused batch is stored: {page}");
    assert_eq!(ids(page["events"].as_array().unwrap()), [first, last].concat());
}

/// A batch sent again with its idempotency keys answers the ids it was stored with, and stores nothing twice; a
/// batch that holds some stored keys and some new ones answers the stored ids for the first and stores the rest,
/// together. Keys repeated inside one request are one event.
#[actix_web::test]
async fn a_batch_sent_again_answers_the_ids_it_was_stored_with() {
    let Some(stream) = TestStream::create().await else { return eprintln!("skipped: no NATS") };
    let hub = spawn_nats_hub(&stream.url, &stream.name, 1).await;
    let batch = json!((0..5).map(|n| keyed("a", n)).collect::<Vec<_>>());

    let stored = hub.publish(batch.clone()).await;
    let again = hub.publish(batch).await;
    let mixed = hub.publish(json!([keyed("a", 3), keyed("a", 10), keyed("a", 4), keyed("a", 11)])).await;
    let repeated = hub.publish(json!([keyed("a", 20), keyed("a", 20), keyed("a", 21)])).await;

    assert!(stored.windows(2).all(|w| w[1] == w[0] + 1), "one batch, contiguous ids: {stored:?}");
    assert_eq!(again, stored, "the same ids, nothing stored twice");
    assert_eq!((mixed[0], mixed[2]), (stored[3], stored[4]), "{mixed:?}");
    assert_eq!(mixed[3], mixed[1] + 1, "the new events stored together: {mixed:?}");
    assert_eq!((repeated[0], repeated[2]), (repeated[1], repeated[1] + 1), "{repeated:?}");
    let (_, page) = hub.get_json("/api/events?topics=a&after=0&limit=100&wait=0").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 9, "{page}");
}

/// A request for more events than one atomic batch holds is refused at start-up on NATS, with the reason.
#[actix_web::test]
async fn a_max_batch_above_what_one_atomic_batch_holds_is_refused_on_nats() {
    let Some(stream) = TestStream::create().await else { return eprintln!("skipped: no NATS") };
    let (url, name) = (stream.url.clone(), stream.name.clone());
    let refused = crate::helpers::try_spawn_hub(move |s| {
        s.backend = Some(Backend::Nats);
        s.nats_url = Some(url);
        s.nats_stream = name;
        s.max_batch = 5000;
    })
    .await
    .err()
    .expect("refused");

    assert!(refused.contains("HUB_MAX_BATCH=5000 is above 1000: on NATS a request's events are one atomic batch"));
}

/// Batches of 50 events from four publishers on two hubs while the stream's leader is SIGKILLed three times: every
/// answered request's ids are contiguous and in request order, and every request is stored whole or not at all,
/// also those answered 503 (each is sent once more with its keys, as a service would).
#[actix_web::test]
async fn batches_are_stored_whole_or_not_at_all_through_repeated_leader_kills() {
    let mut cluster = throwaway_nats!(3);
    let stream = "batches";
    let hub_a = spawn_nats_hub(&cluster.urls(), stream, 3).await;
    let hub_b = spawn_nats_hub(&cluster.urls(), stream, 3).await;
    let request =
        |p: u64, r: u64| json!((0..50).map(|i| keyed("run.logs", (p * 1000 + r) * 100 + i)).collect::<Vec<_>>());
    let done = std::sync::atomic::AtomicBool::new(false);

    let publishers = (0..4u64).map(|p| {
        let (hub, done) = (if p % 2 == 0 { &hub_a } else { &hub_b }, &done);
        async move {
            let (mut answered, mut refused, mut sent) = (Vec::new(), 0, 0);
            for r in 0.. {
                if done.load(std::sync::atomic::Ordering::Relaxed) && r >= 20 {
                    break;
                }
                sent += 1;
                for _attempt in 0..2 {
                    let response = hub.publish_raw(request(p, r).to_string()).await;
                    let status = response.status().as_u16();
                    let answer: Value = response.json().await.expect("JSON");
                    if status == 200 {
                        let got: Vec<u64> =
                            answer["ids"].as_array().unwrap().iter().map(|id| id.as_u64().unwrap()).collect();
                        answered.push((r, got));
                        break;
                    }
                    assert_eq!(status, 503, "{answer}");
                    refused += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (p, answered, refused, sent)
        }
    });
    let faults = async {
        let mut kills = Vec::new();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let leader = cluster.stream_leader(stream).await.expect("the stream has a leader");
            cluster.node_mut(&leader).kill().await;
            cluster.wait_for_stream_leader(stream, Some(&leader), Duration::from_secs(20)).await;
            cluster.node_mut(&leader).start().await;
            kills.push(leader);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        kills
    };
    let (results, kills) = tokio::join!(join_all(publishers), faults);

    hub_a.wait_ready(200, Duration::from_secs(20)).await;
    let mut stored = std::collections::BTreeMap::new();
    let mut after = 0;
    loop {
        let (_, page) = hub_a.get_json(&format!("/api/events?topics=*&after={after}&limit=1000&wait=0")).await;
        let events = page["events"].as_array().unwrap();
        for e in events {
            assert!(stored.insert(e["payload"]["n"].as_u64().unwrap(), e["id"].as_u64().unwrap()).is_none(), "{e}");
        }
        if events.is_empty() {
            break;
        }
        after = page["next_after"].as_u64().unwrap();
    }
    let mut requests = 0;
    let mut refusals = 0;
    for (p, answered, refused, sent) in results {
        refusals += refused;
        for (r, answer) in &answered {
            let expected: Vec<u64> = (0..50).map(|i| stored[&((p * 1000 + r) * 100 + i)]).collect();
            assert_eq!(answer, &expected, "publisher {p} request {r}: the answer is what was stored");
            assert!(answer.windows(2).all(|w| w[1] == w[0] + 1), "publisher {p} request {r}: {answer:?}");
        }
        for r in 0..sent {
            requests += 1;
            let present = (0..50).filter(|i| stored.contains_key(&((p * 1000 + r) * 100 + i))).count();
            assert!(present == 0 || present == 50, "publisher {p} request {r}: {present} of 50 stored");
        }
    }
    eprintln!("{requests} requests of 50 through {} leader kills ({kills:?}); {refusals} answers 503", kills.len());
    assert_eq!(stored.len() % 50, 0);
}

#[actix_web::test]
async fn an_unreachable_cluster_or_a_stream_that_contradicts_the_settings_is_a_clear_start_up_error() {
    let Some(stream) = TestStream::create().await else { return eprintln!("skipped: no NATS") };
    let client = async_nats::connect(stream.url.as_str()).await.unwrap();
    let memory = async_nats::jetstream::stream::Config {
        name: stream.name.clone(),
        subjects: vec![format!("{}.>", stream.name)],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    };
    async_nats::jetstream::new(client).create_stream(memory).await.unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cases = [
        (format!("nats://127.0.0.1:{closed}"), "other".to_owned(), 1, "cannot open the NATS event log"),
        ("nats://bad host".into(), "other".into(), 1, "NATS_URL"),
        (stream.url.clone(), stream.name.clone(), 1, "needs file storage"),
    ];

    for (url, name, replicas, says) in cases {
        let settings = Settings {
            bind: "127.0.0.1:0".into(),
            backend: Some(Backend::Nats),
            nats_url: Some(url.clone()),
            nats_stream: name,
            nats_replicas: replicas,
            // Unreachable is waited for at start-up (HUB_START_TIMEOUT); a second is less than one retry.
            start_timeout: std::time::Duration::from_secs(1),
            ..Settings::default()
        };
        let error = Application::build(settings).await.err().expect("the hub refuses to start");
        let text = format!("{error:#}");
        assert!(text.contains(says), "{url}: {text}");
    }
}

#[actix_web::test]
async fn a_stream_with_fewer_replicas_than_asked_is_refused_with_the_reason() {
    let Some(stream) = TestStream::create().await else { return eprintln!("skipped: no NATS") };
    let _one_replica = spawn_nats_hub(&stream.url, &stream.name, 1).await;

    let settings = Settings {
        bind: "127.0.0.1:0".into(),
        backend: Some(Backend::Nats),
        nats_url: Some(stream.url.clone()),
        nats_stream: stream.name.clone(),
        nats_replicas: 3,
        ..Settings::default()
    };
    let error = Application::build(settings).await.err().expect("the hub refuses to start");

    let text = format!("{error:#}");
    assert!(text.contains("1 replicas, fewer than HUB_NATS_REPLICAS=3"), "{text}");
}

#[actix_web::test]
async fn the_publisher_crates_nats_sink_reaches_subscribers_redacted_and_refuses_a_missing_stream() {
    use publisher::events::{ProjectId, RunEvent, RunId, RunScope, RunStatus};
    use publisher::{NatsSink, Publisher};
    let Some(stream) = TestStream::create().await else { return eprintln!("skipped: no NATS") };
    let missing = NatsSink::connect(&stream.url, &stream.name, None).await.err().expect("no stream yet");
    let hub = spawn_nats_hub(&stream.url, &stream.name, 1).await;
    let mut client = hub.ws("/ws?topics=run.events&project_id=p1").await;
    client.expect("subscribed").await;
    let publisher = Publisher::new(NatsSink::connect(&stream.url, &stream.name, None).await.unwrap());

    let mut event =
        RunEvent::new(RunScope::new(ProjectId::new("p1").unwrap(), RunId::new("r1").unwrap()), RunStatus::Failed);
    event.details.insert("api_key".into(), "sk_live_abcdefghijklmnop1234".into());
    let published = publisher.publish(event).await.unwrap();

    let got = client.events(1).await;
    assert_eq!(Some(ids(&got)), published.ids.map(|ids| ids.iter().map(|id| id.get()).collect()));
    assert_eq!(got[0]["payload"]["details"]["api_key"], "[REDACTED]");
    assert_eq!(got[0]["key"], "run:r1");
    let reason = std::error::Error::source(&missing).map(ToString::to_string).unwrap_or_default();
    assert!(reason.contains("does not exist"), "{missing}: {reason}");
}

/// A hub on `stream` whose run logs are capped at 10 (removal every 200 ms) and whose audit events have a policy of
/// their own, without the window of newest events (so reads go to the stream).
async fn spawn_capped_logs_hub(stream: &TestStream) -> TestHub {
    let policies = "[[policy]]\ntopics = [\"run.logs\"]\nmax_events = 10\n[[policy]]\ntopics = [\"audit.*\"]";
    let (url, name) = (stream.url.clone(), stream.name.clone());
    spawn_hub(move |s| {
        s.backend = Some(Backend::Nats);
        s.nats_url = Some(url);
        s.nats_stream = name;
        s.topic_policies = Some(policies.into());
        s.retention_interval = Duration::from_millis(200);
        s.recent_events = 0;
    })
    .await
}

/// The run logs `hub` answers from the start of the log, once the cap holds them at its 10 (or after 10 s). Fewer
/// is not done yet: a read that met a removal round mid-way answers a page of events the round's position covers,
/// filtered out, and goes on from there.
async fn capped_logs(hub: &TestHub) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, logs) = hub.get_json("/api/events?topics=run.logs&after=0&limit=1000&wait=0").await;
        if logs["events"].as_array().unwrap().len() == 10 || tokio::time::Instant::now() > deadline {
            return logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A service writing through the publisher crate's NATS sink follows the hubs' topic policies: its events go to
/// their policy's subject, so a flood of run logs past their cap never pushes out an audit event, and a reader of
/// the audit topic is not reset.
#[actix_web::test]
async fn the_nats_sink_follows_the_topic_policies_the_hubs_recorded() {
    use publisher::{NatsSink, Publisher};
    let Some(stream) = TestStream::create().await else { return eprintln!("skipped: no NATS") };
    let hub = spawn_capped_logs_hub(&stream).await;
    let publisher = Publisher::new(NatsSink::connect(&stream.url, &stream.name, None).await.unwrap());
    let new = |topic: &str| {
        let payload = json!({"n": 1}).as_object().cloned().unwrap();
        protocol::NewEvent::new(protocol::Topic::parse(topic).unwrap(), protocol::Scope::default(), payload)
    };

    let audit = publisher.publish(new("audit.login")).await.unwrap().ids.unwrap()[0].get();
    for _ in 0..3 {
        publisher.publish_batch((0..100).map(|_| new("run.logs"))).await.unwrap();
    }
    let logs = capped_logs(&hub).await;
    let (_, audits) = hub.get_json(&format!("/api/events?topics=audit.*&after={}&wait=0", audit - 1)).await;

    assert_eq!(logs["events"].as_array().unwrap().len(), 10, "the sink's logs are capped on their own: {logs}");
    assert_eq!(ids(audits["events"].as_array().unwrap()), [audit], "{audits}");
    assert!(audits["reset"].is_null(), "{audits}");
}

/// A replay of audit events across 5,000 run logs that their policy removed finds the next audit event in one read:
/// each read of the stream asks for the first message at or after a sequence, so the removed range is crossed by one
/// answer (read one sequence at a time, a read stops after 1,000 of them, empty).
#[actix_web::test]
async fn a_read_crosses_a_range_a_policy_removed_at_once() {
    let Some(stream) = TestStream::create().await else { return eprintln!("skipped: no NATS") };
    let hub = spawn_capped_logs_hub(&stream).await;
    let first = hub.publish(event("audit.login", json!({}), 1)).await[0];
    for round in 0..5u64 {
        hub.publish(json!((0..1000).map(|n| event("run.logs", json!({}), round * 1000 + n)).collect::<Vec<_>>())).await;
    }
    let second = hub.publish(event("audit.logout", json!({}), 2)).await[0];
    let logs = capped_logs(&hub).await;
    assert_eq!(logs["events"].as_array().unwrap().len(), 10, "the cap never held: {logs}");

    let (_, page) = hub.get_json(&format!("/api/events?topics=audit.*&after={first}&wait=0")).await;

    assert!(page["reset"].is_null(), "{page}");
    assert_eq!(ids(page["events"].as_array().unwrap()), [second], "{first} {second} {page}");
}

/// A server older than 2.12 (JetStream API level below 2, as Debian's 2.9) is refused at start-up with the reason.
/// `OLD_NATS_URL` names one (default: the local server at 4222, which on this project's CI machine is Debian's).
#[actix_web::test]
async fn a_nats_server_older_than_2_12_is_refused_with_the_reason() {
    let url = std::env::var("OLD_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let version = match async_nats::connect(url.as_str()).await {
        Ok(client) => client.server_info().version,
        Err(_) if crate::natsd::required() && std::env::var_os("OLD_NATS_URL").is_none() => {
            panic!("HUB_REQUIRE_NATS=1 but no old NATS answers at {url}")
        }
        Err(_) => return eprintln!("skipped: nothing answers at {url}"),
    };
    let (major, minor) = {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    };
    if (major, minor) >= (2, 12) {
        return eprintln!("skipped: the server at {url} is {version}, not an old one");
    }
    let settings = Settings {
        backend: Some(Backend::Nats),
        nats_url: Some(url),
        nats_stream: format!("old_{}", uuid::Uuid::new_v4().simple()),
        start_timeout: Duration::from_secs(5),
        ..Settings::default()
    };
    let error = Application::build(settings).await.err().expect("the hub refuses an old server");

    let text = format!("{error:#}");
    assert!(text.contains(&format!("NATS {version} speaks JetStream API level 0")), "{text}");
    assert!(text.contains("the hub needs NATS 2.12 or later"), "{text}");
}

/// Hubs of a new deployment start together: one creates the stream, the others wait until it is ready instead of
/// refusing it half-made.
#[actix_web::test]
async fn hubs_starting_at_once_on_a_new_stream_share_it() {
    let Some(stream) = TestStream::create().await else { return eprintln!("skipped: no NATS") };

    let (hub_a, hub_b, hub_c) = tokio::join!(
        spawn_nats_hub(&stream.url, &stream.name, 1),
        spawn_nats_hub(&stream.url, &stream.name, 1),
        spawn_nats_hub(&stream.url, &stream.name, 1)
    );

    let mut client = hub_c.ws("/ws?topics=a").await;
    client.expect("subscribed").await;
    let first = hub_a.publish(event("a", json!({}), 1)).await;
    let second = hub_b.publish(event("a", json!({}), 2)).await;
    assert_eq!(ids(&client.events(2).await), [first, second].concat());
}

/// A hub process SIGKILLed on a three-node cluster: its client resumes on the other hub from its last id and gets
/// exactly the rest, including what was published while it was away.
#[actix_web::test]
async fn a_client_of_a_sigkilled_hub_resumes_on_the_other_hub_of_a_three_node_cluster_without_loss() {
    let cluster = throwaway_nats!(3);
    let stream = "hub_loss";
    let urls = cluster.urls();
    let hub_b = spawn_nats_hub(&urls, stream, 3).await;
    let env =
        [("HUB_BACKEND", "nats"), ("NATS_URL", urls.as_str()), ("HUB_NATS_STREAM", stream), ("HUB_NATS_REPLICAS", "3")];
    let hub_a = crate::process::HubProcess::start(&env).await;

    crate::backends::assert_a_client_of_a_sigkilled_hub_resumes_on_the_other(hub_a, &hub_b).await;
}

/// Two hubs started together with a three-node cluster (as a Helm install rolls out the hubs and the NATS
/// StatefulSet at once) both become ready, every time: a hub waits for a cluster that is not formed yet instead of
/// exiting. `HUB_START_TRIES` sets how many times (3 here; the figure is 20).
#[actix_web::test]
async fn hubs_started_together_with_a_three_node_cluster_become_ready_every_time() {
    let tries: usize = std::env::var("HUB_START_TRIES").ok().and_then(|n| n.parse().ok()).unwrap_or(3);
    for attempt in 0..tries {
        let Some(mut cluster) = crate::natsd::NatsCluster::prepare(3) else {
            assert!(!crate::natsd::required(), "HUB_REQUIRE_NATS=1 but there is no nats-server");
            return eprintln!("skipped: no nats-server");
        };
        let urls = cluster.urls();
        let stream = format!("start{attempt}");
        let hub = |urls: String, stream: String| {
            crate::helpers::try_spawn_hub(move |s| {
                s.backend = Some(Backend::Nats);
                s.nats_url = Some(urls);
                s.nats_stream = stream;
                s.nats_replicas = 3;
                s.start_timeout = Duration::from_secs(60);
            })
        };
        let started = tokio::time::Instant::now();
        let (a, b, ()) = tokio::join!(hub(urls.clone(), stream.clone()), hub(urls, stream), cluster.launch());
        let (a, b) =
            (a.unwrap_or_else(|e| panic!("try {attempt}: {e}")), b.unwrap_or_else(|e| panic!("try {attempt}: {e}")));
        a.wait_ready(200, Duration::from_secs(30)).await;
        b.wait_ready(200, Duration::from_secs(30)).await;
        eprintln!("try {attempt}: both hubs ready {:?} after the start", started.elapsed());
        let published = a.publish(crate::helpers::event("a", serde_json::json!({}), 1)).await;
        assert_eq!(published.len(), 1, "try {attempt}");
        a.stop().await;
        b.stop().await;
    }
}
