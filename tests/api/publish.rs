//! `POST /api/publish`: answers, validation and atomic batches.

use serde_json::{Value, json};

use crate::helpers::{TestHub, event, spawn_hub};

async fn error_of(hub: &TestHub, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let response = hub.publish_raw(body).await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("errors are JSON"))
}

async fn head(hub: &TestHub) -> u64 {
    let (_, health) = hub.get_json("/api/health/pubsub").await;
    health["log"]["head"].as_u64().unwrap()
}

#[actix_web::test]
async fn a_single_event_and_a_batch_get_their_ids_in_request_order() {
    let hub = spawn_hub(|_| {}).await;

    let one = hub.publish(event("a", json!({}), 1)).await;
    let batch =
        hub.publish(json!([event("a", json!({}), 2), event("b", json!({}), 3), event("c", json!({}), 4)])).await;

    assert_eq!(one, vec![1]);
    assert_eq!(batch, vec![2, 3, 4]);
}

#[actix_web::test]
async fn a_batch_with_one_bad_event_is_refused_whole_with_its_index() {
    let hub = spawn_hub(|_| {}).await;
    let bad = json!({"topic":"a b","payload":{}});

    let (status, body) = error_of(&hub, json!([event("a", json!({}), 1), bad]).to_string()).await;

    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request");
    assert_eq!(body["error"]["index"], 1);
    assert!(body["error"]["message"].as_str().unwrap().contains("topic"));
    assert_eq!(head(&hub).await, 0, "nothing of the batch is stored");
}

#[actix_web::test]
async fn invalid_events_are_bad_requests_with_a_reason() {
    let hub = spawn_hub(|_| {}).await;
    let cases = [
        "{not json".to_owned(),
        json!("a string").to_string(),
        json!([]).to_string(),
        json!({"topic":"a","payload":"text"}).to_string(),
        json!({"topic":"a","payload":[1]}).to_string(),
        json!({"topic":"a"}).to_string(),
        json!({"topic":"a","payload":{},"id":7}).to_string(),
        json!({"topic":"a","scope":{"Project":"x"},"payload":{}}).to_string(),
        json!({"topic":"a","scope":{"project_id":1},"payload":{}}).to_string(),
        json!({"topic":"a","correlation_id":"x".repeat(129),"payload":{}}).to_string(),
    ];

    for body in cases {
        let (status, answer) = error_of(&hub, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
    }
    assert_eq!(head(&hub).await, 0);
}

#[actix_web::test]
async fn oversized_payloads_bodies_and_batches_are_413() {
    let hub = spawn_hub(|s| {
        s.max_payload_bytes = 1000;
        s.max_publish_bytes = 50_000;
        s.max_batch = 10;
    })
    .await;
    let big_payload = json!({"topic":"a","payload":{"x":"y".repeat(2000)}});
    let big_body = Value::Array(vec![json!({"topic":"a","payload":{"x":"y".repeat(900)}}); 60]);
    let long_batch = Value::Array(vec![json!({"topic":"a","payload":{}}); 11]);

    for body in [big_payload, big_body, long_batch] {
        let (status, answer) = error_of(&hub, body.to_string()).await;
        assert_eq!(status, 413, "{answer}");
        assert_eq!(answer["error"]["code"], "too_large");
    }
    assert_eq!(head(&hub).await, 0);
}
