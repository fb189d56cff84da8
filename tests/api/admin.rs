//! Operating live connections across a cluster: list, disconnect, revoke and lift, given to one hub and carried
//! out by all; the audit trail on `hub.admin`; `hub.*` refused to publishers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::backends::{LogKind, TestLog};
use crate::helpers::{TestHub, WsClient, event};
use crate::process::HubProcess;
use crate::tokens::{SECRET, hs256, now};

/// A token of `subject` for chat rooms, issued `iat`, with optional extra claims.
fn user(subject: &str, iat: i64, extra: Value) -> String {
    let mut claims =
        json!({"sub": subject, "exp": now() + 3600, "iat": iat, "topics": ["chat.*"], "publish": ["chat.*"]});
    claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    hs256(&claims)
}

fn operator() -> String {
    hs256(&json!({"sub": "ops", "exp": now() + 3600, "admin": true, "topics": ["hub.admin"], "publish": ["*"]}))
}

async fn hub_on(log: &TestLog, node: &str) -> TestHub {
    let node = node.to_owned();
    log.spawn_hub(move |s| {
        s.jwt_secret = Some(SECRET.into());
        s.node_id = Some(node);
        s.heartbeat = Duration::from_secs(1);
    })
    .await
}

/// A WebSocket with `token`, its welcome read.
async fn connect(hub: &TestHub, path: &str, token: &str) -> WsClient {
    let mut client = hub.ws_with_token(path, Some(token)).await.expect("connected");
    client.expect("welcome").await;
    client
}

async fn call(hub: &TestHub, method: reqwest::Method, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = hub.http.request(method, hub.url(path)).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.body(body.to_string()).send().await.expect("answered");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Lists the cluster's connections from `hub` until `wanted` of them are there (hubs learn of each other within a
/// heartbeat), and returns the listing.
async fn list_until(hub: &TestHub, query: &str, wanted: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, listing) = hub.get_as(&format!("/api/admin/connections{query}"), Some(&operator())).await;
        assert_eq!(status, 200, "{listing}");
        if listing["connections"].as_array().unwrap().len() == wanted || Instant::now() > deadline {
            return listing;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

shared_backends! {
    /// Connections on two hubs, listed and filtered from one; a subject disconnected from the other: its
    /// WebSocket closes with 4002, its SSE stream gets the notice and ends, its waiting long-poll is answered at
    /// once; the change is on `hub.admin`; someone else's connection stays.
    async fn an_operator_lists_and_disconnects_connections_on_every_hub_from_any_hub(log) {
        let hub_a = hub_on(&log, "hub-a").await;
        let hub_b = hub_on(&log, "hub-b").await;
        let u1 = user("u1", now() - 10, json!({}));
        let mut ws_b = connect(&hub_b, "/ws?topics=chat.room1", &u1).await;
        ws_b.expect("subscribed").await;
        let mut ws_a = connect(&hub_a, "/ws?topics=chat.*", &u1).await;
        ws_a.expect("subscribed").await;
        let mut sse_b = hub_b.sse("/sse?topics=chat.room1", &[("authorization", &format!("Bearer {u1}"))]).await;
        let u2 = user("u2", now() - 10, json!({}));
        let mut other = connect(&hub_b, "/ws?topics=chat.room1", &u2).await;
        other.expect("subscribed").await;
        let mut trail = connect(&hub_a, "/ws?topics=hub.admin", &operator()).await;
        trail.expect("subscribed").await;

        let all = list_until(&hub_a, "", 5).await;
        let of_u1 = list_until(&hub_a, "?subject=u1", 3).await;
        let on_b = list_until(&hub_a, "?node=hub-b", 3).await;
        let in_room1 = list_until(&hub_a, "?topic=chat.room1&subject=u1", 3).await;
        let (not_admin, refusal) = hub_a.get_as("/api/admin/connections", Some(&u1)).await;
        let (anonymous, _) = hub_a.get_as("/api/admin/connections", None).await;
        let (unknown, _) = hub_a.get_as("/api/admin/connections?colour=red", Some(&operator())).await;

        assert_eq!(all["connections"].as_array().unwrap().len(), 5, "{all}");
        assert_eq!(all["hubs"], json!(["hub-a", "hub-b"]));
        assert_eq!(all["missing"], json!([]));
        assert_eq!(of_u1["connections"].as_array().unwrap().len(), 3, "{of_u1}");
        assert_eq!(on_b["connections"].as_array().unwrap().len(), 3, "{on_b}");
        assert_eq!(in_room1["connections"].as_array().unwrap().len(), 3, "a chat.* subscription covers room1");
        let listed = &on_b["connections"].as_array().unwrap().iter().find(|c| c["transport"] == "sse").unwrap();
        assert_eq!(listed["subject"], "u1");
        assert_eq!(listed["subscriptions"][0]["topics"], json!(["chat.room1"]));
        assert!(listed["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{listed}");
        assert!(listed["since"].is_string() && listed["unsent_bytes"].is_u64() && listed["id"].is_string());
        assert_eq!((not_admin, anonymous, unknown), (403, 401, 400));
        assert!(refusal["error"]["message"].as_str().unwrap().contains("admin"), "{refusal}");

        let poll_b = {
            let (hub, token) = (hub_b.url("/api/events?topics=chat.room1&after=0&wait=20"), u1.clone());
            let http = hub_b.http.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = http.get(hub).bearer_auth(token).send().await.unwrap();
                (answer.status().as_u16(), started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, outcome) =
            call(&hub_a, reqwest::Method::POST, "/api/admin/disconnect", Some(&operator()), json!({"subject": "u1"})).await;

        assert_eq!(status, 200, "{outcome}");
        assert_eq!(outcome["closed"], 3, "{outcome}");
        assert_eq!(outcome["polls"], 1, "{outcome}");
        assert_eq!(outcome["hubs"], json!(["hub-a", "hub-b"]));
        assert_eq!(ws_b.expect_close(Duration::from_secs(2)).await, Some(4002));
        assert_eq!(ws_a.expect_close(Duration::from_secs(2)).await, Some(4002));
        let notice = sse_b.next_event().await;
        assert_eq!(notice.event.as_deref(), Some("@disconnect"));
        assert_eq!(notice.json()["code"], 4002);
        assert!(sse_b.ends_within(Duration::from_secs(2)).await, "the SSE stream ends after the notice");
        let (poll_status, waited) = poll_b.await.unwrap();
        assert_eq!(poll_status, 200);
        assert!(waited < Duration::from_secs(5), "the waiting long-poll was answered at once: {waited:?}");
        other.assert_usable().await;
        let recorded = trail.events(1).await;
        assert_eq!(recorded[0]["topic"], "hub.admin");
        assert_eq!(recorded[0]["payload"]["action"], "disconnect");
        assert_eq!(recorded[0]["payload"]["by"], "ops");
        assert_eq!(recorded[0]["payload"]["target"], json!({"subject": "u1"}));
        assert_eq!(recorded[0]["payload"]["connections"], 3);

        let one = other_id(&list_until(&hub_b, "?subject=u2", 1).await);
        let (_, by_id) =
            call(&hub_b, reqwest::Method::POST, "/api/admin/disconnect", Some(&operator()), json!({"connection": one}))
                .await;
        assert_eq!(by_id["closed"], 1, "{by_id}");
        assert_eq!(other.expect_close(Duration::from_secs(2)).await, Some(4002));
    }
}

fn other_id(listing: &Value) -> String {
    listing["connections"][0]["id"].as_str().unwrap().to_owned()
}

shared_backends! {
    /// A subject revoked through one hub: its connection on the other closes with 4003, every hub refuses its
    /// tokens issued until then (connect, publish, refresh), also after both hubs restart, and accepts a token
    /// issued afterwards; a token id revoked alone; lifting gives the old tokens back.
    async fn a_revoked_subject_is_closed_and_refused_on_every_hub_and_after_both_restart_until_it_is_lifted(log) {
        let hub_a = hub_on(&log, "hub-a").await;
        let hub_b = hub_on(&log, "hub-b").await;
        let old = user("u1", now() - 10, json!({}));
        let mut open_b = connect(&hub_b, "/ws?topics=chat.room1", &old).await;
        open_b.expect("subscribed").await;
        list_until(&hub_a, "?subject=u1", 1).await;

        let (status, outcome) =
            call(&hub_a, reqwest::Method::POST, "/api/admin/revoke", Some(&operator()), json!({"subject": "u1"})).await;

        assert_eq!(status, 200, "{outcome}");
        assert_eq!(outcome["closed"], 1, "{outcome}");
        assert_eq!(open_b.expect_close(Duration::from_secs(2)).await, Some(4003));
        for hub in [&hub_a, &hub_b] {
            assert!(hub.ws_with_token("/ws", Some(&old)).await.is_err(), "a revoked token connects");
            assert_eq!(hub.get_as("/api/events?topics=chat.room1&after=0&wait=0", Some(&old)).await.0, 401);
            assert_eq!(hub.publish_as(&event("chat.room1", json!({}), 1), Some(&old)).await.0, 401);
        }
        let fresh = user("u1", now() + 2, json!({}));
        let mut renewed = connect(&hub_b, "/ws?topics=chat.room1", &fresh).await;
        renewed.expect("subscribed").await;
        renewed.send_json(json!({"op": "refresh", "token": old})).await;
        let refused = renewed.expect("error").await;
        assert_eq!(refused["code"], "forbidden", "a refresh with a revoked token is refused: {refused}");
        let marked = user("u3", now() - 10, json!({"jti": "t-9"}));
        let unmarked = user("u3", now() - 10, json!({"jti": "t-10"}));
        let (_, by_jti) =
            call(&hub_b, reqwest::Method::POST, "/api/admin/revoke", Some(&operator()), json!({"jti": "t-9"})).await;
        assert!(by_jti["revocation"]["until"].as_u64().unwrap() > now() as u64 + 23 * 3600, "{by_jti}");
        assert_eq!(hub_a.get_as("/api/events?topics=chat.a&after=0&wait=0", Some(&marked)).await.0, 401);
        assert_eq!(hub_a.get_as("/api/events?topics=chat.a&after=0&wait=0", Some(&unmarked)).await.0, 200);
        let (_, listed) = hub_a.get_as("/api/admin/revocations", Some(&operator())).await;
        assert_eq!(listed["revocations"].as_array().unwrap().len(), 2, "{listed}");

        drop(renewed);
        hub_a.stop().await;
        hub_b.stop().await;
        let hub_a = hub_on(&log, "hub-a").await;
        let hub_b = hub_on(&log, "hub-b").await;
        for hub in [&hub_a, &hub_b] {
            assert_eq!(hub.get_as("/api/events?topics=chat.a&after=0&wait=0", Some(&old)).await.0, 401, "after a restart");
            assert_eq!(hub.get_as("/api/events?topics=chat.a&after=0&wait=0", Some(&fresh)).await.0, 200);
        }
        list_until(&hub_a, "", 0).await;
        let (status, lifted) =
            call(&hub_a, reqwest::Method::DELETE, "/api/admin/revoke", Some(&operator()), json!({"subject": "u1"})).await;
        assert_eq!(status, 200, "{lifted}");
        assert_eq!(lifted["hubs"], json!(["hub-a", "hub-b"]));
        for hub in [&hub_a, &hub_b] {
            assert_eq!(hub.get_as("/api/events?topics=chat.a&after=0&wait=0", Some(&old)).await.0, 200, "lifted");
        }
        let (again, _) =
            call(&hub_a, reqwest::Method::DELETE, "/api/admin/revoke", Some(&operator()), json!({"subject": "u1"})).await;
        assert_eq!(again, 404);
    }
}

every_backend! {
    /// A revocation with an `until` lapses by itself; a bad target is a 400; `hub.*` takes no publishes.
    async fn a_revocation_lapses_on_its_own_and_bad_requests_are_refused(log) {
        let hub = hub_on(&log, "hub-a").await;
        let token = user("u1", now() - 10, json!({}));
        let until = chrono::Utc::now() + chrono::Duration::seconds(2);

        let (status, _) = call(&hub, reqwest::Method::POST, "/api/admin/revoke", Some(&operator()),
            json!({"subject": "u1", "until": until.to_rfc3339()})).await;

        assert_eq!(status, 200);
        assert_eq!(hub.get_as("/api/events?topics=chat.a&after=0&wait=0", Some(&token)).await.0, 401);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(hub.get_as("/api/events?topics=chat.a&after=0&wait=0", Some(&token)).await.0, 200, "lapsed");
        for body in [json!({}), json!({"subject": "u1", "jti": "x"}), json!({"user": "u1"}), json!("u1")] {
            let (status, answer) = call(&hub, reqwest::Method::POST, "/api/admin/revoke", Some(&operator()), body).await;
            assert_eq!(status, 400, "{answer}");
            assert_eq!(answer["error"]["code"], "bad_request");
        }
        let (status, _) = call(&hub, reqwest::Method::POST, "/api/admin/disconnect", Some(&operator()),
            json!({"jti": "x"})).await;
        assert_eq!(status, 400);
        let (status, refused) = hub.publish_as(&event("hub.admin", json!({}), 1), Some(&operator())).await;
        assert_eq!(status, 403, "{refused}");
        assert_eq!(refused["error"]["index"], 0);
    }
}

#[actix_web::test]
async fn a_hub_that_died_leaves_the_listing_within_two_heartbeats() {
    let Some(log) = TestLog::create(LogKind::Postgres).await else { return eprintln!("skipped: no PostgreSQL") };
    let hub_a = hub_on(&log, "hub-a").await;
    let mut env = log.env();
    env.extend([("HUB_JWT_SECRET", SECRET.to_owned()), ("HUB_NODE_ID", "hub-b".to_owned())]);
    env.push(("HUB_HEARTBEAT", "1s".to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let hub_b = HubProcess::start(&env).await;
    let token = user("u1", now() - 10, json!({}));
    let mut client = crate::helpers::ws_at(hub_b.port, &format!("/ws?topics=chat.a&access_token={token}")).await;
    client.expect("subscribed").await;
    let before = list_until(&hub_a, "", 1).await;

    drop(hub_b);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, after) = hub_a.get_as("/api/admin/connections", Some(&operator())).await;

    assert_eq!(before["hubs"], json!(["hub-a", "hub-b"]), "{before}");
    assert_eq!(after["connections"], json!([]), "{after}");
    assert_eq!(after["hubs"], json!(["hub-a"]), "{after}");
    assert_eq!(after["missing"], json!([]), "a hub gone for two heartbeats is not waited for: {after}");
}
