//! What hubs say to each other (JSON, at most `storage::cluster::MAX_MESSAGE_BYTES` each).

use serde::{Deserialize, Serialize};

use super::presence::{Change, HubMember};
use crate::auth::Revocation;
use crate::fanout::sessions::{ConnectionInfo, Cut};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Message {
    /// The hub `instance` (node id `node`) is alive, and has said `presence` presence changes.
    Heartbeat {
        node: String,
        instance: String,
        #[serde(default)]
        presence: u64,
    },
    /// A subject's first connection to a presence topic arrived on a hub, or its last went.
    Presence(Change),
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
    /// Answer with the hub's members of `topic` (a topic whose policy keeps presence).
    Presence { topic: String },
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
    /// For a presence query: the hub's members, as of its presence change `presence_seq`.
    #[serde(default)]
    pub members: Vec<HubMember>,
    #[serde(default)]
    pub presence_seq: u64,
}
