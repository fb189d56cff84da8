//! Live counts of the hub, read by `/api/health/pubsub`.

use std::sync::atomic::{AtomicI64, Ordering};

#[derive(Debug, Default)]
pub struct HubStats {
    pub connections: AtomicI64,
    pub subscriptions: AtomicI64,
    /// Open topic rooms.
    pub topics: AtomicI64,
}

impl HubStats {
    pub fn snapshot(&self) -> (i64, i64, i64) {
        (
            self.connections.load(Ordering::Relaxed),
            self.subscriptions.load(Ordering::Relaxed),
            self.topics.load(Ordering::Relaxed),
        )
    }
}
