//! Presence on the topics whose policy keeps it: who is there across every hub, the members then each join and
//! leave for a subscription that asks, over WebSocket and SSE; a hub that dies takes its members with it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backends::{LogKind, TestLog};
use crate::helpers::{TestHub, WsClient};
use crate::process::HubProcess;
use crate::tokens::{SECRET, hs256, now};

const POLICIES: &str = "[[policy]]\ntopics = [\"chat.*\"]\npresence = true";

/// A token of `subject` for chat rooms, with `info`.
fn user(subject: &str, info: Value) -> String {
    hs256(&json!({"sub": subject, "exp": now() + 3600, "topics": ["chat.*"], "info": info}))
}

/// A hub on `log` with `heartbeat` (a WebSocket client that reads nothing is closed after two).
async fn hub_on(log: &TestLog, node: &str, heartbeat: Duration) -> TestHub {
    let node = node.to_owned();
    log.spawn_hub(move |s| {
        s.jwt_secret = Some(SECRET.into());
        s.node_id = Some(node);
        s.heartbeat = heartbeat;
        // An SSE stream the client dropped is found at the hub's next write to it.
        s.sse_heartbeat = Duration::from_secs(1);
        s.topic_policies = Some(POLICIES.into());
    })
    .await
}

async fn connect(hub: &TestHub, path: &str, token: &str) -> WsClient {
    let mut client = hub.ws_with_token(path, Some(token)).await.expect("connected");
    client.expect("welcome").await;
    if path.contains("topics=") {
        client.expect("subscribed").await;
    }
    client
}

/// A WebSocket of `token` on `hub` that watches `topic` (subscription `w`), and the members it was first told of.
async fn watch(hub: &TestHub, topic: &str, token: &str) -> (WsClient, Value) {
    let mut watching = connect(hub, "/ws", token).await;
    watching.send_json(json!({"op": "subscribe", "sub": "w", "topics": [topic], "presence": true})).await;
    let members = next_presence(&mut watching).await;
    (watching, members)
}

/// A second hub on `log`; `None` on the memory backend, which is one process (its "other hub" is the first).
async fn other_hub(log: &TestLog) -> Option<TestHub> {
    match log.kind {
        LogKind::Memory => None,
        _ => Some(hub_on(log, "hub-b", Duration::from_secs(10)).await),
    }
}

/// The next presence frame (`presence`, `join` or `leave`), skipping the subscription's own frames.
async fn next_presence(client: &mut WsClient) -> Value {
    loop {
        let frame = client.next_json().await;
        if matches!(frame["type"].as_str(), Some("presence" | "join" | "leave")) {
            return frame;
        }
    }
}

/// Asks `hub` who is on `topic` until `wanted` subjects are listed (hubs learn of each other within a heartbeat).
async fn members_until(hub: &TestHub, topic: &str, token: &str, wanted: usize) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = hub.get_as(&format!("/api/presence?topic={topic}"), Some(token)).await;
        assert_eq!(status, 200, "{answer}");
        if answer["members"].as_array().unwrap().len() == wanted || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

every_backend! {
    /// A watcher on hub A sees the members, then u1's join when its first connection (on hub B, where the other
    /// hubs are) arrives, nothing for its second (SSE, on hub A) nor for a `chat.*` subscriber, and u1's leave when
    /// its last connection goes. `/api/presence` from hub B lists every subject with its connections and info,
    /// counts the connection without a subject, and refuses a topic that keeps no presence and a token that may
    /// not read the topic. An SSE watcher gets the members as `event: @presence`, then `@join`.
    async fn members_then_joins_and_leaves_across_hubs_on_websocket_and_sse(log) {
        let hub_a = hub_on(&log, "hub-a", Duration::from_secs(10)).await;
        let other = other_hub(&log).await;
        let hub_b = other.as_ref().unwrap_or(&hub_a);
        let watcher = user("watcher", json!({"name": "Wendy"}));
        let u1 = user("u1", json!({"name": "Ann", "password": "hunter2"}));

        let (mut watching, members) = watch(&hub_a, "chat.room1", &watcher).await;
        let mut sse = hub_b.sse("/sse?topics=chat.room1&presence=1", &[("authorization", &format!("Bearer {watcher}"))]).await;
        let sse_members = sse.next_event().await;
        let mut first = connect(hub_b, "/ws?topics=chat.room1", &u1).await;
        let joined = next_presence(&mut watching).await;
        let sse_joined = sse.next_event().await;
        let second = hub_a.sse("/sse?topics=chat.room1", &[("authorization", &format!("Bearer {u1}"))]).await;
        let mut wide = connect(hub_b, "/ws?topics=chat.*", &user("u2", json!({}))).await;
        let nobody = hs256(&json!({"exp": now() + 3600, "topics": ["chat.*"]}));
        let anonymous = connect(hub_b, "/ws?topics=chat.room1", &nobody).await;
        let listed = members_until(hub_b, "chat.room1", &watcher, 2).await;
        watching.expect_silence(Duration::from_millis(500)).await;
        first.send_json(json!({"op": "unsubscribe", "sub": "default"})).await;
        watching.expect_silence(Duration::from_millis(500)).await;
        drop(second);
        let left = next_presence(&mut watching).await;

        assert_eq!(members, json!({"type": "presence", "sub": "w", "topic": "chat.room1",
            "members": [{"subject": "watcher", "info": {"name": "Wendy"}}]}));
        assert_eq!(sse_members.event.as_deref(), Some("@presence"));
        let sse_members: Value = serde_json::from_str(sse_members.data.as_deref().unwrap()).unwrap();
        assert_eq!(sse_members["members"].as_array().unwrap().len(), 1, "the watcher itself: {sse_members}");
        assert_eq!(joined, json!({"type": "join", "sub": "w", "topic": "chat.room1",
            "member": {"subject": "u1", "info": {"name": "Ann", "password": "[REDACTED]"}}}));
        assert_eq!(sse_joined.event.as_deref(), Some("@join"));
        assert_eq!(sse_joined.id, None, "a presence block moves no Last-Event-ID");
        assert_eq!(listed["members"], json!([
            {"subject": "u1", "connections": 2, "info": {"name": "Ann", "password": "[REDACTED]"}},
            {"subject": "watcher", "connections": 2, "info": {"name": "Wendy"}},
        ]), "{listed}");
        assert_eq!(listed["anonymous"], 1, "{listed}");
        assert_eq!(left, json!({"type": "leave", "sub": "w", "topic": "chat.room1", "member": {"subject": "u1"}}));
        wide.expect_silence(Duration::from_millis(100)).await;
        drop((anonymous, first));

        let (status, refused) = hub_a.get_as("/api/presence?topic=run.logs", Some(&watcher)).await;
        assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("bad_request")), "{refused}");
        let outsider = hs256(&json!({"sub": "x", "exp": now() + 3600, "topics": ["run.*"]}));
        let (status, refused) = hub_a.get_as("/api/presence?topic=chat.room1", Some(&outsider)).await;
        assert_eq!(status, 403, "{refused}");
        watching.send_json(json!({"op": "subscribe", "sub": "p", "topics": ["chat.*"], "presence": true})).await;
        let error = watching.expect("error").await;
        assert_eq!((error["code"].as_str(), error["sub"].as_str()), (Some("bad_request"), Some("p")), "{error}");
        let response = hub_a.http.get(hub_a.url("/sse?topics=chat.*&presence=1")).bearer_auth(&watcher).send().await;
        assert_eq!(response.unwrap().status(), 400);
    }
}

shared_backends! {
    /// A member's hub is SIGKILLed: the watcher on the hub that lives is told it left within two heartbeats of
    /// the kill (1 s heartbeats here), and `/api/presence` no longer lists it.
    async fn a_hub_that_dies_takes_its_members_with_it(log) {
        let hub_a = hub_on(&log, "hub-a", Duration::from_secs(1)).await;
        let mut env = log.env();
        env.extend([
            ("HUB_JWT_SECRET", SECRET.to_owned()),
            ("HUB_NODE_ID", "hub-b".to_owned()),
            ("HUB_HEARTBEAT", "1s".to_owned()),
            ("HUB_TOPIC_POLICIES", POLICIES.to_owned()),
        ]);
        let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let hub_b = HubProcess::start(&env).await;
        let watcher = user("watcher", json!({}));
        let (mut watching, _) = watch(&hub_a, "chat.room1", &watcher).await;
        let u9 = user("u9", json!({}));
        let mut member = crate::helpers::ws_at(hub_b.port, &format!("/ws?topics=chat.room1&access_token={u9}")).await;
        member.expect("subscribed").await;
        let joined = next_presence(&mut watching).await;

        drop(hub_b);
        let killed = tokio::time::Instant::now();
        let left = next_presence(&mut watching).await;
        let took = killed.elapsed();
        let listed = members_until(&hub_a, "chat.room1", &watcher, 1).await;

        assert_eq!(joined["member"]["subject"], "u9", "{joined}");
        assert_eq!(left["type"], "leave", "{left}");
        assert_eq!(left["member"]["subject"], "u9", "{left}");
        assert!(took <= Duration::from_millis(2200), "left {took:?} after the kill, past two heartbeats");
        assert_eq!(listed["members"], json!([{"subject": "watcher", "connections": 1, "info": {}}]), "{listed}");
    }
}

every_backend! {
    /// 150 subjects join a room at once, on two hubs where there are two: the watcher is told of every one of them
    /// (a burst far larger than a session's mailbox), then of every leave.
    async fn a_burst_of_joins_and_leaves_reaches_the_watcher_whole(log) {
        let hub_a = hub_on(&log, "hub-a", Duration::from_secs(10)).await;
        let other = other_hub(&log).await;
        let hub_b = other.as_ref().unwrap_or(&hub_a);
        let (mut watching, _) = watch(&hub_a, "chat.burst", &user("watcher", json!({}))).await;

        let members = futures_util::future::join_all((0..150).map(|i| {
            let hub = if i % 2 == 0 { &hub_a } else { hub_b };
            async move { connect(hub, "/ws?topics=chat.burst", &user(&format!("u{i}"), json!({}))).await }
        }))
        .await;
        let mut joined = std::collections::BTreeSet::new();
        while joined.len() < 150 {
            let frame = next_presence(&mut watching).await;
            assert_eq!(frame["type"], "join", "{frame}");
            joined.insert(frame["member"]["subject"].as_str().unwrap().to_owned());
        }
        drop(members);
        let mut left = std::collections::BTreeSet::new();
        while left.len() < 150 {
            let frame = next_presence(&mut watching).await;
            assert_eq!(frame["type"], "leave", "{frame}");
            left.insert(frame["member"]["subject"].as_str().unwrap().to_owned());
        }
        assert_eq!(joined, left);
    }
}

#[actix_web::test]
async fn a_token_whose_info_claim_is_larger_than_a_kibibyte_is_refused() {
    let hub = crate::helpers::spawn_hub(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.topic_policies = Some(POLICIES.into());
    })
    .await;
    let large = user("u1", json!({"bio": "x".repeat(1100)}));
    let fits = user("u1", json!({"bio": "x".repeat(900)}));

    let (refused, _) = hub.get_as("/api/presence?topic=chat.a", Some(&large)).await;
    let (accepted, _) = hub.get_as("/api/presence?topic=chat.a", Some(&fits)).await;

    assert_eq!((refused, accepted), (401, 200));
}
