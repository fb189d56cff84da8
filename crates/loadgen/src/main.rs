//! `loadgen`: drives a running hub (or several) and prints, per scenario, a JSON line and a human summary.
//!
//! ```sh
//! loadgen --hub http://127.0.0.1:8080 --hub-pid $(pgrep -f target/release/hub) fanout --subscribers 1000 \
//!     --events 2000 --rate 500
//! ```

use std::time::Duration;

use clap::{Parser, Subcommand};
use loadgen::client::{Peer, Transport};
use loadgen::scenarios::catchup::CatchupConfig;
use loadgen::scenarios::churn::ChurnConfig;
use loadgen::scenarios::fanout::FanoutConfig;
use loadgen::scenarios::idle::{IdleConfig, SubscribeBy};
use loadgen::scenarios::publish::{PublishConfig, Via};
use loadgen::soak::SoakConfig;
use loadgen::storm::{Backend, StormConfig};
use loadgen::{Report, scenarios, soak, storm};

/// mimalloc, as the hub uses: the soak's load generator allocates for every frame it checks, and on the system
/// allocator that was a measurable part of the CPU it takes from the hubs it measures (docs/RELIABILITY.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator for the realtime hub")]
struct Cli {
    /// The hub (the first one, for cluster).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    hub: String,
    /// The hub's process id, to report its CPU time and memory; several, comma-separated, are summed (Nchan's
    /// workers).
    #[arg(long, value_delimiter = ',')]
    hub_pid: Vec<u32>,
    /// What `--hub` is: the hub, or Nchan (fanout and idle only).
    #[arg(long, value_enum, default_value = "hub")]
    peer: Peer,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// N subscribers, M events at R events/s.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(long, default_value_t = 2000)]
        events: u64,
        #[arg(long, default_value_t = 500)]
        rate: u64,
        #[arg(long, default_value_t = 1)]
        topics: u64,
        /// Filter subscribers by this many projects (0: no filter).
        #[arg(long, default_value_t = 0)]
        projects: u64,
        #[arg(long, default_value_t = 100)]
        payload_bytes: usize,
        #[arg(long, default_value_t = 5)]
        batch: u64,
        /// Concurrent publishing connections.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// How subscribers connect.
        #[arg(long, value_enum, default_value_t = Transport::Ws)]
        transport: Transport,
    },
    /// Publish on --hub, subscribe on --other-hub (both on one PostgreSQL).
    Cluster {
        #[arg(long)]
        other_hub: String,
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        #[arg(long, default_value_t = 5000)]
        events: u64,
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        #[arg(long, default_value_t = 1)]
        batch: u64,
        /// Give every event an idempotency key, so that a publish answered 503 (a NATS leader election, a database
        /// failover) can be retried without doubling it: measures the pause a fault costs subscribers.
        #[arg(long)]
        idempotent: bool,
    },
    /// C idle connections; memory per connection.
    Idle {
        #[arg(long, default_value_t = 20_000)]
        connections: usize,
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        /// Keep the connections open this long after measuring.
        #[arg(long, default_value_t = 0.0)]
        hold_s: f64,
        /// Subscribe by query string or by a subscribe frame.
        #[arg(long, value_enum, default_value = "query")]
        by: SubscribeBy,
    },
    /// K concurrent publishers.
    Publish {
        #[arg(long, value_enum, default_value = "http")]
        via: Via,
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long, default_value_t = 16)]
        publishers: usize,
        #[arg(long, default_value_t = 1)]
        batch: usize,
        #[arg(long, default_value_t = 5.0)]
        duration_s: f64,
        /// Each publish in a transaction of its own (`BEGIN`, the insert, `COMMIT`): the publisher crate's
        /// `publish_batch_in`, or the plain `INSERT`s (`--via crate`, `insert`, `insert-log`).
        #[arg(long)]
        in_transaction: bool,
        /// Events per second, all publishers together (0: as fast as the hub answers).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    /// A client resuming K events behind.
    Catchup {
        #[arg(long, default_value_t = 100_000)]
        events: u64,
    },
    /// Connects per second.
    Churn {
        #[arg(long, default_value_t = 20_000)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// A steady mix for a long time against `--hub` and `--other-hubs`, every event checked; a JSON line every
    /// `--interval`. Exits 1 on any violation.
    Soak {
        /// More hubs of the same cluster (comma-separated).
        #[arg(long, value_delimiter = ',')]
        other_hubs: Vec<String>,
        /// The hubs' PostgreSQL: the publisher crate writes into it too.
        #[arg(long)]
        database_url: Option<String>,
        /// The hubs' Redis (with --redis-prefix): the publisher crate writes into it too.
        #[arg(long)]
        redis_url: Option<String>,
        #[arg(long, default_value = "realtime")]
        redis_prefix: String,
        /// The hubs' NATS servers (comma-separated, with --nats-stream): the publisher crate writes into the
        /// stream too.
        #[arg(long)]
        nats_url: Option<String>,
        #[arg(long, default_value = "realtime")]
        nats_stream: String,
        /// The hubs' log loses nothing during the run (PostgreSQL within its retention): count every `reset` as
        /// a violation.
        #[arg(long)]
        lossless: bool,
        #[command(flatten)]
        mix: Mix,
    },
    /// The soak against hubs (`--hub-bin`) and a log server of its own, with faults on a seeded schedule.
    /// Exits 1 on any violation or when a subscriber was not live again within 5 s of the last fault.
    Storm {
        #[arg(long, default_value = "target/release/hub")]
        hub_bin: std::path::PathBuf,
        #[arg(long, value_enum, default_value = "postgres")]
        backend: Backend,
        #[arg(long, default_value_t = 2)]
        hubs: usize,
        /// The mean time between faults.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        fault_every: Duration,
        /// No fault starts in the run's last this long.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        quiet: Duration,
        #[arg(long, default_value_t = 65_536)]
        max_outbound_bytes: usize,
        #[command(flatten)]
        mix: Mix,
    },
}

/// What the soak does, for `soak` and `storm`.
#[derive(clap::Args)]
struct Mix {
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Subscribers kept connected.
    #[arg(long, default_value_t = 5000)]
    connections: usize,
    /// New connections per second.
    #[arg(long, default_value_t = 200.0)]
    churn: f64,
    /// Events per second, all publishers together.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    #[arg(long, default_value_t = 300)]
    payload_bytes: usize,
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Append the JSON lines to this file too.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Share of WebSocket subscribers that stop reading once per connection.
    #[arg(long, default_value_t = 0.01)]
    slow_share: f64,
    /// How long they stop reading (past the hubs' bound at the default rate and `HUB_MAX_OUTBOUND_BYTES` and
    /// `HUB_SOCKET_SEND_BUFFER` of 64 KiB; under the 50 s a silent WebSocket is given).
    #[arg(long, default_value = "40s", value_parser = humantime::parse_duration)]
    slow_stall: Duration,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl Mix {
    fn soak(self, hubs: Vec<String>, hub_pids: Vec<u32>) -> SoakConfig {
        SoakConfig {
            hubs,
            hub_pids: std::sync::Arc::new(std::sync::Mutex::new(hub_pids.into_iter().map(Some).collect())),
            duration: self.duration,
            connections: self.connections,
            churn: self.churn,
            rate: self.rate,
            payload_bytes: self.payload_bytes,
            database_url: None,
            redis: None,
            nats: None,
            interval: self.interval,
            out: self.out,
            lossless: false,
            slow_share: self.slow_share,
            slow_stall: self.slow_stall,
            seed: self.seed,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    loadgen::raise_file_limit();
    let pids = cli.hub_pid;
    let report: Report = match cli.scenario {
        Scenario::Soak { other_hubs, database_url, redis_url, redis_prefix, nats_url, nats_stream, lossless, mix } => {
            let mut hubs = vec![cli.hub];
            hubs.extend(other_hubs);
            let mut config = mix.soak(hubs, pids);
            config.database_url = database_url;
            config.redis = redis_url.map(|url| (url, redis_prefix));
            config.nats = nats_url.map(|url| (url, nats_stream));
            config.lossless = lossless;
            let out = config.out.clone();
            let outcome = soak::run(config).await?;
            soak::emit(&out, &outcome).await;
            eprintln!("{}", outcome.summary());
            std::process::exit(if outcome.violations() == 0 { 0 } else { 1 });
        }
        Scenario::Storm { hub_bin, backend, hubs, fault_every, quiet, max_outbound_bytes, mix } => {
            let seed = mix.seed;
            let config = StormConfig {
                hub_bin,
                backend,
                hubs,
                seed,
                mean_gap: fault_every,
                quiet,
                max_outbound_bytes,
                soak: mix.soak(Vec::new(), Vec::new()),
            };
            let out = config.soak.out.clone();
            let outcome = storm::run(config).await?;
            soak::emit(&out, &outcome).await;
            eprintln!("{}", outcome.summary());
            std::process::exit(if outcome.passed() { 0 } else { 1 });
        }
        Scenario::Fanout {
            subscribers,
            events,
            rate,
            topics,
            projects,
            payload_bytes,
            batch,
            publishers,
            transport,
        } => {
            scenarios::fanout::run(FanoutConfig {
                peer: cli.peer,
                transport,
                subscribe_hub: cli.hub.clone(),
                publish_hub: cli.hub,
                subscribers,
                events,
                rate,
                topics,
                projects,
                payload_bytes,
                batch,
                publishers,
                idempotent: false,
                hub_pids: pids.clone(),
                drain: Duration::from_secs(5),
            })
            .await?
        }
        Scenario::Cluster { other_hub, subscribers, events, rate, batch, idempotent } => {
            let mut report = scenarios::fanout::run(FanoutConfig {
                peer: Peer::Hub,
                transport: Transport::Ws,
                subscribe_hub: other_hub,
                publish_hub: cli.hub,
                subscribers,
                events,
                rate,
                topics: 1,
                projects: 0,
                payload_bytes: 100,
                batch,
                publishers: 1,
                idempotent,
                hub_pids: pids.clone(),
                drain: Duration::from_secs(5),
            })
            .await?;
            report.scenario = "cluster".into();
            report
        }
        Scenario::Idle { connections, concurrency, hold_s, by } => {
            scenarios::idle::run(IdleConfig {
                peer: cli.peer,
                hub: cli.hub,
                by,
                connections,
                concurrency,
                hold_s,
                hub_pids: pids.clone(),
            })
            .await?
        }
        Scenario::Publish { via, database_url, publishers, batch, duration_s, in_transaction, rate } => {
            scenarios::publish::run(PublishConfig {
                hub: cli.hub,
                database_url,
                via,
                publishers,
                batch,
                duration_s,
                in_transaction,
                rate,
                payload_bytes: 100,
                hub_pids: pids.clone(),
            })
            .await?
        }
        Scenario::Catchup { events } => {
            scenarios::catchup::run(CatchupConfig { hub: cli.hub, events, payload_bytes: 100, hub_pids: pids.clone() })
                .await?
        }
        Scenario::Churn { connections, concurrency } => {
            scenarios::churn::run(ChurnConfig { hub: cli.hub, connections, concurrency, hub_pids: pids.clone() })
                .await?
        }
    };
    println!("{}", serde_json::to_string(&report)?);
    eprintln!("{}", report.summary());
    Ok(())
}
