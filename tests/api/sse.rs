//! `GET /sse`: Server-Sent Events.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{event, spawn_hub};
use crate::tokens::{SECRET, hs256, standard};

#[actix_web::test]
async fn events_are_written_with_id_event_and_data_after_one_retry_hint() {
    let hub = spawn_hub(|_| {}).await;
    let mut stream = hub.sse("/sse?topics=run.*&project_id=p1", &[]).await;

    let first = stream.next_within(Duration::from_secs(5)).await.unwrap();
    hub.publish(json!([
        event("run.logs", json!({"project_id":"p2"}), 1),
        event("run.logs", json!({"project_id":"p1"}), 2)
    ]))
    .await;
    let got = stream.next_event().await;

    assert_eq!(first.retry.as_deref(), Some("2000"));
    assert_eq!(got.id.as_deref(), Some("2"));
    assert_eq!(got.event.as_deref(), Some("run.logs"));
    let envelope = got.json();
    assert_eq!(envelope["id"], 2);
    assert_eq!(envelope["scope"]["project_id"], "p1");
    assert!(envelope.get("sub").is_none(), "SSE data is the bare envelope");
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    assert!(stream.headers()["cache-control"].to_str().unwrap().contains("no-cache"));
    assert_eq!(stream.headers()["x-accel-buffering"], "no");
}

#[actix_web::test]
async fn a_reconnect_with_last_event_id_gets_exactly_the_missed_events() {
    let hub = spawn_hub(|_| {}).await;
    let mut stream = hub.sse("/sse?topics=chat:*", &[]).await;
    let first = hub.publish(json!([event("chat:1", json!({}), 1), event("chat:1", json!({}), 2)])).await;
    let seen = [stream.next_event().await, stream.next_event().await];
    assert_eq!(seen[1].id.as_deref(), Some(first[1].to_string().as_str()));
    drop(stream);

    let missed = hub.publish(json!([event("chat:1", json!({}), 3), event("chat:2", json!({}), 4)])).await;
    // `since=0` in the query loses to the header, as a browser's reconnect would have it.
    let mut resumed = hub.sse("/sse?topics=chat:*&since=0", &[("Last-Event-ID", &first[1].to_string())]).await;
    let again = [resumed.next_event().await, resumed.next_event().await];
    let later = hub.publish(event("chat:1", json!({}), 5)).await;
    let live = resumed.next_event().await;

    let ids: Vec<u64> = again.iter().map(|b| b.id.as_ref().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, missed);
    assert_eq!(live.id.unwrap().parse::<u64>().unwrap(), later[0]);
}

#[actix_web::test]
async fn a_truncated_resume_sends_a_reset_event_carrying_the_head_as_its_id() {
    let hub = spawn_hub(|s| s.memory_capacity = 2).await;
    for n in 0..6 {
        hub.publish(event("a", json!({}), n)).await;
    }

    let mut stream = hub.sse("/sse?topics=a", &[("Last-Event-ID", "1")]).await;
    let reset = stream.next_event().await;
    hub.publish(event("a", json!({}), 7)).await;
    let live = stream.next_event().await;

    assert_eq!(reset.event.as_deref(), Some("reset"));
    assert_eq!(reset.id.as_deref(), Some("6"));
    assert_eq!(reset.json(), json!({"reason":"history_truncated","earliest_id":5,"head":6}));
    assert_eq!(live.id.as_deref(), Some("7"));
}

#[actix_web::test]
async fn heartbeat_comments_keep_an_idle_stream_open() {
    let hub = spawn_hub(|s| s.sse_heartbeat = Duration::from_millis(100)).await;
    let mut stream = hub.sse("/sse?topics=a", &[]).await;

    stream.next_within(Duration::from_secs(2)).await.unwrap(); // retry
    let comment = stream.next_within(Duration::from_secs(2)).await.unwrap();

    assert_eq!(comment.comment.as_deref(), Some("hb"));
}

#[actix_web::test]
async fn bad_query_parameters_and_last_event_ids_are_400() {
    let hub = spawn_hub(|_| {}).await;
    for (path, header) in [("/sse?topics=a%20b", None), ("/sse?since=-3", None), ("/sse?topics=a", Some("abc"))] {
        let mut request = hub.http.get(hub.url(path));
        if let Some(value) = header {
            request = request.header("Last-Event-ID", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request");
    }
}

#[actix_web::test]
async fn shutdown_ends_sse_streams() {
    let hub = spawn_hub(|s| s.shutdown_grace = Duration::from_secs(2)).await;
    let mut stream = hub.sse("/sse?topics=a", &[]).await;
    stream.next_within(Duration::from_secs(2)).await.unwrap();

    hub.begin_shutdown();

    assert!(stream.ends_within(Duration::from_secs(5)).await);
}

/// Pages of the SSE broker this hub replaces keep their URL: `/api/stream` is `/sse`, with the same query, token,
/// profile and `Last-Event-ID` resume, and the same refusals.
#[actix_web::test]
async fn the_older_api_stream_route_serves_sse_with_the_same_token_profile_and_resume() {
    let hub = spawn_hub(|s| s.jwt_secret = Some(SECRET.into())).await;
    let token = hs256(&standard());
    let first = hub.publish_as(&json!([event("run.logs", json!({"project_id":"p1"}), 1)]), Some(&token)).await;
    let first_id = first.1["ids"][0].to_string();
    let missed = hub.publish_as(&event("run.logs", json!({"project_id":"p1"}), 2), Some(&token)).await;

    let bearer = format!("Bearer {token}");
    let headers = [("Last-Event-ID", first_id.as_str()), ("authorization", bearer.as_str())];
    let mut stream = hub.sse("/api/stream?topics=run.*&project_id=p1&profile=payload", &headers).await;
    let resumed = stream.next_event().await;
    let (refused, body) = hub.get_as("/api/stream?topics=run.*&project_id=p3", Some(&token)).await;
    let (unauthenticated, _) = hub.get_as("/api/stream?topics=run.*&project_id=p1", None).await;

    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    assert_eq!(resumed.id, Some(missed.1["ids"][0].to_string()), "resumed after Last-Event-ID");
    assert_eq!(resumed.json(), json!({"n": 2}), "the payload profile applies");
    assert_eq!((refused, body["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(unauthenticated, 401);
}
