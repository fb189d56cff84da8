//! The log's vocabulary: an event as the log holds it, what a read asks for and what it answers, and where the log
//! stands. Every backend, the window of recent events and the storage actor speak these types.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use protocol::{ENVELOPE_VERSION, Envelope, EventId, Filter, NewEvent, RawEnvelope, TopicPattern};

/// An event as the log holds it: the envelope (its payload as JSON text: the hub never reads a payload's fields),
/// and its JSON serialized once for every transport and recipient.
#[derive(Debug)]
pub struct StoredEvent {
    pub envelope: RawEnvelope,
    pub created_at: DateTime<Utc>,
    /// The publisher's W3C trace context, kept for linking delivery to the publishing span; never delivered.
    pub traceparent: Option<String>,
    json: Box<str>,
}

/// Events are shared, never copied, between the log, dispatch and every connection.
pub type SharedEvent = Arc<StoredEvent>;

impl StoredEvent {
    /// Builds the stored form of a new event the log has given `id` at `created_at`.
    pub fn from_new(id: EventId, created_at: DateTime<Utc>, event: NewEvent) -> Self {
        let key = event.effective_key();
        let traceparent = event.traceparent;
        let envelope = Envelope {
            id,
            topic: event.topic,
            scope: event.scope,
            key,
            seq: event.seq,
            ts: format_ts(created_at),
            v: ENVELOPE_VERSION,
            correlation_id: event.correlation_id,
            // A map of JSON values: serializing it cannot fail.
            payload: serde_json::value::to_raw_value(&event.payload).expect("a payload always serializes"),
        };
        Self::new(envelope, created_at, traceparent)
    }

    pub fn new(envelope: RawEnvelope, created_at: DateTime<Utc>, traceparent: Option<String>) -> Self {
        // The payload and about 256 bytes of the rest, so that writing it never grows the buffer.
        let mut json = Vec::with_capacity(envelope.payload.get().len() + 256);
        // The envelope is plain data (strings, integers, JSON values): serializing it cannot fail, and serde_json
        // writes UTF-8.
        serde_json::to_writer(&mut json, &envelope).expect("an envelope always serializes");
        let json = String::from_utf8(json).expect("serde_json writes UTF-8").into_boxed_str();
        Self { envelope, created_at, traceparent, json }
    }

    /// An event whose log stores the envelope's JSON as delivered: `json` must be what `envelope` serializes to.
    pub fn with_json(
        envelope: RawEnvelope,
        created_at: DateTime<Utc>,
        traceparent: Option<String>,
        json: Box<str>,
    ) -> Self {
        Self { envelope, created_at, traceparent, json }
    }

    pub fn id(&self) -> u64 {
        self.envelope.id.get()
    }

    pub fn topic(&self) -> &str {
        self.envelope.topic.as_str()
    }

    /// The envelope as a JSON object.
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// RFC 3339 UTC with milliseconds, as the envelope's `ts` requires.
pub fn format_ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Which events a read returns: those on one of `topics` whose scope matches `filter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub topics: Vec<TopicPattern>,
    pub filter: Filter,
}

impl LogQuery {
    pub fn new(topics: Vec<TopicPattern>, filter: Filter) -> Self {
        Self { topics, filter }
    }

    /// Every event.
    pub fn all() -> Self {
        Self { topics: vec![TopicPattern::Prefix(String::new())], filter: Filter::default() }
    }

    pub fn matches(&self, event: &StoredEvent) -> bool {
        self.topics.iter().any(|p| p.matches(event.topic())) && self.filter.matches(&event.envelope.scope)
    }
}

/// One page of a read: the matching events with ids in `(after, through]`, in id order.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub events: Vec<SharedEvent>,
    /// Every matching event with an id up to here is in `events` (or in an earlier page).
    pub through: u64,
    /// The read reached the head of the log as it was when it ran.
    pub complete: bool,
    /// The log's bounds as the read saw them (same snapshot): a reader whose position is below
    /// `bounds.earliest - 1` has lost events to retention or to a log that was replaced (see [`Page::skips`]).
    pub bounds: LogBounds,
}

impl Page {
    /// Whether events right after `after` are gone: ids are dense, so a retained history that starts above
    /// `after + 1` means some were removed (retention, a length cap) or the log itself was replaced (a Redis that
    /// restarted empty starts a new epoch above every old id).
    pub fn skips(&self, after: u64) -> bool {
        self.bounds.earliest > after + 1
    }
}

/// Where the log stands: `head` is the newest id (0 when nothing was ever appended), `earliest` the oldest
/// retained id, or `head + 1` when nothing is retained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    pub head: u64,
    pub earliest: u64,
}

impl Default for LogBounds {
    /// An empty log.
    fn default() -> Self {
        Self { head: 0, earliest: 1 }
    }
}

impl LogBounds {
    /// What a reader at `after` is told when events after it are gone.
    pub fn reset(&self) -> protocol::ResetInfo {
        protocol::ResetInfo::history_truncated(self.earliest, self.head)
    }

    /// Whether resuming after `since` would miss events that are no longer retained (or come from another log).
    /// `since = 0` asks for "whatever is retained" and is never truncated.
    pub fn truncates(&self, since: u64) -> bool {
        since != 0 && (since + 1 < self.earliest || since > self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_is_said_for_resume_points_outside_the_retained_range() {
        let bounds = LogBounds { head: 9000, earliest: 5000 };
        assert!(bounds.truncates(100));
        assert!(bounds.truncates(4998));
        assert!(!bounds.truncates(4999));
        assert!(!bounds.truncates(9000));
        assert!(bounds.truncates(9001), "a resume point past the head comes from another log");
        assert!(!bounds.truncates(0), "since 0 means whatever is retained");
        let empty = LogBounds { head: 0, earliest: 1 };
        assert!(!empty.truncates(0));
    }
}
