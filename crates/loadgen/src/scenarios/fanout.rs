//! `fanout` (and `cluster`): N subscribers, M events at R events/s over T topics, optionally filtered by project;
//! every delivery is checked for loss and duplicates and timed from the send timestamp in its payload.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{Barrier, watch};

use crate::client::{Peer, Transport, index_and_time, now_ns, payload};
use crate::measure::{self, Report, histogram, latency};

#[derive(Debug, Clone, serde::Serialize)]
pub struct FanoutConfig {
    /// The hub, or Nchan for the side-by-side figures.
    pub peer: Peer,
    /// WebSocket, SSE or long-poll subscribers.
    pub transport: Transport,
    /// Where subscribers connect.
    pub subscribe_hub: String,
    /// Where events are published (another hub: the cluster scenario).
    pub publish_hub: String,
    pub subscribers: usize,
    pub events: u64,
    /// Events per second.
    pub rate: u64,
    /// Events go round-robin to topics `bench.0` … ; subscriber k listens to `bench.(k % topics)`.
    pub topics: u64,
    /// With P > 0, events carry `project_id` p(i % P) and subscriber k filters on p(k % P).
    pub projects: u64,
    pub payload_bytes: usize,
    /// Events per publish request (sent every 1000 × batch / rate ms).
    pub batch: u64,
    /// Concurrent publishing connections the requests are spread over.
    pub publishers: usize,
    /// Events carry idempotency keys (unique to the run), so a publish answered 503 is retried safely.
    pub idempotent: bool,
    #[serde(skip)]
    pub hub_pids: Vec<u32>,
    /// How long to wait for stragglers after the last publish.
    #[serde(skip)]
    pub drain: Duration,
}

/// Publishes the events at the configured rate: a ticker hands each batch to the next free publisher.
async fn publish(config: &FanoutConfig) -> anyhow::Result<()> {
    let (batches, queue) = tokio::sync::mpsc::channel::<Vec<serde_json::Value>>(1);
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    let client = reqwest::Client::new();
    let publishers: Vec<_> = (0..config.publishers.max(1))
        .map(|_| {
            let (queue, client, peer, hub) = (queue.clone(), client.clone(), config.peer, config.publish_hub.clone());
            let keep = config.transport == Transport::Poll;
            tokio::spawn(async move {
                loop {
                    let Some(events) = queue.lock().await.recv().await else { return anyhow::Ok(()) };
                    peer.publish(&client, &hub, &events, keep).await?;
                }
            })
        })
        .collect();
    let batch = config.batch.max(1);
    let interval = Duration::from_secs_f64(batch as f64 / config.rate.max(1) as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut next = 0;
    while next < config.events {
        ticker.tick().await;
        let end = (next + batch).min(config.events);
        let events: Vec<_> = (next..end)
            .map(|i| {
                let mut scope = serde_json::Map::new();
                if config.projects > 0 {
                    scope.insert("project_id".into(), json!(format!("p{}", i % config.projects)));
                }
                let mut event = json!({"topic": topic_of(i, config.topics), "scope": scope,
                                       "payload": payload(i, config.payload_bytes)});
                if config.idempotent {
                    event["idempotency_key"] = json!(format!("loadgen-{run}-{i}"));
                }
                event
            })
            .collect();
        if batches.send(events).await.is_err() {
            break; // a publisher failed: its error is below
        }
        next = end;
    }
    drop(batches);
    for publisher in publishers {
        publisher.await??;
    }
    Ok(())
}

fn topic_of(i: u64, topics: u64) -> String {
    format!("bench.{}", i % topics.max(1))
}

/// Whether subscriber `k` should receive event `i`.
fn expects(config: &FanoutConfig, k: usize, i: u64) -> bool {
    let topic_ok = i % config.topics.max(1) == k as u64 % config.topics.max(1);
    let project_ok = config.projects == 0 || i % config.projects == k as u64 % config.projects;
    topic_ok && project_ok
}

struct SubscriberResult {
    /// When the last event arrived.
    last: Option<Instant>,
    received: u64,
    duplicates: u64,
    missing: u64,
    latencies: hdrhistogram::Histogram<u64>,
}

pub async fn run(config: FanoutConfig) -> anyhow::Result<Report> {
    let ready = Arc::new(Barrier::new(config.subscribers + 1));
    // Per event, its earliest delivery's latency in µs, over every subscriber.
    let firsts: Arc<[AtomicU64]> = (0..config.events).map(|_| AtomicU64::new(u64::MAX)).collect();
    // Set once publishing is over: subscribers stop at that instant (plus the drain time) at the latest.
    let (stop_tx, stop_rx) = watch::channel(None::<tokio::time::Instant>);
    let mut subscribers = Vec::with_capacity(config.subscribers);
    for k in 0..config.subscribers {
        let project = (config.projects > 0).then(|| format!("p{}", k as u64 % config.projects));
        let topic = topic_of(k as u64, config.topics);
        let mut subscriber =
            config.peer.subscriber(config.transport, &config.subscribe_hub, &topic, project.as_deref(), k).await?;
        let config = config.clone();
        let ready = ready.clone();
        let firsts = firsts.clone();
        let mut stop = stop_rx.clone();
        subscribers.push(tokio::spawn(async move {
            let expected: u64 = (0..config.events).filter(|i| expects(&config, k, *i)).count() as u64;
            let mut seen = vec![false; config.events as usize];
            let mut result = SubscriberResult {
                last: None,
                received: 0,
                duplicates: 0,
                missing: 0,
                latencies: measure::histogram(),
            };
            ready.wait().await;
            // Ends at the stop instant (publishing over, plus the drain time), or 200 ms after everything
            // arrived (to catch duplicates). One future for the whole run: a timer or watch registration per
            // frame would cost the load generator more than the frame.
            let mut all_arrived = None::<tokio::time::Instant>;
            let stopped = async move {
                let at = loop {
                    if let Some(at) = *stop.borrow_and_update() {
                        break at;
                    }
                    if stop.changed().await.is_err() {
                        return;
                    }
                };
                tokio::time::sleep_until(at).await;
            };
            tokio::pin!(stopped);
            loop {
                let next = match all_arrived {
                    None => tokio::select! {
                        biased;
                        next = subscriber.next_text() => next,
                        _ = &mut stopped => break,
                    },
                    Some(at) => tokio::select! {
                        biased;
                        next = subscriber.next_text() => next,
                        _ = &mut stopped => break,
                        _ = tokio::time::sleep_until(at) => break,
                    },
                };
                let Some(text) = next else { break };
                let Some((i, sent)) = index_and_time(text.as_str()) else { continue };
                let now = now_ns();
                result.last = Some(Instant::now());
                let micros = now.saturating_sub(sent).max(1000) / 1000;
                let _ = result.latencies.record(micros);
                if let Some(first) = firsts.get(i as usize) {
                    first.fetch_min(micros, Ordering::Relaxed);
                }
                match seen.get_mut(i as usize) {
                    Some(flag) if *flag => result.duplicates += 1,
                    Some(flag) => {
                        *flag = true;
                        result.received += 1;
                    }
                    None => result.duplicates += 1,
                }
                if result.received == expected && all_arrived.is_none() {
                    all_arrived = Some(tokio::time::Instant::now() + Duration::from_millis(200));
                }
            }
            result.missing = expected - result.received.min(expected);
            result
        }));
        // Subscriber tasks start reading at the barrier; until then the socket buffers absorb nothing.
    }
    ready.wait().await;

    let before = measure::sample(&config.hub_pids);
    let started = Instant::now();
    publish(&config).await?;
    let published_at = started.elapsed();

    stop_tx.send_replace(Some(tokio::time::Instant::now() + config.drain));
    let mut totals = SubscriberResult { last: None, received: 0, duplicates: 0, missing: 0, latencies: histogram() };
    for subscriber in subscribers {
        let result = subscriber.await?;
        totals.last = totals.last.max(result.last);
        totals.received += result.received;
        totals.duplicates += result.duplicates;
        totals.missing += result.missing;
        totals.latencies.add(&result.latencies).ok();
    }
    let after = measure::sample(&config.hub_pids);
    let elapsed = totals.last.map_or(published_at, |last| last - started);

    let mut report = Report::new("fanout", serde_json::to_value(&config)?, elapsed);
    report.deliveries = Some(totals.received);
    report.deliveries_per_s = Some(totals.received as f64 / elapsed.as_secs_f64());
    report.latency_ms = Some(latency(&totals.latencies));
    let mut firsts: Vec<u64> = firsts.iter().map(|f| f.load(Ordering::Relaxed)).filter(|f| *f != u64::MAX).collect();
    firsts.sort_unstable();
    report.first_arrival_ms = firsts.get(firsts.len() / 2).map(|micros| *micros as f64 / 1000.0);
    report.loss = totals.missing;
    report.duplicates = totals.duplicates;
    report.server(before, after);
    report.note = Some(format!("published in {:.2} s", published_at.as_secs_f64()));
    Ok(report)
}
