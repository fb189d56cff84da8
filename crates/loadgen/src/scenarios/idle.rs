//! `idle`: C connections held open (each with a live subscription to a quiet topic); the hub's memory per
//! connection is the growth of its RSS divided by C.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use futures_util::stream::{self, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Peer, Ws, connect, wait_for};
use crate::measure::{self, Report};

#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleConfig {
    pub peer: Peer,
    pub hub: String,
    /// How each connection subscribes (the hub; Nchan subscribes by path).
    pub by: SubscribeBy,
    pub connections: usize,
    /// Connections opened at once.
    pub concurrency: usize,
    /// Keep the connections open this long after measuring (to add several loadgen processes' connections up).
    pub hold_s: f64,
    #[serde(skip)]
    pub hub_pids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SubscribeBy {
    /// `/ws?topics=…`: the hub makes the subscription at the upgrade.
    #[default]
    Query,
    /// `/ws`, then a `subscribe` frame.
    Frame,
}

async fn open(config: &IdleConfig, n: usize) -> anyhow::Result<Ws> {
    match (config.peer, config.by) {
        (Peer::Nchan, _) | (Peer::Hub, SubscribeBy::Query) => {
            config.peer.subscribe(&config.hub, "idle.quiet", None, n).await
        }
        (Peer::Hub, SubscribeBy::Frame) => {
            let mut ws = connect(&config.hub, "/ws", n).await?;
            let subscribe = r#"{"op":"subscribe","sub":"default","topics":["idle.quiet"]}"#;
            ws.send(Message::text(subscribe)).await?;
            wait_for(&mut ws, "subscribed").await?;
            Ok(ws)
        }
    }
}

pub async fn run(config: IdleConfig) -> anyhow::Result<Report> {
    let before = measure::sample(&config.hub_pids);
    let started = Instant::now();
    let opened: Vec<anyhow::Result<Ws>> = stream::iter(0..config.connections)
        .map(|n| open(&config, n))
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let failed = opened.iter().filter(|r| r.is_err()).count();
    let held: Vec<Ws> = opened.into_iter().filter_map(Result::ok).collect();
    // Let the hub settle (allocator, timers) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = measure::sample(&config.hub_pids);

    let mut report = Report::new("idle", serde_json::to_value(&config)?, elapsed);
    report.connects_per_s = Some(held.len() as f64 / elapsed.as_secs_f64());
    report.loss = failed as u64;
    report.server(before, after);
    if let (Some(before), Some(after)) = (before, after) {
        let growth = after.rss_kib.saturating_sub(before.rss_kib) as f64;
        report.server_rss_per_connection_kib = Some(growth / held.len().max(1) as f64);
    }
    report.note = Some(format!("{} connections held, {failed} failed", held.len()));
    tokio::time::sleep(Duration::from_secs_f64(config.hold_s)).await;
    drop(held);
    Ok(report)
}
