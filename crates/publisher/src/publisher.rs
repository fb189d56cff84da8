//! The publisher: turns typed events into redacted, validated events and hands them to a sink.

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use protocol::envelope::serialized_len;
use protocol::{EventId, EventLimits, NewEvent};
use serde_json::Value;

use crate::events::Event;
use crate::redact::{MASK, Redactor};
use crate::trace::current_traceparent;
use crate::{Error, Result};

/// Where events go: PostgreSQL, a hub over HTTP, or memory.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Sends a batch that is already redacted and validated; all of it or none of it is stored.
    async fn send(&self, events: Vec<NewEvent>) -> Result<Published>;
}

/// What a publish returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The ids, in order, when the sink knows them at once (HTTP, memory). The PostgreSQL sink writes to the
    /// inbox, whose events get their ids when the cluster's sequencer moves them into the log.
    pub ids: Option<Vec<EventId>>,
}

/// Publishes typed events through a sink. Every event is redacted before anything is serialized, logged or sent,
/// tagged with the current trace context, and validated against the limits.
pub struct Publisher<S> {
    sink: S,
    redactor: Arc<Redactor>,
    limits: EventLimits,
}

impl<S: Sink> Publisher<S> {
    pub fn new(sink: S) -> Self {
        Self { sink, redactor: Arc::new(Redactor::new()), limits: EventLimits::default() }
    }

    /// Uses this redaction policy instead of the built-in one.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = Arc::new(redactor);
        self
    }

    /// Uses these limits (the hub's `HUB_MAX_PAYLOAD_BYTES`, if it was changed).
    pub fn with_limits(mut self, limits: EventLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub async fn publish(&self, event: impl Event) -> Result<Published> {
        self.sink.send(vec![self.prepare(event)?]).await
    }

    /// Publishes a batch atomically: one bad event refuses the whole batch before anything is sent.
    pub async fn publish_batch<E: Event>(&self, events: impl IntoIterator<Item = E>) -> Result<Published> {
        let events = events.into_iter().map(|e| self.prepare(e)).collect::<Result<Vec<_>>>()?;
        if events.is_empty() {
            return Ok(Published { ids: Some(Vec::new()) });
        }
        self.sink.send(events).await
    }

    /// Redacts, tags and validates one event.
    pub fn prepare(&self, event: impl Event) -> Result<NewEvent> {
        let mut event = event.into_new_event()?;
        redact_event(&self.redactor, &mut event);
        if event.traceparent.is_none() {
            event.traceparent = current_traceparent();
        }
        let size = serialized_len(&event.payload);
        if size > self.limits.max_payload_bytes {
            return Err(Error::PayloadTooLarge { size, limit: self.limits.max_payload_bytes });
        }
        event.validate(&self.limits).map_err(|e| Error::Invalid(e.to_string()))?;
        if event.topic.is_reserved() {
            return Err(Error::Invalid(format!(
                "{} is the hub's own topic: topics hub.* take no publishes",
                event.topic
            )));
        }
        Ok(event)
    }
}

/// Applies `redactor` to every field of an event that can carry text: payload, scope values, key and
/// correlation id. The topic's grammar leaves no room for secrets to hide in it but a token-shaped name, which
/// validation of the masked form would refuse, so topics are left as they are.
pub fn redact_event(redactor: &Redactor, event: &mut NewEvent) {
    let mut payload = Value::Object(std::mem::take(&mut event.payload));
    redactor.redact_value(&mut payload);
    if let Value::Object(map) = payload {
        event.payload = map;
    }
    fn masked<'a>(redactor: &Redactor, key: &str, value: &'a str) -> Cow<'a, str> {
        if redactor.is_secret_key(key) { Cow::Borrowed(MASK) } else { redactor.redact_str(value) }
    }
    // Most scopes hold no secret: they are rebuilt only when one does.
    if event.scope.iter().any(|(key, value)| masked(redactor, key, value) != value) {
        let redacted: std::collections::BTreeMap<String, String> = event
            .scope
            .iter()
            .map(|(key, value)| (key.to_owned(), masked(redactor, key, value).into_owned()))
            .collect();
        if let Ok(scope) = protocol::Scope::new(redacted) {
            event.scope = scope;
        }
    }
    if let Some(key) = &mut event.key {
        redactor.redact_field(key);
    }
    if let Some(id) = &mut event.correlation_id {
        redactor.redact_field(id);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::MemorySink;
    use crate::events::CustomEvent;

    #[tokio::test]
    async fn a_publisher_applies_its_configured_policy_to_every_event() {
        let publisher = Publisher::new(MemorySink::new()).with_redactor(Redactor::new().with_keys(["license"]));
        let event = CustomEvent::new("a", [], &json!({"license": "L-42", "password": "p", "n": 1})).unwrap();

        publisher.publish(event).await.unwrap();

        let payload = &publisher.sink().envelopes().await[0].payload;
        assert_eq!(Value::Object(payload.clone()), json!({"license": "[REDACTED]", "password": "[REDACTED]", "n": 1}));
    }

    #[test]
    fn the_hubs_own_topics_are_refused_but_its_smoke_probe_is_not() {
        let publisher = Publisher::new(MemorySink::new());
        let event = |topic: &str| {
            protocol::NewEvent::new(protocol::Topic::parse(topic).unwrap(), Default::default(), Default::default())
        };

        let refused = publisher.prepare(event("hub.admin")).unwrap_err();

        assert!(refused.to_string().contains("hub's own topic"), "{refused}");
        assert!(publisher.prepare(event("hub.smoke")).is_ok());
        assert!(publisher.prepare(event("run.events")).is_ok());
    }
}
