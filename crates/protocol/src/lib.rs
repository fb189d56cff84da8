//! Wire types of the realtime hub, shared by the hub, the publisher crate and any service that talks to it.
//!
//! This crate is the executable form of `PROTOCOL.md` (version 1): every value that crosses the wire is a type
//! here, and every type that carries a rule (a topic's alphabet, a scope's size, an id's range) can only be built
//! through a constructor that checks it. It depends on serde alone so that any service can link it.
//!
//! # Layout
//! - [`envelope`]: the event envelope delivered to subscribers, and [`NewEvent`], what a publisher sends.
//! - [`topic`]: [`Topic`] names and [`TopicPattern`]s (`run.*`), with the "lies within" relation used for grants.
//! - [`scope`]: [`Scope`] maps carried by events and [`Filter`]s that subscriptions match them with.
//! - [`client_frame`]: frames a WebSocket client sends, parsed with errors that say what was wrong.
//! - [`server_frame`]: frames the hub sends, and the shared `reset` object.
//! - [`error_code`]: the stable error codes of frames and HTTP answers.
//! - [`id`]: [`EventId`], the log-assigned event id.
//! - [`profile`]: output [`Profile`]s, the shapes a subscription may receive its events in.

pub mod client_frame;
pub mod envelope;
pub mod error_code;
pub mod id;
pub mod profile;
pub mod scope;
pub mod server_frame;
pub mod topic;

pub use client_frame::{ClientFrame, FrameError, SubName, Subscribe};
pub use envelope::{Envelope, EventLimits, NewEvent, PublishBody, RawEnvelope};
pub use error_code::{ErrorCode, HttpError, HttpErrorBody};
pub use id::EventId;
pub use profile::Profile;
pub use scope::{Filter, Scope};
pub use server_frame::{PresenceMember, ResetInfo, ServerFrame};
pub use topic::{Topic, TopicPattern};

/// The protocol version this crate implements; sent in the `welcome` frame.
pub const PROTOCOL_VERSION: u32 = 1;

/// The envelope version written into every event's `v` field.
pub const ENVELOPE_VERSION: u8 = 1;

/// A value that broke one of the contract's rules, with a message meant for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError(pub String);

impl ValidationError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The same error, its message prefixed by where it happened (`scope.run_id: …`).
    pub fn at(self, place: &str) -> Self {
        Self(format!("{place}: {}", self.0))
    }
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValidationError {}
