//! Topic policies: each group of topics kept for its own time and count, removed on its own schedule, and a reset
//! only for the subscriptions whose topics lost events; refused at start-up where the backend cannot keep them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backends::{LogKind, TestLog};
use crate::helpers::{TestHub, event};

/// Logs kept 2 s and at most 50; audit events an hour; everything else the global retention.
const POLICIES: &str = r#"
[[policy]]
topics = ["run.logs"]
retention = "2s"
max_events = 50
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
    let (status, page) = hub.get_json(&format!("/api/events?topics={topics}&after=0&limit=1000")).await;
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

every_backend! {
    /// A flood of logs, capped at 50 and kept 2 s, runs between two audit events. The logs never push the audit
    /// event out and never number more than the cap once removal ran (three rounds: the storage stays flat); an
    /// audit subscriber resuming from before the flood gets the next audit event and no reset on every transport,
    /// while a subscriber whose patterns reach the logs is reset. On PostgreSQL the removal runs on another hub
    /// than the subscribers' (whose settings say so: `HUB_RETENTION_INTERVAL` is 200 ms on one, 1 min on the other). Redis and NATS refuse a policy with its own retention at start-up, with the reason,
    /// and take one that only keeps presence.
    async fn each_policy_removes_its_own_events_and_resets_only_the_readers_of_its_topics(log) {
        let with_policies = |s: &mut hub::settings::Settings| {
            s.topic_policies = Some(POLICIES.into());
            s.retention_interval = Duration::from_millis(200);
        };
        if matches!(log.kind, LogKind::Redis | LogKind::Nats) {
            let refused = log.try_spawn_hub(with_policies).await.err().expect("the hub refuses the policies");
            assert!(refused.contains(r#"policy "run.logs" sets its own retention or max_events"#), "{refused}");
            let presence = "[[policy]]\ntopics = [\"chat.*\"]\npresence = true";
            let hub = log.spawn_hub(|s| s.topic_policies = Some(presence.into())).await;
            assert_eq!(hub.publish(event("chat.1", json!({}), 0)).await.len(), 1);
            return;
        }
        let pruning = log.spawn_hub(with_policies).await;
        // The reading hub keeps no window of newest events: it would go on answering, from memory, events the log
        // removed (no loss, so no reset), and the test is about what the log keeps.
        let reading = match log.kind {
            LogKind::Postgres => {
                log.spawn_hub(|s| {
                    s.topic_policies = Some(POLICIES.into());
                    s.recent_events = 0;
                })
                .await
            }
            _ => pruning,
        };
        let publisher = &reading;
        let first = publisher.publish(event("audit.login", json!({}), 0)).await[0];
        for round in 0..3u64 {
            let batch: Vec<Value> = (0..200).map(|n| event("run.logs", json!({}), round * 1000 + n)).collect();
            publisher.publish(json!(batch[..100])).await;
            publisher.publish(json!(batch[100..])).await;
            until("the cap holds the logs to 50", || async { retained(&reading, "run.logs").await <= 50 }).await;
            assert_eq!(retained(&reading, "audit.*").await, 1, "round {round}: the audit event stays");
        }
        let second = publisher.publish(event("audit.logout", json!({}), 1)).await[0];

        let mut audit = reading.ws("/ws").await;
        audit.send_json(json!({"op": "subscribe", "sub": "a", "topics": ["audit.*"], "since": first})).await;
        audit.expect("subscribed").await;
        let audit_next = audit.next_json().await;
        let mut logs = reading.ws("/ws").await;
        logs.send_json(json!({"op": "subscribe", "sub": "l", "topics": ["run.logs"], "since": first})).await;
        logs.expect("subscribed").await;
        let logs_next = logs.next_json().await;
        let mut wide = reading.ws(&format!("/ws?topics=run.*&since={first}")).await;
        wide.expect("subscribed").await;
        let wide_next = wide.next_json().await;
        let mut audit_sse = reading.sse(&format!("/sse?topics=audit.*&since={first}"), &[]).await;
        let audit_streamed = audit_sse.next_event().await;
        let mut logs_sse = reading.sse(&format!("/sse?topics=run.logs&since={first}"), &[]).await;
        let logs_streamed = logs_sse.next_event().await;
        let (_, audit_polled) = reading.get_json(&format!("/api/events?topics=audit.*&after={first}")).await;
        let (_, logs_polled) = reading.get_json(&format!("/api/events?topics=run.logs&after={first}")).await;

        assert_eq!((audit_next["type"].as_str(), audit_next["id"].as_u64()), (Some("event"), Some(second)), "{audit_next}");
        assert_eq!(logs_next["type"], "reset", "{logs_next}");
        assert_eq!(wide_next["type"], "reset", "run.* reaches the logs: {wide_next}");
        assert_eq!((audit_streamed.event.as_deref(), audit_streamed.id), (Some("audit.logout"), Some(second.to_string())));
        assert_eq!(logs_streamed.event.as_deref(), Some("reset"));
        assert!(audit_polled["reset"].is_null(), "{audit_polled}");
        assert_eq!(audit_polled["events"][0]["id"], second, "{audit_polled}");
        assert!(logs_polled["reset"].is_object(), "{logs_polled}");

        until("the logs age out", || async { retained(&reading, "run.logs").await == 0 }).await;
        let logs_policy = policy(&reading, "run.logs").await;
        let audit_policy = policy(&reading, "audit").await;
        let default_policy = policy(&reading, "default").await;
        assert_eq!(logs_policy["removed"], 600, "{logs_policy}");
        assert_eq!(logs_policy["max_events"], 50);
        assert!(logs_policy["oldest"].is_null(), "{logs_policy}");
        assert!(logs_policy["removed_through"].as_u64().unwrap() > first);
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
