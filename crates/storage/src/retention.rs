//! How long, and how much, history a log keeps.

use std::time::Duration;

/// What a log keeps: events younger than `max_age`, and (for bounded backends) at most `max_events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    /// Only the memory backend is bounded by count.
    pub max_events: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self { max_age: Duration::from_secs(24 * 3600), max_events: 100_000 }
    }
}
