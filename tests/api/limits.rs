//! Limits against abuse: each one crossed. (Frame size, subscriptions per connection, subscribe rate, body size
//! and batch length are crossed in `websocket.rs` and `publish.rs`.)

use std::time::Duration;

use serde_json::json;

use crate::helpers::{event, spawn_hub};
use crate::tokens::{SECRET, hs256, standard};

#[actix_web::test]
async fn connections_past_the_hub_limit_are_closed_with_4029_or_refused_with_429() {
    let hub = spawn_hub(|s| s.max_connections = 2).await;
    let _one = hub.ws("/ws").await;
    let _two = hub.sse("/sse?topics=a", &[]).await;

    let mut third = hub.ws_raw("/ws").await.unwrap();
    let closed = third.expect_close(Duration::from_secs(5)).await;
    let (sse, body) = hub.get_as("/sse?topics=a", None).await;

    assert_eq!(closed, Some(4029));
    assert_eq!((sse, body["error"]["code"].as_str()), (429, Some("limit_exceeded")));
    drop(_one);
    tokio::time::sleep(Duration::from_millis(200)).await;
    hub.ws("/ws").await;
}

#[actix_web::test]
async fn connections_past_the_per_subject_limit_are_closed_with_4029() {
    let hub = spawn_hub(|s| {
        s.jwt_secret = Some(SECRET.into());
        s.max_connections_per_subject = 2;
    })
    .await;
    let token = hs256(&standard());
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = hub.ws_with_token("/ws", Some(&token)).await.unwrap();
        client.expect("welcome").await;
        open.push(client);
    }

    let mut third = hub.ws_with_token("/ws", Some(&token)).await.unwrap();

    assert_eq!(third.expect_close(Duration::from_secs(5)).await, Some(4029));
}

#[actix_web::test]
async fn publishing_faster_than_the_rate_is_429() {
    let hub = spawn_hub(|s| s.publish_rate = 5).await;
    let mut statuses = Vec::new();

    for n in 0..20 {
        statuses.push(hub.publish_as(&event("a", json!({}), n), None).await);
    }

    assert!(statuses.iter().take(10).all(|(s, _)| *s == 200), "the burst passes");
    let limited = statuses.iter().find(|(s, _)| *s == 429).expect("the rate is enforced");
    assert_eq!(limited.1["error"]["code"], "rate_limited");
}

#[actix_web::test]
async fn long_poll_waiters_past_the_limit_are_429() {
    let hub = spawn_hub(|s| s.max_poll_waiters = 1).await;

    let waiting = hub.get_as("/api/events?topics=a&after=0&wait=2", None);
    let refused = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        hub.get_as("/api/events?topics=a&after=0&wait=2", None).await
    };
    let ((first, _), (second, body)) = tokio::join!(waiting, refused);

    assert_eq!(first, 200);
    assert_eq!((second, body["error"]["code"].as_str()), (429, Some("limit_exceeded")));
}
