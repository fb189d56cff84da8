//! The tail of a topic: the last N events a subscription may see, then live, on every transport and backend;
//! scrollback below an id on long-poll; the requests that contradict themselves refused.

use serde_json::{Value, json};

use crate::backends::{LogKind, TestLog};
use crate::helpers::{event, ids};

every_backend! {
    /// Thirty events on two rooms of a project and one of another: a tail of 5 of room 1 of p1 gets exactly its
    /// last five, in order, then the next live one, with no gap or duplicate at the switch, on each transport.
    async fn a_tail_delivers_the_last_matching_events_then_live_on_every_transport(log) {
        let hub = log.spawn_hub(|_| {}).await;
        let mut room1 = Vec::new();
        for n in 0..30u64 {
            let (topic, project) = match n % 3 { 0 => ("chat:1", "p1"), 1 => ("chat:2", "p1"), _ => ("chat:1", "p2") };
            let id = hub.publish(event(topic, json!({"project_id": project}), n)).await;
            if n % 3 == 0 {
                room1.extend(id);
            }
        }
        let last5 = room1[room1.len() - 5..].to_vec();

        let mut by_frame = hub.ws("/ws").await;
        by_frame
            .send_json(json!({"op": "subscribe", "sub": "t", "topics": ["chat:1"], "filter": {"project_id": "p1"}, "tail": 5}))
            .await;
        by_frame.expect("subscribed").await;
        let framed = by_frame.events(5).await;
        by_frame.expect("live").await;
        let mut by_query = hub.ws("/ws?topics=chat:1&project_id=p1&tail=5").await;
        by_query.expect("subscribed").await;
        let queried = by_query.events(5).await;
        by_query.expect("live").await;
        let mut sse = hub.sse("/sse?topics=chat:1&project_id=p1&tail=5", &[]).await;
        let mut streamed_ids = Vec::new();
        for _ in 0..5 {
            streamed_ids.push(sse.next_event().await.id.unwrap().parse::<u64>().unwrap());
        }
        let (status, polled) = hub.get_json("/api/events?topics=chat:1&project_id=p1&tail=5").await;
        let live = hub.publish(event("chat:1", json!({"project_id": "p1"}), 99)).await;

        assert_eq!(ids(&framed), last5);
        assert_eq!(ids(&queried), last5);
        assert_eq!(streamed_ids, last5);
        assert_eq!(status, 200, "{polled}");
        assert_eq!(ids(polled["events"].as_array().unwrap()), last5);
        assert_eq!(ids(&by_frame.events(1).await), live, "live right after the tail, nothing twice");
        assert_eq!(ids(&by_query.events(1).await), live);
        assert_eq!(sse.next_event().await.id, Some(live[0].to_string()));
        let after = polled["next_after"].as_u64().unwrap();
        let (_, next) = hub.get_json(&format!("/api/events?topics=chat:1&project_id=p1&after={after}&wait=5")).await;
        assert_eq!(ids(next["events"].as_array().unwrap()), live, "the long-poll goes on from the tail without a gap");
    }
}

every_backend! {
    /// `before=<id>&limit=N` answers the N newest matching events below the id (scrollback); a tail longer than the
    /// history is all of it, without a reset; an EventSource reconnecting with Last-Event-ID ignores its tail.
    async fn scrollback_a_short_history_and_a_reconnecting_eventsource_read_what_they_should(log) {
        let hub = log.spawn_hub(|_| {}).await;
        let mut published = Vec::new();
        for n in 0..12u64 {
            published.extend(hub.publish(event("logs", json!({}), n)).await);
        }

        let (_, page) = hub.get_json(&format!("/api/events?topics=logs&before={}&limit=4", published[8])).await;
        let (_, older) = hub.get_json(&format!("/api/events?topics=logs&before={}&limit=4", published[4])).await;
        let mut short = hub.ws("/ws?topics=logs&tail=100").await;
        short.expect("subscribed").await;
        let everything = short.events(12).await;
        let next = short.next_json().await;
        let mut resumed = hub.sse("/sse?topics=logs&tail=2", &[("Last-Event-ID", &published[9].to_string())]).await;

        assert_eq!(ids(page["events"].as_array().unwrap()), published[4..8].to_vec());
        assert_eq!(page["next_after"], published[7]);
        assert_eq!(ids(older["events"].as_array().unwrap()), published[0..4].to_vec());
        assert_eq!(ids(&everything), published, "all of it");
        assert_eq!(next["type"], "live", "no reset for a tail longer than the history: {next}");
        assert_eq!(resumed.next_event().await.id, Some(published[10].to_string()), "resumed, not tailed");
    }
}

every_backend! {
    async fn a_tail_beside_a_resume_point_or_out_of_range_is_a_bad_request(log) {
        let hub = log.spawn_hub(|_| {}).await;
        let mut client = hub.ws("/ws").await;

        client.send_json(json!({"op": "subscribe", "sub": "t", "topics": ["a"], "since": 3, "tail": 5})).await;
        let both = client.expect("error").await;
        client.send_json(json!({"op": "subscribe", "sub": "t", "topics": ["a"], "tail": 0})).await;
        let zero = client.expect("error").await;

        assert_eq!(both["code"], "bad_request", "{both}");
        assert_eq!(zero["code"], "bad_request", "{zero}");
        for path in [
            "/sse?topics=a&tail=5&since=3",
            "/sse?topics=a&tail=1001",
            "/sse?topics=a&tail=x",
            "/sse?topics=a&before=4",
            "/api/events?topics=a&tail=5&after=3",
            "/api/events?topics=a&tail=5&before=9",
            "/api/events?topics=a&tail=5&limit=5",
            "/api/events?topics=a&before=0",
            "/api/events?topics=a&before=9&wait=1",
        ] {
            let response = hub.http.get(hub.url(path)).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{path}: {body}");
        }
        assert!(hub.ws_raw("/ws?topics=a&tail=5&since=3").await.is_err());
    }
}
