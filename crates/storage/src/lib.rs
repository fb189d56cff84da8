//! Event-log backends of the realtime hub, and the storage actor that tails them.
//!
//! The event log is the source of truth: every event gets its id from the log, every replay reads the log, and
//! live delivery is only a faster way of learning what the log already holds. Backends implement [`EventLog`];
//! the hub never knows which one it talks to.
//!
//! # Layout
//! - [`event`]: the log's vocabulary: [`StoredEvent`], [`LogQuery`], [`Page`], [`LogBounds`].
//! - [`event_log`]: the [`EventLog`] and [`LiveFeed`] traits every backend implements.
//! - [`memory`]: the embedded in-memory log (one process), bounded by capacity and age.
//! - [`postgres`]: the PostgreSQL log shared by any number of hubs, its inbox for transactional publishers, and
//!   its `LISTEN` feed.
//! - [`redis`]: the Redis Streams log shared by any number of hubs, with epochs for a Redis that lost its data.
//! - [`nats`]: the NATS JetStream log, replicated across a NATS cluster with no single primary; its feed carries
//!   the events.
//! - [`recent`]: [`RecentEvents`], the newest events in memory; [`windowed`]: [`WindowedLog`], which answers reads
//!   near the head from them.
//! - [`log_actor`]: [`EventLogActor`], which follows the log from a cursor and sends [`EventsAppended`] batches,
//!   in id order, to the dispatcher; it also runs retention and reports health.
//! - [`cluster`]: what the hubs of a cluster say to each other, and the revocations they share, on every backend.
//! - [`retention`]: the global [`Retention`]; [`policy`]: the [`TopicPolicies`] that keep groups of topics
//!   longer or shorter than it, each with its own removal position.
//! - [`tail`]: the newest matching events below a position, read backwards in growing, bounded windows.
//! - [`error`]: the crate's [`Error`].

pub mod cluster;
pub mod error;
pub mod event;
pub mod event_log;
#[cfg(feature = "actor")]
pub mod log_actor;
pub mod memory;
pub mod nats;
pub mod policy;
pub mod postgres;
pub mod recent;
pub mod redis;
pub mod retention;
pub mod tail;
pub mod windowed;

pub use cluster::Cluster;
pub use error::{Error, Result};
pub use event::{LogBounds, LogQuery, Page, SharedEvent, StoredEvent};
pub use event_log::{EventLog, LiveFeed};
#[cfg(feature = "actor")]
pub use log_actor::{EventLogActor, EventsAppended, LogHealth};
pub use memory::MemoryLog;
pub use nats::{NatsLog, NatsSettings};
pub use policy::{PolicyState, TopicPolicies, TopicPolicy};
pub use postgres::{PgLog, PgSettings};
pub use recent::RecentEvents;
pub use redis::{RedisLog, RedisSettings};
pub use retention::Retention;
pub use windowed::WindowedLog;
