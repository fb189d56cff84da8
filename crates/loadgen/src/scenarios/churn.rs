//! `churn`: connects per second; each connection waits for its welcome frame and closes.

use std::time::Instant;

use futures_util::stream::{self, StreamExt};

use crate::client::{connect, wait_for};
use crate::measure::{self, Report};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChurnConfig {
    pub hub: String,
    pub connections: usize,
    pub concurrency: usize,
    #[serde(skip)]
    pub hub_pids: Vec<u32>,
}

pub async fn run(config: ChurnConfig) -> anyhow::Result<Report> {
    let before = measure::sample(&config.hub_pids);
    let started = Instant::now();
    let hub = config.hub.clone();
    let results: Vec<anyhow::Result<()>> = stream::iter(0..config.connections)
        .map(|n| {
            let hub = hub.clone();
            async move {
                let mut ws = connect(&hub, "/ws", n).await?;
                wait_for(&mut ws, "welcome").await?;
                ws.close(None).await.ok();
                Ok(())
            }
        })
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let after = measure::sample(&config.hub_pids);
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let mut report = Report::new("churn", serde_json::to_value(&config)?, elapsed);
    report.connects_per_s = Some(ok as f64 / elapsed.as_secs_f64());
    report.loss = (results.len() - ok) as u64;
    report.server(before, after);
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        report.note = Some(format!("first failure: {e}"));
    }
    Ok(report)
}
