//! Output profiles: the shape a subscription's events are written in, chosen per subscription on every transport,
//! while positions stay the hub's ids and the default wire format does not change.

use serde_json::{Value, json};

use crate::helpers::{event, spawn_hub};

fn evt_v1(id: u64, topic: &str, timestamp: &Value, payload: Value) -> Value {
    json!({"id": format!("evt_{id}"), "org_id": "o1", "event": topic, "timestamp": timestamp, "version": "v1",
           "payload": payload})
}

#[actix_web::test]
async fn evt_v1_is_offered_on_websocket_by_query_and_by_subscribe_frame() {
    let hub = spawn_hub(|_| {}).await;
    let mut by_query = hub.ws("/ws?topics=deploy.*&org_id=o1&profile=evt-v1").await;
    by_query.expect("subscribed").await;
    let mut by_frame = hub.ws("/ws").await;
    by_frame
        .subscribe(
            json!({"op":"subscribe","sub":"s1","topics":["deploy.*"],"filter":{"org_id":"o1"},"profile":"evt-v1"}),
        )
        .await;
    let mut default = hub.ws("/ws?topics=deploy.*&org_id=o1").await;
    default.expect("subscribed").await;

    let id = hub.publish(event("deploy.events", json!({"org_id":"o1"}), 7)).await[0];

    let hub_frame = default.expect("event").await;
    assert_eq!(hub_frame["id"], id, "the default wire format is unchanged: {hub_frame}");
    let expected = evt_v1(id, "deploy.events", &hub_frame["ts"], json!({"n": 7}));
    assert_eq!(by_query.next_json().await, expected);
    assert_eq!(by_frame.next_json().await, expected);
}

#[actix_web::test]
async fn evt_v1_over_sse_keeps_the_hubs_id_for_last_event_id_resume() {
    let hub = spawn_hub(|_| {}).await;
    let first = hub.publish(event("deploy.events", json!({"org_id":"o1"}), 1)).await[0];
    let second = hub.publish(event("deploy.events", json!({"org_id":"o1"}), 2)).await[0];

    let mut sse = hub.sse("/sse?topics=deploy.*&profile=evt-v1", &[("Last-Event-ID", &first.to_string())]).await;
    let block = sse.next_event().await;

    assert_eq!(block.id, Some(second.to_string()), "the id line is the hub's position");
    let data = block.json();
    assert_eq!(data["id"], format!("evt_{second}"));
    assert_eq!(data["version"], "v1");
    assert_eq!(data["payload"], json!({"n": 2}));
}

#[actix_web::test]
async fn long_poll_writes_events_in_the_asked_profile_and_next_after_stays_a_position() {
    let hub = spawn_hub(|_| {}).await;
    let id = hub.publish(event("chat:1", json!({"org_id":"o1"}), 3)).await[0];

    let (status, evt) = hub.get_json("/api/events?topics=chat:*&after=0&profile=evt-v1").await;
    let (_, payload) = hub.get_json("/api/events?topics=chat:*&after=0&profile=payload").await;

    assert_eq!(status, 200);
    assert_eq!(evt["events"][0]["id"], format!("evt_{id}"));
    assert_eq!(evt["events"][0]["event"], "chat:1");
    assert_eq!(evt["next_after"], id);
    assert_eq!(payload["events"], json!([{"n": 3}]));
}

#[actix_web::test]
async fn an_unknown_profile_is_a_clear_error_on_every_transport() {
    let hub = spawn_hub(|_| {}).await;
    let (status, body) = hub.get_json("/api/events?after=0&profile=xml").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(body["error"]["message"].as_str().unwrap().contains("profile must be one of"), "{body}");
    let refused = hub.http.get(hub.url("/sse?profile=xml")).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let upgrade = hub.ws_raw("/ws?profile=xml").await;
    assert!(upgrade.is_err(), "the upgrade is refused");

    let mut client = hub.ws("/ws").await;
    client.send_json(json!({"op":"subscribe","sub":"s","topics":["a"],"profile":"xml"})).await;
    let error = client.expect("error").await;
    assert_eq!(error["code"], "bad_request");
    client.assert_usable().await;
}
