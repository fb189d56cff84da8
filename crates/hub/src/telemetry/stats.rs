//! Live counts of the hub, read by `/api/health/pubsub`.

use std::sync::atomic::{AtomicI64, Ordering};

/// Open connections are counted by their permits (`limits::ConnectionLimiter::open`), not here.
#[derive(Debug, Default)]
pub struct HubStats {
    pub subscriptions: AtomicI64,
    /// Open topic rooms.
    pub topics: AtomicI64,
    /// Rooms of prefix patterns, counted in `topics` too.
    pub patterns: AtomicI64,
}

impl HubStats {
    /// Subscriptions and open topic rooms.
    pub fn snapshot(&self) -> (i64, i64) {
        (self.subscriptions.load(Ordering::Relaxed), self.topics.load(Ordering::Relaxed))
    }

    /// Rooms of prefix patterns (`run.*`), among the topic rooms.
    pub fn patterns(&self) -> i64 {
        self.patterns.load(Ordering::Relaxed)
    }
}
