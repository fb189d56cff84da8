//! Order and completeness across topics, rooms, replay and live.

use std::collections::BTreeSet;

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::{event, ids, spawn_hub};

/// Publishers on several topics run concurrently while a subscription spanning those topics (each its own room)
/// replays a long history and switches to live: it must see every event once, ids strictly increasing.
#[actix_web::test]
async fn a_multi_topic_subscription_sees_strictly_increasing_ids_while_replaying_under_concurrent_publishes() {
    let hub = spawn_hub(|s| s.workers = Some(2)).await;
    let topics = ["run.logs", "deploy.logs", "chat:1", "system.errors"];
    let mut expected = BTreeSet::new();
    for round in 0..30 {
        let batch: Vec<_> =
            (0..100).map(|i| event(topics[i % 4], json!({"project_id":"p1"}), round * 100 + i as u64)).collect();
        expected.extend(hub.publish(json!(batch)).await);
    }
    let mut client = hub.ws("/ws").await;

    client
        .send_json(json!({"op":"subscribe","sub":"s","topics":["run.logs","deploy.*","chat:1","system.errors"],
                          "filter":{"project_id":"p1"},"since":0}))
        .await;
    let publishers = topics.iter().map(|topic| {
        let hub = &hub;
        async move {
            let mut published = Vec::new();
            for n in 0..40 {
                let batch =
                    json!([event(topic, json!({"project_id":"p1"}), n), event(topic, json!({"project_id":"p2"}), n)]);
                let got = hub.publish(batch).await;
                published.push(got[0]);
            }
            published
        }
    });
    let published = join_all(publishers).await;
    expected.extend(published.into_iter().flatten());
    let mut received = Vec::new();
    let mut saw_live = false;
    while received.len() < expected.len() {
        let frame = client.next_json().await;
        match frame["type"].as_str().unwrap() {
            "event" => received.push(frame),
            "live" => saw_live = true,
            "subscribed" => {}
            other => panic!("unexpected {other}: {frame}"),
        }
    }

    let received = ids(&received);
    assert!(received.windows(2).all(|w| w[0] < w[1]), "ids not strictly increasing");
    assert_eq!(received.iter().copied().collect::<BTreeSet<_>>(), expected, "missing or extra events");
    assert!(saw_live);
}

/// Live fan-out across rooms: many topics published in batches, one subscription over all of them.
#[actix_web::test]
async fn live_events_from_several_rooms_arrive_in_id_order() {
    let hub = spawn_hub(|_| {}).await;
    let mut client = hub.ws("/ws").await;
    client.subscribe(json!({"op":"subscribe","sub":"s","topics":["a","b","c.*"]})).await;
    let mut other = hub.ws("/ws").await;
    other.subscribe(json!({"op":"subscribe","sub":"s","topics":["b"]})).await;

    let mut expected = Vec::new();
    for round in 0..20 {
        let batch: Vec<_> = ["a", "b", "c.x", "d", "b", "a"].iter().map(|t| event(t, json!({}), round)).collect();
        let published = hub.publish(json!(batch)).await;
        expected.extend([0, 1, 2, 4, 5].map(|i| published[i]));
    }

    assert_eq!(ids(&client.events(expected.len()).await), expected);
    assert_eq!(other.events(40).await.len(), 40);
}

/// A single event to 300 WebSocket connections at a low rate is a step the fan-out sends itself, shared with its
/// sending thread (two workers: one helper; `fanout::senders`): every connection still gets every event once, in
/// id order, also across steps of several events that the sessions write.
#[actix_web::test]
async fn events_to_hundreds_of_connections_arrive_everywhere_once_in_id_order() {
    let hub = spawn_hub(|s| s.workers = Some(2)).await;
    let mut clients = Vec::new();
    for _ in 0..300 {
        let mut client = hub.ws("/ws").await;
        client.subscribe(json!({"op":"subscribe","sub":"s","topics":["wide"]})).await;
        clients.push(client);
    }
    let mut expected = Vec::new();
    for round in 0..12 {
        // Mostly one event per publish, with time between them; every fourth publish carries three.
        let count = if round % 4 == 3 { 3 } else { 1 };
        let batch: Vec<_> = (0..count).map(|n| event("wide", json!({}), round * 10 + n)).collect();
        expected.extend(hub.publish(json!(batch)).await);
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    for (n, client) in clients.iter_mut().enumerate() {
        assert_eq!(ids(&client.events(expected.len()).await), expected, "connection {n}");
        client.expect_silence(std::time::Duration::from_millis(20)).await;
    }
}
