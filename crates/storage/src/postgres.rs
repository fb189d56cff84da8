//! The PostgreSQL event log: any number of hubs share it.
//!
//! Ids are dense and become visible in id order: every id is given under the row lock of `realtime_log_state`,
//! held until the giving transaction commits (see the migrations and `docs/POSTGRES.md`). Writers do not take
//! that lock. One hub of the cluster, the *sequencer* (the holder of the advisory lock `realtime-sequencer` on a
//! connection of its own; a dead hub's connection, and with it the lock, goes with it), gives the ids:
//! - its own hub's publishes it stores directly, coalesced into one `realtime_append` per round trip;
//! - every other writer inserts into `realtime_inbox` with no lock (the publisher crate, inside the caller's
//!   transaction when it wants; the HTTP route of the other hubs), and the sequencer moves committed inbox rows into
//!   the log in batches (`realtime_move_inbox`), woken by `NOTIFY realtime_inbox` or by a poll.
//!
//! A hub that published through the inbox learns its events' ids by reading the log, where each moved event keeps
//! its inbox id. Hubs learn of new events from `NOTIFY realtime_events`, sent once per sequencing transaction, and
//! read the log from their cursor.

use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use protocol::scope::WELL_KNOWN_KEYS;
use protocol::{ENVELOPE_VERSION, Envelope, EventId, NewEvent, Scope, Topic, TopicPattern};
use serde_json::{Map, Value};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{ConnectOptions, PgConnection, PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::event_log::{EventLog, LiveFeed, LogBounds, LogQuery, Page, StoredEvent, format_ts};
use crate::{Error, Result, Retention};

/// The channel hubs listen on for new events.
pub const EVENTS_CHANNEL: &str = "realtime_events";
/// The channel that wakes the sequencer when committed rows wait in the inbox.
pub const INBOX_CHANNEL: &str = "realtime_inbox";
/// The advisory lock whose holder is the cluster's sequencer.
pub const SEQUENCER_LOCK: &str = "realtime-sequencer";

/// Most events one `realtime_append` call carries.
const MAX_EVENTS_PER_APPEND: usize = 5000;
/// Most inbox rows one move takes.
const INBOX_MOVE_BATCH: i32 = 5000;
/// Most rows one retention statement deletes, so no delete holds locks for long.
const RETENTION_BATCH: i64 = 5000;
/// How often a hub that is not the sequencer tries to become it: the longest a cluster goes without one after its
/// sequencer's connection is gone.
const SEQUENCER_RETRY: Duration = Duration::from_millis(250);
/// How often a busy sequencer moves the inbox.
const MOVE_GAP: Duration = Duration::from_millis(2);
/// How many moved inbox rows make the sequencer vacuum the inbox, and how long it waits at most between two
/// vacuums while rows are moved (at a few events a second the count alone would leave the dead rows growing
/// for hours where autovacuum is slow or off).
const VACUUM_EVERY: u64 = 20_000;
const VACUUM_INTERVAL: Duration = Duration::from_secs(10);
/// How long the sequencer stays busy after its last move that found rows. The publisher crate's sink wakes it at
/// most every 25 ms, which must not be longer: a wake-up left out is then always covered by a busy spell.
const LINGER: Duration = Duration::from_millis(50);
/// How long a publish through the inbox waits for the sequencer before this hub looks the ids up itself, and moves
/// the inbox itself if they are not there yet (a sequencer that died with its lock not yet released).
const STEP_IN_AFTER: Duration = Duration::from_millis(500);
/// How many events after its floor a publish's own look-up reads.
const LOOK_UP_WINDOW: i64 = 100_000;
/// How long a publish through the inbox waits for its ids in all before it answers that the log is unavailable
/// (its events are stored, and will be delivered once a sequencer moves them).
const IDS_DEADLINE: Duration = Duration::from_secs(30);

/// How long the hub waits, by default, for PostgreSQL to answer one statement (see [`PgSettings::timeout`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long acquires may time out with no statement answered before the pool is taken for stuck and replaced.
const STUCK_AFTER: Duration = Duration::from_secs(15);
/// How long the pool waits for a connection, free or new, for one acquire.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How the PostgreSQL log connects and behaves.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub url: String,
    pub pool_size: u32,
    /// The longest the hub waits for any one statement (and the sequencer's and listener's connections for
    /// theirs); a connection that does not answer in time is taken for dead (see [`Db`]).
    pub timeout: Duration,
    /// How often the sequencer checks the inbox without a notification (and that it still holds its lock).
    pub inbox_poll: Duration,
    pub retention: Retention,
}

pub struct PgLog {
    shared: Arc<Shared>,
    retention: Retention,
    appends: mpsc::UnboundedSender<AppendRequest>,
}

/// What the log's tasks share.
struct Shared {
    db: Db,
    /// How the live feed's listener connects (a pool of one of its own each time: see `live_feed`).
    listen_options: PgConnectOptions,
    /// This hub holds the sequencer lock.
    sequencing: AtomicBool,
    /// Woken when committed rows may wait in the inbox (a notification, or this hub's own insert).
    inbox_wake: Notify,
    /// Inbox rows this hub inserted whose ids it waits for.
    pending: Mutex<Pending>,
    /// Inbox rows this hub moved since it last vacuumed the inbox, and when that was.
    moved_since_vacuum: AtomicU64,
    vacuumed_at: Mutex<Instant>,
    /// A vacuum of the inbox runs.
    vacuuming: AtomicBool,
}

struct AppendRequest {
    events: Vec<NewEvent>,
    ids: oneshot::Sender<Result<Vec<EventId>>>,
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::Unavailable(Box::new(e))
}

fn connect_options(url: &str, application: &str) -> Result<PgConnectOptions> {
    // No JIT: the log's statements are short lookups, but before autovacuum has analysed the tables their
    // estimated cost can pass `jit_above_cost`, and compiling a read then took 175 ms on a 40k-event log (every
    // execution, on every connection): the stalls of one batch in a hundred in the cross-hub benchmark.
    Ok(PgConnectOptions::from_str(url).map_err(unavailable)?.application_name(application).options([("jit", "off")]))
}

/// Asks the server to probe the connection when idle: it notices a peer that vanished without closing (a hub on a
/// partitioned node, a flow a NAT dropped) within about 20 s, and releases what its backend held (the sequencer's
/// lock, a slot of `max_connections`).
fn with_keepalives(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("tcp_keepalives_idle", "10"), ("tcp_keepalives_interval", "3"), ("tcp_keepalives_count", "3")])
}

/// Keeps the planner off sequential scans of the log. A page read for a pattern with no scope filter
/// (`topic LIKE ANY($2)` after `id > $1`, limited) is best walked along the primary key from `$1`, stopping at the
/// limit; but sqlx prepares its statements, and PostgreSQL's generic plan for them takes `id > $1` for a third of
/// the log, for which a scan of the whole table and a sort looks cheaper. In a 30-minute soak that plan read 17
/// billion rows (1.16 M scans, each of the log as it had grown) and latency crept up by a third. Every statement
/// the hub runs on the log has an index to walk; with sequential scans off the planner takes it.
fn by_index(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("enable_seqscan", "off")])
}

/// Connects a small pool to `url`, naming the connections so operators can tell them apart.
pub async fn connect_pool(url: &str, size: u32, application: &str) -> Result<PgPool> {
    pool_options(size).connect_with(connect_options(url, application)?).await.map_err(unavailable)
}

fn pool_options(size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        // Every connection is opened and warmed at start-up, not in the middle of the first burst of traffic.
        .min_connections(size)
        .after_connect(|conn, _| Box::pin(async move { warm(conn).await }))
        .acquire_timeout(ACQUIRE_TIMEOUT)
}

/// A statement that got no answer within its deadline: its connection is taken for dead.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL did not answer within {0:?}; the connection is taken for dead")]
struct Silent(Duration);

/// Awaits `statement` for at most `timeout`; past it, the statement fails with [`Silent`].
async fn within<T>(timeout: Duration, statement: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(timeout, statement)
        .await
        .unwrap_or_else(|_| Err(Error::Unavailable(Box::new(Silent(timeout)))))
}

/// A statement's outcome, with the log's error.
async fn fetch<T>(statement: impl Future<Output = sqlx::Result<T>>) -> Result<T> {
    statement.await.map_err(unavailable)
}

fn is_silent(e: &Error) -> bool {
    matches!(e, Error::Unavailable(source) if source.is::<Silent>())
}

/// The hub's pool of connections to the log, with a deadline on every statement.
///
/// A connection whose peer vanished without closing it (a failover that moved the address, a NAT or firewall that
/// dropped the flow, a partition) neither answers nor fails: TCP retransmits for up to fifteen minutes, and sqlx
/// waits as long, holding the pool's slot (even a connection handed back is pinged first). So every statement
/// has a deadline ([`PgSettings::timeout`]). A connection that misses it is closed, not handed back, and the pool
/// is replaced by a fresh one that opens its connections anew once PostgreSQL answers again: the other idle
/// connections took the same path and are as dead, and each would cost an acquire its full timeout before sqlx
/// dropped it. The same replacement covers a pool that stops giving out connections at all (acquires time out
/// with no statement answered for [`STUCK_AFTER`]); the old pool goes once its last connection is back.
struct Db {
    options: PgConnectOptions,
    size: u32,
    timeout: Duration,
    /// The pool and how many pools came before it.
    pool: RwLock<(u64, PgPool)>,
    /// When a statement last got its answer, in milliseconds after `epoch` (a store on every statement: no lock).
    answered_ms: AtomicU64,
    epoch: Instant,
}

/// A connection of [`Db`]'s pool, and which pool it came from.
struct DbConn {
    conn: PoolConnection<Postgres>,
    generation: u64,
}

impl Db {
    fn new(pool: PgPool, options: PgConnectOptions, size: u32, timeout: Duration) -> Self {
        let (answered_ms, epoch) = (AtomicU64::new(0), Instant::now());
        Self { options, size, timeout, pool: RwLock::new((0, pool)), answered_ms, epoch }
    }

    fn mark_answered(&self) {
        self.answered_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long no statement has been answered.
    fn quiet(&self) -> Duration {
        self.epoch.elapsed().saturating_sub(Duration::from_millis(self.answered_ms.load(Ordering::Relaxed)))
    }

    fn pool(&self) -> (u64, PgPool) {
        self.pool.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn acquire(&self) -> Result<DbConn> {
        let (generation, pool) = self.pool();
        match pool.acquire().await {
            Ok(conn) => Ok(DbConn { conn, generation }),
            Err(e) => {
                if matches!(e, sqlx::Error::PoolTimedOut) && self.quiet() >= STUCK_AFTER {
                    self.renew(generation, "no statement was answered for 15 s and the pool gives out no connection");
                }
                Err(unavailable(e))
            }
        }
    }

    /// Runs `op` (whose statements are each bounded by the deadline it is given) on a connection of the pool.
    async fn run<T>(&self, op: impl AsyncFnOnce(&mut PgConnection, Duration) -> Result<T>) -> Result<T> {
        let mut conn = self.acquire().await?;
        let result = op(&mut conn.conn, self.timeout).await;
        self.settle(&mut conn, result)
    }

    /// What `conn`'s statements came to: a connection that missed a deadline is closed rather than handed back,
    /// and its pool replaced.
    fn settle<T>(&self, conn: &mut DbConn, result: Result<T>) -> Result<T> {
        match &result {
            Ok(_) => self.mark_answered(),
            Err(e) if is_silent(e) => {
                conn.conn.close_on_drop();
                self.renew(conn.generation, "a connection did not answer in time");
            }
            Err(_) => {}
        }
        result
    }

    /// A connection of the hub's own outside the pool (the sequencer's, the listener's) got no answer: the pool's
    /// idle connections went by the same network and are as dead.
    fn went_silent(&self, e: &Error) {
        if is_silent(e) {
            self.renew(self.pool().0, "a connection of the hub's own did not answer in time");
        }
    }

    /// Replaces the pool `generation`, unless that was done already.
    fn renew(&self, generation: u64, why: &str) {
        let mut current = self.pool.write().unwrap_or_else(|e| e.into_inner());
        if current.0 != generation {
            return;
        }
        warn!(why, "replacing the PostgreSQL pool; its connections are opened anew as PostgreSQL answers");
        metrics::counter!("hub_db_pool_renewals_total").increment(1);
        *current = (generation + 1, pool_options(self.size).connect_lazy_with(self.options.clone()));
        // Until a statement is answered on the new pool, it gets as long as the first one did.
        self.mark_answered();
    }
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
    /// Connects, applies migrations, and starts the appender and the sequencer (which waits for its lock).
    pub async fn connect(settings: PgSettings) -> Result<Self> {
        let options = by_index(with_keepalives(connect_options(&settings.url, "realtime-hub")?));
        let pool = pool_options(settings.pool_size).connect_with(options.clone()).await.map_err(unavailable)?;
        let listen_options = options.clone().application_name("realtime-hub-listener");
        migrate(&pool).await?;
        let lock_options = with_keepalives(connect_options(&settings.url, "realtime-hub-sequencer")?);
        let shared = Arc::new(Shared {
            db: Db::new(pool, options, settings.pool_size, settings.timeout),
            listen_options,
            sequencing: AtomicBool::new(false),
            inbox_wake: Notify::new(),
            pending: Mutex::new(Pending::default()),
            moved_since_vacuum: AtomicU64::new(0),
            vacuumed_at: Mutex::new(Instant::now()),
            vacuuming: AtomicBool::new(false),
        });
        shared.set_sequencing(false);
        let (appends, requests) = mpsc::unbounded_channel();
        let (local, local_requests) = mpsc::unbounded_channel();
        let (remote_wake, remote_wakes) = mpsc::channel(1);
        tokio::spawn(run_appender(shared.clone(), requests, local, remote_wake));
        tokio::spawn(run_sequencer(shared.clone(), lock_options, local_requests, settings.inbox_poll));
        tokio::spawn(run_waker(shared.clone(), remote_wakes));
        Ok(Self { shared, retention: settings.retention, appends })
    }

    /// Whether this hub is the cluster's sequencer now.
    pub fn is_sequencer(&self) -> bool {
        self.shared.sequencing.load(Ordering::Acquire)
    }
}

/// The ids this hub's publishes through the inbox wait for.
#[derive(Default)]
struct Pending {
    /// Inbox id → where its event's id goes.
    waiting: HashMap<i64, oneshot::Sender<EventId>>,
    /// Inserts into the inbox whose waiters are not registered yet.
    inserting: usize,
    /// Ids read from the log while an insert was not registered yet, newest last: an insert's events may be moved
    /// and read before its waiters exist, and then find their ids here.
    recent: HashMap<i64, EventId>,
    recent_order: VecDeque<i64>,
}

/// How many read ids `Pending::recent` keeps.
const RECENT_IDS: usize = 65_536;

impl Pending {
    /// Registers waiters for `inbox_ids`, answering at once those already read.
    fn register(&mut self, inbox_ids: &[i64]) -> Vec<oneshot::Receiver<EventId>> {
        self.inserting -= 1;
        let receivers = inbox_ids
            .iter()
            .map(|inbox_id| {
                let (tx, rx) = oneshot::channel();
                match self.recent.remove(inbox_id) {
                    Some(id) => {
                        let _ = tx.send(id);
                    }
                    None => {
                        self.waiting.insert(*inbox_id, tx);
                    }
                }
                rx
            })
            .collect();
        if self.inserting == 0 {
            self.recent.clear();
            self.recent_order.clear();
        }
        receivers
    }
}

impl Shared {
    /// Hands each id read from the log to the publish that waits for its event, if any.
    fn resolve(&self, found: impl IntoIterator<Item = (i64, EventId)>) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.waiting.is_empty() && pending.inserting == 0 {
            return;
        }
        for (inbox_id, id) in found {
            if let Some(waiter) = pending.waiting.remove(&inbox_id) {
                let _ = waiter.send(id);
            } else if pending.inserting > 0 {
                pending.recent.insert(inbox_id, id);
                pending.recent_order.push_back(inbox_id);
                if pending.recent_order.len() > RECENT_IDS
                    && let Some(oldest) = pending.recent_order.pop_front()
                {
                    pending.recent.remove(&oldest);
                }
            }
        }
    }

    fn set_sequencing(&self, sequencing: bool) {
        self.sequencing.store(sequencing, Ordering::Release);
        metrics::gauge!("hub_sequencer").set(if sequencing { 1.0 } else { 0.0 });
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
    if let [event] = events {
        // One event, the common case of a service publishing as it works: a plain one-row insert, without the
        // arrays a batch needs (which cost PostgreSQL more to build and unnest than the row itself).
        sqlx::query(
            "INSERT INTO realtime_inbox \
             (topic, scope, stream_key, seq, payload, correlation_id, traceparent, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(event.topic.as_str())
        .bind(Json(&event.scope))
        .bind(event.effective_key())
        // Validation keeps seq below 2^53.
        .bind(event.seq.map(|s| s as i64))
        .bind(Json(&event.payload))
        .bind(event.correlation_id.as_deref())
        .bind(event.traceparent.as_deref())
        .bind(event.idempotency_key.as_deref())
        .execute(executor)
        .await
        .map_err(unavailable)?;
        return Ok(());
    }
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

/// Takes every request queued behind `first`, up to `MAX_EVENTS_PER_APPEND` events.
fn coalesce(first: AppendRequest, requests: &mut mpsc::UnboundedReceiver<AppendRequest>) -> Vec<AppendRequest> {
    let mut count = first.events.len();
    let mut batch = vec![first];
    while count < MAX_EVENTS_PER_APPEND {
        match requests.try_recv() {
            Ok(more) => {
                count += more.events.len();
                batch.push(more);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Answers each request of `batch` with its share of `ids` (in order), or all of them with the error.
fn answer(batch: Vec<AppendRequest>, ids: Result<Vec<EventId>>) {
    match ids {
        Ok(ids) => {
            let mut ids = ids.into_iter();
            for request in batch {
                let mine = ids.by_ref().take(request.events.len()).collect();
                // The publisher may have given up waiting; its events are stored all the same.
                let _ = request.ids.send(Ok(mine));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for request in batch {
                let _ = request.ids.send(Err(Error::Unavailable(message.clone().into())));
            }
        }
    }
}

fn events_of(batch: &[AppendRequest]) -> Vec<NewEvent> {
    batch.iter().flat_map(|r| r.events.iter().cloned()).collect()
}

/// Routes this hub's publishes: to the sequencer when this hub is it; otherwise into the inbox, one coalesced
/// insert per round trip (batches with idempotency keys take the locked path, which answers a known key with its
/// first id).
async fn run_appender(
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<AppendRequest>,
    local: mpsc::UnboundedSender<AppendRequest>,
    remote_wake: mpsc::Sender<()>,
) {
    while let Some(first) = requests.recv().await {
        if shared.sequencing.load(Ordering::Acquire) {
            // If the sequencer lost its lock meanwhile, it stores the request by the locked path.
            let _ = local.send(first);
            continue;
        }
        let batch = coalesce(first, &mut requests);
        let events = events_of(&batch);
        if events.iter().any(|e| e.idempotency_key.is_some()) {
            let ids = shared.db.run(async |conn, timeout| within(timeout, append_with(conn, &events)).await).await;
            answer(batch, ids);
            continue;
        }
        shared.pending.lock().unwrap_or_else(|e| e.into_inner()).inserting += 1;
        let inserted = shared.db.run(async |conn, timeout| within(timeout, insert_inbox(conn, &events)).await).await;
        let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        match inserted {
            Ok((inbox_ids, floor)) => {
                let waiters = pending.register(&inbox_ids);
                drop(pending);
                if shared.sequencing.load(Ordering::Acquire) {
                    shared.inbox_wake.notify_one();
                } else {
                    // Full means a wake-up is already on its way; it will find these rows too.
                    let _ = remote_wake.try_send(());
                }
                tokio::spawn(wait_for_ids(shared.clone(), batch, inbox_ids, waiters, floor));
            }
            Err(e) => {
                pending.inserting -= 1;
                drop(pending);
                warn!(error = %e, events = events.len(), "publishing into the inbox failed");
                answer(batch, Err(e));
            }
        }
    }
}

/// Inserts `events` into the inbox in one statement; returns their inbox ids in order and the log's head as the
/// statement saw it (every id the events get is above it: they are given after this commit).
async fn insert_inbox(conn: &mut PgConnection, events: &[NewEvent]) -> Result<(Vec<i64>, u64)> {
    let columns = Columns::of(events);
    let rows = columns
        .bind(sqlx::query(
            "WITH added AS (\
               INSERT INTO realtime_inbox \
               (topic, scope, stream_key, seq, payload, correlation_id, traceparent, idempotency_key) \
               SELECT * FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::bigint[], $5::jsonb[], $6::text[], \
                                    $7::text[], $8::text[]) \
               RETURNING inbox_id) \
             SELECT inbox_id, (SELECT head FROM realtime_log_state WHERE singleton) AS head \
             FROM added ORDER BY inbox_id",
        ))
        .fetch_all(conn)
        .await
        .map_err(unavailable)?;
    if rows.len() != events.len() {
        return Err(Error::Corrupt(format!("{} inbox rows for {} events", rows.len(), events.len())));
    }
    let floor = rows.first().map(|r| r.try_get::<i64, _>("head")).transpose().map_err(unavailable)?.unwrap_or(0);
    // The inbox ids come from one sequence, drawn row after row in input order: sorted, they are in input order.
    let ids = rows.iter().map(|r| r.try_get::<i64, _>("inbox_id")).collect::<std::result::Result<_, _>>();
    Ok((ids.map_err(unavailable)?, floor as u64))
}

/// Waits until every event of `batch` has its id, found by this hub's reads of the log (the storage actor reads
/// every new event). A publish that waits longer than `STEP_IN_AFTER` looks its ids up in the log itself and, if
/// they are not there, moves the inbox itself: correct whoever else is moving it, as the head row lock serializes
/// every mover.
async fn wait_for_ids(
    shared: Arc<Shared>,
    batch: Vec<AppendRequest>,
    inbox_ids: Vec<i64>,
    waiters: Vec<oneshot::Receiver<EventId>>,
    floor: u64,
) {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(waiters.len());
    let mut stepped_in = false;
    for mut waiter in waiters {
        loop {
            match tokio::time::timeout(STEP_IN_AFTER, &mut waiter).await {
                Ok(Ok(id)) => {
                    ids.push(id);
                    break;
                }
                Err(_) if started.elapsed() < IDS_DEADLINE => {
                    let missing = &inbox_ids[ids.len()..];
                    if let Err(e) = look_up(&shared, missing, floor).await {
                        debug!(error = %e, "looking up published ids failed");
                    } else if !stepped_in || started.elapsed() > STEP_IN_AFTER * 4 {
                        stepped_in = true;
                        debug!(events = missing.len(), "the sequencer is slow; moving the inbox");
                        let moved = shared.db.run(async |conn, timeout| move_inbox(conn, timeout).await).await;
                        if let Err(e) = moved {
                            debug!(error = %e, "moving the inbox failed");
                        }
                        let _ = look_up(&shared, missing, floor).await;
                    }
                }
                // Timed out for good, or (never expected) the waiter was dropped unanswered.
                Err(_) | Ok(Err(_)) => {
                    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
                    for inbox_id in &inbox_ids {
                        pending.waiting.remove(inbox_id);
                    }
                    drop(pending);
                    warn!(events = inbox_ids.len(), "no sequencer gave the published events ids in time");
                    let e = Error::Unavailable(
                        "the events are stored but no sequencer gave them ids in time; they will be delivered".into(),
                    );
                    return answer(batch, Err(e));
                }
            }
        }
    }
    answer(batch, Ok(ids));
}

/// Finds the ids of the inbox rows `inbox_ids` among the events after `floor`.
async fn look_up(shared: &Shared, inbox_ids: &[i64], floor: u64) -> Result<()> {
    // By the primary key from the floor: the planner must not pick a scan of the whole log.
    let query = sqlx::query_as(
        "SELECT inbox_id, id FROM (SELECT inbox_id, id FROM realtime_events WHERE id > $1 ORDER BY id LIMIT $3) e \
         WHERE inbox_id = ANY($2)",
    )
    .bind(floor as i64)
    .bind(inbox_ids)
    .bind(LOOK_UP_WINDOW);
    let rows: Vec<(i64, i64)> =
        shared.db.run(async |conn, timeout| within(timeout, fetch(query.fetch_all(conn))).await).await?;
    let found = rows.into_iter().filter_map(|(inbox_id, id)| Some((inbox_id, EventId::new(id as u64).ok()?)));
    shared.resolve(found);
    Ok(())
}

/// Moves committed inbox rows into the log until the inbox is empty; returns how many moved.
async fn move_inbox(conn: &mut PgConnection, timeout: Duration) -> Result<u64> {
    let mut moved = 0;
    loop {
        let statement = sqlx::query_scalar::<_, i32>("SELECT realtime_move_inbox($1)").bind(INBOX_MOVE_BATCH);
        let taken = within(timeout, fetch(statement.fetch_one(&mut *conn))).await?;
        moved += taken as u64;
        if taken < INBOX_MOVE_BATCH {
            return Ok(moved);
        }
    }
}

/// Sends the coalesced `NOTIFY realtime_inbox` that wakes the sequencer on another hub: one at a time, the
/// inserts made meanwhile folded into the next. Without durability: a lost wake-up only costs latency (the sequencer polls), and a commit that
/// waits for no disk holds PostgreSQL's cluster-wide notify lock only for a moment.
async fn run_waker(shared: Arc<Shared>, mut wakes: mpsc::Receiver<()>) {
    while wakes.recv().await.is_some() {
        let wake =
            sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')").bind(INBOX_CHANNEL);
        if let Err(e) = shared.db.run(async |conn, timeout| within(timeout, fetch(wake.execute(conn))).await).await {
            debug!(error = %e, "waking the sequencer failed; it will find the events by polling");
        }
    }
}

/// Becomes the cluster's sequencer when its lock is free, then stores this hub's publishes and moves the inbox
/// until the lock's connection fails. Requests that reach it while it is not the sequencer take the locked path.
async fn run_sequencer(
    shared: Arc<Shared>,
    options: PgConnectOptions,
    mut requests: mpsc::UnboundedReceiver<AppendRequest>,
    poll: Duration,
) {
    let mut lock: Option<PgConnection> = None;
    // Moves come at most every `MOVE_GAP`, each taking all that arrived meanwhile: the per-move costs (a commit, a
    // notification, every hub's read) are paid per batch, not per publish. A wake-up moves at once when the last
    // move is older than that. After a move that found rows the sequencer is *busy*: it also moves every
    // `MOVE_GAP` by itself, so writers that wake it at most every `WAKE_INTERVAL` lose no latency, until `LINGER`
    // passes with nothing to move.
    let mut last_move = Instant::now();
    let mut busy_until: Option<Instant> = None;
    let mut retry = tokio::time::interval(SEQUENCER_RETRY);
    let mut poll = tokio::time::interval(poll);
    for ticker in [&mut retry, &mut poll] {
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        let next_move = last_move + MOVE_GAP;
        tokio::select! {
            request = requests.recv() => {
                let Some(first) = request else { break };
                let batch = coalesce(first, &mut requests);
                let ids = store(&shared, &mut lock, events_of(&batch)).await;
                answer(batch, ids);
                continue;
            }
            _ = shared.inbox_wake.notified(), if lock.is_some() => {
                tokio::time::sleep_until(next_move.into()).await;
            }
            _ = tokio::time::sleep_until(next_move.into()), if busy_until.is_some() => {}
            _ = poll.tick(), if lock.is_some() && busy_until.is_none() => {}
            // Not while publishes wait: trying the lock can take as long as a statement's deadline when
            // PostgreSQL does not answer, and they are stored by the locked path meanwhile.
            _ = retry.tick(), if lock.is_none() && requests.is_empty() => {
                match take_lock(&options, shared.db.timeout).await {
                    Ok(Some(conn)) => {
                        info!("this hub is the sequencer (it holds the lock {SEQUENCER_LOCK:?})");
                        lock = Some(conn);
                        shared.set_sequencing(true);
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        debug!(error = %e, "cannot try the sequencer lock");
                        continue;
                    }
                }
            }
        }
        last_move = Instant::now();
        if sequence_inbox(&shared, &mut lock).await > 0 {
            busy_until = Some(last_move + LINGER);
        } else if busy_until.is_some_and(|until| last_move >= until) || lock.is_none() {
            busy_until = None;
        }
    }
    shared.set_sequencing(false);
}

/// Stores `events` by the locked path: on the sequencer's connection, or on the pool when this hub is not the
/// sequencer.
async fn store(shared: &Shared, lock: &mut Option<PgConnection>, events: Vec<NewEvent>) -> Result<Vec<EventId>> {
    let Some(conn) = lock.as_mut() else {
        return shared.db.run(async |conn, timeout| within(timeout, append_with(conn, &events)).await).await;
    };
    let ids = within(shared.db.timeout, append_with(&mut *conn, &events)).await;
    if let Err(e) = &ids {
        lost_lock(shared, lock, e);
    }
    ids
}

/// Connects and tries the sequencer lock once; the connection is kept only if it got the lock.
async fn take_lock(options: &PgConnectOptions, timeout: Duration) -> Result<Option<PgConnection>> {
    let mut conn = within(timeout, fetch(options.connect())).await?;
    let statement = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))").bind(SEQUENCER_LOCK);
    let locked: bool = within(timeout, fetch(statement.fetch_one(&mut conn))).await?;
    Ok(locked.then_some(conn))
}

/// Moves the inbox on the lock's connection; returns how many rows moved. Every `VACUUM_EVERY` rows moved, and
/// at least every `VACUUM_INTERVAL` while rows are moved, the inbox is vacuumed on the pool: its dead rows would
/// otherwise pile up until autovacuum comes by (never, where it is off), and every move would step over them.
async fn sequence_inbox(shared: &Arc<Shared>, lock: &mut Option<PgConnection>) -> u64 {
    let Some(conn) = lock.as_mut() else { return 0 };
    match move_inbox(&mut *conn, shared.db.timeout).await {
        Ok(moved) => {
            let since = shared.moved_since_vacuum.fetch_add(moved, Ordering::AcqRel) + moved;
            let waited = shared.vacuumed_at.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
            let due = since >= VACUUM_EVERY || (since > 0 && waited >= VACUUM_INTERVAL);
            if due && !shared.vacuuming.swap(true, Ordering::AcqRel) {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let vacuum = async |conn: &mut PgConnection, timeout| {
                        within(timeout, fetch(sqlx::query("VACUUM realtime_inbox").execute(conn))).await
                    };
                    if let Err(e) = shared.db.run(vacuum).await {
                        debug!(error = %e, "vacuuming the inbox failed");
                    }
                    shared.moved_since_vacuum.store(0, Ordering::Release);
                    *shared.vacuumed_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    shared.vacuuming.store(false, Ordering::Release);
                });
            }
            moved
        }
        Err(e) => {
            lost_lock(shared, lock, &e);
            0
        }
    }
}

/// The lock's connection failed: whatever it held is released with it, and another hub may be the sequencer now.
fn lost_lock(shared: &Shared, lock: &mut Option<PgConnection>, e: &Error) {
    warn!(error = %e, "the sequencer's connection failed; this hub is no longer the sequencer");
    shared.db.went_silent(e);
    *lock = None;
    shared.set_sequencing(false);
}

#[async_trait]
impl EventLog for PgLog {
    fn provider(&self) -> &'static str {
        "postgres"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, answer) = oneshot::channel();
        self.appends
            .send(AppendRequest { events, ids })
            .map_err(|_| Error::Unavailable("the appender stopped".into()))?;
        answer.await.map_err(|_| Error::Unavailable("the appender stopped".into()))?
    }

    async fn read_after(&self, after: u64, query: &LogQuery, limit: usize) -> Result<Page> {
        let (shared, query) = (self.shared.clone(), query.clone());
        isolated(async move {
            let read = async |conn: &mut PgConnection, timeout| {
                within(timeout, read_page(conn, &shared, after, &query, limit)).await
            };
            shared.db.run(read).await
        })
        .await
    }

    async fn bounds(&self) -> Result<LogBounds> {
        let shared = self.shared.clone();
        isolated(async move { shared.db.run(async |conn, timeout| within(timeout, bounds(conn)).await).await }).await
    }

    async fn prune(&self) -> Result<u64> {
        let (shared, cutoff) = (self.shared.clone(), Utc::now() - self.retention.max_age);
        isolated(async move { prune(&shared.db, cutoff).await }).await
    }

    async fn live_feed(&self) -> Result<Box<dyn LiveFeed>> {
        // The listener's connection comes from a pool of one of its own, not the shared pool: when a listener is
        // dropped, sqlx sends `UNLISTEN *` on its connection and waits for the answer holding that pool's slot,
        // which a dead connection never gives.
        let (options, timeout) = (self.shared.listen_options.clone(), self.shared.db.timeout);
        let listener = isolated(async move {
            let pool =
                PgPoolOptions::new().max_connections(1).acquire_timeout(ACQUIRE_TIMEOUT).connect_lazy_with(options);
            let mut listener = fetch(PgListener::connect_with(&pool)).await?;
            // A lost connection is said at once (`try_recv` answers `None`), not reconnected behind the storage
            // actor's back: it marks itself not ready and reads what it missed once a new listener is attached.
            listener.eager_reconnect(false);
            within(timeout, fetch(listener.listen_all([EVENTS_CHANNEL, INBOX_CHANNEL]))).await?;
            Ok(listener)
        })
        .await?;
        // Inbox rows committed while nobody listened are moved now.
        self.shared.inbox_wake.notify_one();
        Ok(Box::new(PgFeed { listener: Some(listener), shared: self.shared.clone(), all: LogQuery::all() }))
    }

    async fn describe(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"sequencer": self.is_sequencer()}))
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
async fn prune(db: &Db, cutoff: DateTime<Utc>) -> Result<u64> {
    let mut removed = 0;
    loop {
        let statement = sqlx::query(
            "DELETE FROM realtime_events WHERE id IN \
             (SELECT id FROM realtime_events ORDER BY id LIMIT $2) AND created_at < $1",
        )
        .bind(cutoff)
        .bind(RETENTION_BATCH);
        let deleted =
            db.run(async |conn, timeout| within(timeout, fetch(statement.execute(conn))).await).await?.rows_affected();
        removed += deleted;
        if deleted < RETENTION_BATCH as u64 {
            break;
        }
    }
    // Idempotency keys live as long as their events: a retry after that stores anew.
    let statement = sqlx::query("DELETE FROM realtime_idempotency WHERE created_at < $1").bind(cutoff);
    db.run(async |conn, timeout| within(timeout, fetch(statement.execute(conn))).await).await?;
    Ok(removed)
}

/// One page of the log after `after` matching `query`, with the head read in the same snapshot.
async fn read_page<'e>(
    db: impl sqlx::PgExecutor<'e>,
    shared: &Shared,
    after: u64,
    query: &LogQuery,
    limit: usize,
) -> Result<Page> {
    let mut sql = QueryBuilder::new(
        "SELECT s.head, s.earliest, e.id, e.topic, e.scope, e.stream_key, e.seq, e.payload, e.correlation_id, \
         e.traceparent, e.created_at, e.inbox_id \
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
    let rows = sql.build().fetch_all(db).await.map_err(unavailable)?;
    let head = rows.first().map(|r| r.try_get::<i64, _>("head")).transpose().map_err(unavailable)?.unwrap_or(0) as u64;
    let earliest = rows.first().map(|r| r.try_get::<Option<i64>, _>("earliest")).transpose().map_err(unavailable)?;
    let bounds = LogBounds { head, earliest: earliest.flatten().map_or(head + 1, |e| e as u64) };
    let mut events = Vec::with_capacity(rows.len());
    let mut published = Vec::new();
    for row in &rows {
        let Some(id) = row.try_get::<Option<i64>, _>("id").map_err(unavailable)? else { continue };
        let event = decode(id, row)?;
        if let Some(inbox_id) = row.try_get::<Option<i64>, _>("inbox_id").map_err(unavailable)? {
            published.push((inbox_id, event.envelope.id));
        }
        events.push(Arc::new(event));
    }
    // Publishes of this hub that went through the inbox learn their ids here.
    shared.resolve(published);
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
    shared: Arc<Shared>,
    /// What the storage actor reads: every event.
    all: LogQuery,
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
                Ok(Some(notification)) if notification.channel() == INBOX_CHANNEL => {
                    self.shared.inbox_wake.notify_one()
                }
                Ok(Some(_)) => return Ok(()),
                Ok(None) => return Err(Error::Unavailable("the listening connection was lost".into())),
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// Reads the log on the listener's own connection: the storage actor's reads never queue behind the requests
    /// on the pool (under a burst of replays and long-polls, live delivery goes on and `/readyz` stays 200), and
    /// a listener whose connection died without a word is found out by its next read's deadline.
    async fn read(&mut self, after: u64, limit: usize) -> Result<Option<Page>> {
        let Some(listener) = self.listener.as_mut() else {
            return Err(Error::Unavailable("the listener is closed".into()));
        };
        let page = within(self.shared.db.timeout, read_page(listener, &self.shared, after, &self.all, limit)).await;
        if let Err(e) = &page {
            self.shared.db.went_silent(e);
        }
        page.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool whose every acquire times out at once: its server refuses connections (sqlx retries those until the
    /// acquire's time is up).
    fn unreachable_db() -> Db {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let options = PgConnectOptions::new().host("127.0.0.1").port(port);
        let pool = PgPoolOptions::new().acquire_timeout(Duration::from_millis(100)).connect_lazy_with(options.clone());
        Db::new(pool, options, 1, DEFAULT_TIMEOUT)
    }

    #[tokio::test]
    async fn a_pool_that_gives_out_no_connection_while_nothing_was_answered_for_long_is_replaced() {
        let mut db = unreachable_db();
        db.epoch = Instant::now().checked_sub(STUCK_AFTER).unwrap();

        assert!(db.acquire().await.is_err());

        assert_eq!(db.pool().0, 1, "the pool was not replaced");
    }

    #[tokio::test]
    async fn a_pool_that_answered_a_moment_ago_is_kept_through_a_failed_acquire() {
        let db = unreachable_db();

        assert!(db.acquire().await.is_err());

        assert_eq!(db.pool().0, 0, "the pool was replaced");
    }

    #[tokio::test]
    async fn a_statement_that_misses_its_deadline_fails_as_silent() {
        let never = within(Duration::from_millis(10), std::future::pending::<Result<()>>()).await;

        assert!(never.is_err_and(|e| is_silent(&e)));
    }
}
