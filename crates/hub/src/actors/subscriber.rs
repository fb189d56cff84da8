//! What rooms and the dispatcher know of a subscription, and what they send to its connection.

use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use protocol::{Filter, Profile, ResetInfo, SubName};
use uuid::Uuid;

/// A connection's identity, for routing and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub Uuid);

impl SessionId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Identifies one subscription across the hub: its connection, and a number the connection never reuses (so a
/// late delivery for a replaced or removed subscription is recognised and dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubKey {
    pub session: SessionId,
    pub generation: u64,
}

/// How a connection writes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Text frames: `{"type":"event","sub":…, …envelope…}` in the hub profile, the profile's object otherwise.
    WebSocket,
    /// `id:`/`event:`/`data:` blocks.
    ServerSentEvents,
}

/// How a subscription's events are written, so dispatch can build each frame once per event and share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameFormat {
    pub transport: Transport,
    pub profile: Profile,
}

/// One subscription as rooms index it.
#[derive(Debug)]
pub struct Subscriber {
    pub key: SubKey,
    pub sub: SubName,
    pub filter: Filter,
    pub format: FrameFormat,
    pub recipient: Recipient<Deliver>,
}

pub type SharedSubscriber = Arc<Subscriber>;

/// Events for one connection from one batch, in strictly increasing id order per subscription.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    /// Events before this batch are gone from the log (see `storage::EventsAppended::lost`): subscriptions that
    /// had not passed them get this reset before `items`.
    pub lost: Option<ResetInfo>,
    pub items: Vec<Delivery>,
}

/// One event for one subscription, with its frame already built (shared by every recipient of the same frame).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub generation: u64,
    pub id: u64,
    pub frame: ByteString,
}
