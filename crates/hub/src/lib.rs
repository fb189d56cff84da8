//! The realtime hub server.
//!
//! Events enter through `POST /api/publish` (or straight into the log, from the publisher crate), are appended to
//! the event log, followed by the storage actor, routed by topic rooms and delivered by the dispatcher to
//! WebSocket sessions in id order. `docs/ARCHITECTURE.md` tells the path of one event.
//!
//! # Layout
//! - [`startup`]: [`Application`]: build, port, run, graceful shutdown.
//! - [`settings`]: configuration from environment and flags.
//! - [`state`]: what routes and sessions share.
//! - [`actors`]: the dispatcher, topic rooms and WebSocket sessions.
//! - [`subscription`]: one subscription's replay-then-live state; [`engine`] drives it for any connection actor.
//! - [`auth`]: tokens and grants; [`limits`]: connection, waiter and rate limits.
//! - [`routes`]: the HTTP endpoints.
//! - [`smoke`]: `hub smoke`, the post-deploy check of a running hub.
//! - [`sources`]: database sources, rows another service writes polled into the log.
//! - [`outbound`]: per-connection byte accounting for slow consumers.
//! - [`rate`]: token buckets for per-connection rates.
//! - [`error`]: HTTP errors in the documented shape.
//! - [`stats`], [`telemetry`], [`instruments`]: counts, logs, traces, and the metrics catalog.

pub mod actors;
pub mod auth;
pub mod engine;
pub mod error;
pub mod instruments;
pub mod limits;
pub mod outbound;
pub mod poll_wakes;
pub mod rate;
pub mod routes;
pub mod sessions;
pub mod settings;
pub mod smoke;
pub mod sources;
pub mod startup;
pub mod state;
pub mod stats;
pub mod subscription;
pub mod telemetry;

pub use settings::Settings;
pub use startup::Application;
