//! What removing a flooded topic policy costs: `events` run logs (in batches of 1,000) and one audit event per
//! 1,000, on each backend, then one retention run once the logs expired, timed — with topic policies (logs kept
//! 1 s, audit 1 h) and, beside it, with one global retention of 1 s (which removes the audit events too).
//!
//!   cargo run --release -p storage --example prune_flood -- [events] [postgres url] [redis url] [nats url]
//!
//! Prints one JSON line per backend and setting. PostgreSQL: a database `hub_prune_bench` is created afresh; NATS
//! (2.12 or later): a stream `hub_prune_bench` likewise, with policies only (one global retention is the stream's
//! own `max_age` there, which the server applies by itself).

use std::time::{Duration, Instant};

use protocol::{NewEvent, Scope, Topic};
use storage::{
    EventLog, LogQuery, MemoryLog, NatsLog, NatsSettings, PgLog, PgSettings, RedisLog, RedisSettings, Retention,
    TopicPolicies,
};

const POLICIES: &str =
    "[[policy]]\ntopics = [\"run.logs\"]\nretention = \"1s\"\n[[policy]]\ntopics = [\"audit.*\"]\nretention = \"1h\"";

fn event(topic: &str, n: usize) -> NewEvent {
    let payload = serde_json::json!({"line": format!("compiling crate {n} of the workspace"), "n": n});
    NewEvent::new(Topic::parse(topic).unwrap(), Scope::default(), payload.as_object().cloned().unwrap())
}

/// Fills `log`, waits for the logs to expire, and times one retention run.
async fn run(backend: &str, setting: &str, log: &dyn EventLog, events: usize) {
    let started = Instant::now();
    for batch in 0..events / 1000 {
        let mut events: Vec<NewEvent> = (0..999).map(|n| event("run.logs", batch * 1000 + n)).collect();
        events.push(event("audit.login", batch));
        log.append(events).await.expect("appended");
    }
    let filled = started.elapsed();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pruning = Instant::now();
    let removed: u64 = log.prune().await.expect("pruned").iter().sum();
    let took = pruning.elapsed();
    let audit = LogQuery::new(vec![protocol::TopicPattern::parse("audit.*").unwrap()], Default::default());
    let kept = log.read_after(0, &audit, 100_000).await.expect("read").events.len();
    println!(
        "{}",
        serde_json::json!({"backend": backend, "setting": setting, "events": events, "fill_s": filled.as_secs_f64(),
            "removed": removed, "prune_ms": took.as_secs_f64() * 1000.0,
            "us_per_removed": took.as_secs_f64() * 1e6 / removed.max(1) as f64, "audit_kept": kept})
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map_or(100_000, |n| n.parse().expect("a count of events"));
    let pg = args.next().unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".into());
    let redis = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let nats = args.next().unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let global = Retention { max_age: Duration::from_secs(1), max_events: events * 2 };
    let settings =
        [("policies", TopicPolicies::from_toml(POLICIES, global).unwrap()), ("global", TopicPolicies::single(global))];
    for (setting, policies) in &settings {
        run("memory", setting, &MemoryLog::with_policies(policies.clone()), events).await;
    }
    for (setting, policies) in &settings {
        let admin = sqlx::PgPool::connect(&format!("{pg}/postgres")).await.expect("PostgreSQL");
        sqlx::query("DROP DATABASE IF EXISTS hub_prune_bench WITH (FORCE)").execute(&admin).await.unwrap();
        sqlx::query("CREATE DATABASE hub_prune_bench").execute(&admin).await.unwrap();
        let settings = PgSettings {
            url: format!("{pg}/hub_prune_bench"),
            pool_size: 4,
            timeout: Duration::from_secs(30),
            inbox_poll: Duration::from_millis(100),
            policies: policies.clone(),
        };
        let log = PgLog::connect(settings).await.expect("the PostgreSQL log");
        // The sequencer takes its lock within a moment; appends wait for it.
        run("postgres", setting, &log, events).await;
    }
    for (setting, policies) in &settings {
        let prefix = format!("hub_prune_bench_{setting}");
        let mut connection =
            redis::Client::open(redis.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{{{prefix}}}:*")).query_async(&mut connection).await.unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut connection).await.unwrap();
        }
        let settings = RedisSettings {
            url: redis.clone(),
            prefix: prefix.clone(),
            retention: global,
            policies: Some(policies.clone()),
        };
        run("redis", setting, &RedisLog::connect(settings).await.expect("the Redis log"), events).await;
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{{{prefix}}}:*")).query_async(&mut connection).await.unwrap();
        let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut connection).await.unwrap();
    }
    let client = async_nats::connect(nats.as_str()).await.expect("NATS");
    let js = async_nats::jetstream::new(client);
    for stream in ["hub_prune_bench", "hub_prune_bench-policies"] {
        let _ = js.delete_stream(stream).await;
    }
    let settings = NatsSettings {
        urls: nats.clone(),
        creds: None,
        stream: "hub_prune_bench".into(),
        replicas: 1,
        retention: global,
        keeps_stream: true,
        policies: Some(settings[0].1.clone()),
    };
    run("nats", "policies", &NatsLog::connect(settings).await.expect("the NATS log"), events).await;
    for stream in ["hub_prune_bench", "hub_prune_bench-policies"] {
        let _ = js.delete_stream(stream).await;
    }
}
