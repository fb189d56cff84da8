//! `publish`: K concurrent publishers for a fixed time, through HTTP (single events or batches), through the
//! publisher crate straight into PostgreSQL, or as plain `INSERT`s of the same rows (the physical baseline).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use publisher::events::CustomEvent;
use publisher::{PgSink, Publisher};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;

use crate::client::payload;
use crate::measure::{self, Report};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// `POST /api/publish` on the hub.
    Http,
    /// The publisher crate's PostgreSQL sink (the inbox), with its own pool.
    Crate,
    /// Plain `INSERT` of the same rows into a table of the inbox's shape (a primary key, no other index): the
    /// baseline.
    Insert,
    /// Plain `INSERT` of the same rows into a table of the log's shape (`realtime_events`: its generated columns
    /// and indexes): what storing the rows costs wherever they are stored.
    InsertLog,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishConfig {
    pub hub: String,
    #[serde(skip)]
    pub database_url: Option<String>,
    pub via: Via,
    pub publishers: usize,
    /// Events per request or statement.
    pub batch: usize,
    pub duration_s: f64,
    /// Each database publish in a transaction of its own.
    pub in_transaction: bool,
    /// Events per second, all publishers together; 0 publishes as fast as the hub answers.
    pub rate: f64,
    pub payload_bytes: usize,
    #[serde(skip)]
    pub hub_pids: Vec<u32>,
}

const BASELINE_TABLE: &str = "CREATE TABLE IF NOT EXISTS loadgen_plain_events (\
    id bigserial PRIMARY KEY, topic text NOT NULL, scope jsonb NOT NULL, stream_key text, seq bigint, \
    payload jsonb NOT NULL, correlation_id text, queued_at timestamptz NOT NULL DEFAULT now())";

/// A table like `realtime_events`, ids from a sequence of its own.
const BASELINE_LOG_TABLE: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS loadgen_log_events (LIKE realtime_events INCLUDING ALL)",
    "CREATE SEQUENCE IF NOT EXISTS loadgen_log_events_id",
    "ALTER TABLE loadgen_log_events ALTER COLUMN id SET DEFAULT nextval('loadgen_log_events_id')",
    "ALTER TABLE loadgen_log_events ALTER COLUMN created_at SET DEFAULT now()",
];

pub async fn run(config: PublishConfig) -> anyhow::Result<Report> {
    let published = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(config.duration_s);
    let pool = match config.via {
        Via::Http => None,
        Via::Crate | Via::Insert | Via::InsertLog => {
            let url = config.database_url.as_deref().ok_or_else(|| anyhow::anyhow!("--database-url is needed"))?;
            let pool = PgPoolOptions::new().max_connections(config.publishers as u32).connect(url).await?;
            sqlx::query(BASELINE_TABLE).execute(&pool).await?;
            if config.via == Via::InsertLog {
                for statement in BASELINE_LOG_TABLE {
                    sqlx::query(statement).execute(&pool).await?;
                }
            }
            Some(pool)
        }
    };
    let before = measure::sample(&config.hub_pids);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..config.publishers {
        let (config, published, failures, pool) = (config.clone(), published.clone(), failures.clone(), pool.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let url = format!("{}/api/publish", config.hub.trim_end_matches('/'));
            let publisher = pool.clone().map(|pool| Publisher::new(PgSink::new(pool)));
            let mut i = (p as u64) << 40;
            // Each publisher's share of the rate, one request per tick (ticks missed while a request waited are
            // not made up in a burst).
            let mut pace = (config.rate > 0.0).then(|| {
                let every = config.batch.max(1) as f64 * config.publishers as f64 / config.rate;
                let mut pace = tokio::time::interval(Duration::from_secs_f64(every));
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                pace
            });
            while Instant::now() < deadline {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                let batch = config.batch.max(1);
                let ok = match config.via {
                    Via::Http => {
                        let events: Vec<_> = (0..batch)
                            .map(|k| json!({"topic":"bench.publish","scope":{"project_id":"p1"},"payload":payload(i + k as u64, config.payload_bytes)}))
                            .collect();
                        let body = if batch == 1 { events[0].clone() } else { json!(events) };
                        client.post(&url).json(&body).send().await.is_ok_and(|r| r.status().is_success())
                    }
                    Via::Crate => {
                        let events = (0..batch).map(|k| {
                            CustomEvent::new("bench.publish", [("project_id", "p1")], &payload(i + k as u64, config.payload_bytes))
                                .expect("a valid event")
                        });
                        // Present whenever via is Crate.
                        let publisher = publisher.as_ref().expect("a pool");
                        if config.in_transaction {
                            let published = async {
                                let mut tx = pool.as_ref().expect("a pool").begin().await?;
                                publisher.publish_batch_in(&mut tx, events).await?;
                                tx.commit().await?;
                                publisher.sink().wake();
                                anyhow::Ok(())
                            };
                            published.await.is_ok()
                        } else {
                            publisher.publish_batch(events).await.is_ok()
                        }
                    }
                    Via::Insert | Via::InsertLog => {
                        let pool = pool.as_ref().expect("a pool");
                        let topics = vec!["bench.publish"; batch];
                        let scopes = vec![json!({"project_id":"p1"}); batch];
                        let payloads: Vec<_> = (0..batch).map(|k| payload(i + k as u64, config.payload_bytes)).collect();
                        let table =
                            if config.via == Via::Insert { "loadgen_plain_events" } else { "loadgen_log_events" };
                        let sql = format!(
                            "INSERT INTO {table} (topic, scope, payload) \
                             SELECT * FROM unnest($1::text[], $2::jsonb[], $3::jsonb[])"
                        );
                        let insert = sqlx::query(&sql).bind(&topics).bind(&scopes).bind(&payloads);
                        if config.in_transaction {
                            let inserted = async {
                                let mut tx = pool.begin().await?;
                                insert.execute(&mut *tx).await?;
                                tx.commit().await?;
                                anyhow::Ok(())
                            };
                            inserted.await.is_ok()
                        } else {
                            insert.execute(pool).await.is_ok()
                        }
                    }
                };
                if ok {
                    published.fetch_add(batch as u64, Ordering::Relaxed);
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                i += batch as u64;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    let mut note = format!("{} failed requests", failures.load(Ordering::Relaxed));
    if let (Via::Crate, Some(pool)) = (config.via, &pool) {
        // The crate writes the inbox; hubs move it into the log. Report how long that takes to drain.
        let drain_started = Instant::now();
        loop {
            let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM realtime_inbox").fetch_one(pool).await?;
            if waiting == 0 || drain_started.elapsed() > Duration::from_secs(60) {
                note.push_str(&format!(
                    ", inbox drained {:.2} s after the last publish ({waiting} left)",
                    drain_started.elapsed().as_secs_f64()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let after = measure::sample(&config.hub_pids);
    let total = published.load(Ordering::Relaxed);
    let mut report = Report::new("publish", serde_json::to_value(&config)?, elapsed);
    report.events_per_s = Some(total as f64 / elapsed.as_secs_f64());
    report.loss = failures.load(Ordering::Relaxed);
    report.server(before, after);
    report.note = Some(note);
    Ok(report)
}
