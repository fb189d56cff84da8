//! What the log's tasks share: the pool, the listener's connection options and the sequencer's state; the names the
//! log uses on the server.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use sqlx::postgres::PgConnectOptions;
use tokio::sync::Notify;

use super::policies::PgPolicies;
use super::pool::Db;

/// The channel hubs listen on for new events.
pub const EVENTS_CHANNEL: &str = "realtime_events";
/// The channel that wakes the sequencer when committed rows wait in the inbox.
pub const INBOX_CHANNEL: &str = "realtime_inbox";
/// The advisory lock whose holder is the cluster's sequencer.
pub const SEQUENCER_LOCK: &str = "realtime-sequencer";

/// What the log's tasks share.
pub(super) struct Shared {
    pub(super) db: Db,
    /// How the live feed's listener connects (a pool of one of its own each time: see `live_feed`).
    pub(super) listen_options: PgConnectOptions,
    /// A live feed was opened before: the next one replaces a lost one.
    pub(super) listened: AtomicBool,
    /// This hub holds the sequencer lock.
    pub(super) sequencing: AtomicBool,
    /// Woken when committed rows may wait in the inbox (a notification).
    pub(super) inbox_wake: Notify,
    /// Inbox rows this hub moved since it last vacuumed the inbox, and when that was.
    pub(super) moved_since_vacuum: AtomicU64,
    pub(super) vacuumed_at: Mutex<Instant>,
    /// A vacuum of the inbox runs.
    pub(super) vacuuming: AtomicBool,
    pub(super) policies: PgPolicies,
}

impl Shared {
    pub(super) fn set_sequencing(&self, sequencing: bool) {
        self.sequencing.store(sequencing, Ordering::Release);
        metrics::gauge!("hub_sequencer").set(if sequencing { 1.0 } else { 0.0 });
    }
}
