//! Topic policies: each group of topics kept for its own time and count, removed on its own schedule, and a reset
//! only for the subscriptions whose topics lost events, on every backend.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backends::{LogKind, TestLog};
use crate::helpers::{TestHub, event};

/// Run logs capped at 50 (kept an hour), deploy logs kept 1 s, audit events an hour; everything else the global
/// retention.
const POLICIES: &str = r#"
[[policy]]
topics = ["run.logs"]
retention = "1h"
max_events = 50
[[policy]]
topics = ["deploy.logs"]
retention = "1s"
[[policy]]
name = "audit"
topics = ["audit.*"]
retention = "1h"
"#;

/// The `/api/health/pubsub` entry of the policy `name`.
async fn policy(hub: &TestHub, name: &str) -> Value {
    let (_, health) = hub.get_json("/api/health/pubsub").await;
    let policies = health["log"]["policies"].as_array().unwrap_or_else(|| panic!("no policies: {health}")).clone();
    policies.into_iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no policy {name}: {health}"))
}

/// How many events of `topics` the hub still answers from the start of the log.
async fn retained(hub: &TestHub, topics: &str) -> usize {
    let (status, page) = hub.get_json(&format!("/api/events?topics={topics}&after=0&limit=1000&wait=0")).await;
    assert_eq!(status, 200, "{page}");
    page["events"].as_array().unwrap().len()
}

/// Waits until `check` holds, failing with `what` after 10 s.
async fn until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A subscription's first frame after `subscribed`, over WebSocket.
async fn first_frame(hub: &TestHub, topics: &str, since: u64) -> Value {
    let mut client = hub.ws(&format!("/ws?topics={topics}&since={since}")).await;
    client.expect("subscribed").await;
    client.next_json().await
}

every_backend! {
    /// A flood of run logs (capped at 50) and a few deploy logs (kept 1 s) run between two audit events. The logs
    /// never push the audit event out, and the run logs never number more than the cap once removal ran (three
    /// rounds: the storage stays flat; Redis trims by whole nodes of 100 entries, so up to 149 there). An audit
    /// subscriber resuming from before the flood gets the next audit event and no reset, on every transport, while
    /// a subscriber whose patterns reach either log policy is reset. On PostgreSQL, Redis and NATS the removal runs
    /// on another hub than the subscribers' (`HUB_RETENTION_INTERVAL` 200 ms there, 1 min here).
    async fn each_policy_removes_its_own_events_and_resets_only_the_readers_of_its_topics(log) {
        let with_policies = |s: &mut hub::settings::Settings| {
            s.topic_policies = Some(POLICIES.into());
            s.retention_interval = Duration::from_millis(200);
        };
        let pruning = log.spawn_hub(with_policies).await;
        // The reading hub keeps no window of newest events: it would go on answering, from memory, events the log
        // removed (no loss, so no reset), and the test is about what the log keeps.
        let reading = match log.kind {
            LogKind::Postgres | LogKind::Redis | LogKind::Nats => {
                log.spawn_hub(|s| {
                    s.topic_policies = Some(POLICIES.into());
                    s.recent_events = 0;
                })
                .await
            }
            _ => pruning,
        };
        let cap = if log.kind == LogKind::Redis { 149 } else { 50 };
        let first = reading.publish(event("audit.login", json!({}), 0)).await[0];
        let deploys: Vec<Value> = (0..20).map(|n| event("deploy.logs", json!({}), n)).collect();
        reading.publish(json!(deploys)).await;
        for round in 0..3u64 {
            let batch: Vec<Value> = (0..200).map(|n| event("run.logs", json!({}), round * 1000 + n)).collect();
            reading.publish(json!(batch[..100])).await;
            reading.publish(json!(batch[100..])).await;
            until("the cap holds the run logs", || async { retained(&reading, "run.logs").await <= cap }).await;
            assert_eq!(retained(&reading, "audit.*").await, 1, "round {round}: the audit event stays");
        }
        let second = reading.publish(event("audit.logout", json!({}), 1)).await[0];
        until("the deploy logs age out", || async { retained(&reading, "deploy.logs").await == 0 }).await;

        let audit_next = first_frame(&reading, "audit.*", first).await;
        let logs_next = first_frame(&reading, "run.logs", first).await;
        let deploys_next = first_frame(&reading, "deploy.logs", first).await;
        let wide_next = first_frame(&reading, "run.*", first).await;
        let mut audit_sse = reading.sse(&format!("/sse?topics=audit.*&since={first}"), &[]).await;
        let audit_streamed = audit_sse.next_event().await;
        let mut logs_sse = reading.sse(&format!("/sse?topics=run.logs&since={first}"), &[]).await;
        let logs_streamed = logs_sse.next_event().await;
        let (_, audit_polled) = reading.get_json(&format!("/api/events?topics=audit.*&after={first}")).await;
        let (_, logs_polled) = reading.get_json(&format!("/api/events?topics=deploy.logs&after={first}&wait=0")).await;
        let (_, run_logs) = reading.get_json("/api/events?topics=run.logs&after=0&limit=1000&wait=0").await;

        assert_eq!((audit_next["type"].as_str(), audit_next["id"].as_u64()), (Some("event"), Some(second)), "{audit_next}");
        assert_eq!(logs_next["type"], "reset", "{logs_next}");
        assert_eq!(deploys_next["type"], "reset", "{deploys_next}");
        assert_eq!(wide_next["type"], "reset", "run.* reaches the run logs: {wide_next}");
        assert_eq!((audit_streamed.event.as_deref(), audit_streamed.id), (Some("audit.logout"), Some(second.to_string())));
        assert_eq!(logs_streamed.event.as_deref(), Some("reset"));
        assert!(audit_polled["reset"].is_null(), "{audit_polled}");
        assert_eq!(audit_polled["events"][0]["id"], second, "{audit_polled}");
        assert!(logs_polled["reset"].is_object(), "{logs_polled}");
        let kept = run_logs["events"].as_array().unwrap();
        assert!(run_logs["reset"].is_null(), "a read from 0 asks for whatever is retained: {run_logs}");
        assert_eq!(kept.last().unwrap()["payload"]["n"], 2199, "the newest run logs are the ones kept");

        let logs_policy = policy(&reading, "run.logs").await;
        let deploys_policy = policy(&reading, "deploy.logs").await;
        let audit_policy = policy(&reading, "audit").await;
        let default_policy = policy(&reading, "default").await;
        assert_eq!(logs_policy["removed"].as_u64().unwrap() + kept.len() as u64, 600, "{logs_policy}");
        assert_eq!(logs_policy["max_events"], 50);
        assert_eq!(logs_policy["oldest"], kept[0]["id"], "{logs_policy}");
        assert_eq!(logs_policy["removed_through"].as_u64(), kept[0]["id"].as_u64().map(|id| id - 1), "{logs_policy}");
        assert_eq!((deploys_policy["removed"].as_u64(), deploys_policy["oldest"].as_u64()), (Some(20), None));
        assert_eq!((audit_policy["oldest"].as_u64(), audit_policy["removed"].as_u64()), (Some(first), Some(0)));
        assert_eq!(audit_policy["retention_seconds"], 3600);
        assert_eq!(default_policy["removed"], 0, "{default_policy}");
    }
}

#[actix_web::test]
async fn a_policy_file_that_cannot_be_read_or_parsed_stops_the_hub_with_the_reason() {
    let missing = crate::helpers::try_spawn_hub(|s| s.topic_policies = Some("/no/such/policies.toml".into())).await;
    let unknown =
        crate::helpers::try_spawn_hub(|s| s.topic_policies = Some("[[policy]]\ntopics=[\"a\"]\nkeep=1".into()));

    let missing = missing.err().expect("refused");
    let unknown = unknown.await.err().expect("refused");
    assert!(missing.contains("HUB_TOPIC_POLICIES: topic policies: cannot read /no/such/policies.toml"), "{missing}");
    assert!(unknown.contains("unknown field `keep`"), "{unknown}");
}

every_backend! {
    /// Events of two policies (on Redis, two streams; on NATS, two subjects; on PostgreSQL and memory, two removal
    /// positions) published interleaved from two hubs where there are two: a live subscription spanning both, a
    /// replay from 0 read in pages larger than one read's scan, and a long-poll paging through them each see every
    /// event once, in strictly increasing id order.
    async fn a_subscription_across_policies_sees_every_event_once_in_id_order(log) {
        let policies = "[[policy]]\ntopics = [\"run.logs\"]\nretention = \"1h\"\n[[policy]]\ntopics = [\"audit.*\"]\nretention = \"30d\"";
        let first = log.spawn_hub(|s| s.topic_policies = Some(policies.into())).await;
        let other = match log.kind {
            LogKind::Memory => None,
            _ => Some(log.spawn_hub(|s| s.topic_policies = Some(policies.into())).await),
        };
        let second = other.as_ref().unwrap_or(&first);
        let mut live = first.ws("/ws?topics=*").await;
        live.expect("subscribed").await;

        let batches = (0..12u64).map(|b| {
            let hub = if b % 2 == 0 { &first } else { second };
            let topics = ["run.logs", "run.status", "audit.login"];
            let batch: Vec<Value> = (0..100).map(|n| event(topics[(n % 3) as usize], json!({}), b * 100 + n)).collect();
            async move { hub.publish(json!(batch)).await }
        });
        let mut published: Vec<u64> = futures_util::future::join_all(batches).await.concat();
        published.sort_unstable();
        let live_ids = crate::helpers::ids(&live.events(published.len()).await);
        let mut replay = second.ws("/ws?topics=*&since=0").await;
        replay.expect("subscribed").await;
        // The second hub may not have read the last batch yet when the replay starts: then it comes live, after
        // the `live` frame.
        let mut replayed = Vec::new();
        while replayed.len() < published.len() {
            let frame = replay.next_json().await;
            match frame["type"].as_str() {
                Some("event") => replayed.push(frame["id"].as_u64().expect("an id")),
                Some("live") => {}
                _ => panic!("expected an event or `live`, got {frame}"),
            }
        }
        let mut polled = Vec::new();
        let mut after = 0;
        while polled.len() < published.len() {
            let (status, page) = first.get_json(&format!("/api/events?topics=run.*,audit.*&after={after}&limit=1000&wait=1")).await;
            assert_eq!(status, 200, "{page}");
            assert!(page["reset"].is_null(), "{page}");
            polled.extend(crate::helpers::ids(page["events"].as_array().unwrap()));
            after = page["next_after"].as_u64().unwrap();
        }

        assert_eq!(live_ids, published, "live: every event once, in id order");
        assert_eq!(replayed, published, "replay: every event once, in id order");
        assert_eq!(polled, published, "long-poll: every event once, in id order");
    }
}
