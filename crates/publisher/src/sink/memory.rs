//! An in-memory sink, for tests of the services that link the publisher.

use async_trait::async_trait;
use protocol::{Envelope, NewEvent};
use storage::{EventLog, LogQuery, MemoryLog, Retention};

use crate::Result;
use crate::publisher::{Published, Sink};

/// Keeps published events in memory, with ids and envelopes exactly as a hub's log would give them.
pub struct MemorySink {
    log: MemoryLog,
}

impl Default for MemorySink {
    fn default() -> Self {
        Self { log: MemoryLog::new(Retention::default()) }
    }
}

impl MemorySink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event published so far, as subscribers would receive it.
    pub async fn envelopes(&self) -> Vec<Envelope> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            // The memory log never fails.
            let Ok(page) = self.log.read_after(after, &LogQuery::all(), 1000).await else { return out };
            // The log's JSON is what `Envelope` serializes to: it always parses back.
            out.extend(page.events.iter().map(|e| serde_json::from_str(e.json()).expect("a stored envelope parses")));
            after = page.through;
            if page.complete {
                return out;
            }
        }
    }
}

#[async_trait]
impl Sink for MemorySink {
    async fn send(&self, events: Vec<NewEvent>) -> Result<Published> {
        Ok(Published { ids: Some(self.log.append(events).await?) })
    }
}
