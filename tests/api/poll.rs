//! `GET /api/events`: long-poll.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{event, spawn_hub};

fn ids(answer: &Value) -> Vec<u64> {
    answer["events"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect()
}

#[actix_web::test]
async fn events_already_in_the_log_are_answered_at_once_in_pages() {
    let hub = spawn_hub(|_| {}).await;
    let published =
        hub.publish(json!((0..5).map(|n| event("run.logs", json!({"project_id":"p1"}), n)).collect::<Vec<_>>())).await;
    hub.publish(event("run.logs", json!({"project_id":"p2"}), 9)).await;

    let (status, page) = hub.get_json("/api/events?topics=run.*&project_id=p1&after=0&limit=3").await;
    let (_, rest) =
        hub.get_json(&format!("/api/events?topics=run.*&project_id=p1&after={}&wait=0", page["next_after"])).await;

    assert_eq!(status, 200);
    assert_eq!(ids(&page), published[..3].to_vec());
    assert_eq!(page["next_after"], published[2]);
    assert_eq!(page["reset"], Value::Null);
    assert_eq!(ids(&rest), published[3..].to_vec());
    assert_eq!(rest["next_after"], 6, "next_after moves past events that do not match");
    assert_eq!(rest["events"][0]["payload"], json!({"n":3}));
}

#[actix_web::test]
async fn a_waiting_request_is_released_by_a_matching_publish() {
    let hub = spawn_hub(|_| {}).await;
    let started = Instant::now();

    let waiting = hub.get_json("/api/events?topics=a&after=0&wait=20");
    let publish = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        hub.publish(event("b", json!({}), 0)).await;
        hub.publish(event("a", json!({}), 1)).await
    };
    let ((status, answer), published) = tokio::join!(waiting, publish);

    assert_eq!(status, 200);
    assert_eq!(ids(&answer), published);
    assert!(started.elapsed() < Duration::from_secs(10), "released by the publish, not by the wait running out");
}

#[actix_web::test]
async fn a_wait_that_runs_out_answers_an_empty_page() {
    let hub = spawn_hub(|_| {}).await;

    let (status, answer) = hub.get_json("/api/events?topics=a&after=0&wait=1").await;

    assert_eq!(status, 200);
    assert_eq!(answer, json!({"events":[],"next_after":0,"reset":null}));
}

#[actix_web::test]
async fn an_after_older_than_the_history_answers_a_reset() {
    let hub = spawn_hub(|s| s.memory_capacity = 2).await;
    for n in 0..5 {
        hub.publish(event("a", json!({}), n)).await;
    }

    let (_, answer) = hub.get_json("/api/events?topics=a&after=1").await;

    assert_eq!(answer["events"], json!([]));
    assert_eq!(answer["next_after"], 5);
    assert_eq!(answer["reset"], json!({"reason":"history_truncated","earliest_id":4,"head":5}));
}

#[actix_web::test]
async fn bad_parameters_are_400() {
    let hub = spawn_hub(|_| {}).await;
    for path in [
        "/api/events?topics=a",
        "/api/events?after=-1",
        "/api/events?after=0&limit=0",
        "/api/events?after=0&limit=1001",
        "/api/events?after=0&wait=31",
        "/api/events?after=0&topics=a%20b",
        "/api/events?after=0&Bad=1",
    ] {
        let (status, body) = hub.get_json(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
}

#[actix_web::test]
async fn requests_waiting_on_one_subscription_are_all_released_by_one_publish() {
    let hub = spawn_hub(|_| {}).await;
    let started = Instant::now();

    let same = futures_util::future::join_all(
        (0..3).map(|_| hub.get_json("/api/events?topics=a&project_id=p1&after=0&wait=20")),
    );
    let other = hub.get_json("/api/events?topics=a&project_id=p2&after=0&wait=20");
    let publish = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let first = hub.publish(event("a", json!({"project_id": "p1"}), 1)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        (first, hub.publish(event("a", json!({"project_id": "p2"}), 2)).await)
    };
    let (answers, (status, other), (first, second)) = tokio::join!(same, other, publish);

    for (status, answer) in answers {
        assert_eq!(status, 200);
        assert_eq!(ids(&answer), first, "every request waiting on p1 is released by its event");
    }
    assert_eq!(status, 200);
    assert_eq!(ids(&other), second, "the request on p2 waited for its own event");
    assert!(started.elapsed() < Duration::from_secs(10), "released by the publishes, not by the wait running out");
}

#[actix_web::test]
async fn a_hub_shutting_down_answers_its_waiting_requests_at_once() {
    let hub = spawn_hub(|_| {}).await;
    let started = Instant::now();

    let waiting = hub.get_json("/api/events?topics=a&after=0&wait=20");
    let stop = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        hub.begin_shutdown();
    };
    let ((status, answer), ()) = tokio::join!(waiting, stop);

    assert_eq!(status, 200);
    assert_eq!(answer, json!({"events":[],"next_after":0,"reset":null}));
    assert!(started.elapsed() < Duration::from_secs(5), "answered at the shutdown, not when the wait ran out");
}
