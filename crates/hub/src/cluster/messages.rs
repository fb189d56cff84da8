//! What hubs say to each other (JSON, at most `storage::cluster::MAX_MESSAGE_BYTES` each).

use serde::{Deserialize, Serialize};

use crate::auth::Revocation;
use crate::fanout::sessions::{ConnectionInfo, Cut};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Message {
    /// The hub `instance` (node id `node`) is alive.
    Heartbeat {
        node: String,
        instance: String,
    },
    /// Carry out `command` and answer it with `id`.
    Request {
        id: String,
        command: Command,
    },
    Answer(Answer),
}

/// An operator's command, carried out by every hub on its own connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// List the open WebSocket and SSE connections.
    List,
    /// Close the matching connections and answer the matching waiting long-polls.
    Cut { cut: Cut },
    /// Refuse the revocation's tokens from now on, and close their connections.
    Revoke { revocation: Revocation },
    /// Lift the revocation kept under `key`.
    Lift { key: String },
}

/// One hub's answer to a command (a listing may take several, the last marked `last`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Answer {
    pub id: String,
    pub node: String,
    pub instance: String,
    pub last: bool,
    #[serde(default)]
    pub closed: usize,
    #[serde(default)]
    pub polls: usize,
    #[serde(default)]
    pub connections: Vec<ConnectionInfo>,
}
