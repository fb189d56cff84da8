//! The PostgreSQL sink: straight into the event log's inbox, with the service's own pool and, when it wants,
//! inside its own transaction.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use protocol::NewEvent;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;

use crate::Result;
use crate::events::Event;
use crate::publisher::{Published, Publisher, Sink};

/// At most one wake-up per this interval; wake-ups asked for meanwhile are folded into the next. Every NOTIFY
/// commit takes PostgreSQL's cluster-wide notify lock, so one per event would serialize publishers. A sequencer
/// that moved rows keeps looking for more for longer than this (its "busy spell"), so a wake-up left out costs no
/// latency.
const WAKE_INTERVAL: Duration = Duration::from_millis(25);
/// The wake-up, committed without waiting for the disk: a lost one only costs latency (the sequencer polls), and
/// the notify lock is then held for a moment rather than for a flush.
const WAKE: &str = "SELECT set_config('synchronous_commit', 'off', true), pg_notify('realtime_inbox', '')";

/// Writes events to `realtime_inbox`. The cluster's sequencer (one hub) moves committed inbox rows into the log
/// (with ids) when woken by `NOTIFY realtime_inbox` and at least every `HUB_INBOX_POLL`. Publishing holds no lock
/// and sends no NOTIFY inside the write, so many publishers commit concurrently; wake-ups are sent afterwards,
/// coalesced.

#[derive(Clone)]
pub struct PgSink {
    pool: PgPool,
    wake: Arc<Notify>,
}

impl PgSink {
    /// Uses the service's pool. Must be called inside a Tokio runtime: a task sends the coalesced wake-ups.
    pub fn new(pool: PgPool) -> Self {
        let wake = Arc::new(Notify::new());
        let (task_pool, task_wake) = (pool.clone(), wake.clone());
        tokio::spawn(async move {
            loop {
                task_wake.notified().await;
                if let Err(e) = sqlx::query(WAKE).execute(&task_pool).await {
                    tracing::debug!(error = %e, "waking the hubs failed; they will find the events by polling");
                }
                tokio::time::sleep(WAKE_INTERVAL).await;
            }
        });
        Self { pool, wake }
    }

    /// Tells the hubs that committed events wait in the inbox (after a transaction that used `publish_in`).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

#[async_trait]
impl Sink for PgSink {
    async fn send(&self, events: Vec<NewEvent>) -> Result<Published> {
        storage::postgres::enqueue_with(&self.pool, &events).await?;
        self.wake();
        Ok(Published { ids: None })
    }
}

impl Publisher<PgSink> {
    /// Publishes inside the caller's transaction: the event becomes visible if and only if it commits (the
    /// transactional outbox). Call [`PgSink::wake`] after the commit for the lowest latency.
    pub async fn publish_in(&self, tx: &mut PgConnection, event: impl Event) -> Result<()> {
        let event = self.prepare(event)?;
        storage::postgres::enqueue_with(&mut *tx, std::slice::from_ref(&event)).await?;
        Ok(())
    }

    /// A batch inside the caller's transaction.
    pub async fn publish_batch_in<E: Event>(
        &self,
        tx: &mut PgConnection,
        events: impl IntoIterator<Item = E>,
    ) -> Result<()> {
        let events = events.into_iter().map(|e| self.prepare(e)).collect::<Result<Vec<_>>>()?;
        storage::postgres::enqueue_with(&mut *tx, &events).await?;
        Ok(())
    }
}
