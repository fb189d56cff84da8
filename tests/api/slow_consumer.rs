//! Slow consumers are cut, not silently dropped, and cannot grow the hub's memory.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Incoming, spawn_hub};

/// Resident memory of this process (the hub runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Stated bound: a stalled reader may cost the hub at most this much memory.
const RSS_BOUND: u64 = 32 * 1024 * 1024;

#[actix_web::test]
async fn a_reader_that_never_reads_is_closed_with_4008_while_others_keep_receiving_and_memory_stays_bounded() {
    let hub = spawn_hub(|s| {
        s.max_outbound_bytes = 1024 * 1024;
        s.memory_capacity = 20;
        s.workers = Some(2);
    })
    .await;
    let mut stalled = hub.ws("/ws?topics=bulk").await;
    stalled.expect("subscribed").await;
    let mut healthy = hub.ws("/ws?topics=bulk").await;
    healthy.expect("subscribed").await;
    let before = rss();

    // 600 events of 60 KB = 36 MB toward a reader that reads nothing (far more than the socket buffers hold).
    let payload = "x".repeat(60_000);
    let mut received = 0;
    for n in 0..600u64 {
        hub.publish(json!({"topic":"bulk","payload":{"n":n,"blob":payload}})).await;
        while let Some(Incoming::Json(frame)) = healthy.next_within(Duration::from_millis(1)).await {
            assert_eq!(frame["type"], "event");
            received += 1;
        }
    }
    let peak = rss();
    while received < 600 {
        match healthy.next_within(Duration::from_secs(10)).await {
            Some(Incoming::Json(_)) => received += 1,
            other => panic!("the healthy reader stopped receiving after {received}: {other:?}"),
        }
    }

    println!("RSS growth while 36 MB went toward a stalled reader: {} KiB", peak.saturating_sub(before) >> 10);
    assert!(peak.saturating_sub(before) < RSS_BOUND, "RSS grew by {} MiB", (peak - before) >> 20);
    // Cut while the stalled reader still reads nothing, not when it finally does.
    let metrics = hub.http.get(hub.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("hub_slow_consumer_closes_total") && !l.ends_with(" 0")));
    assert_eq!(stalled.expect_close(Duration::from_secs(30)).await, Some(4008));
}

#[actix_web::test]
async fn an_sse_reader_that_never_reads_has_its_stream_ended() {
    let hub = spawn_hub(|s| {
        s.max_outbound_bytes = 512 * 1024;
        s.memory_capacity = 20;
    })
    .await;
    let mut stalled = hub.sse("/sse?topics=bulk", &[]).await;

    let payload = "x".repeat(60_000);
    for n in 0..300u64 {
        hub.publish(json!({"topic":"bulk","payload":{"n":n,"blob":payload}})).await;
    }

    assert!(stalled.ends_within(Duration::from_secs(30)).await, "the stream was not ended");
}

/// Publishes `n` events of about 10 KB on `bulk`, one request each (each a dispatch of its own).
async fn publish_bulk(hub: &crate::helpers::TestHub, n: u64) {
    let blob = "x".repeat(10_000);
    for k in 0..n {
        hub.publish(json!({"topic":"bulk","payload":{"k":k,"blob":blob}})).await;
    }
}

/// The ids are 1, 2, 3, … with none left out: what a client got before its cut is all it missed nothing of.
fn assert_a_prefix(ids: &[u64], what: &str) {
    assert!(!ids.is_empty(), "{what}: nothing arrived before the cut");
    let expected: Vec<u64> = (1..=ids.len() as u64).collect();
    assert_eq!(
        ids,
        expected.as_slice(),
        "{what}: events left out before the cut (a resume from the last would lose them)"
    );
}

#[actix_web::test]
async fn a_websocket_cut_as_a_slow_consumer_got_every_event_before_its_last_one_then_4008() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    // Arrange: a reader whose socket buffers almost nothing and that reads nothing while events arrive.
    let hub = spawn_hub(|s| {
        s.max_outbound_bytes = 32 * 1024;
        s.memory_capacity = 20;
    })
    .await;
    let mut ws = loadgen::client::connect_with_buffer(&hub.url(""), "/ws?topics=bulk", 0, Some(4096)).await.unwrap();
    loadgen::client::wait_for(&mut ws, "subscribed").await.unwrap();

    // Act: far more than the bound, one dispatch per event; then read everything the hub sent.
    publish_bulk(&hub, 600).await;
    let mut ids = Vec::new();
    let mut close = None;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        match message {
            Message::Text(text) => {
                let frame: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                if frame["type"] == "event" {
                    ids.push(frame["id"].as_u64().unwrap());
                }
            }
            Message::Close(frame) => {
                close = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }

    // Assert
    assert_eq!(close, Some(4008), "got {} events and no 4008", ids.len());
    assert_a_prefix(&ids, "WebSocket");
}

/// An SSE request from a socket that buffers almost nothing; returns the stream after the response head.
async fn raw_sse(hub: &crate::helpers::TestHub, path: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(format!("127.0.0.1:{}", hub.port).parse().unwrap()).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n").as_bytes()).await.unwrap();
    stream
}

/// Reads what arrives within `wait` (or until the hub ends the stream); the event ids in it, and whether it ended.
async fn read_sse_ids(mut stream: tokio::net::TcpStream, wait: Duration) -> (Vec<u64>, bool) {
    use tokio::io::AsyncReadExt;
    let mut body = Vec::new();
    let ended = tokio::time::timeout(wait, stream.read_to_end(&mut body)).await.is_ok();
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..text.len().min(300)]);
    let ids = text
        .split("id: ")
        .skip(1)
        .filter_map(|rest| rest.split_once('\n'))
        .filter(|(_, after)| after.starts_with("event: bulk"))
        .filter_map(|(id, _)| id.trim().parse().ok())
        .collect();
    (ids, ended)
}

#[actix_web::test]
async fn an_sse_stream_cut_as_a_slow_consumer_in_the_middle_of_a_batch_got_every_event_before_its_last_one() {
    // Arrange: a reader that reads nothing while batches of events arrive (each batch one dispatch of many frames).
    let hub = spawn_hub(|s| {
        s.max_outbound_bytes = 32 * 1024;
        s.memory_capacity = 20;
    })
    .await;
    let stream = raw_sse(&hub, "/sse?topics=bulk").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Act
    let blob = "x".repeat(10_000);
    for batch in 0..30 {
        let events: Vec<_> =
            (0..20).map(|k| json!({"topic":"bulk","payload":{"k":batch * 20 + k,"blob":blob}})).collect();
        hub.publish(json!(events)).await;
    }
    let (ids, ended) = read_sse_ids(stream, Duration::from_secs(10)).await;

    // Assert
    assert!(ended, "the stream was not ended ({} events read)", ids.len());
    assert_a_prefix(&ids, "SSE");
}

#[actix_web::test]
async fn a_reader_resuming_further_behind_than_its_outbound_bound_gets_the_whole_replay_without_being_cut() {
    // Arrange: 1 MB of retained events, thirty times the bound, and readers on sockets that buffer almost nothing.
    let hub = spawn_hub(|s| s.max_outbound_bytes = 32 * 1024).await;
    publish_bulk(&hub, 100).await;

    // Act: resume from the start; the replay must wait for the reader rather than cut it.
    let sse = read_sse_ids(raw_sse(&hub, "/sse?topics=bulk&since=0").await, Duration::from_secs(3));
    let ws = async {
        let mut ws =
            loadgen::client::connect_with_buffer(&hub.url(""), "/ws?topics=bulk&since=0", 0, Some(4096)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut ids = Vec::new();
        while ids.len() < 100 {
            let frame: serde_json::Value =
                serde_json::from_str(&loadgen::client::wait_for(&mut ws, "event").await.unwrap()).unwrap();
            ids.push(frame["id"].as_u64().unwrap());
        }
        ids
    };
    let ((sse_ids, sse_ended), ws_ids) = tokio::join!(sse, ws);

    // Assert
    let all: Vec<u64> = (1..=100).collect();
    assert!(!sse_ended, "the SSE stream was cut during its replay");
    assert_eq!(sse_ids, all);
    assert_eq!(ws_ids, all);
}

#[actix_web::test]
async fn a_capped_socket_send_buffer_makes_a_stalled_reader_a_slow_consumer_after_a_megabyte_not_after_four() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    // Arrange: the kernel may hold 64 KiB per connection instead of growing its buffer to 4 MiB.
    let hub = spawn_hub(|s| {
        s.max_outbound_bytes = 64 * 1024;
        s.socket_send_buffer = 64 * 1024;
        s.memory_capacity = 20;
    })
    .await;
    let mut ws = loadgen::client::connect_with_buffer(&hub.url(""), "/ws?topics=bulk", 0, Some(4096)).await.unwrap();
    loadgen::client::wait_for(&mut ws, "subscribed").await.unwrap();

    // Act: 1 MB toward a reader that reads nothing, then read what it was sent.
    publish_bulk(&hub, 100).await;
    let mut events = 0;
    let mut close = None;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        match message {
            Message::Text(_) => events += 1,
            Message::Close(frame) => {
                close = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }

    // Assert
    assert_eq!(close, Some(4008), "not cut after {events} of 100 events");
}
