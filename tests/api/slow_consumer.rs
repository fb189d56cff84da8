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
