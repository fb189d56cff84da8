//! Frames a WebSocket client sends.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::id::parse_position;
use crate::{ErrorCode, Filter, Profile, TopicPattern, ValidationError};

/// The most topic patterns one subscription may list.
pub const MAX_TOPICS_PER_SUBSCRIPTION: usize = 64;

/// The most events a subscription's `tail` may ask for.
pub const MAX_TAIL: u32 = 1000;

/// A client's name for one of its subscriptions: 1–64 characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubName(String);

impl SubName {
    pub fn parse(name: impl Into<String>) -> Result<Self, ValidationError> {
        let name = name.into();
        let len = name.chars().count();
        if !(1..=64).contains(&len) || name.chars().any(char::is_control) {
            return Err(ValidationError::new(format!("sub must be 1-64 printable characters, got {name:?}")));
        }
        Ok(Self(name))
    }

    /// The name of the subscription made from query parameters.
    pub fn default_name() -> Self {
        Self("default".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SubName {
    type Error = ValidationError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::parse(name)
    }
}

impl From<SubName> for String {
    fn from(name: SubName) -> String {
        name.0
    }
}

impl std::fmt::Display for SubName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A subscription request: patterns (never empty, minimized), a scope filter and an optional resume point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub sub: SubName,
    pub topics: Vec<TopicPattern>,
    pub filter: Filter,
    /// `None`: live only. `Some(n)`: every retained matching event with id > n, then live.
    pub since: Option<u64>,
    /// The last `n` matching events first, then live (never with `since`).
    pub tail: Option<u32>,
    /// The shape its events are written in.
    pub profile: Profile,
    /// Also receive who is present on its exact topics that keep presence: the members first, then each join
    /// and leave.
    pub presence: bool,
}

impl Subscribe {
    /// Builds a subscription, checking the pattern list.
    pub fn new(
        sub: SubName,
        topics: Vec<TopicPattern>,
        filter: Filter,
        since: Option<u64>,
    ) -> Result<Self, ValidationError> {
        if topics.is_empty() {
            return Err(ValidationError::new("topics must list at least one topic or pattern"));
        }
        if topics.len() > MAX_TOPICS_PER_SUBSCRIPTION {
            return Err(ValidationError::new(format!(
                "topics lists {} patterns, at most {MAX_TOPICS_PER_SUBSCRIPTION} are allowed",
                topics.len()
            )));
        }
        Ok(Self {
            sub,
            topics: TopicPattern::minimize(&topics),
            filter,
            since,
            tail: None,
            profile: Profile::Hub,
            presence: false,
        })
    }

    /// The same subscription with its events written in `profile`.
    pub fn with_profile(self, profile: Profile) -> Self {
        Self { profile, ..self }
    }

    /// The same subscription, watching presence or not.
    pub fn with_presence(self, presence: bool) -> Self {
        Self { presence, ..self }
    }

    /// The same subscription starting on the last `tail` matching events (1 to [`MAX_TAIL`]), which a resume
    /// point contradicts.
    pub fn with_tail(self, tail: Option<u32>) -> Result<Self, ValidationError> {
        match tail {
            Some(_) if self.since.is_some() => Err(ValidationError::new("give tail or since, not both")),
            Some(n) if !(1..=MAX_TAIL).contains(&n) => {
                Err(ValidationError::new(format!("tail must be 1 to {MAX_TAIL}, got {n}")))
            }
            tail => Ok(Self { tail, ..self }),
        }
    }
}

/// A frame from the client (section 3 of the contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    Subscribe(Subscribe),
    Unsubscribe { sub: SubName },
    Ack { id: u64 },
    Refresh { token: String },
    Ping,
}

/// Why a client frame was refused: the `code` and `message` of the error frame, and the `sub` it concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub sub: Option<String>,
}

impl FrameError {
    fn bad(message: impl Into<String>, sub: Option<String>) -> Self {
        Self { code: ErrorCode::BadRequest, message: message.into(), sub }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscribe {
    sub: String,
    topics: Vec<String>,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default)]
    since: Option<Value>,
    #[serde(default)]
    profile: Option<String>,
    #[serde(default)]
    tail: Option<u32>,
    #[serde(default)]
    presence: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnsubscribe {
    sub: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAck {
    id: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefresh {
    token: String,
}

impl ClientFrame {
    /// Parses one text frame, with an error that says which rule was broken.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| FrameError::bad(format!("frame is not valid JSON: {e}"), None))?;
        let Value::Object(mut object) = value else {
            return Err(FrameError::bad("frame must be a JSON object with an \"op\" field", None));
        };
        let sub = object.get("sub").and_then(Value::as_str).map(str::to_owned);
        let op = match object.remove("op") {
            Some(Value::String(op)) => op,
            Some(_) => return Err(FrameError::bad("\"op\" must be a string", sub)),
            None => return Err(FrameError::bad("frame has no \"op\" field", sub)),
        };
        let value = Value::Object(object);
        let shape = |e: serde_json::Error| FrameError::bad(format!("invalid {op} frame: {e}"), sub.clone());
        let rule = |e: ValidationError| FrameError::bad(format!("invalid {op} frame: {e}"), sub.clone());
        match op.as_str() {
            "subscribe" => {
                let raw: RawSubscribe = serde_json::from_value(value).map_err(shape)?;
                let name = SubName::parse(raw.sub).map_err(rule)?;
                let topics =
                    raw.topics.into_iter().map(TopicPattern::parse).collect::<Result<Vec<_>, _>>().map_err(rule)?;
                let since = match raw.since {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(parse_position(&v, "since").map_err(rule)?),
                };
                let profile = raw.profile.as_deref().map(Profile::parse).transpose().map_err(rule)?.unwrap_or_default();
                let subscribe = Subscribe::new(name, topics, raw.filter.unwrap_or_default(), since).map_err(rule)?;
                let subscribe = subscribe.with_profile(profile).with_presence(raw.presence);
                Ok(Self::Subscribe(subscribe.with_tail(raw.tail).map_err(rule)?))
            }
            "unsubscribe" => {
                let raw: RawUnsubscribe = serde_json::from_value(value).map_err(shape)?;
                Ok(Self::Unsubscribe { sub: SubName::parse(raw.sub).map_err(rule)? })
            }
            "ack" => {
                let raw: RawAck = serde_json::from_value(value).map_err(shape)?;
                Ok(Self::Ack { id: parse_position(&raw.id, "id").map_err(rule)? })
            }
            "refresh" => {
                let raw: RawRefresh = serde_json::from_value(value).map_err(shape)?;
                Ok(Self::Refresh { token: raw.token })
            }
            "ping" => Ok(Self::Ping),
            other => Err(FrameError {
                code: ErrorCode::UnknownOp,
                message: format!("unknown op {other:?}; expected subscribe, unsubscribe, ack, refresh or ping"),
                sub,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> FrameError {
        ClientFrame::parse(text).unwrap_err()
    }

    #[test]
    fn a_tail_is_one_to_a_thousand_events_and_never_beside_a_resume_point() {
        let parse = |frame: &str| ClientFrame::parse(frame);
        let Ok(ClientFrame::Subscribe(tail)) =
            parse(r#"{"op":"subscribe","sub":"l","topics":["run.logs"],"tail":500}"#)
        else {
            panic!("a tail subscribe parses")
        };
        assert_eq!((tail.tail, tail.since), (Some(500), None));
        for bad in [
            r#"{"op":"subscribe","sub":"l","topics":["a"],"tail":5,"since":3}"#,
            r#"{"op":"subscribe","sub":"l","topics":["a"],"tail":0}"#,
            r#"{"op":"subscribe","sub":"l","topics":["a"],"tail":1001}"#,
            r#"{"op":"subscribe","sub":"l","topics":["a"],"tail":-1}"#,
        ] {
            assert_eq!(parse(bad).unwrap_err().code, ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn a_full_subscribe_frame_parses() {
        let frame = ClientFrame::parse(
            r#"{"op":"subscribe","sub":"s1","topics":["run.*","run.logs"],"filter":{"project_id":"p1"},"since":1000}"#,
        )
        .unwrap();
        let ClientFrame::Subscribe(s) = frame else { panic!("not a subscribe") };
        assert_eq!(s.sub.as_str(), "s1");
        assert_eq!(s.topics, vec![TopicPattern::parse("run.*").unwrap()]);
        assert_eq!(s.filter.get("project_id"), Some("p1"));
        assert_eq!(s.since, Some(1000));
    }

    #[test]
    fn a_subscribe_frame_may_name_an_output_profile() {
        let frame = ClientFrame::parse(r#"{"op":"subscribe","sub":"s","topics":["a"],"profile":"evt-v1"}"#).unwrap();
        let ClientFrame::Subscribe(s) = frame else { panic!("not a subscribe") };
        assert_eq!(s.profile, Profile::EvtV1);
        let e = err(r#"{"op":"subscribe","sub":"s","topics":["a"],"profile":"xml"}"#);
        assert!(e.message.contains("profile must be one of"), "{}", e.message);
    }

    #[test]
    fn other_ops_parse() {
        assert_eq!(ClientFrame::parse(r#"{"op":"ping"}"#).unwrap(), ClientFrame::Ping);
        assert_eq!(ClientFrame::parse(r#"{"op":"ack","id":5}"#).unwrap(), ClientFrame::Ack { id: 5 });
        assert!(matches!(
            ClientFrame::parse(r#"{"op":"unsubscribe","sub":"s1"}"#).unwrap(),
            ClientFrame::Unsubscribe { .. }
        ));
        assert!(matches!(ClientFrame::parse(r#"{"op":"refresh","token":"t"}"#).unwrap(), ClientFrame::Refresh { .. }));
    }

    #[test]
    fn malformed_frames_are_bad_requests_with_a_reason() {
        assert!(err("{nope").message.contains("not valid JSON"));
        assert!(err("[1]").message.contains("JSON object"));
        assert!(err(r#"{"sub":"x"}"#).message.contains("no \"op\""));
        let e = err(r#"{"op":"subscribe","sub":"s1","topic":["a"]}"#);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.sub.as_deref(), Some("s1"));
        assert!(e.message.contains("topic"), "{}", e.message);
    }

    #[test]
    fn unknown_ops_are_unknown_op() {
        let e = err(r#"{"op":"publish"}"#);
        assert_eq!(e.code, ErrorCode::UnknownOp);
        assert!(e.message.contains("publish"));
    }

    #[test]
    fn since_must_be_a_non_negative_integer() {
        for since in ["-1", "1.5", "\"10\"", "9007199254740992"] {
            let e = err(&format!(r#"{{"op":"subscribe","sub":"s","topics":["a"],"since":{since}}}"#));
            assert!(e.message.contains("since"), "{since}: {}", e.message);
        }
    }

    #[test]
    fn invalid_patterns_names_and_empty_topic_lists_are_refused() {
        assert!(err(r#"{"op":"subscribe","sub":"s","topics":["a b"]}"#).message.contains("topic"));
        assert!(err(r#"{"op":"subscribe","sub":"s","topics":[]}"#).message.contains("at least one"));
        assert!(err(r#"{"op":"subscribe","sub":"","topics":["a"]}"#).message.contains("sub"));
        let long = "x".repeat(65);
        assert!(err(&format!(r#"{{"op":"subscribe","sub":"{long}","topics":["a"]}}"#)).message.contains("sub"));
    }
}
