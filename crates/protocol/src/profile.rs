//! Output profiles: the shape in which a subscription receives its events.
//!
//! The default profile, `hub`, is the envelope of section 1 and never changes. The others exist so that consumers
//! of the systems the hub replaces can switch without rewriting their parsers; each is chosen per subscription
//! (the `profile` query parameter or subscribe field) and changes only how an event's object is written, never
//! which events arrive, their order, or the position the transports report (the SSE `id:` line, long-poll's
//! `next_after`, resume points are always the hub's integer ids).

use serde::Serialize;

use crate::{Envelope, ValidationError};

/// How a subscription's events are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Profile {
    /// The hub's envelope (`{"id":1042,"topic":…,"scope":…,…}`); on WebSocket inside an `event` frame.
    #[default]
    Hub,
    /// The envelope of the older SSE broker:
    /// `{"id":"evt_1042","org_id":…,"event":<topic>,"timestamp":<ts>,"version":"v1","payload":{…}}`.
    EvtV1,
    /// The payload object alone, for producers whose payload already is the message their consumers read (the
    /// database sources' change feeds, for instance).
    Payload,
}

impl Profile {
    /// Every profile, for documentation and error messages.
    pub const ALL: [Profile; 3] = [Profile::Hub, Profile::EvtV1, Profile::Payload];

    pub fn parse(name: &str) -> Result<Self, ValidationError> {
        Self::ALL.into_iter().find(|p| p.name() == name).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|p| p.name()).collect();
            ValidationError::new(format!("profile must be one of {}, got {name:?}", names.join(", ")))
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hub => "hub",
            Self::EvtV1 => "evt-v1",
            Self::Payload => "payload",
        }
    }

    /// The event as this profile writes it, given the envelope and its hub JSON (written once by the log).
    pub fn render<P: Serialize>(self, envelope: &Envelope<P>, hub_json: &str) -> String {
        match self {
            Self::Hub => hub_json.to_owned(),
            Self::EvtV1 => to_json(&EvtV1 {
                id: format!("evt_{}", envelope.id.get()),
                org_id: envelope.scope.get("org_id"),
                event: envelope.topic.as_str(),
                timestamp: &envelope.ts,
                version: "v1",
                payload: &envelope.payload,
            }),
            Self::Payload => to_json(&envelope.payload),
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Serialize)]
struct EvtV1<'a, P> {
    id: String,
    org_id: Option<&'a str>,
    event: &'a str,
    timestamp: &'a str,
    version: &'static str,
    payload: &'a P,
}

fn to_json(value: &impl Serialize) -> String {
    // Strings, integers and JSON values only: serializing cannot fail.
    serde_json::to_string(value).expect("a profile's object always serializes")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::{EventId, Scope, Topic};

    fn envelope() -> Envelope {
        Envelope {
            id: EventId::new(42).unwrap(),
            topic: Topic::parse("deploy.events").unwrap(),
            scope: Scope::try_from([("org_id", "o1"), ("project_id", "p1")]).unwrap(),
            key: None,
            seq: None,
            ts: "2026-11-22T12:00:00.123Z".into(),
            v: 1,
            correlation_id: None,
            payload: json!({"status": "ok"}).as_object().cloned().unwrap(),
        }
    }

    #[test]
    fn evt_v1_is_the_older_brokers_envelope() {
        let written = Profile::EvtV1.render(&envelope(), "{}");
        let value: Value = serde_json::from_str(&written).unwrap();
        assert_eq!(
            value,
            json!({"id":"evt_42","org_id":"o1","event":"deploy.events","timestamp":"2026-11-22T12:00:00.123Z",
                   "version":"v1","payload":{"status":"ok"}})
        );
    }

    #[test]
    fn payload_writes_the_payload_alone_and_hub_the_stored_envelope() {
        assert_eq!(Profile::Payload.render(&envelope(), "{}"), r#"{"status":"ok"}"#);
        assert_eq!(Profile::Hub.render(&envelope(), r#"{"id":42}"#), r#"{"id":42}"#);
    }

    #[test]
    fn a_payload_kept_as_the_logs_text_renders_as_a_parsed_one() {
        let parsed = envelope();
        let raw: Envelope<Box<serde_json::value::RawValue>> =
            serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
        for profile in Profile::ALL {
            assert_eq!(profile.render(&raw, "{}"), profile.render(&parsed, "{}"), "{profile}");
        }
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused_with_the_list() {
        for profile in Profile::ALL {
            assert_eq!(Profile::parse(profile.name()), Ok(profile));
        }
        let error = Profile::parse("v2").unwrap_err();
        assert!(error.0.contains("hub, evt-v1, payload"), "{error}");
    }
}
