//! The Redis event log under several hubs, concurrency and faults: the same guarantees as on PostgreSQL.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use hub::Application;
use hub::settings::{Backend, Settings};
use publisher::events::{ProjectId, RunEvent, RunId, RunScope, RunStatus};
use publisher::{Publisher, RedisSink};
use serde_json::{Value, json};

use crate::helpers::{WsClient, event, ids, spawn_redis_hub, ws_at};
use crate::process::HubProcess;

/// Reads frames until every payload marker of `expected` has arrived (failing on a timeout), then checks that
/// nothing more comes; returns the event frames in arrival order.
async fn events_with_markers(client: &mut WsClient, expected: &BTreeSet<u64>) -> Vec<Value> {
    let mut got = Vec::new();
    let mut seen = BTreeSet::new();
    while !expected.is_subset(&seen) {
        let frame = client.next_json().await;
        assert_ne!(frame["type"], "reset", "nothing was lost, yet: {frame}");
        if frame["type"] == "event" {
            seen.insert(frame["payload"]["n"].as_u64().unwrap());
            got.push(frame);
        }
    }
    client.expect_silence(Duration::from_millis(300)).await;
    got
}

#[actix_web::test]
async fn an_event_published_on_hub_b_reaches_a_subscriber_on_hub_a_with_an_integer_id() {
    let redis = test_redis!();
    let hub_a = spawn_redis_hub(&redis.url, &redis.prefix, |_| {}).await;
    let hub_b = spawn_redis_hub(&redis.url, &redis.prefix, |_| {}).await;
    let mut client = hub_a.ws("/ws?topics=run.*&project_id=p1").await;
    client.expect("subscribed").await;

    let published = hub_b.publish(event("run.events", json!({"project_id":"p1"}), 1)).await;

    let got = client.events(1).await;
    assert_eq!(ids(&got), published);
    assert!(got[0]["id"].is_u64(), "ids are integers, never Redis' ms-seq strings: {}", got[0]);
    assert!(published[0] < 1 << 53, "ids stay exact in JavaScript");
    let (_, health) = hub_a.get_json("/api/health/pubsub").await;
    assert_eq!(health["provider"], "redis");
    assert_eq!(health["log"]["head"], published[0]);
}

/// Eight publishers on two hubs while subscribers on both hubs listen: each subscriber gets every matching event
/// once, in id order, and the unfiltered ones see the ids without a gap.
#[actix_web::test]
async fn eight_concurrent_publishers_on_two_hubs_lose_nothing_and_keep_order_on_every_hub() {
    let redis = test_redis!();
    let hub_a = spawn_redis_hub(&redis.url, &redis.prefix, |s| s.workers = Some(2)).await;
    let hub_b = spawn_redis_hub(&redis.url, &redis.prefix, |s| s.workers = Some(2)).await;
    let mut subscribers = vec![
        hub_a.ws("/ws?topics=*").await,
        hub_a.ws("/ws?topics=chat:*,run.logs&project_id=p1").await,
        hub_b.ws("/ws?topics=*").await,
        hub_b.ws("/ws?topics=chat:*,run.logs&project_id=p1").await,
    ];
    for client in &mut subscribers {
        client.expect("subscribed").await;
    }

    let publishers = (0..8u64).map(|p| {
        let hub = if p % 2 == 0 { &hub_a } else { &hub_b };
        async move {
            for i in 0..30u64 {
                let n = 1000 * (p + 1) + i;
                let project = if i % 3 == 0 { "p1" } else { "p2" };
                let topic = if i % 2 == 0 { "chat:1" } else { "run.logs" };
                hub.publish(json!([
                    event(topic, json!({"project_id": project}), n),
                    event("other", json!({}), n + 500)
                ]))
                .await;
            }
        }
    });
    join_all(publishers).await;

    let all: BTreeSet<u64> =
        (0..8u64).flat_map(|p| (0..30).flat_map(move |i| [1000 * (p + 1) + i, 1000 * (p + 1) + i + 500])).collect();
    let p1: BTreeSet<u64> = all.iter().copied().filter(|n| n % 1000 < 500 && (n % 1000) % 3 == 0).collect();
    for (which, client) in subscribers.iter_mut().enumerate() {
        let expected = if which % 2 == 0 { &all } else { &p1 };
        let got = events_with_markers(client, expected).await;
        let got_ids = ids(&got);
        assert!(got_ids.windows(2).all(|w| w[0] < w[1]), "subscriber {which}: ids not strictly increasing");
        let markers: Vec<u64> = got.iter().map(|e| e["payload"]["n"].as_u64().unwrap()).collect();
        let unique: BTreeSet<u64> = markers.iter().copied().collect();
        assert_eq!(unique.len(), markers.len(), "subscriber {which}: duplicates");
        assert_eq!(&unique, expected, "subscriber {which}: missing or extra events");
        if which % 2 == 0 {
            assert!(got_ids.windows(2).all(|w| w[1] == w[0] + 1), "subscriber {which}: ids have gaps");
        }
    }
}

#[actix_web::test]
async fn killing_the_readers_connection_during_a_burst_loses_nothing() {
    let redis = test_redis!();
    let hub = spawn_redis_hub(&redis.url, &redis.prefix, |_| {}).await;
    let mut client = hub.ws("/ws?topics=a").await;
    client.expect("subscribed").await;

    let mut expected = Vec::new();
    for round in 0..20u64 {
        let batch: Vec<Value> = (0..10).map(|i| event("a", json!({}), round * 10 + i)).collect();
        expected.extend(hub.publish(json!(batch)).await);
        if round % 5 == 2 {
            hub.wait_ready(200, Duration::from_secs(10)).await;
            assert_eq!(redis.kill_readers().await, 1, "the one reading connection is killed");
        }
    }
    hub.wait_ready(200, Duration::from_secs(10)).await;

    let got = client.events(expected.len()).await;
    assert_eq!(ids(&got), expected);
    client.expect_silence(Duration::from_millis(300)).await;
}

/// Redis keeps nothing on disk: after a restart the log is empty. Ids never restart under clients that hold old
/// ones: live subscribers and old resume points get a reset, new events carry larger ids.
#[actix_web::test]
async fn a_redis_restarted_empty_resets_every_subscriber_and_never_reuses_ids() {
    let mut server = throwaway_redis!();
    let hub = spawn_redis_hub(&server.url(), "restart", |_| {}).await;
    let mut live = hub.ws("/ws?topics=a").await;
    live.expect("subscribed").await;
    let mut sse = hub.sse("/sse?topics=a", &[]).await;
    let before = hub.publish(json!([event("a", json!({}), 1), event("a", json!({}), 2)])).await;
    assert_eq!(ids(&live.events(2).await), before);
    assert_eq!(sse.next_event().await.id, Some(before[0].to_string()));
    assert_eq!(sse.next_event().await.id, Some(before[1].to_string()));

    server.stop().await;
    hub.wait_ready(503, Duration::from_secs(10)).await;
    let refused = hub.publish_raw(event("a", json!({}), 3).to_string()).await;
    assert_eq!(refused.status(), 503, "no event is accepted that the log cannot hold");
    server.start_again().await;
    hub.wait_ready(200, Duration::from_secs(15)).await;

    let reset = live.expect("reset").await;
    assert_eq!(reset["reason"], "history_truncated");
    assert!(reset["earliest_id"].as_u64().unwrap() > before[1], "the new epoch starts above every old id: {reset}");
    let sse_reset = sse.next_event().await;
    assert_eq!(sse_reset.event.as_deref(), Some("reset"));
    let after = hub.publish(json!([event("a", json!({}), 4), event("a", json!({}), 5)])).await;
    assert_eq!(ids(&live.events(2).await), after);
    assert!(after[0] > before[1], "ids never go back: {after:?} after {before:?}");
    assert_eq!(sse.next_event().await.id, Some(after[0].to_string()));

    let mut resumed = hub.ws(&format!("/ws?topics=a&since={}", before[0])).await;
    resumed.expect("subscribed").await;
    resumed.expect("reset").await;
    resumed.expect("live").await;
    let (_, poll) = hub.get_json(&format!("/api/events?topics=a&after={}&wait=0", before[1])).await;
    assert_eq!(poll["reset"]["reason"], "history_truncated", "{poll}");
    assert_eq!(poll["events"], json!([]));
}

#[actix_web::test]
async fn a_client_of_a_sigkilled_hub_resumes_on_the_other_hub_without_loss() {
    let redis = test_redis!();
    let env =
        [("HUB_BACKEND", "redis"), ("REDIS_URL", redis.url.as_str()), ("HUB_REDIS_PREFIX", redis.prefix.as_str())];
    let hub_a = HubProcess::start(&env).await;
    let hub_b = spawn_redis_hub(&redis.url, &redis.prefix, |_| {}).await;
    let mut client = ws_at(hub_a.port, "/ws?topics=run.logs").await;
    client.expect("subscribed").await;
    let mut published = Vec::new();
    for n in 0..10 {
        published.extend(hub_b.publish(event("run.logs", json!({"run_id":"r1"}), n)).await);
    }
    let before = client.events(5).await;
    let last_seen = *ids(&before).last().unwrap();

    hub_a.stop_and_read_output().await; // SIGKILL
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
async fn a_resume_point_older_than_the_replay_window_gets_a_reset() {
    let redis = test_redis!();
    let hub = spawn_redis_hub(&redis.url, &redis.prefix, |s| {
        s.replay_window_seconds = Some(1);
        s.retention_interval = Duration::from_millis(100);
    })
    .await;
    let old = hub.publish(json!([event("a", json!({}), 1), event("a", json!({}), 2), event("a", json!({}), 3)])).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fresh = hub.publish(event("a", json!({}), 4)).await;

    let mut client = hub.ws(&format!("/ws?topics=a&since={}", old[0])).await;
    client.expect("subscribed").await;
    let reset = client.expect("reset").await;
    client.expect("live").await;

    assert_eq!(reset["reason"], "history_truncated");
    assert_eq!(reset["earliest_id"], fresh[0]);
    assert_eq!(reset["head"], fresh[0]);
}

#[actix_web::test]
async fn the_publisher_crates_redis_sink_reaches_subscribers_of_every_hub() {
    let redis = test_redis!();
    let hub = spawn_redis_hub(&redis.url, &redis.prefix, |_| {}).await;
    let mut client = hub.ws("/ws?topics=run.events&project_id=p1").await;
    client.expect("subscribed").await;
    let publisher = Publisher::new(RedisSink::connect(&redis.url, &redis.prefix).await.unwrap());

    let mut event =
        RunEvent::new(RunScope::new(ProjectId::new("p1").unwrap(), RunId::new("r1").unwrap()), RunStatus::Failed);
    event.details.insert("api_key".into(), "sk_live_abcdefghijklmnop1234".into());
    let published = publisher.publish(event).await.unwrap();

    let got = client.events(1).await;
    assert_eq!(Some(ids(&got)), published.ids.map(|ids| ids.iter().map(|id| id.get()).collect()));
    assert_eq!(got[0]["payload"]["details"]["api_key"], "[REDACTED]");
    assert_eq!(got[0]["key"], "run:r1");
}

#[actix_web::test]
async fn an_unreachable_or_malformed_redis_url_is_a_clear_start_up_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for (url, says) in [
        (format!("redis://127.0.0.1:{closed}"), "cannot open the Redis event log"),
        ("http://nope".into(), "REDIS_URL"),
    ] {
        let settings = Settings {
            bind: "127.0.0.1:0".into(),
            backend: Some(Backend::Redis),
            redis_url: Some(url.clone()),
            ..Settings::default()
        };
        let error = Application::build(settings).await.err().expect("the hub refuses to start");
        let text = format!("{error:#}");
        assert!(text.contains(says), "{url}: {text}");
    }
}
