//! The event envelope subscribers receive, and the event a publisher sends.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::{EventId, Scope, Topic, ValidationError};

/// The longest stream key, in characters.
pub const MAX_KEY_LEN: usize = 256;
/// The longest correlation id, in characters.
pub const MAX_CORRELATION_ID_LEN: usize = 128;
/// The longest idempotency key, in characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;
/// The default bound of a serialized payload.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// One event as every transport delivers it (section 1 of the contract).
///
/// The payload is a JSON object, parsed (`Map`, the default) or kept as the text the log holds (`Box<RawValue>`:
/// what the hub delivers needs only the payload's JSON, never its fields, so the log's readers skip building it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P = Map<String, Value>> {
    pub id: EventId,
    pub topic: Topic,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Server time of append, RFC 3339 UTC with milliseconds.
    pub ts: String,
    pub v: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    pub payload: P,
}

/// An envelope whose payload is the JSON text the log holds.
pub type RawEnvelope = Envelope<Box<RawValue>>;

/// Bounds a publish is checked against; the hub's are configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    pub max_payload_bytes: usize,
}

impl Default for EventLimits {
    fn default() -> Self {
        Self { max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES }
    }
}

/// An event on its way into the log: everything but the id and timestamp, which the log assigns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    pub topic: Topic,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    pub payload: Map<String, Value>,
    /// Publishing the same key again (a retry) stores nothing new and answers the first id. Not delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The W3C trace context of the publishing span (`00-<trace id>-<span id>-<flags>`). Not delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Why a publish was refused; `index` names the first bad event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRejection {
    pub index: Option<usize>,
    pub too_large: bool,
    pub message: String,
}

impl NewEvent {
    pub fn new(topic: Topic, scope: Scope, payload: Map<String, Value>) -> Self {
        Self {
            topic,
            scope,
            key: None,
            seq: None,
            correlation_id: None,
            payload,
            idempotency_key: None,
            traceparent: None,
        }
    }

    /// Checks the rules serde cannot: string lengths and the payload's serialized size.
    pub fn validate(&self, limits: &EventLimits) -> Result<(), ValidationError> {
        if let Some(key) = &self.key
            && (key.is_empty() || key.chars().count() > MAX_KEY_LEN)
        {
            return Err(ValidationError::new(format!("key must be 1-{MAX_KEY_LEN} characters")));
        }
        if let Some(id) = &self.correlation_id
            && id.chars().count() > MAX_CORRELATION_ID_LEN
        {
            return Err(ValidationError::new(format!(
                "correlation_id must be at most {MAX_CORRELATION_ID_LEN} characters"
            )));
        }
        if let Some(key) = &self.idempotency_key
            && (key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_LEN)
        {
            return Err(ValidationError::new(format!(
                "idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} characters"
            )));
        }
        if let Some(traceparent) = &self.traceparent
            && !is_traceparent(traceparent)
        {
            return Err(ValidationError::new("traceparent must be a W3C trace context: 00-<32 hex>-<16 hex>-<2 hex>"));
        }
        if let Some(seq) = self.seq
            && seq >= EventId::LIMIT
        {
            return Err(ValidationError::new("seq must be below 2^53"));
        }
        let size = serialized_len(&self.payload);
        if size > limits.max_payload_bytes {
            return Err(ValidationError::new(format!(
                "payload is {size} bytes serialized, the limit is {} bytes",
                limits.max_payload_bytes
            )));
        }
        Ok(())
    }

    /// The stream key: the one given, else derived from the scope (`run:<run_id>`, `task:…`, `deploy:…`).
    pub fn effective_key(&self) -> Option<String> {
        self.key.clone().or_else(|| derive_key(&self.scope))
    }

    /// Parses a `POST /api/publish` body: one event or an array of at most `max_batch`, each validated.
    /// Nothing is accepted unless everything is.
    pub fn parse_batch(body: &[u8], limits: &EventLimits, max_batch: usize) -> Result<Vec<NewEvent>, PublishRejection> {
        match Self::parse_well_formed(body, limits, max_batch) {
            Some(events) => Ok(events),
            None => Self::parse_step_by_step(body, limits, max_batch),
        }
    }

    /// `parse_batch` one step at a time: the body as JSON values, then each event checked, so that a rejection
    /// names what is wrong and the index of the event.
    fn parse_step_by_step(
        body: &[u8],
        limits: &EventLimits,
        max_batch: usize,
    ) -> Result<Vec<NewEvent>, PublishRejection> {
        let reject = |index, message: String| PublishRejection { index, too_large: false, message };
        let value: Value =
            serde_json::from_slice(body).map_err(|e| reject(None, format!("body is not valid JSON: {e}")))?;
        let (items, single) = match value {
            Value::Array(items) => (items, false),
            Value::Object(_) => (vec![value], true),
            other => {
                return Err(reject(None, format!("body must be an event object or an array of them, got {other}")));
            }
        };
        if items.is_empty() {
            return Err(reject(None, "the batch is empty".into()));
        }
        if items.len() > max_batch {
            return Err(PublishRejection {
                index: None,
                too_large: true,
                message: format!("the batch has {} events, at most {max_batch} are allowed", items.len()),
            });
        }
        let index = |i| if single { None } else { Some(i) };
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                if !item.is_object() {
                    return Err(reject(index(i), format!("an event must be a JSON object, got {item}")));
                }
                if let Some(payload) = item.get("payload")
                    && !payload.is_object()
                {
                    return Err(reject(index(i), format!("payload must be a JSON object, got {payload}")));
                }
                let event: NewEvent =
                    serde_json::from_value(item).map_err(|e| reject(index(i), format!("invalid event: {e}")))?;
                event.validate(limits).map_err(|e| PublishRejection {
                    index: index(i),
                    too_large: e.0.starts_with("payload is"),
                    message: e.0,
                })?;
                Ok(event)
            })
            .collect()
    }
}

impl NewEvent {
    /// A body that `parse_batch` accepts, parsed straight into events without building its JSON values first (the
    /// common case, and most of a publish's parsing time); `None` for anything else, which `parse_batch` then
    /// parses step by step to say what is wrong and where. Whatever this accepts, the step-by-step path accepts
    /// with the same result: it is the same deserialization, from the text instead of from a value.
    fn parse_well_formed(body: &[u8], limits: &EventLimits, max_batch: usize) -> Option<Vec<NewEvent>> {
        let events = match body.iter().find(|b| !b.is_ascii_whitespace())? {
            b'[' => serde_json::from_slice::<Vec<NewEvent>>(body).ok()?,
            _ => vec![serde_json::from_slice::<NewEvent>(body).ok()?],
        };
        let valid = !events.is_empty()
            && events.len() <= max_batch
            && events.iter().all(|event| event.validate(limits).is_ok());
        valid.then_some(events)
    }
}

/// The body of `POST /api/publish`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishBody {
    pub ids: Vec<EventId>,
}

/// Derives a stream key from a scope: `run:<run_id>`, else `task:<task_id>`, else `deploy:<deploy_id>`.
pub fn derive_key(scope: &Scope) -> Option<String> {
    [("run_id", "run"), ("task_id", "task"), ("deploy_id", "deploy")]
        .iter()
        .find_map(|(field, prefix)| scope.get(field).map(|v| format!("{prefix}:{v}")))
}

/// Whether `value` is a W3C `traceparent` of version 00.
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    parts.len() == 4 && parts[0] == "00" && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2)
}

/// The length of a value's compact JSON form, without building it.
pub fn serialized_len(value: &impl Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing into a counter cannot fail, and every value here is a serde_json value or derived struct.
    serde_json::to_writer(&mut counter, value).expect("serializing JSON into a counter cannot fail");
    counter.0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: Value) -> Result<Vec<NewEvent>, PublishRejection> {
        NewEvent::parse_batch(body.to_string().as_bytes(), &EventLimits::default(), 1000)
    }

    #[test]
    fn a_single_event_and_a_batch_both_parse() {
        let one = json!({"topic":"run.logs","scope":{"run_id":"r1"},"payload":{"line":"x"}});
        assert_eq!(parse(one.clone()).unwrap().len(), 1);
        assert_eq!(parse(json!([one.clone(), one])).unwrap().len(), 2);
    }

    #[test]
    fn the_direct_parse_accepts_only_what_the_step_by_step_parse_accepts_with_the_same_events() {
        let limits = EventLimits::default();
        let full = r#"{"topic":"run.logs","scope":{"run_id":"r1","org_id":"o"},"key":"k","seq":3,
                       "correlation_id":"c","idempotency_key":"i","payload":{"a":[1,2.5,-3,null,true],"b":{"c":"é"}}}"#;
        let bodies = [
            full.to_owned(),
            format!("[{full},{full}]"),
            format!(" \n[{full}] "),
            r#"{"topic":"a","payload":{}}"#.into(),
            r#"{"topic":"a"}"#.into(),
            r#"{"topic":"a","topic":"b","payload":{}}"#.into(),
            r#"{"topic":"a","payload":{"x":1,"x":2}}"#.into(),
            r#"{"topic":"a","seq":1.0,"payload":{}}"#.into(),
            r#"{"topic":"a","seq":9007199254740993,"payload":{}}"#.into(),
            r#"{"topic":"a","payload":[1]}"#.into(),
            r#"{"topic":"a","payload":{},"extra":1}"#.into(),
            r#"{"topic":"a b","payload":{}}"#.into(),
            r#"{"topic":"a","scope":{"run_id":1},"payload":{}}"#.into(),
            r#"{"topic":"a","key":"","payload":{}}"#.into(),
            r#"{"topic":"a","payload":{"big":18446744073709551616}}"#.into(),
            r#"[{"topic":"a","payload":{}},{"topic":"a","payload":{}}"#.into(),
            "[]".into(),
            "null".into(),
            r#""text""#.into(),
        ];
        let mut direct_accepted = 0;
        for body in bodies {
            let step_by_step = NewEvent::parse_step_by_step(body.as_bytes(), &limits, 2);
            let direct = NewEvent::parse_well_formed(body.as_bytes(), &limits, 2);
            if let Some(events) = &direct {
                assert_eq!(step_by_step.as_ref().ok(), Some(events), "{body}");
                direct_accepted += 1;
            }
            assert_eq!(NewEvent::parse_batch(body.as_bytes(), &limits, 2).ok(), step_by_step.ok(), "{body}");
        }
        assert!(direct_accepted >= 5, "the well-formed bodies take the direct path ({direct_accepted})");
    }

    #[test]
    fn the_first_bad_event_of_a_batch_is_named_by_its_index() {
        let ok = json!({"topic":"a","payload":{}});
        let bad_topic = json!({"topic":"a b","payload":{}});
        let err = parse(json!([ok.clone(), ok.clone(), bad_topic])).unwrap_err();
        assert_eq!(err.index, Some(2));
        assert!(err.message.contains("topic"), "{}", err.message);

        let not_object = json!({"topic":"a","payload":[1]});
        let err = parse(json!([ok, not_object])).unwrap_err();
        assert_eq!(err.index, Some(1));
        assert!(err.message.contains("payload must be a JSON object"), "{}", err.message);
    }

    #[test]
    fn oversized_payloads_and_batches_are_too_large() {
        let big = json!({"topic":"a","payload":{"x":"y".repeat(70_000)}});
        let err = parse(big).unwrap_err();
        assert!(err.too_large);
        let many: Vec<Value> = (0..1001).map(|_| json!({"topic":"a","payload":{}})).collect();
        assert!(parse(Value::Array(many)).unwrap_err().too_large);
    }

    #[test]
    fn unknown_fields_client_ids_and_non_objects_are_rejected() {
        assert!(parse(json!({"topic":"a","payload":{},"id":5})).is_err());
        assert!(parse(json!("text")).is_err());
        assert!(parse(json!([])).is_err());
        assert!(parse(json!([1])).unwrap_err().message.contains("must be a JSON object"));
    }

    #[test]
    fn idempotency_keys_and_traceparents_are_checked() {
        let ok = json!({"topic":"a","payload":{},"idempotency_key":"k1",
                        "traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"});
        assert!(parse(ok).is_ok());
        assert!(parse(json!({"topic":"a","payload":{},"idempotency_key":""})).is_err());
        assert!(parse(json!({"topic":"a","payload":{},"traceparent":"00-xyz-01"})).is_err());
    }

    #[test]
    fn the_key_is_derived_from_run_then_task_then_deploy() {
        let scope = Scope::try_from([("task_id", "t1"), ("deploy_id", "d1")]).unwrap();
        assert_eq!(derive_key(&scope).as_deref(), Some("task:t1"));
        let scope = Scope::try_from([("run_id", "r1"), ("task_id", "t1")]).unwrap();
        assert_eq!(derive_key(&scope).as_deref(), Some("run:r1"));
        assert_eq!(derive_key(&Scope::default()), None);
    }

    #[test]
    fn serialized_len_equals_the_length_of_the_json_text() {
        let v = json!({"a":[1,2,{"b":"ü"}]});
        assert_eq!(serialized_len(&v), serde_json::to_vec(&v).unwrap().len());
    }
}
