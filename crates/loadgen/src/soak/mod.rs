//! `soak`: a steady mix for a long time against one or more hubs, every event checked.
//!
//! Subscribers come and go at a fixed rate (WebSocket, SSE, long-poll; exact topics and patterns, with and without
//! a scope filter); most resume where they were (`since`, `Last-Event-ID`, `after`), a few stop reading until the
//! hub cuts them as slow consumers. Publishers write over HTTP (single events and batches, each event with an
//! idempotency key, retried across hubs while the log is unavailable) and through the publisher crate (single and
//! batched, inside a transaction on PostgreSQL). The [`truth`] checks every event: in order, once per connection,
//! nothing missing that the log holds, or a `reset`. Every `interval` one JSON line says how the run goes:
//! connections, deliveries, latency, each hub's RSS, file descriptors and CPU, violations so far.

pub mod clients;
pub mod truth;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use publisher::events::CustomEvent;
use publisher::{NatsSink, PgSink, Publisher, RedisSink};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::client::{SOURCE_ADDRESSES, now_ns};
use crate::measure::{self, Latency, MachineShare, MachineTicks};
use truth::{Filter, Kind, Truth, Verdict};

/// Topics `soak.t0` … `soak.t7`; projects `p0` … `p3`.
pub const TOPICS: u8 = 8;
pub const PROJECTS: u8 = 4;

/// The process ids of the hubs, by slot; a storm replaces them as it restarts hubs.
pub type HubPids = Arc<Mutex<Vec<Option<u32>>>>;

#[derive(Debug, Clone, Serialize)]
pub struct SoakConfig {
    pub hubs: Vec<String>,
    #[serde(skip)]
    pub hub_pids: HubPids,
    #[serde(with = "humantime_serde_secs")]
    pub duration: Duration,
    /// Subscribers kept connected.
    pub connections: usize,
    /// New connections per second (each subscriber lives `connections / churn` seconds on average).
    pub churn: f64,
    /// Events published per second, all publishers together.
    pub rate: f64,
    pub payload_bytes: usize,
    /// The publisher crate writes into this PostgreSQL (the hubs' database).
    #[serde(skip)]
    pub database_url: Option<String>,
    /// The publisher crate writes into this Redis log: URL and key prefix.
    #[serde(skip)]
    pub redis: Option<(String, String)>,
    /// The publisher crate writes into this NATS stream: server URLs and stream name.
    #[serde(skip)]
    pub nats: Option<(String, String)>,
    /// A line every this long.
    #[serde(with = "humantime_serde_secs")]
    pub interval: Duration,
    /// The lines are appended to this file too.
    #[serde(skip)]
    pub out: Option<PathBuf>,
    /// The hubs' log loses nothing during the run (PostgreSQL within its retention): every `reset` is a
    /// violation.
    pub lossless: bool,
    /// Share of WebSocket subscribers that stop reading once per connection.
    pub slow_share: f64,
    /// How long they stop: longer than the hubs' outbound bound can hold.
    #[serde(with = "humantime_serde_secs")]
    pub slow_stall: Duration,
    pub seed: u64,
}

/// Durations as seconds in the JSON lines.
mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// Counters shared by every client and publisher.
#[derive(Debug, Default)]
pub struct Stats {
    pub connects: AtomicU64,
    pub resumes: AtomicU64,
    pub drops: AtomicU64,
    pub deliveries: AtomicU64,
    pub resets: AtomicU64,
    pub slow_cuts: AtomicU64,
    pub published: AtomicU64,
    pub publish_retries: AtomicU64,
    /// Publishes given up (HTTP after a minute of retries) or whose outcome is unknown (a crate transaction
    /// whose connection failed).
    pub publish_failures: AtomicU64,
    pub open_ws: AtomicU64,
    pub open_sse: AtomicU64,
    pub open_poll: AtomicU64,
    /// Clients whose connection dropped and that are not subscribed again yet.
    pub reconnecting: AtomicU64,
}

impl Stats {
    pub fn open(&self, kind: Kind) -> &AtomicU64 {
        match kind {
            Kind::Ws => &self.open_ws,
            Kind::Sse => &self.open_sse,
            Kind::Poll => &self.open_poll,
        }
    }
}

/// What every task of a run shares.
pub struct Context {
    pub truth: Truth,
    pub hubs: Vec<String>,
    pub stats: Stats,
    /// Live deliveries' latency in µs since the last line.
    latency: Mutex<Histogram<u64>>,
    /// When subscribers and publishers stop.
    pub run_end: Instant,
    pub slow_stall: Duration,
    /// One HTTP client per source address, shared by the SSE and long-poll clients leaving from it (building a
    /// client loads the system's root certificates: once per connection, that was a fifth of the soak's CPU).
    http: Vec<reqwest::Client>,
}

impl Context {
    /// A run's shared state; the run ends `config.duration` from now.
    pub fn new(config: &SoakConfig) -> Arc<Self> {
        let hubs: Vec<String> = config.hubs.iter().map(|h| h.trim_end_matches('/').to_owned()).collect();
        Arc::new(Self {
            truth: Truth::new(hubs.len(), config.lossless),
            hubs,
            stats: Stats::default(),
            latency: Mutex::new(measure::histogram()),
            run_end: Instant::now() + config.duration,
            slow_stall: config.slow_stall,
            http: (0..SOURCE_ADDRESSES).map(clients::http_client).collect(),
        })
    }

    /// The HTTP client whose connections leave from source address `source`.
    pub fn http(&self, source: usize) -> &reqwest::Client {
        &self.http[source % self.http.len()]
    }

    pub fn stopping(&self) -> bool {
        Instant::now() >= self.run_end
    }

    pub fn record_latency(&self, ns: u64) {
        if let Ok(mut histogram) = self.latency.lock() {
            let _ = histogram.record((ns / 1000).max(1));
        }
    }

    /// The interval's latency percentiles and buckets; the histogram starts again.
    fn take_latency(&self) -> (Option<Latency>, Vec<[u64; 2]>) {
        let Ok(mut histogram) = self.latency.lock() else { return (None, Vec::new()) };
        let taken = if histogram.is_empty() {
            (None, Vec::new())
        } else {
            (Some(measure::latency(&histogram)), measure::buckets(&histogram))
        };
        histogram.reset();
        taken
    }
}

/// A hub's process as one line reports it.
#[derive(Debug, Clone, Serialize)]
pub struct HubSample {
    pub slot: usize,
    pub pid: u32,
    pub rss_kib: u64,
    pub fds: u64,
    pub cpu_s: f64,
}

fn sample_hubs(pids: &HubPids) -> Vec<HubSample> {
    let pids: Vec<Option<u32>> = pids.lock().map(|p| p.clone()).unwrap_or_default();
    pids.iter()
        .enumerate()
        .filter_map(|(slot, pid)| {
            let pid = (*pid)?;
            let process = measure::sample(&[pid])?;
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
            Some(HubSample { slot, pid, rss_kib: process.rss_kib, fds, cpu_s: process.cpu_s })
        })
        .collect()
}

/// One line of the run, every `interval`.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub minute: f64,
    pub connections: u64,
    pub ws: u64,
    pub sse: u64,
    pub poll: u64,
    pub connects_per_s: f64,
    pub deliveries_per_s: f64,
    pub published_per_s: f64,
    pub latency_ms: Option<Latency>,
    /// The interval's latencies as `[highest µs, count]` buckets 2 % wide (`measure::buckets`): the lines of a
    /// window add up to the percentiles of all its deliveries (`bench/soak_summary.py`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_buckets_us: Vec<[u64; 2]>,
    pub resets: u64,
    /// Connections that resumed a subscriber's earlier position (after a drop, a cut or the end of a lifetime).
    pub resumes: u64,
    pub slow_consumer_cuts: u64,
    pub drops: u64,
    pub reconnecting: u64,
    pub publish_retries: u64,
    pub publish_failures: u64,
    pub hubs: Vec<HubSample>,
    /// The load generator's own CPU seconds and RSS so far: its share of the machine, beside the hubs'.
    pub loadgen_cpu_s: f64,
    pub loadgen_rss_kib: u64,
    /// The machine's CPUs over the interval: a rise in every process's CPU per minute with `steal` up is the host,
    /// not the hubs.
    pub machine: Option<MachineShare>,
    pub violations: usize,
}

/// The last line of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub config: SoakConfig,
    pub elapsed_s: f64,
    pub connects: u64,
    pub deliveries: u64,
    pub published: u64,
    pub resets: u64,
    pub slow_consumer_cuts: u64,
    pub drops: u64,
    pub lines: Vec<Line>,
    pub verdict: Verdict,
}

impl Outcome {
    pub fn violations(&self) -> usize {
        self.verdict.violations.len()
    }

    pub fn summary(&self) -> String {
        format!(
            "soak in {:.0} s: {} connects, {} deliveries, {} published ({} acked, {} read back), {} resets, {} slow \
             consumers cut, {} drops, {} segments checked, {} violations",
            self.elapsed_s,
            self.connects,
            self.deliveries,
            self.published,
            self.verdict.acked,
            self.verdict.read_by_auditors,
            self.resets,
            self.slow_consumer_cuts,
            self.drops,
            self.verdict.verified_segments,
            self.violations()
        )
    }
}

/// Writes a JSON line to stdout and, when asked, to the run's file.
pub async fn emit(out: &Option<PathBuf>, line: &impl Serialize) {
    let Ok(text) = serde_json::to_string(line) else { return };
    println!("{text}");
    if let Some(path) = out
        && let Ok(mut file) = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await
    {
        let _ = file.write_all(format!("{text}\n").as_bytes()).await;
    }
}

/// Runs the soak; the verdict is in the outcome (a run with violations still returns `Ok`).
pub async fn run(config: SoakConfig) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!config.hubs.is_empty(), "no hub to soak");
    run_with(Context::new(&config), config).await
}

/// Runs the soak on a context made by [`Context::new`] (a storm watches it while it runs).
pub async fn run_with(ctx: Arc<Context>, config: SoakConfig) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let run_id = format!("{:x}", rng.random::<u64>());

    let audit_stop = Arc::new(AtomicBool::new(false));
    let auditors: Vec<_> =
        (0..ctx.hubs.len()).map(|a| tokio::spawn(clients::audit(ctx.clone(), a, audit_stop.clone()))).collect();
    let verifier = {
        let ctx = ctx.clone();
        let stop = audit_stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                ctx.truth.verify(false);
            }
        })
    };

    let publishers = start_publishers(&ctx, &config, &run_id, &mut rng).await?;
    let population = tokio::spawn(keep_population(ctx.clone(), config.clone(), SmallRng::seed_from_u64(rng.random())));
    let lines = report_lines(&ctx, &config).await;

    // The run is over: subscribers have closed their segments; wait for the auditors to read what was acked.
    let _ = population.await;
    for publisher in publishers {
        let _ = publisher.await;
    }
    truth::drain(&ctx.truth, Duration::from_secs(30)).await;
    audit_stop.store(true, Ordering::Relaxed);
    for auditor in auditors {
        let _ = auditor.await;
    }
    let _ = verifier.await;
    let verdict = ctx.truth.verdict();
    let stats = &ctx.stats;
    Ok(Outcome {
        config,
        elapsed_s: started.elapsed().as_secs_f64(),
        connects: stats.connects.load(Ordering::Relaxed),
        deliveries: stats.deliveries.load(Ordering::Relaxed),
        published: stats.published.load(Ordering::Relaxed),
        resets: stats.resets.load(Ordering::Relaxed),
        slow_consumer_cuts: stats.slow_cuts.load(Ordering::Relaxed),
        drops: stats.drops.load(Ordering::Relaxed),
        lines,
        verdict,
    })
}

/// Prints a line every `interval` until the run ends; returns them.
async fn report_lines(ctx: &Arc<Context>, config: &SoakConfig) -> Vec<Line> {
    let stats = &ctx.stats;
    let mut lines = Vec::new();
    let mut last = (0, 0, 0);
    let mut last_at = Instant::now();
    let mut last_ticks = MachineTicks::read();
    let started = last_at;
    while !ctx.stopping() {
        tokio::time::sleep_until((last_at + config.interval).min(ctx.run_end)).await;
        let now = Instant::now();
        let seconds = (now - last_at).as_secs_f64().max(0.001);
        let counts = (
            stats.connects.load(Ordering::Relaxed),
            stats.deliveries.load(Ordering::Relaxed),
            stats.published.load(Ordering::Relaxed),
        );
        let own = measure::sample(&[std::process::id()]);
        let ticks = MachineTicks::read();
        let (ws, sse, poll) = (
            stats.open_ws.load(Ordering::Relaxed),
            stats.open_sse.load(Ordering::Relaxed),
            stats.open_poll.load(Ordering::Relaxed),
        );
        let (latency_ms, latency_buckets_us) = ctx.take_latency();
        let line = Line {
            minute: (now - started).as_secs_f64() / 60.0,
            connections: ws + sse + poll,
            ws,
            sse,
            poll,
            connects_per_s: (counts.0 - last.0) as f64 / seconds,
            deliveries_per_s: (counts.1 - last.1) as f64 / seconds,
            published_per_s: (counts.2 - last.2) as f64 / seconds,
            latency_ms,
            latency_buckets_us,
            resets: stats.resets.load(Ordering::Relaxed),
            resumes: stats.resumes.load(Ordering::Relaxed),
            slow_consumer_cuts: stats.slow_cuts.load(Ordering::Relaxed),
            drops: stats.drops.load(Ordering::Relaxed),
            reconnecting: stats.reconnecting.load(Ordering::Relaxed),
            publish_retries: stats.publish_retries.load(Ordering::Relaxed),
            publish_failures: stats.publish_failures.load(Ordering::Relaxed),
            hubs: sample_hubs(&config.hub_pids),
            loadgen_cpu_s: own.map_or(0.0, |o| o.cpu_s),
            loadgen_rss_kib: own.map_or(0, |o| o.rss_kib),
            machine: ticks.zip(last_ticks).map(|(now, then)| now.since(&then)),
            violations: ctx.truth.violations(),
        };
        emit(&config.out, &line).await;
        lines.push(line);
        last = counts;
        last_at = now;
        last_ticks = ticks;
    }
    lines
}

/// Keeps `connections` subscribers alive, replacing each that ends; lifetimes average `connections / churn` s.
/// The first ones are spread over the first mean lifetime, so the churn is steady from the start.
async fn keep_population(ctx: Arc<Context>, config: SoakConfig, mut rng: SmallRng) {
    let mean_life = config.connections as f64 / config.churn.max(0.001);
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_client = 0u64;
    let ramp = Duration::from_secs_f64(mean_life.min(config.duration.as_secs_f64() / 4.0).min(10.0));
    let ramp_start = Instant::now();
    while !ctx.stopping() {
        let target = if ramp.is_zero() {
            config.connections
        } else {
            let share = (ramp_start.elapsed().as_secs_f64() / ramp.as_secs_f64()).min(1.0);
            (config.connections as f64 * share).ceil() as usize
        };
        while tasks.len() < target {
            let plan = plan(next_client, &config, &mut rng);
            next_client += 1;
            // Exponential lifetimes: connections end at a steady rate, not in waves.
            let life = -mean_life * (1.0 - rng.random::<f64>()).ln();
            let client_rng = SmallRng::seed_from_u64(rng.random());
            tasks.spawn(clients::run(ctx.clone(), plan, Duration::from_secs_f64(life.min(3600.0)), client_rng));
        }
        tokio::select! {
            _ = tasks.join_next(), if !tasks.is_empty() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// A new subscriber: 60 % WebSocket, 25 % SSE, 15 % long-poll; half on one topic of one project, the rest on a
/// topic, a project's patterns, or everything; `slow_share` of the WebSocket ones slow consumers.
fn plan(client: u64, config: &SoakConfig, rng: &mut SmallRng) -> clients::Plan {
    let kind = match rng.random_range(0..100) {
        0..60 => Kind::Ws,
        60..85 => Kind::Sse,
        _ => Kind::Poll,
    };
    let topic = Some(rng.random_range(0..TOPICS));
    let project = Some(rng.random_range(0..PROJECTS));
    let filter = match rng.random_range(0..100) {
        0..50 => Filter { topic, project },
        50..75 => Filter { topic, project: None },
        75..95 => Filter { topic: None, project },
        _ => Filter::ALL,
    };
    // A slow consumer takes everything, so that what it does not read passes the hubs' bound soon.
    let slow = kind == Kind::Ws && rng.random_bool(config.slow_share.clamp(0.0, 1.0));
    clients::Plan {
        client,
        kind,
        filter: if slow { Filter::ALL } else { filter },
        slow,
        by_frame: kind == Kind::Ws && rng.random_bool(0.3),
    }
}

/// The publisher crate's sink for this run's backend.
enum CrateSink {
    Postgres(Publisher<PgSink>, PgPool),
    Redis(Box<Publisher<RedisSink>>),
    Nats(Box<Publisher<NatsSink>>),
}

/// Starts the publishers: HTTP single events and batches, and the crate (single and batched) when the run names
/// the hubs' database or Redis. Each stops at the end of the run.
async fn start_publishers(
    ctx: &Arc<Context>,
    config: &SoakConfig,
    run_id: &str,
    rng: &mut SmallRng,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let sink = match (&config.database_url, &config.redis, &config.nats) {
        (Some(url), _, _) => {
            let pool = PgPoolOptions::new().max_connections(3).connect(url).await?;
            Some(CrateSink::Postgres(Publisher::new(PgSink::new(pool.clone())), pool))
        }
        (None, Some((url, prefix)), _) => {
            Some(CrateSink::Redis(Box::new(Publisher::new(RedisSink::connect(url, prefix).await?))))
        }
        (None, None, Some((urls, stream))) => {
            Some(CrateSink::Nats(Box::new(Publisher::new(NatsSink::connect(urls, stream, None).await?))))
        }
        (None, None, None) => None,
    }
    .map(Arc::new);
    let next_i = Arc::new(AtomicU64::new(1));
    // (events per request, share of the rate, through the crate)
    let mut kinds = vec![(1, 0.4, false), (10, 0.3, false)];
    if sink.is_some() {
        kinds.extend([(1, 0.15, true), (10, 0.15, true)]);
    } else {
        kinds = vec![(1, 0.55, false), (10, 0.45, false)];
    }
    let mut tasks = Vec::new();
    for (batch, share, through_crate) in kinds {
        // Two tasks per kind, so one slow request does not stop the whole kind.
        for _ in 0..2 {
            let per_s = (config.rate * share / 2.0 / batch as f64).max(0.01);
            let (ctx, sink, next_i) = (ctx.clone(), sink.clone(), next_i.clone());
            let (payload_bytes, run_id) = (config.payload_bytes, run_id.to_owned());
            let mut rng = SmallRng::seed_from_u64(rng.random());
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                // Publishes overlap (a service publishes as its requests come, not one after the other), up to
                // this many in flight, so a slow answer does not lower the rate.
                let in_flight = Arc::new(tokio::sync::Semaphore::new(32));
                let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s));
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut publishes = tokio::task::JoinSet::new();
                while !ctx.stopping() {
                    ticks.tick().await;
                    let size = if batch == 1 { 1 } else { rng.random_range(2..=2 * batch) };
                    let events: Vec<Planned> = (0..size)
                        .map(|_| Planned {
                            i: next_i.fetch_add(1, Ordering::Relaxed),
                            topic: rng.random_range(0..TOPICS),
                            project: rng.random_range(0..PROJECTS),
                        })
                        .collect();
                    let Ok(permit) = in_flight.clone().acquire_owned().await else { break };
                    let (ctx, sink, client, run_id) = (ctx.clone(), sink.clone(), client.clone(), run_id.clone());
                    let mut publish_rng = SmallRng::seed_from_u64(rng.random());
                    publishes.spawn(async move {
                        match (&sink, through_crate) {
                            (Some(sink), true) => publish_crate(&ctx, sink, &events, payload_bytes).await,
                            _ => publish_http(&ctx, &client, &mut publish_rng, &events, payload_bytes, &run_id).await,
                        }
                        drop(permit);
                    });
                    while publishes.try_join_next().is_some() {}
                }
                while publishes.join_next().await.is_some() {}
            }));
        }
    }
    Ok(tasks)
}

/// An event to publish: its index (in the payload) and routing.
struct Planned {
    i: u64,
    topic: u8,
    project: u8,
}

impl Planned {
    fn payload(&self, size: usize) -> serde_json::Value {
        json!({"b": "x".repeat(size.saturating_sub(48)), "i": self.i, "t": now_ns()})
    }
}

/// Publishes over HTTP; on a 5xx, a 429 or a failed connection, retries on the next hub for up to a minute
/// with the same idempotency keys, so that a retry never doubles an event.
async fn publish_http(
    ctx: &Context,
    client: &reqwest::Client,
    rng: &mut SmallRng,
    events: &[Planned],
    payload_bytes: usize,
    run_id: &str,
) {
    let body: Vec<_> = events
        .iter()
        .map(|e| {
            json!({"topic": format!("soak.t{}", e.topic), "scope": {"project_id": format!("p{}", e.project)},
                   "idempotency_key": format!("soak-{run_id}-{}", e.i), "payload": e.payload(payload_bytes)})
        })
        .collect();
    let body = if body.len() == 1 { body[0].clone() } else { json!(body) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut hub = rng.random_range(0..ctx.hubs.len());
    loop {
        let sent = client
            .post(format!("{}/api/publish", ctx.hubs[hub]))
            .json(&body)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                let ids = response.json::<serde_json::Value>().await.ok().and_then(|v| {
                    v["ids"].as_array().map(|ids| ids.iter().filter_map(serde_json::Value::as_u64).collect::<Vec<_>>())
                });
                match ids {
                    Some(ids) if ids.len() == events.len() => {
                        for (event, id) in events.iter().zip(ids) {
                            ctx.truth.acked(event.i, Some(id));
                        }
                        ctx.stats.published.fetch_add(events.len() as u64, Ordering::Relaxed);
                    }
                    other => ctx.truth.violation(format!("a publish answer without its ids: {other:?}"), None, vec![]),
                }
                return;
            }
            Ok(response) if response.status().is_server_error() || response.status() == 429 => {}
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                ctx.truth.violation(format!("publish answered {status}: {text}"), None, vec![]);
                return;
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            ctx.stats.publish_failures.fetch_add(events.len() as u64, Ordering::Relaxed);
            return;
        }
        ctx.stats.publish_retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        hub = (hub + 1) % ctx.hubs.len();
    }
}

/// Publishes through the crate: on PostgreSQL inside a transaction of its own (the event exists if and only if
/// it commits), on Redis and NATS straight into the log. A failure is not retried: its outcome is unknown, and the
/// event, if it was stored after all, must still be delivered exactly like any other.
async fn publish_crate(ctx: &Context, sink: &CrateSink, events: &[Planned], payload_bytes: usize) {
    let typed: Vec<CustomEvent> = events
        .iter()
        .filter_map(|e| {
            let topic = format!("soak.t{}", e.topic);
            let project = format!("p{}", e.project);
            CustomEvent::new(&topic, [("project_id", project.as_str())], &e.payload(payload_bytes)).ok()
        })
        .collect();
    let stored = match sink {
        CrateSink::Postgres(publisher, pool) => {
            let published = async {
                let mut tx = pool.begin().await?;
                publisher.publish_batch_in(&mut tx, typed).await?;
                tx.commit().await?;
                publisher.sink().wake();
                anyhow::Ok(None)
            };
            published.await
        }
        CrateSink::Redis(publisher) => publisher.publish_batch(typed).await.map(|p| p.ids).map_err(Into::into),
        CrateSink::Nats(publisher) => publisher.publish_batch(typed).await.map(|p| p.ids).map_err(Into::into),
    };
    match stored {
        Ok(ids) => {
            let ids: Vec<Option<u64>> = match ids {
                Some(ids) => ids.iter().map(|id| Some(id.get())).collect(),
                None => vec![None; events.len()],
            };
            for (event, id) in events.iter().zip(ids) {
                ctx.truth.acked(event.i, id);
            }
            ctx.stats.published.fetch_add(events.len() as u64, Ordering::Relaxed);
        }
        Err(_) => {
            ctx.stats.publish_failures.fetch_add(events.len() as u64, Ordering::Relaxed);
        }
    }
}
