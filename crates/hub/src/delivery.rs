//! What rooms and the dispatcher know of a subscription, and what they send to its connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::prelude::*;
use actix_codec::Encoder as _;
use actix_http::ws;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use protocol::{Filter, Profile, ResetInfo, SubName};
use smallvec::SmallVec;
use uuid::Uuid;

/// A connection's identity, for routing and logs: a number this process never reuses (cheap to sort and hash on
/// the delivery path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// Which of `slots` slots the connection falls in (consecutive connections in consecutive slots).
    pub fn slot(self, slots: u64) -> u64 {
        self.0 % slots
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

/// Shown (in `welcome` and logs) as a version-4 UUID: 8 random bytes drawn once per process, then the number.
impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        static PROCESS: std::sync::OnceLock<[u8; 8]> = std::sync::OnceLock::new();
        let prefix = PROCESS.get_or_init(|| Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes"));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(prefix);
        bytes[8..].copy_from_slice(&self.0.to_be_bytes());
        // The variant bits take the number's top two bits, which a process never reaches.
        uuid::Builder::from_random_bytes(bytes).into_uuid().fmt(f)
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
    pub target: Target,
}

pub type SharedSubscriber = Arc<Subscriber>;

/// What a connection with a session (WebSocket, SSE) takes its deliveries through: frames and all, written into its
/// outbound queue by the fan-out where the session's rules allow, given to the session otherwise
/// (`crate::connections::sink`).
pub trait SessionSink: Send + Sync {
    fn deliver(&self, deliver: Deliver);
}

/// Where a subscription's deliveries go.
#[derive(Clone)]
pub enum Target {
    /// A session's connection (WebSocket, SSE): every delivery, frames and all.
    Session(Arc<dyn SessionSink>),
    /// The long-poll requests waiting on one subscription (`crate::fanout::poll_wakes`), all woken by each delivery; they
    /// read the events from the log themselves, so no actor and no mailbox stand between the room and a request.
    Wake(Arc<tokio::sync::Notify>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Session(_) => "Target::Session",
            Target::Wake(_) => "Target::Wake",
        })
    }
}

impl Target {
    pub fn deliver(&self, deliver: Deliver) {
        match self {
            Target::Session(sink) => sink.deliver(deliver),
            // Requests enable their wake-up before they read the log, so none that is reading misses this.
            Target::Wake(notify) => notify.notify_waiters(),
        }
    }
}

/// Events for one connection from one batch, in strictly increasing id order per subscription.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    /// Events before this batch are gone from the log (see `storage::EventsAppended::lost`): subscriptions that
    /// had not passed them get this reset before `items`.
    pub lost: Option<ResetInfo>,
    pub items: Items,
    /// The fan-out step carries several events (one batch of several, or batches merged because dispatch fell
    /// behind): the sessions write it, spreading the encoding over every worker, rather than the fan-out alone on
    /// its one thread. The hop through the mailbox is then paid once for several events.
    pub spread: bool,
    /// The fan-out has time to spare: it may send a live delivery to the connection's socket itself, waking no
    /// task (WebSocket, `connections::outbound`). Under load it queues the delivery instead, and the connection's
    /// worker writes it with whatever else queued meanwhile, several events per `send`.
    pub send_now: bool,
}

/// A connection's events of one fan-out step: nearly always one, held inline (no allocation per delivery).
pub type Items = SmallVec<[Delivery; 1]>;

/// One event for one subscription, with its frame already built (shared by every recipient of the same frame).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub generation: u64,
    pub id: u64,
    /// The frame as it goes on the wire: over WebSocket the text frame, header and all; over SSE the block. Built
    /// once per event and format, so neither the fan-out nor a session copies or encodes it per connection.
    pub wire: Bytes,
}

impl Delivery {
    /// A frame as it goes on the wire ([`Delivery::wire`]): over WebSocket a text frame (a server's: unmasked),
    /// over SSE the text as it is.
    pub fn wire_form(frame: &ByteString, transport: Transport) -> Bytes {
        match transport {
            Transport::WebSocket => {
                let mut wire = BytesMut::with_capacity(frame.len() + 10);
                // Only a continuation out of order fails to encode; a text frame always does.
                let _ = ws::Codec::new().encode(ws::Message::Text(frame.clone()), &mut wire);
                wire.freeze()
            }
            Transport::ServerSentEvents => frame.as_bytes().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_show_as_distinct_version_4_uuids() {
        let (a, b) = (SessionId::new(), SessionId::new());
        let (a, b) = (Uuid::parse_str(&a.to_string()).unwrap(), Uuid::parse_str(&b.to_string()).unwrap());
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.get_version_num(), 4);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        assert_eq!(a.as_bytes()[..8], b.as_bytes()[..8], "one process prefix");
    }
}
