//! The PostgreSQL event log: any number of hubs share it.
//!
//! Ids are dense and become visible in id order: every id is given under the row lock of `realtime_log_state`,
//! held until the giving transaction commits (see the migrations and `docs/POSTGRES.md`).
//! - Every hub stores its own HTTP publishes under that lock, coalesced into one `realtime_append` per round trip:
//!   the lock is contended by a few hubs, each with one append in flight, and a publish costs one commit wherever
//!   it lands.
//! - The publisher crate inserts into `realtime_inbox` with no lock, inside the caller's transaction when it wants.
//!   One hub of the cluster, the *sequencer* (the holder of the advisory lock `realtime-sequencer` on a connection
//!   of its own; a dead hub's connection, and with it the lock, goes with it), moves committed inbox rows into the
//!   log in batches (`realtime_move_inbox`), woken by `NOTIFY realtime_inbox` or by a poll. Its own hub's
//!   publishes it stores on that connection.
//!
//! Hubs learn of new events from `NOTIFY realtime_events`, sent once per transaction that gives ids: a small
//! transaction's notification carries its events, which a hub whose cursor they follow delivers as they are;
//! otherwise it reads the log from its cursor.
//!
//! # Layout
//! - `statement.rs`: one statement's error, deadline and task; `pool.rs`: the pool, renewed when PostgreSQL stops
//!   answering on it, and the migrations.
//! - `read.rs`: the log's bounds and pages; `write.rs`: appends, inbox inserts and the inbox's move.
//! - `shared.rs`: what the log's tasks share.
//! - `appender.rs`: this hub's publishes; `sequencer.rs`: the cluster's inbox mover.
//! - `listener.rs`: the live feed; `policies.rs`: the topic policies, their removal and their positions.

mod appender;
mod listener;
mod policies;
mod pool;
mod read;
mod sequencer;
mod shared;
mod statement;
mod write;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use protocol::{EventId, NewEvent};
use sqlx::PgConnection;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{Notify, mpsc, oneshot};

use self::appender::{AppendRequest, run_appender};
use self::listener::PgFeed;
use self::policies::PgPolicies;
use self::pool::{ACQUIRE_TIMEOUT, Db, by_index, connect_options, pool_options, with_keepalives};
pub use self::pool::{DEFAULT_TIMEOUT, connect_pool, migrate};
use self::sequencer::run_sequencer;
use self::shared::Shared;
pub use self::shared::{EVENTS_CHANNEL, INBOX_CHANNEL, SEQUENCER_LOCK};
use self::statement::{fetch, isolated, unavailable, within};
pub use self::write::{append_with, enqueue_with};
use crate::event::{LogBounds, LogQuery, Page};
use crate::event_log::{EventLog, LiveFeed};
use crate::policy::{PolicyState, TopicPolicies};
use crate::{Error, Result};

/// How the PostgreSQL log connects and behaves.
#[derive(Debug, Clone)]
pub struct PgSettings {
    pub url: String,
    pub pool_size: u32,
    /// The longest the hub waits for any one statement (and the sequencer's and listener's connections for
    /// theirs); a connection that does not answer in time is taken for dead (see `pool::Db`).
    pub timeout: Duration,
    /// How often the sequencer checks the inbox without a notification (and that it still holds its lock).
    pub inbox_poll: Duration,
    /// What the log keeps of which topics; PostgreSQL bounds a policy by age, and by count when it sets a cap.
    pub policies: TopicPolicies,
}

pub struct PgLog {
    shared: Arc<Shared>,
    appends: mpsc::UnboundedSender<AppendRequest>,
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
            listened: AtomicBool::new(false),
            sequencing: AtomicBool::new(false),
            inbox_wake: Notify::new(),
            moved_since_vacuum: AtomicU64::new(0),
            vacuumed_at: Mutex::new(Instant::now()),
            vacuuming: AtomicBool::new(false),
            policies: PgPolicies::new(settings.policies),
        });
        shared.policies.register(&shared.db).await?;
        shared.set_sequencing(false);
        let (appends, requests) = mpsc::unbounded_channel();
        let (local, local_requests) = mpsc::unbounded_channel();
        tokio::spawn(run_appender(shared.clone(), requests, local));
        tokio::spawn(run_sequencer(shared.clone(), lock_options, local_requests, settings.inbox_poll));
        Ok(Self { shared, appends })
    }

    /// Whether this hub is the cluster's sequencer now.
    pub fn is_sequencer(&self) -> bool {
        self.shared.sequencing.load(Ordering::Acquire)
    }
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
                let keys = shared.policies.keys_for(&query);
                within(timeout, read::read_page(conn, after, &query, &keys, limit)).await
            };
            shared.db.run(read).await
        })
        .await
    }

    async fn bounds(&self, query: &LogQuery) -> Result<LogBounds> {
        let (shared, keys) = (self.shared.clone(), self.shared.policies.keys_for(query));
        isolated(
            async move { shared.db.run(async |conn, timeout| within(timeout, read::bounds(conn, &keys)).await).await },
        )
        .await
    }

    fn policies(&self) -> &TopicPolicies {
        &self.shared.policies.policies
    }

    async fn prune(&self) -> Result<Vec<u64>> {
        let shared = self.shared.clone();
        isolated(async move { shared.policies.prune(&shared.db, Utc::now()).await }).await
    }

    async fn policy_states(&self) -> Result<Vec<PolicyState>> {
        let shared = self.shared.clone();
        isolated(async move { shared.policies.states(&shared.db).await }).await
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
        if self.shared.listened.swap(true, Ordering::AcqRel) {
            // The feed before this one was lost (PostgreSQL restarted, the network failed, a read or the listening
            // failed): the pool's connections went the same way, and one that rested less than a second is not
            // pinged. Replaced before the hub is ready again, so the first statements do not land on them.
            self.shared.db.connections_lost();
        }
        // Inbox rows committed while nobody listened are moved now.
        self.shared.inbox_wake.notify_one();
        let all = LogQuery::all();
        let keys = self.shared.policies.keys_for(&all);
        Ok(Box::new(PgFeed {
            listener: Some(listener),
            shared: self.shared.clone(),
            all,
            keys,
            carried: Default::default(),
        }))
    }

    async fn describe(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"sequencer": self.is_sequencer()}))
    }
}
