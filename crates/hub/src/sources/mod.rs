//! Database sources: rows another service writes become events, with no code in that service.
//!
//! Each configured source is polled by exactly one hub of the cluster at a time: the one holding the source's
//! advisory lock on a connection of its own (a dead hub's connection, and with it the lock, goes with it). A poll
//! reads the rows after the persisted cursor `(time, id)` but only those older than a *safe watermark*, the
//! start of the oldest transaction still open in the database, read before the rows' snapshot. A row that is not
//! yet visible belongs to a transaction that is still open (or starts later), and its time, set by that
//! transaction, is no earlier than the transaction's start, so it lies at or above the watermark. Every row below
//! the watermark is therefore already visible, and the cursor can move over them in `(time, id)` order without
//! ever stepping over a row that commits later. Rows are published with the idempotency key `source:<name>:<id>`,
//! so a hub that dies between publishing and saving its cursor republishes nothing. See `docs/SOURCES.md`.
//!
//! # Layout
//! - [`config`]: the sources file (`HUB_SOURCES`).
//! - [`template`]: how a row's columns fill an event's topic, scope and payload.

pub mod config;
pub mod template;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use protocol::{EventLimits, NewEvent, Scope, Topic};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use storage::EventLog;
use tokio::sync::watch;
use tracing::{error, info, warn};

pub use config::Source;

/// Between attempts to take a source's lock, or to reconnect after an error.
const RETRY: Duration = Duration::from_secs(1);

/// What every source's poller shares with the hub.
#[derive(Clone)]
pub struct Publishing {
    pub log: Arc<dyn EventLog>,
    pub redactor: publisher::Redactor,
    pub limits: EventLimits,
}

/// Starts one poller per source; each stops when `shutdown` turns true, closing its connections.
pub fn start(sources: Vec<Source>, publishing: Publishing, shutdown: watch::Receiver<bool>) {
    for source in sources {
        let (publishing, mut shutdown) = (publishing.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = run(&source, &publishing) => {}
                _ = shutdown.wait_for(|down| *down) => info!(source = source.name, "source poller stopped"),
            }
        });
    }
}

/// Polls `source` for as long as the hub runs: takes the lock, polls while holding it, and starts over on errors.
async fn run(source: &Source, publishing: &Publishing) {
    loop {
        match hold_and_poll(source, publishing).await {
            Ok(()) => {}
            Err(e) => {
                warn!(source = source.name, error = %format!("{e:#}"), "source poll failed; retrying");
                metrics::counter!("hub_source_errors_total", "source" => source.name.clone()).increment(1);
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Connects, waits for the source's lock, then polls until an error.
async fn hold_and_poll(source: &Source, publishing: &Publishing) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(&source.database_url)?.application_name("realtime-hub-source");
    let mut connection = options.connect().await?;
    let lock_key = format!("realtime-source:{}", source.name);
    loop {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(&lock_key)
            .fetch_one(&mut connection)
            .await?;
        if locked {
            break;
        }
        tokio::time::sleep(RETRY).await;
    }
    info!(source = source.name, "polling the source (this hub holds its lock)");
    check_privileges(&mut connection).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS realtime_source_cursors \
         (name text PRIMARY KEY, at timestamptz NOT NULL, id text NOT NULL, updated_at timestamptz NOT NULL)",
    )
    .execute(&mut connection)
    .await?;
    let mut cursor = match load_cursor(&mut connection, &source.name).await? {
        Some(cursor) => cursor,
        // A new source starts from now: the rows written before it was configured are history, not news.
        None => {
            let start = Cursor { at: safe_watermark(&mut connection).await?, id: String::new() };
            save_cursor(&mut connection, &source.name, &start).await?;
            start
        }
    };
    let mut listener = match &source.notify_channel {
        Some(channel) => {
            let mut listener = PgListener::connect(&source.database_url).await?;
            listener.listen(channel).await?;
            Some(listener)
        }
        None => None,
    };
    loop {
        let published = poll_once(&mut connection, source, publishing, &mut cursor).await?;
        if published == source.batch {
            continue;
        }
        match &mut listener {
            Some(listener) => {
                // A notification wakes the poll early; the interval still bounds the wait. A lost listener only
                // costs latency, but is reopened on the next round through the error path.
                if let Ok(Err(e)) = tokio::time::timeout(source.poll_interval, listener.recv()).await {
                    return Err(e.into());
                }
            }
            None => tokio::time::sleep(source.poll_interval).await,
        }
        // Keep the lock's connection alive and notice if it was lost.
        connection.ping().await?;
    }
}

/// The safe watermark needs to see every session's transaction: superusers and members of `pg_read_all_stats`
/// do; for others PostgreSQL hides them, and the watermark would be unsafe.
async fn check_privileges(connection: &mut PgConnection) -> anyhow::Result<()> {
    let sees_all: bool = sqlx::query_scalar(
        "SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'member') \
         FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(connection)
    .await?;
    anyhow::ensure!(
        sees_all,
        "the source's database role must see every session's transactions: GRANT pg_read_all_stats TO <role>"
    );
    Ok(())
}

/// Where a source stands: every row up to `(at, id)` has been published.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    at: DateTime<Utc>,
    id: String,
}

async fn load_cursor(connection: &mut PgConnection, name: &str) -> anyhow::Result<Option<Cursor>> {
    let row = sqlx::query("SELECT at, id FROM realtime_source_cursors WHERE name = $1")
        .bind(name)
        .fetch_optional(connection)
        .await?;
    Ok(row.map(|row| Cursor { at: row.get("at"), id: row.get("id") }))
}

async fn save_cursor(connection: &mut PgConnection, name: &str, cursor: &Cursor) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO realtime_source_cursors (name, at, id, updated_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT (name) DO UPDATE SET at = EXCLUDED.at, id = EXCLUDED.id, updated_at = EXCLUDED.updated_at",
    )
    .bind(name)
    .bind(cursor.at)
    .bind(&cursor.id)
    .execute(connection)
    .await?;
    Ok(())
}

/// The start of the oldest transaction open in this database (other than this session's), or now: every row
/// whose time is below it is visible to any snapshot taken after this statement.
async fn safe_watermark(connection: &mut PgConnection) -> anyhow::Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar(
        "SELECT least(statement_timestamp(), \
                (SELECT min(xact_start) FROM pg_stat_activity \
                  WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL))",
    )
    .fetch_one(connection)
    .await?)
}

/// One poll: rows after the cursor and below the safe watermark, published in `(time, id)` order; the cursor
/// moves past them once the log has them. Returns how many rows were read.
async fn poll_once(
    connection: &mut PgConnection,
    source: &Source,
    publishing: &Publishing,
    cursor: &mut Cursor,
) -> anyhow::Result<usize> {
    // The watermark is read before the rows' snapshot, in a statement of its own.
    let safe = safe_watermark(connection).await?;
    let (time, id) = (&source.time_column, &source.id_column);
    let sql = format!(
        "SELECT to_jsonb(q) AS row, (q.\"{time}\")::timestamptz AS at, (q.\"{id}\")::text AS id \
         FROM ({query}) q \
         WHERE ((q.\"{time}\")::timestamptz, (q.\"{id}\")::text) > ($1, $2) AND (q.\"{time}\")::timestamptz < $3 \
         ORDER BY 2, 3 LIMIT $4",
        query = source.query,
    );
    let rows = sqlx::query(&sql)
        .bind(cursor.at)
        .bind(&cursor.id)
        .bind(safe)
        .bind(source.batch as i64)
        .fetch_all(&mut *connection)
        .await?;
    let Some(last) = rows.last() else { return Ok(0) };
    let next = Cursor { at: last.try_get("at")?, id: last.try_get("id")? };
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get("id")?;
        let sqlx::types::Json(columns): sqlx::types::Json<Map<String, Value>> = row.try_get("row")?;
        match to_event(source, &id, &columns, publishing) {
            Ok(event) => events.push(event),
            Err(why) => {
                // One malformed row must not stop the feed: it is reported and passed over.
                error!(source = source.name, row = id, why, "a source row cannot become an event; skipped");
                metrics::counter!("hub_source_rows_rejected_total", "source" => source.name.clone()).increment(1);
            }
        }
    }
    let oldest = rows.first().map(|r| r.get::<DateTime<Utc>, _>("at"));
    if !events.is_empty() {
        let count = events.len() as u64;
        publishing.log.append(events).await?;
        crate::telemetry::instruments::published(count);
    }
    save_cursor(connection, &source.name, &next).await?;
    if let Some(oldest) = oldest {
        let lag = (Utc::now() - oldest).to_std().unwrap_or_default();
        metrics::histogram!("hub_source_lag_seconds", "source" => source.name.clone()).record(lag.as_secs_f64());
    }
    *cursor = next;
    Ok(rows.len())
}

/// The event a row becomes; its idempotency key makes a republished row a no-op.
fn to_event(source: &Source, id: &str, row: &Map<String, Value>, publishing: &Publishing) -> Result<NewEvent, String> {
    let topic = Topic::parse(source.topic.render(row).map_err(|e| e.0)?).map_err(|e| format!("topic: {e}"))?;
    let mut scope = std::collections::BTreeMap::new();
    for (key, template) in &source.scope {
        scope.insert(key.clone(), template.render(row).map_err(|e| e.0)?);
    }
    let scope = Scope::new(scope).map_err(|e| format!("scope: {e}"))?;
    let mut payload = Map::new();
    for (field, template) in &source.payload {
        payload.insert(field.clone(), template.render_value(row).map_err(|e| e.0)?);
    }
    let mut event = NewEvent::new(topic, scope, payload);
    event.key = source.key.as_ref().map(|t| t.render(row)).transpose().map_err(|e| e.0)?;
    event.idempotency_key = Some(format!("source:{}:{id}", source.name));
    publisher::redact_event(&publishing.redactor, &mut event);
    event.validate(&publishing.limits).map_err(|e| e.0)?;
    Ok(event)
}
