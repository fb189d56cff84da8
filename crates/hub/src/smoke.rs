//! `hub smoke`: the check an operator runs after a deploy (and `helm test` runs): the hub is ready and healthy, and
//! a probe event published over HTTP comes back over WebSocket, SSE and long-poll. Prints the latency of each step
//! and fails with the step and the reason.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// What to check and with what.
#[derive(Debug, Clone, clap::Args)]
pub struct SmokeArgs {
    /// The hub's base URL (`http://realtime-hub:8080`).
    #[arg(long)]
    pub url: String,
    /// A token that may publish to and read the probe topic (none for a hub in development mode).
    #[arg(long, env = "HUB_SMOKE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The topic the probe event is published on.
    #[arg(long, default_value = "hub.smoke")]
    pub topic: String,
    /// How long each step may take.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// One step's outcome: its name, how long it took, and what it found worth saying.
pub struct Step {
    pub name: &'static str,
    pub took: Duration,
    pub detail: String,
}

/// Runs every step in order; the first failure ends the check with `"<step>: <reason>"`.
pub async fn run(args: &SmokeArgs) -> anyhow::Result<Vec<Step>> {
    let base = args.url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder().timeout(args.timeout).build()?;
    let mut steps = Vec::new();
    let mut step = |name: &'static str, started: Instant, detail: String| {
        steps.push(Step { name, took: started.elapsed(), detail })
    };

    let started = Instant::now();
    let ready = http.get(format!("{base}/readyz")).send().await.context("readyz: the hub does not answer")?;
    if ready.status() != 200 {
        bail!("readyz: answered {} ({})", ready.status(), ready.text().await.unwrap_or_default());
    }
    step("readyz", started, String::new());

    let started = Instant::now();
    let health: Value = http.get(format!("{base}/api/health/pubsub")).send().await?.json().await?;
    if health["healthy"] != true {
        bail!("health: the hub reports itself unhealthy: {health}");
    }
    step("health", started, log_summary(&health));

    let query = format!("topics={}", args.topic);
    let ws_url = format!("{}/ws?{query}", base.replacen("http", "ws", 1));
    let mut request = ws_url.into_client_request()?;
    if let Some(token) = &args.token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    }
    let started = Instant::now();
    let (mut ws, _) = match tokio::time::timeout(args.timeout, tokio_tungstenite::connect_async(request)).await {
        Err(_) => bail!("websocket: no answer within {:?}", args.timeout),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            bail!(
                "websocket: the hub refused the upgrade with {}{}",
                response.status(),
                refusal_hint(response.status().as_u16())
            )
        }
        Ok(connected) => connected.context("websocket: cannot connect")?,
    };
    let subscribed = next_of(&mut ws, "subscribed", args.timeout).await.context("websocket")?;
    step("websocket subscribe", started, String::new());

    let mut sse_request = http.get(format!("{base}/sse?{query}&since={}", subscribed["head"]));
    if let Some(token) = &args.token {
        sse_request = sse_request.bearer_auth(token);
    }
    let started = Instant::now();
    let sse = sse_request.send().await.context("sse: cannot connect")?;
    if sse.status() != 200 {
        bail!("sse: answered {}{}", sse.status(), refusal_hint(sse.status().as_u16()));
    }
    step("sse subscribe", started, String::new());

    let probe = uuid::Uuid::new_v4().to_string();
    let mut publish =
        http.post(format!("{base}/api/publish")).json(&json!({"topic": args.topic, "payload": {"probe": probe}}));
    if let Some(token) = &args.token {
        publish = publish.bearer_auth(token);
    }
    let published_at = Instant::now();
    let answer = publish.send().await.context("publish: cannot connect")?;
    let status = answer.status().as_u16();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    if status != 200 {
        bail!("publish: answered {status}{}: {}", refusal_hint(status), body["error"]["message"]);
    }
    let id = body["ids"][0].as_u64().context("publish: the answer has no id")?;
    step("publish", published_at, String::new());

    let frame = next_of(&mut ws, "event", args.timeout).await.context("websocket delivery")?;
    if frame["id"] != id {
        bail!("websocket delivery: expected event {id}, got {frame}");
    }
    steps.push(Step { name: "websocket delivery", took: published_at.elapsed(), detail: String::new() });

    let mut body = sse.bytes_stream();
    let mut text = String::new();
    let needle = format!("id: {id}\n");
    let deadline = tokio::time::Instant::now() + args.timeout;
    while !text.contains(&needle) {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk.context("sse delivery")?)),
            Ok(None) => bail!("sse delivery: the stream ended before event {id}"),
            Err(_) => bail!("sse delivery: event {id} did not arrive within {:?}", args.timeout),
        }
    }
    steps.push(Step { name: "sse delivery", took: published_at.elapsed(), detail: String::new() });

    let started = Instant::now();
    let mut poll = http.get(format!("{base}/api/events?{query}&after={}&wait=5", id - 1));
    if let Some(token) = &args.token {
        poll = poll.bearer_auth(token);
    }
    let polled: Value = poll.send().await.context("long-poll")?.json().await.context("long-poll: not JSON")?;
    if polled["events"][0]["id"] != id {
        bail!("long-poll: expected event {id}, got {polled}");
    }
    steps.push(Step { name: "long-poll", took: started.elapsed(), detail: String::new() });
    let _ = ws.close(None).await;
    Ok(steps)
}

/// The log as the health answer describes it: the provider, and for a replicated stream its name, leader and
/// replicas (`provider nats, stream realtime, leader n2, 3 replicas`).
fn log_summary(health: &Value) -> String {
    let mut summary = format!("provider {}", health["provider"].as_str().unwrap_or("?"));
    let log = &health["log"];
    if let Some(stream) = log["stream"].as_str() {
        let leader = log["leader"].as_str().unwrap_or("none");
        summary.push_str(&format!(", stream {stream}, leader {leader}, {} replicas", log["replicas"]));
    }
    summary
}

fn refusal_hint(status: u16) -> &'static str {
    match status {
        401 => " (the token was refused: missing, expired, badly signed, or for another audience or issuer)",
        403 => " (the token does not grant the probe topic, or the origin is not allowed)",
        503 => " (the hub is not ready or shutting down)",
        _ => "",
    }
}

/// The next text frame of `kind`, skipping others; fails on close or after `wait`.
async fn next_of<S>(ws: &mut S, kind: &str, wait: Duration) -> anyhow::Result<Value>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("no {kind} frame within {wait:?}"),
            Ok(None) => bail!("the connection closed before a {kind} frame"),
            Ok(Some(message)) => {
                if let Message::Text(text) = message? {
                    let frame: Value = serde_json::from_str(text.as_str())?;
                    if frame["type"] == kind {
                        return Ok(frame);
                    }
                    if frame["type"] == "error" {
                        bail!("the hub answered an error: {frame}");
                    }
                }
            }
        }
    }
}
