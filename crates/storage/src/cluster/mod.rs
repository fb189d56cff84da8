//! What the hubs of a cluster say to each other, and the revocations they share: one mechanism on every backend,
//! over the backend the hubs already share.
//!
//! - [`Cluster::broadcast`] / [`Cluster::listen`]: short messages to every hub, this one included, from the moment
//!   it listens (PostgreSQL `NOTIFY`, Redis `PUBLISH`, a NATS core subject, a channel in memory). Best effort: a
//!   hub whose connection is down at that moment misses a message, which is why the hub's protocol on top of it
//!   (`hub::cluster`) has every request answered by every live hub and says which did not answer.
//! - Revocations: small records kept in the backend until their own expiry (a PostgreSQL table, a Redis hash, a
//!   NATS key-value bucket, a map in memory), so they survive a hub's restart.
//!
//! Nothing here goes through the event log: what hubs say to each other never reaches a subscriber.
//!
//! # Layout
//! - [`bus`]: the [`Cluster`] trait and its limits; [`memory`]: one process.
//! - [`postgres`], [`redis`], [`nats`]: the shared backends.

pub mod bus;
pub mod memory;
pub mod nats;
pub mod postgres;
pub mod redis;

pub use bus::{Cluster, MAX_MESSAGE_BYTES, RELISTEN_AFTER, Record};
