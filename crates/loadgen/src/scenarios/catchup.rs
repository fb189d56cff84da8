//! `catchup`: a client resuming K events behind; measures how fast replay delivers them.

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{connect, index_and_time, payload, wait_for};
use crate::measure::{self, Report};

#[derive(Debug, Clone, serde::Serialize)]
pub struct CatchupConfig {
    pub hub: String,
    pub events: u64,
    pub payload_bytes: usize,
    #[serde(skip)]
    pub hub_pids: Vec<u32>,
}

pub async fn run(config: CatchupConfig) -> anyhow::Result<Report> {
    let client = reqwest::Client::new();
    let url = format!("{}/api/publish", config.hub.trim_end_matches('/'));
    // The resume point: the head before the backlog is published.
    let health: serde_json::Value =
        client.get(format!("{}/api/health/pubsub", config.hub.trim_end_matches('/'))).send().await?.json().await?;
    let since = health["log"]["head"].as_u64().unwrap_or(0);
    // A unique topic, so only this run's events are replayed.
    let topic = format!("catchup.{}", crate::client::now_ns());
    let mut next = 0;
    while next < config.events {
        let end = (next + 1000).min(config.events);
        let batch: Vec<_> =
            (next..end).map(|i| json!({"topic": topic, "payload": payload(i, config.payload_bytes)})).collect();
        let response = client.post(&url).json(&batch).send().await?;
        anyhow::ensure!(response.status().is_success(), "publish answered {}", response.status());
        next = end;
    }

    let before = measure::sample(&config.hub_pids);
    let started = Instant::now();
    let mut ws = connect(&config.hub, &format!("/ws?topics={topic}&since={since}"), 0).await?;
    wait_for(&mut ws, "subscribed").await?;
    let mut seen = vec![false; config.events as usize];
    let (mut received, mut duplicates) = (0u64, 0u64);
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else { continue };
        if text.as_str().contains(r#""type":"live""#) {
            break;
        }
        let Some((i, _)) = index_and_time(text.as_str()) else { continue };
        match seen.get_mut(i as usize) {
            Some(flag) if !*flag => {
                *flag = true;
                received += 1;
            }
            _ => duplicates += 1,
        }
    }
    let elapsed = started.elapsed();
    let after = measure::sample(&config.hub_pids);
    let mut report = Report::new("catchup", serde_json::to_value(&config)?, elapsed);
    report.deliveries = Some(received);
    report.events_per_s = Some(received as f64 / elapsed.as_secs_f64());
    report.loss = config.events - received.min(config.events);
    report.duplicates = duplicates;
    report.server(before, after);
    Ok(report)
}
