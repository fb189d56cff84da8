//! Frames the hub sends over WebSocket, and the reset object shared with SSE and long-poll.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// Why a resume could not be honoured, and where the log stands (sent as `reset`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetInfo {
    /// `history_truncated`: the resume point is older than the retained history, or newer than the log's head
    /// (the log was replaced); either way the client must reload its state.
    pub reason: String,
    pub earliest_id: u64,
    pub head: u64,
}

impl ResetInfo {
    pub fn history_truncated(earliest_id: u64, head: u64) -> Self {
        Self { reason: "history_truncated".to_owned(), earliest_id, head }
    }
}

/// A frame from the hub, other than events (which are written from pre-serialized bytes, see [`event_frame`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        session: String,
        node: String,
        protocol: u32,
        heartbeat_s: u64,
        /// When the connection's token expires (its `exp`, Unix seconds); absent when it never does (development
        /// mode). A client sends `refresh` before then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    /// A `refresh` was accepted: the connection now runs on the new token, which expires at `expires_at`.
    Refreshed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    Subscribed {
        sub: String,
        head: u64,
    },
    Live {
        sub: String,
        last_id: u64,
    },
    Reset {
        sub: String,
        #[serde(flatten)]
        info: ResetInfo,
    },
    Unsubscribed {
        sub: String,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sub: Option<String>,
    },
    Pong,
    /// Who is present on `topic` when a subscription that asked for presence starts watching it.
    Presence {
        sub: String,
        topic: String,
        members: Vec<PresenceMember>,
    },
    /// A subject's first connection to `topic`, on any hub, arrived.
    Join {
        sub: String,
        topic: String,
        member: PresenceMember,
    },
    /// A subject's last connection to `topic`, on every hub, went (or its hub did).
    Leave {
        sub: String,
        topic: String,
        member: PresenceMember,
    },
}

/// A subject present on a topic: its token's `sub`, how many connections it has there (where counted), and its
/// token's `info` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceMember {
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ServerFrame {
    pub fn to_json(&self) -> String {
        // Every variant is made of strings, integers and enums with string names: serializing cannot fail.
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

/// Builds `{"type":"event","sub":<sub>, …envelope fields…}` from an envelope already serialized as a JSON object,
/// so an event is serialized once, whatever the number of subscribers.
pub fn event_frame(sub: &str, envelope_json: &str) -> String {
    debug_assert!(envelope_json.starts_with('{'));
    // A string always serializes.
    let sub = serde_json::to_string(sub).expect("a string always serializes");
    let mut frame = String::with_capacity(envelope_json.len() + sub.len() + 24);
    frame.push_str(r#"{"type":"event","sub":"#);
    frame.push_str(&sub);
    if envelope_json.len() > 2 {
        frame.push(',');
    }
    frame.push_str(&envelope_json[1..]);
    frame
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn frames_serialize_with_the_documented_fields() {
        let reset = ServerFrame::Reset { sub: "s1".into(), info: ResetInfo::history_truncated(5000, 9000) };
        let v: Value = serde_json::from_str(&reset.to_json()).unwrap();
        assert_eq!(v, json!({"type":"reset","sub":"s1","reason":"history_truncated","earliest_id":5000,"head":9000}));
        let error = ServerFrame::Error { code: ErrorCode::UnknownOp, message: "m".into(), sub: None };
        assert_eq!(
            serde_json::from_str::<Value>(&error.to_json()).unwrap(),
            json!({"type":"error","code":"unknown_op","message":"m"})
        );
        assert_eq!(ServerFrame::Pong.to_json(), r#"{"type":"pong"}"#);
        let refreshed = ServerFrame::Refreshed { expires_at: Some(1_790_000_000) };
        assert_eq!(refreshed.to_json(), r#"{"type":"refreshed","expires_at":1790000000}"#);
    }

    #[test]
    fn event_frames_merge_the_sub_into_the_envelope() {
        let frame = event_frame("s\"1", r#"{"id":7,"topic":"a"}"#);
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v, json!({"type":"event","sub":"s\"1","id":7,"topic":"a"}));
    }
}
