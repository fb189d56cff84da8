//! The WebSocket transport: subscriptions, replay, reset, heartbeats and bad input.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Incoming, event, ids, spawn_hub};

#[actix_web::test]
async fn the_first_frame_is_a_welcome_with_session_node_protocol_and_heartbeat() {
    let hub = spawn_hub(|_| {}).await;
    let mut client = hub.ws_raw("/ws").await.unwrap();

    let welcome = client.next_json().await;

    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["node"], "test-node");
    assert_eq!(welcome["protocol"], 1);
    assert_eq!(welcome["heartbeat_s"], 25);
    assert!(uuid::Uuid::parse_str(welcome["session"].as_str().unwrap()).is_ok());
}

#[actix_web::test]
async fn live_events_reach_only_the_subscriptions_whose_topics_and_filter_match() {
    let hub = spawn_hub(|_| {}).await;
    let mut client = hub.ws("/api/ws").await;
    let subscribed =
        client.subscribe(json!({"op":"subscribe","sub":"p1","topics":["run.*"],"filter":{"project_id":"p1"}})).await;
    assert_eq!(subscribed["sub"], "p1");
    assert_eq!(subscribed["head"], 0);

    hub.publish(json!([
        event("run.logs", json!({"project_id":"p2"}), 1),
        event("deploy.logs", json!({"project_id":"p1"}), 2),
        event("run.events", json!({"project_id":"p1","run_id":"r1"}), 3),
    ]))
    .await;

    let got = client.expect("event").await;
    assert_eq!(got["sub"], "p1");
    assert_eq!(got["id"], 3);
    assert_eq!(got["topic"], "run.events");
    assert_eq!(got["scope"], json!({"project_id":"p1","run_id":"r1"}));
    assert_eq!(got["key"], "run:r1", "the key is derived from run_id");
    assert_eq!(got["v"], 1);
    assert_eq!(got["payload"], json!({"n":3}));
    assert!(got["ts"].as_str().unwrap().ends_with('Z'));
    client.expect_silence(Duration::from_millis(200)).await;
}

#[actix_web::test]
async fn a_resumed_subscription_replays_then_marks_live_then_streams() {
    let hub = spawn_hub(|_| {}).await;
    let published: Vec<u64> =
        hub.publish(json!((1..=5).map(|n| event("chat:1", json!({}), n)).collect::<Vec<_>>())).await;
    let mut client = hub.ws("/ws").await;

    let subscribed = client.subscribe(json!({"op":"subscribe","sub":"s","topics":["chat:*"],"since":2})).await;
    let replayed = client.events(3).await;
    let live = client.expect("live").await;
    hub.publish(event("chat:1", json!({}), 6)).await;
    let streamed = client.events(1).await;

    assert_eq!(subscribed["head"], 5);
    assert_eq!(ids(&replayed), published[2..].to_vec());
    assert_eq!(live, json!({"type":"live","sub":"s","last_id":5}));
    assert_eq!(ids(&streamed), vec![6]);
}

#[actix_web::test]
async fn since_zero_replays_all_retained_history() {
    let hub = spawn_hub(|_| {}).await;
    hub.publish(json!([event("a", json!({}), 1), event("b", json!({}), 2)])).await;
    let mut client = hub.ws("/ws").await;

    client.subscribe(json!({"op":"subscribe","sub":"s","topics":["*"],"since":0})).await;

    assert_eq!(ids(&client.events(2).await), vec![1, 2]);
    assert_eq!(client.expect("live").await["last_id"], 2);
}

#[actix_web::test]
async fn a_resume_point_older_than_the_retained_history_gets_a_reset_then_live_events() {
    let hub = spawn_hub(|s| s.memory_capacity = 3).await;
    for n in 1..=10 {
        hub.publish(event("a", json!({}), n)).await;
    }
    let mut client = hub.ws("/ws").await;

    client.subscribe(json!({"op":"subscribe","sub":"s","topics":["a"],"since":2})).await;
    let reset = client.expect("reset").await;
    let live = client.expect("live").await;
    hub.publish(event("a", json!({}), 11)).await;

    assert_eq!(reset, json!({"type":"reset","sub":"s","reason":"history_truncated","earliest_id":8,"head":10}));
    assert_eq!(live["last_id"], 10);
    assert_eq!(ids(&client.events(1).await), vec![11]);
}

#[actix_web::test]
async fn a_resume_point_beyond_the_head_gets_a_reset_then_live_events() {
    let hub = spawn_hub(|_| {}).await;
    hub.publish(json!([event("a", json!({}), 1), event("a", json!({}), 2)])).await;
    let mut client = hub.ws("/ws").await;

    // A client that remembers id 500 of a log that was replaced since: it must reload, not wait for id 501.
    client.subscribe(json!({"op":"subscribe","sub":"s","topics":["a"],"since":500})).await;
    let reset = client.expect("reset").await;
    client.expect("live").await;
    let live = hub.publish(event("a", json!({}), 3)).await;

    assert_eq!(reset, json!({"type":"reset","sub":"s","reason":"history_truncated","earliest_id":1,"head":2}));
    assert_eq!(ids(&client.events(1).await), live);
}

#[actix_web::test]
async fn a_resume_point_inside_the_retained_history_gets_no_reset() {
    let hub = spawn_hub(|s| s.memory_capacity = 3).await;
    for n in 1..=10 {
        hub.publish(event("a", json!({}), n)).await;
    }
    let mut client = hub.ws("/ws").await;

    client.subscribe(json!({"op":"subscribe","sub":"s","topics":["a"],"since":7})).await;

    assert_eq!(ids(&client.events(3).await), vec![8, 9, 10]);
    client.expect("live").await;
}

#[actix_web::test]
async fn query_parameters_create_the_default_subscription() {
    let hub = spawn_hub(|_| {}).await;
    hub.publish(event("run.logs", json!({"project_id":"abc","env":"prod"}), 1)).await;
    let mut client = hub.ws("/api/ws?project_id=abc&env=prod&since=0").await;

    let subscribed = client.expect("subscribed").await;
    let replayed = client.events(1).await;
    client.expect("live").await;
    hub.publish(json!([
        event("deploy.events", json!({"project_id":"abc","env":"staging"}), 2),
        event("deploy.events", json!({"project_id":"abc","env":"prod"}), 3),
    ]))
    .await;

    assert_eq!(subscribed["sub"], "default");
    assert_eq!(replayed[0]["sub"], "default");
    assert_eq!(ids(&client.events(1).await), vec![3]);
}

#[actix_web::test]
async fn an_invalid_query_is_refused_before_the_upgrade() {
    let hub = spawn_hub(|_| {}).await;

    let error = hub.ws_raw("/ws?topics=bad%20topic").await.err().expect("refused");

    let tokio_tungstenite::tungstenite::Error::Http(response) = error else { panic!("not an HTTP refusal") };
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

#[actix_web::test]
async fn unsubscribe_stops_delivery_and_an_unknown_name_is_an_error() {
    let hub = spawn_hub(|_| {}).await;
    let mut client = hub.ws("/ws").await;
    client.subscribe(json!({"op":"subscribe","sub":"s","topics":["a"]})).await;

    client.send_json(json!({"op":"unsubscribe","sub":"s"})).await;
    let unsubscribed = client.expect("unsubscribed").await;
    hub.publish(event("a", json!({}), 1)).await;
    client.expect_silence(Duration::from_millis(200)).await;
    client.send_json(json!({"op":"unsubscribe","sub":"s"})).await;
    let error = client.expect("error").await;

    assert_eq!(unsubscribed["sub"], "s");
    assert_eq!(error["code"], "bad_request");
    assert_eq!(error["sub"], "s");
}

#[actix_web::test]
async fn subscribing_again_with_the_same_name_replaces_the_subscription() {
    let hub = spawn_hub(|_| {}).await;
    let mut client = hub.ws("/ws").await;
    client.subscribe(json!({"op":"subscribe","sub":"s","topics":["a"]})).await;

    client.subscribe(json!({"op":"subscribe","sub":"s","topics":["b"]})).await;
    hub.publish(json!([event("a", json!({}), 1), event("b", json!({}), 2)])).await;

    let got = client.events(1).await;
    assert_eq!(got[0]["topic"], "b");
    client.expect_silence(Duration::from_millis(200)).await;
    let (_, health) = hub.get_json("/api/health/pubsub").await;
    assert_eq!(health["stats"]["subscriptions"], 1);
}

#[actix_web::test]
async fn two_subscriptions_of_one_connection_each_get_their_events() {
    let hub = spawn_hub(|_| {}).await;
    let mut client = hub.ws("/ws").await;
    client.subscribe(json!({"op":"subscribe","sub":"all","topics":["*"]})).await;
    client.subscribe(json!({"op":"subscribe","sub":"a","topics":["a"]})).await;

    hub.publish(event("a", json!({}), 1)).await;
    let mut got = client.events(2).await;
    got.sort_by_key(|e| e["sub"].as_str().unwrap().to_owned());

    assert_eq!((got[0]["sub"].clone(), got[0]["id"].clone()), (json!("a"), json!(1)));
    assert_eq!((got[1]["sub"].clone(), got[1]["id"].clone()), (json!("all"), json!(1)));
}

#[actix_web::test]
async fn the_ping_op_is_answered_with_pong() {
    let hub = spawn_hub(|_| {}).await;
    let mut client = hub.ws("/ws").await;

    client.assert_usable().await;
}

#[actix_web::test]
async fn bad_frames_get_documented_errors_and_the_connection_stays_usable() {
    let hub = spawn_hub(|_| {}).await;
    let mut client = hub.ws("/ws").await;
    let cases = [
        ("{not json", "bad_request"),
        (r#"[1,2]"#, "bad_request"),
        (r#"{"op":"dance"}"#, "unknown_op"),
        (r#"{"op":"subscribe","sub":"s","topics":["bad topic"]}"#, "bad_request"),
        (r#"{"op":"subscribe","sub":"s","topics":["run.**"]}"#, "bad_request"),
        (r#"{"op":"subscribe","sub":"s","topics":["a"],"since":-1}"#, "bad_request"),
        (r#"{"op":"subscribe","sub":"s","topics":["a"],"since":1.5}"#, "bad_request"),
        (r#"{"op":"subscribe","sub":"s","topics":["a"],"filter":{"Bad":"x"}}"#, "bad_request"),
        (r#"{"op":"ack","id":"x"}"#, "bad_request"),
    ];

    for (frame, code) in cases {
        client.send_text(frame).await;
        let error = client.expect("error").await;
        assert_eq!(error["code"], code, "{frame} -> {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }

    client.assert_usable().await;
}

#[actix_web::test]
async fn an_oversized_frame_is_too_large_and_the_connection_stays_usable() {
    let hub = spawn_hub(|s| s.max_frame_bytes = 1024).await;
    let mut client = hub.ws("/ws").await;

    let big = json!({"op":"subscribe","sub":"s","topics":["a"],"filter":{"x":"y".repeat(2000)}});
    client.send_json(big).await;
    let error = client.expect("error").await;

    assert_eq!(error["code"], "too_large");
    client.assert_usable().await;
}

#[actix_web::test]
async fn binary_frames_are_refused_and_past_the_tolerance_the_connection_closes_with_4009() {
    let hub = spawn_hub(|s| s.protocol_tolerance = 3).await;
    let mut client = hub.ws("/ws").await;

    client.send_binary(vec![1, 2, 3]).await;
    let error = client.expect("error").await;
    assert_eq!(error["code"], "bad_request");
    assert!(error["message"].as_str().unwrap().contains("text"));
    client.assert_usable().await;
    for _ in 0..3 {
        client.send_text("garbage").await;
    }

    assert_eq!(client.expect_close(Duration::from_secs(5)).await, Some(4009));
}

#[actix_web::test]
async fn a_subscribe_storm_is_rate_limited_and_capped_per_connection() {
    let hub = spawn_hub(|s| {
        s.subscribe_rate = 5;
        s.max_subscriptions = 3;
    })
    .await;
    let mut client = hub.ws("/ws").await;

    for i in 0..30 {
        client.send_json(json!({"op":"subscribe","sub":format!("s{i}"),"topics":["a"]})).await;
    }
    let mut subscribed = 0;
    let mut codes = Vec::new();
    for _ in 0..30 {
        let frame = client.next_json().await;
        match frame["type"].as_str().unwrap() {
            "subscribed" => subscribed += 1,
            "error" => codes.push(frame["code"].as_str().unwrap().to_owned()),
            other => panic!("unexpected {other}"),
        }
    }

    assert_eq!(subscribed, 3);
    assert!(codes.iter().any(|c| c == "limit_exceeded"), "{codes:?}");
    assert!(codes.iter().any(|c| c == "rate_limited"), "{codes:?}");
    client.assert_usable().await;
}

#[actix_web::test]
async fn a_peer_that_answers_no_ping_is_closed_after_two_heartbeats() {
    let hub = spawn_hub(|s| s.heartbeat = Duration::from_millis(200)).await;
    let mut client = hub.ws("/ws").await;

    // Not reading means not answering the hub's pings.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let closed = client.expect_close(Duration::from_secs(5)).await;
    assert_eq!(closed, Some(1001));
}

#[actix_web::test]
async fn a_peer_that_answers_pings_stays_connected() {
    let hub = spawn_hub(|s| s.heartbeat = Duration::from_millis(100)).await;
    let mut client = hub.ws("/ws").await;

    // Reading answers pings automatically.
    let quiet = client.next_within(Duration::from_millis(600)).await;

    assert!(quiet.is_none(), "{quiet:?}");
    client.assert_usable().await;
    assert!(!matches!(client.next_within(Duration::from_millis(10)).await, Some(Incoming::Closed(_))));
}
