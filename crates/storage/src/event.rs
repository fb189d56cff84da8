//! The log's vocabulary: an event as the log holds it, what a read asks for and what it answers, and where the log
//! stands. Every backend, the window of recent events and the storage actor speak these types.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use protocol::envelope::derive_key;
use protocol::{ENVELOPE_VERSION, Envelope, EventId, Filter, NewEvent, RawEnvelope, Scope, Topic, TopicPattern};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

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

/// What a log that gives ids itself stores of a new event (a NATS message, a Redis entry of format 1): everything
/// but the id, the time and the idempotency key, with the stream key resolved.
pub(crate) fn encode_new(event: &NewEvent) -> Vec<u8> {
    let stored = NewEventText {
        topic: &event.topic,
        scope: &event.scope,
        key: event.effective_key(),
        seq: event.seq,
        correlation_id: event.correlation_id.as_deref(),
        payload: &event.payload,
        traceparent: event.traceparent.as_deref(),
    };
    // Strings, integers and JSON values: serializing cannot fail.
    serde_json::to_vec(&stored).expect("an event always serializes")
}

/// The event `encode_new` stored, with the id and time its log gave it; the payload is kept as its JSON text.
pub(crate) fn decode_new(id: EventId, created_at: DateTime<Utc>, json: &[u8]) -> serde_json::Result<StoredEvent> {
    let stored: StoredNewEvent = serde_json::from_slice(json)?;
    let key = stored.key.or_else(|| derive_key(&stored.scope));
    let envelope = Envelope {
        id,
        topic: stored.topic,
        scope: stored.scope,
        key,
        seq: stored.seq,
        ts: format_ts(created_at),
        v: ENVELOPE_VERSION,
        correlation_id: stored.correlation_id,
        payload: stored.payload,
    };
    Ok(StoredEvent::new(envelope, created_at, stored.traceparent))
}

/// `NewEvent`'s fields as `encode_new` writes them, borrowed.
#[derive(Serialize)]
struct NewEventText<'a> {
    topic: &'a Topic,
    scope: &'a Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    payload: &'a Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<&'a str>,
}

/// What `decode_new` reads (entries written by earlier releases may lack the key).
#[derive(Deserialize)]
struct StoredNewEvent {
    topic: Topic,
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    correlation_id: Option<String>,
    payload: Box<RawValue>,
    #[serde(default)]
    traceparent: Option<String>,
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
    fn a_new_event_stored_and_read_back_renders_as_it_did_when_built_from_the_new_event() {
        let payload = serde_json::json!({"z": 1.0, "a": [1, -2, 3.25e-7, "é\"x"], "m": {"k": null}, "n": 18446744073709551615u64});
        let mut event = NewEvent::new(
            Topic::parse("run.status").unwrap(),
            Scope::try_from([("run_id", "r1"), ("project_id", "p1")]).unwrap(),
            payload.as_object().unwrap().clone(),
        );
        event.seq = Some(7);
        event.correlation_id = Some("c1".into());
        event.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        event.idempotency_key = Some("not stored".into());
        let (id, at) = (EventId::new(42).unwrap(), Utc::now());
        let stored = encode_new(&event);
        assert!(!String::from_utf8_lossy(&stored).contains("not stored"));

        let read = decode_new(id, at, &stored).unwrap();
        let built = StoredEvent::from_new(id, at, event);
        assert_eq!(read.json(), built.json());
        assert_eq!(read.traceparent, built.traceparent);
        assert_eq!(read.envelope.key.as_deref(), Some("run:r1"));
    }

    #[test]
    fn an_entry_of_an_earlier_release_without_its_key_gets_it_from_its_scope() {
        let json = br#"{"topic":"deploy.status","scope":{"deploy_id":"d9"},"payload":{"ok":true}}"#;
        let read = decode_new(EventId::new(1).unwrap(), Utc::now(), json).unwrap();
        assert_eq!(read.envelope.key.as_deref(), Some("deploy:d9"));
        assert_eq!(read.envelope.payload.get(), r#"{"ok":true}"#);
    }

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
