//! The PostgreSQL event log: any number of hubs share it.
//!
//! Ids are assigned under the row lock of `realtime_log_state`, held until commit, so ids are gap-free in
//! visibility order (see the migration and `docs/POSTGRES.md`). Appends from this process are coalesced into one
//! `realtime_append` call per round trip (group commit in the application), so many concurrent publishers share
//! one commit. Publishers inside their own transaction write to `realtime_inbox`; every hub moves committed inbox
//! rows into the log, woken by `NOTIFY realtime_inbox` or by a poll. Hubs learn of new events from
//! `NOTIFY realtime_events`, sent once per sequencing transaction, and read the log from their cursor.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use protocol::scope::WELL_KNOWN_KEYS;
use protocol::{ENVELOPE_VERSION, Envelope, EventId, NewEvent, Scope, Topic, TopicPattern};
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, QueryBuilder, Row};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, warn};

use crate::event_log::{EventLog, LiveFeed, LogBounds, LogQuery, Page, StoredEvent, format_ts};
use crate::{Error, Result, Retention};

/// The channel hubs listen on for new events.
pub const EVENTS_CHANNEL: &str = "realtime_events";
/// The channel publishers may notify after committing inbox rows.
pub const INBOX_CHANNEL: &str = "realtime_inbox";

/// Most events one `realtime_append` call carries.
const MAX_EVENTS_PER_APPEND: usize = 5000;
/// Most inbox rows one move takes.
const INBOX_MOVE_BATCH: i32 = 5000;
/// Most rows one retention statement deletes, so no delete holds locks for long.
const RETENTION_BATCH: i64 = 5000;

/// How the PostgreSQL log connects and behaves.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub url: String,
    pub pool_size: u32,
    /// How often the inbox is checked without a notification.
    pub inbox_poll: Duration,
    pub retention: Retention,
}

pub struct PgLog {
    pool: PgPool,
    retention: Retention,
    appends: mpsc::UnboundedSender<AppendRequest>,
    /// Woken when a publisher notifies that it committed inbox rows.
    inbox_wake: Arc<Notify>,
}

struct AppendRequest {
    events: Vec<NewEvent>,
    ids: oneshot::Sender<Result<Vec<EventId>>>,
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::Unavailable(Box::new(e))
}

/// Connects a small pool to `url`, naming the connections so operators can tell them apart.
pub async fn connect_pool(url: &str, size: u32, application: &str) -> Result<PgPool> {
    // No JIT: the log's statements are short lookups, but before autovacuum has analysed the tables their
    // estimated cost can pass `jit_above_cost`, and compiling a read then took 175 ms on a 40k-event log (every
    // execution, on every connection): the stalls of one batch in a hundred in the cross-hub benchmark.
    let options =
        PgConnectOptions::from_str(url).map_err(unavailable)?.application_name(application).options([("jit", "off")]);
    PgPoolOptions::new()
        .max_connections(size)
        // Every connection is opened and warmed at start-up, not in the middle of the first burst of traffic.
        .min_connections(size)
        .after_connect(|conn, _| Box::pin(async move { warm(conn).await }))
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(unavailable)
}

/// Reads the log's bounds once on a new connection. A new PostgreSQL backend loads its catalog caches on first use:
/// 20–50 ms on this project's machine for the first read of the log, which would otherwise land on a live event
/// whenever the pool grew. Before the first migration the tables do not exist yet: nothing to warm, not an error.
async fn warm(conn: &mut sqlx::PgConnection) -> std::result::Result<(), sqlx::Error> {
    if let Err(e) = bounds(conn).await {
        debug!(error = %e, "the new connection was not warmed (the log is not migrated yet)");
    }
    Ok(())
}

/// Applies the log's migrations (idempotent; concurrent callers are serialized by sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<()> {
    sqlx::migrate!("./migrations").run(pool).await.map_err(|e| Error::Unavailable(Box::new(e)))
}

impl PgLog {
    /// Connects, applies migrations, and starts the appender and the inbox mover.
    pub async fn connect(settings: PgSettings) -> Result<Self> {
        let pool = connect_pool(&settings.url, settings.pool_size, "realtime-hub").await?;
        migrate(&pool).await?;
        let (appends, requests) = mpsc::unbounded_channel();
        let inbox_wake = Arc::new(Notify::new());
        tokio::spawn(run_appender(pool.clone(), requests));
        tokio::spawn(run_inbox_mover(pool.clone(), inbox_wake.clone(), settings.inbox_poll));
        Ok(Self { pool, retention: settings.retention, appends, inbox_wake })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Appends a batch in one statement within `executor`'s transaction (or its own); returns the ids.
pub async fn append_with<'e, E>(executor: E, events: &[NewEvent]) -> Result<Vec<EventId>>
where
    E: sqlx::PgExecutor<'e>,
{
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let columns = Columns::of(events);
    let row = columns
        .bind(sqlx::query("SELECT realtime_append($1, $2, $3, $4, $5, $6, $7, $8)"))
        .fetch_one(executor)
        .await
        .map_err(unavailable)?;
    let ids: Vec<i64> = row.try_get(0).map_err(unavailable)?;
    if ids.len() != events.len() {
        return Err(Error::Corrupt(format!("{} ids for {} events", ids.len(), events.len())));
    }
    ids.into_iter().map(|id| EventId::new(id as u64).map_err(|e| Error::Corrupt(e.to_string()))).collect()
}

/// Queues a batch in the inbox within `executor`'s transaction: it gets ids, and becomes visible to
/// subscribers, only after that transaction commits.
pub async fn enqueue_with<'e, E>(executor: E, events: &[NewEvent]) -> Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    if events.is_empty() {
        return Ok(());
    }
    let columns = Columns::of(events);
    columns
        .bind(sqlx::query(
            "INSERT INTO realtime_inbox \
             (topic, scope, stream_key, seq, payload, correlation_id, traceparent, idempotency_key) \
             SELECT * FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::bigint[], $5::jsonb[], $6::text[], \
                                  $7::text[], $8::text[])",
        ))
        .execute(executor)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// A batch as parallel arrays, the shape `realtime_append` and the inbox insert take.
struct Columns<'a> {
    topics: Vec<&'a str>,
    scopes: Vec<Json<&'a Scope>>,
    keys: Vec<Option<String>>,
    seqs: Vec<Option<i64>>,
    payloads: Vec<Json<&'a Map<String, Value>>>,
    correlation_ids: Vec<Option<&'a str>>,
    traceparents: Vec<Option<&'a str>>,
    idempotency_keys: Vec<Option<&'a str>>,
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl<'a> Columns<'a> {
    /// Binds the eight arrays as `$1` … `$8`, in the order of `realtime_append` and the inbox.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.topics)
            .bind(&self.scopes)
            .bind(&self.keys)
            .bind(&self.seqs)
            .bind(&self.payloads)
            .bind(&self.correlation_ids)
            .bind(&self.traceparents)
            .bind(&self.idempotency_keys)
    }

    fn of(events: &'a [NewEvent]) -> Self {
        Self {
            topics: events.iter().map(|e| e.topic.as_str()).collect(),
            scopes: events.iter().map(|e| Json(&e.scope)).collect(),
            keys: events.iter().map(NewEvent::effective_key).collect(),
            // Validation keeps seq below 2^53.
            seqs: events.iter().map(|e| e.seq.map(|s| s as i64)).collect(),
            payloads: events.iter().map(|e| Json(&e.payload)).collect(),
            correlation_ids: events.iter().map(|e| e.correlation_id.as_deref()).collect(),
            traceparents: events.iter().map(|e| e.traceparent.as_deref()).collect(),
            idempotency_keys: events.iter().map(|e| e.idempotency_key.as_deref()).collect(),
        }
    }
}

/// Coalesces queued appends into one statement per round trip.
async fn run_appender(pool: PgPool, mut requests: mpsc::UnboundedReceiver<AppendRequest>) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        let mut count = batch[0].events.len();
        while count < MAX_EVENTS_PER_APPEND {
            match requests.try_recv() {
                Ok(more) => {
                    count += more.events.len();
                    batch.push(more);
                }
                Err(_) => break,
            }
        }
        let events: Vec<NewEvent> = batch.iter().flat_map(|r| r.events.iter().cloned()).collect();
        match append_with(&pool, &events).await {
            Ok(ids) => {
                let mut ids = ids.into_iter();
                for request in batch {
                    let mine = ids.by_ref().take(request.events.len()).collect();
                    // The publisher may have given up waiting; its events are stored all the same.
                    let _ = request.ids.send(Ok(mine));
                }
            }
            Err(e) => {
                warn!(error = %e, events = events.len(), "append failed");
                for request in batch {
                    let _ = request.ids.send(Err(Error::Unavailable(e.to_string().into())));
                }
            }
        }
    }
}

/// Moves committed inbox rows into the log, on a notification or every `poll`.
async fn run_inbox_mover(pool: PgPool, wake: Arc<Notify>, poll: Duration) {
    loop {
        let _ = tokio::time::timeout(poll, wake.notified()).await;
        loop {
            match sqlx::query_scalar::<_, i32>("SELECT realtime_move_inbox($1)")
                .bind(INBOX_MOVE_BATCH)
                .fetch_one(&pool)
                .await
            {
                Ok(moved) if moved == INBOX_MOVE_BATCH => continue,
                Ok(moved) => {
                    if moved > 0 {
                        debug!(moved, "moved inbox rows into the log");
                    }
                    break;
                }
                Err(e) => {
                    debug!(error = %e, "moving the inbox failed; retrying");
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl EventLog for PgLog {
    fn provider(&self) -> &'static str {
        "postgres"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>> {
        let (ids, answer) = oneshot::channel();
        self.appends
            .send(AppendRequest { events, ids })
            .map_err(|_| Error::Unavailable("the appender stopped".into()))?;
        answer.await.map_err(|_| Error::Unavailable("the appender stopped".into()))?
    }

    async fn read_after(&self, after: u64, query: &LogQuery, limit: usize) -> Result<Page> {
        isolated(read_page(self.pool.clone(), after, query.clone(), limit)).await
    }

    async fn bounds(&self) -> Result<LogBounds> {
        let pool = self.pool.clone();
        isolated(async move { bounds(&pool).await }).await
    }

    async fn prune(&self) -> Result<u64> {
        let (pool, cutoff) = (self.pool.clone(), Utc::now() - self.retention.max_age);
        isolated(async move { prune(&pool, cutoff).await }).await
    }

    async fn live_feed(&self) -> Result<Box<dyn LiveFeed>> {
        let pool = self.pool.clone();
        let listener = isolated(async move {
            let mut listener = PgListener::connect_with(&pool).await.map_err(unavailable)?;
            listener.listen_all([EVENTS_CHANNEL, INBOX_CHANNEL]).await.map_err(unavailable)?;
            Ok(listener)
        })
        .await?;
        // Inbox rows committed while nobody listened are moved now.
        self.inbox_wake.notify_one();
        Ok(Box::new(PgFeed { listener: Some(listener), inbox_wake: self.inbox_wake.clone() }))
    }
}

/// Runs a database call on its own Tokio task. Actor futures live on actix's `LocalSet`, which is dropped outside
/// the runtime's context at shutdown; a sqlx connection dropped there panics in its destructor. A spawned task is
/// dropped inside the runtime's context instead, and the actor only holds the join handle.
async fn isolated<T: Send + 'static>(call: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    tokio::spawn(call).await.map_err(|e| Error::Unavailable(Box::new(e)))?
}

async fn bounds(db: impl sqlx::PgExecutor<'_>) -> Result<LogBounds> {
    let row = sqlx::query(
        "SELECT head, (SELECT min(id) FROM realtime_events) AS earliest FROM realtime_log_state WHERE singleton",
    )
    .fetch_one(db)
    .await
    .map_err(unavailable)?;
    let head = row.try_get::<i64, _>("head").map_err(unavailable)? as u64;
    let earliest = row.try_get::<Option<i64>, _>("earliest").map_err(unavailable)?.map_or(head + 1, |e| e as u64);
    Ok(LogBounds { head, earliest })
}

/// Removes events older than `cutoff`, oldest first, a bounded batch per statement: short locks, and autovacuum
/// keeps up.
async fn prune(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<u64> {
    let mut removed = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM realtime_events WHERE id IN \
             (SELECT id FROM realtime_events ORDER BY id LIMIT $2) AND created_at < $1",
        )
        .bind(cutoff)
        .bind(RETENTION_BATCH)
        .execute(pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        removed += deleted;
        if deleted < RETENTION_BATCH as u64 {
            break;
        }
    }
    // Idempotency keys live as long as their events: a retry after that stores anew.
    sqlx::query("DELETE FROM realtime_idempotency WHERE created_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await
        .map_err(unavailable)?;
    Ok(removed)
}

/// One page of the log after `after` matching `query`, with the head read in the same snapshot.
async fn read_page(pool: PgPool, after: u64, query: LogQuery, limit: usize) -> Result<Page> {
    let mut sql = QueryBuilder::new(
        "SELECT s.head, s.earliest, e.id, e.topic, e.scope, e.stream_key, e.seq, e.payload, e.correlation_id, \
         e.traceparent, e.created_at \
         FROM (SELECT head, (SELECT min(id) FROM realtime_events) AS earliest FROM realtime_log_state WHERE singleton) s \
         LEFT JOIN LATERAL (SELECT * FROM realtime_events WHERE id > ",
    );
    sql.push_bind(after as i64);
    push_topics(&mut sql, &query.topics);
    for (key, value) in query.filter.iter() {
        if WELL_KNOWN_KEYS.contains(&key) {
            // The key is one of six fixed column names, never client text.
            sql.push(format!(" AND {key} = ")).push_bind(value.to_owned());
        } else {
            sql.push(" AND scope ->> ").push_bind(key.to_owned()).push(" = ").push_bind(value.to_owned());
        }
    }
    sql.push(" ORDER BY id LIMIT ").push_bind(limit as i64).push(") e ON true ORDER BY e.id");
    let rows = sql.build().fetch_all(&pool).await.map_err(unavailable)?;
    let head = rows.first().map(|r| r.try_get::<i64, _>("head")).transpose().map_err(unavailable)?.unwrap_or(0) as u64;
    let earliest = rows.first().map(|r| r.try_get::<Option<i64>, _>("earliest")).transpose().map_err(unavailable)?;
    let bounds = LogBounds { head, earliest: earliest.flatten().map_or(head + 1, |e| e as u64) };
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(id) = row.try_get::<Option<i64>, _>("id").map_err(unavailable)? else { continue };
        events.push(Arc::new(decode(id, row)?));
    }
    let full = events.len() == limit;
    let through = if full { events.last().map_or(after, |e| e.id()) } else { head.max(after) };
    Ok(Page { events, through, complete: !full, bounds })
}

/// Appends the topic condition: nothing when a pattern is `*`; `topic = $1` for one exact topic (so replay walks
/// the `(topic, id)` index in id order and stops at the page's limit); otherwise `topic = ANY(…)` and/or
/// `topic LIKE ANY(…)`, leaving out an empty list so the planner is not pushed off the indexes.
fn push_topics(sql: &mut QueryBuilder<'_, sqlx::Postgres>, patterns: &[TopicPattern]) {
    if patterns.iter().any(|p| matches!(p, TopicPattern::Prefix(prefix) if prefix.is_empty())) {
        return;
    }
    let exact: Vec<String> = patterns
        .iter()
        .filter_map(|p| match p {
            TopicPattern::Exact(t) => Some(t.as_str().to_owned()),
            TopicPattern::Prefix(_) => None,
        })
        .collect();
    let prefixes: Vec<String> = patterns
        .iter()
        .filter_map(|p| match p {
            // `_` is a topic character and a LIKE wildcard: escape it (and the escape character).
            TopicPattern::Prefix(prefix) => Some(format!("{}%", prefix.replace('\\', "\\\\").replace('_', "\\_"))),
            TopicPattern::Exact(_) => None,
        })
        .collect();
    match (exact.as_slice(), prefixes.is_empty()) {
        ([one], true) => {
            sql.push(" AND topic = ").push_bind(one.clone());
        }
        (_, true) => {
            sql.push(" AND topic = ANY(").push_bind(exact).push(")");
        }
        ([], false) => {
            sql.push(" AND topic LIKE ANY(").push_bind(prefixes).push(")");
        }
        (_, false) => {
            sql.push(" AND (topic = ANY(").push_bind(exact).push(") OR topic LIKE ANY(").push_bind(prefixes).push("))");
        }
    }
}

fn decode(id: i64, row: &sqlx::postgres::PgRow) -> Result<StoredEvent> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| Error::Corrupt(format!("event {id}: {what}: {e}"));
    let id = EventId::new(id as u64).map_err(|e| corrupt("id", &e))?;
    let topic: String = row.try_get("topic").map_err(unavailable)?;
    let topic = Topic::parse(topic).map_err(|e| corrupt("topic", &e))?;
    let Json(scope): Json<Scope> = row.try_get("scope").map_err(|e| corrupt("scope", &e))?;
    let Json(payload): Json<Map<String, Value>> = row.try_get("payload").map_err(|e| corrupt("payload", &e))?;
    let created_at: DateTime<Utc> = row.try_get("created_at").map_err(unavailable)?;
    let envelope = Envelope {
        id,
        topic,
        scope,
        key: row.try_get("stream_key").map_err(unavailable)?,
        seq: row.try_get::<Option<i64>, _>("seq").map_err(unavailable)?.map(|s| s as u64),
        ts: format_ts(created_at),
        v: ENVELOPE_VERSION,
        correlation_id: row.try_get("correlation_id").map_err(unavailable)?,
        payload,
    };
    let traceparent = row.try_get("traceparent").map_err(unavailable)?;
    Ok(StoredEvent::new(envelope, created_at, traceparent))
}

struct PgFeed {
    /// Always `Some` until dropped.
    listener: Option<PgListener>,
    inbox_wake: Arc<Notify>,
}

impl Drop for PgFeed {
    fn drop(&mut self) {
        let Some(listener) = self.listener.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            return drop(listener);
        }
        // Outside a runtime (at process or test teardown) sqlx's listener cannot hand its connection back and
        // would panic in its destructor: close it on a throwaway runtime instead.
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(async move {
                drop(listener);
                tokio::task::yield_now().await;
            });
        }
    }
}

#[async_trait]
impl LiveFeed for PgFeed {
    async fn changed(&mut self, _cursor: u64) -> Result<()> {
        loop {
            // `try_recv` answers `None` when the connection was lost: notifications sent meanwhile are gone, so
            // the caller must read the log again rather than trust a silently reconnected listener.
            let Some(listener) = self.listener.as_mut() else {
                return Err(Error::Unavailable("the listener is closed".into()));
            };
            match listener.try_recv().await {
                Ok(Some(notification)) if notification.channel() == INBOX_CHANNEL => self.inbox_wake.notify_one(),
                Ok(Some(_)) => return Ok(()),
                Ok(None) => return Err(Error::Unavailable("the listening connection was lost".into())),
                Err(e) => return Err(unavailable(e)),
            }
        }
    }
}
