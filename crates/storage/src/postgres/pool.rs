//! The hub's pool of connections to the log: how it connects, the deadline on every statement, and the pool's
//! replacement when PostgreSQL stops answering on it; the migrations.

use std::str::FromStr;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tracing::{debug, warn};

use super::read::bounds;
use super::statement::{is_silent, unavailable};
use crate::{Error, Result};

/// How long the hub waits, by default, for PostgreSQL to answer one statement (see [`PgSettings::timeout`](super::PgSettings::timeout)).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long acquires may time out with no statement answered before the pool is taken for stuck and replaced.
pub(super) const STUCK_AFTER: Duration = Duration::from_secs(15);

/// How long the pool waits for a connection, free or new, for one acquire.
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection rests in the pool before it is pinged on its way out.
pub(super) const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

pub(super) fn connect_options(url: &str, application: &str) -> Result<PgConnectOptions> {
    // No JIT: the log's statements are short lookups, but before autovacuum has analysed the tables their
    // estimated cost can pass `jit_above_cost`, and compiling a read then took 175 ms on a 40k-event log (every
    // execution, on every connection): the stalls of one batch in a hundred in the cross-hub benchmark.
    Ok(PgConnectOptions::from_str(url).map_err(unavailable)?.application_name(application).options([("jit", "off")]))
}

/// Asks the server to probe the connection when idle: it notices a peer that vanished without closing (a hub on a
/// partitioned node, a flow a NAT dropped) within about 20 s, and releases what its backend held (the sequencer's
/// lock, a slot of `max_connections`).
pub(super) fn with_keepalives(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("tcp_keepalives_idle", "10"), ("tcp_keepalives_interval", "3"), ("tcp_keepalives_count", "3")])
}

/// Keeps the planner off sequential scans of the log. A page read for a pattern with no scope filter
/// (`topic LIKE ANY($2)` after `id > $1`, limited) is best walked along the primary key from `$1`, stopping at the
/// limit; but sqlx prepares its statements, and PostgreSQL's generic plan for them takes `id > $1` for a third of
/// the log, for which a scan of the whole table and a sort looks cheaper. In a 30-minute soak that plan read 17
/// billion rows (1.16 M scans, each of the log as it had grown) and latency crept up by a third. Every statement
/// the hub runs on the log has an index to walk; with sequential scans off the planner takes it.
pub(super) fn by_index(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("enable_seqscan", "off")])
}

/// Connects a small pool to `url`, naming the connections so operators can tell them apart.
pub async fn connect_pool(url: &str, size: u32, application: &str) -> Result<PgPool> {
    pool_options(size).connect_with(connect_options(url, application)?).await.map_err(unavailable)
}

pub(super) fn pool_options(size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size)
        // Every connection is opened and warmed at start-up, not in the middle of the first burst of traffic.
        .min_connections(size)
        .after_connect(|conn, _| Box::pin(async move { warm(conn).await }))
        // sqlx pings every connection it hands out: a round trip before every statement (a tenth of a millisecond
        // of each publish on a hub other than the sequencer). Only one that rested for `PING_IDLE_AFTER` is pinged,
        // so a pool left idle across a PostgreSQL restart still opens new connections instead of failing a
        // statement; one that broke while in use fails its statement, which the statement's caller answers.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .acquire_timeout(ACQUIRE_TIMEOUT)
}

/// The hub's pool of connections to the log, with a deadline on every statement.
///
/// A connection whose peer vanished without closing it (a failover that moved the address, a NAT or firewall that
/// dropped the flow, a partition) neither answers nor fails: TCP retransmits for up to fifteen minutes, and sqlx
/// waits as long, holding the pool's slot (a connection that rested is pinged before it is handed out). So every
/// statement has a deadline ([`PgSettings::timeout`]). A connection that misses it is closed, not handed back, and
/// the pool is replaced by a fresh one that opens its connections anew once PostgreSQL answers again: the other idle
/// connections took the same path and are as dead, and each would cost an acquire its full timeout before sqlx
/// dropped it. The same replacement covers a pool that stops giving out connections at all (acquires time out
/// with no statement answered for [`STUCK_AFTER`]); the old pool goes once its last connection is back.
pub(super) struct Db {
    pub(super) options: PgConnectOptions,
    pub(super) size: u32,
    pub(super) timeout: Duration,
    /// The pool and how many pools came before it.
    pub(super) pool: RwLock<(u64, PgPool)>,
    /// When a statement last got its answer, in milliseconds after `epoch` (a store on every statement: no lock).
    pub(super) answered_ms: AtomicU64,
    pub(super) epoch: Instant,
}

/// A connection of [`Db`]'s pool, and which pool it came from.
struct DbConn {
    conn: PoolConnection<Postgres>,
    generation: u64,
}

impl Db {
    pub(super) fn new(pool: PgPool, options: PgConnectOptions, size: u32, timeout: Duration) -> Self {
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
    pub(super) async fn run<T>(&self, op: impl AsyncFnOnce(&mut PgConnection, Duration) -> Result<T>) -> Result<T> {
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
    pub(super) fn went_silent(&self, e: &Error) {
        if is_silent(e) {
            self.renew(self.pool().0, "a connection of the hub's own did not answer in time");
        }
    }

    /// The live feed was lost and is opened again: the pool's connections are taken for lost with it (see
    /// `PgLog::live_feed`).
    pub(super) fn connections_lost(&self) {
        self.renew(self.pool().0, "the live feed was lost");
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
    if let Err(e) = bounds(conn, &[]).await {
        debug!(error = %e, "the new connection was not warmed (the log is not migrated yet)");
    }
    Ok(())
}

/// Applies the log's migrations (idempotent; concurrent callers are serialized by sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<()> {
    sqlx::migrate!("./migrations").run(pool).await.map_err(|e| Error::Unavailable(Box::new(e)))
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
}
