//! The publish contract of the realtime hub, for the services that produce events.
//!
//! Typed events for the well-known topics ([`events`]), a redaction policy that runs before anything is
//! serialized, logged or sent ([`redact`]), and the sinks: PostgreSQL (the service's own pool, optionally inside
//! its own transaction), Redis (the hubs' log on the redis backend), NATS JetStream (the hubs' stream on the nats
//! backend), a hub over HTTP, and memory (for tests). Each publish carries the current OpenTelemetry trace context. Errors are one enum, [`Error`]: nothing is dropped silently.
//!
//! # Layout
//! - [`events`]: `RunEvent`, `RunLogChunk`, `DeployEvent`, `DeployLogChunk`, `SystemError`, `CustomEvent`.
//! - [`redact`]: the [`Redactor`] policy (secret keys by whole words, secret-shaped values anywhere).
//! - [`publisher`]: [`Publisher`] and the [`Sink`] trait.
//! - [`sink`]: [`PgSink`], [`RedisSink`], [`NatsSink`], [`HttpSink`], [`MemorySink`].
//! - [`log_stream`]: [`LogStreamWriter`] (bytes → numbered chunks → `eos`) and [`ChunkChecker`] for readers.
//! - [`trace`]: the W3C `traceparent` of the current span.
//!
//! # In memory (tests of a service)
//!
//! ```
//! use publisher::events::{ProjectId, RunEvent, RunId, RunScope, RunStatus};
//! use publisher::{MemorySink, Publisher};
//!
//! # tokio_test::block_on(async {
//! let publisher = Publisher::new(MemorySink::new());
//! let scope = RunScope::new(ProjectId::new("p1")?, RunId::new("r9")?);
//! let mut event = RunEvent::new(scope, RunStatus::Running);
//! event.details.insert("password".into(), "hunter2".into());
//! publisher.publish(event).await?;
//!
//! let published = publisher.sink().envelopes().await;
//! assert_eq!(published[0].topic.as_str(), "run.events");
//! assert_eq!(published[0].payload["details"]["password"], "[REDACTED]");
//! # Ok::<(), publisher::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Straight into PostgreSQL, inside the service's transaction
//!
//! ```no_run
//! use publisher::events::{DeployEvent, DeployId, DeployScope, DeployStatus, ProjectId};
//! use publisher::{PgSink, Publisher};
//!
//! # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! let publisher = Publisher::new(PgSink::new(pool.clone()));
//! let mut tx = pool.begin().await?;
//! sqlx::query("UPDATE deploys SET status = 'succeeded' WHERE id = 'd1'").execute(&mut *tx).await?;
//! let scope = DeployScope::new(ProjectId::new("p1")?, DeployId::new("d1")?);
//! publisher.publish_in(&mut tx, DeployEvent::new(scope, DeployStatus::Succeeded)).await?;
//! tx.commit().await?; // the event exists if and only if this commits
//! publisher.sink().wake(); // hubs move it into the log now rather than at their next poll
//! # Ok(())
//! # }
//! ```
//!
//! # Straight into the hubs' Redis log
//!
//! ```no_run
//! use publisher::events::{ProjectId, RunEvent, RunId, RunScope, RunStatus};
//! use publisher::{Publisher, RedisSink};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let publisher = Publisher::new(RedisSink::connect("redis://redis:6379", "realtime").await?);
//! let scope = RunScope::new(ProjectId::new("p1")?, RunId::new("r9")?);
//! let published = publisher.publish(RunEvent::new(scope, RunStatus::Succeeded)).await?;
//! println!("stored as {:?}", published.ids);
//! # Ok(())
//! # }
//! ```
//!
//! # Straight into the hubs' NATS stream
//!
//! ```no_run
//! use publisher::events::{ProjectId, RunEvent, RunId, RunScope, RunStatus};
//! use publisher::{NatsSink, Publisher};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let publisher = Publisher::new(NatsSink::connect("nats://nats:4222", "realtime", None).await?);
//! let scope = RunScope::new(ProjectId::new("p1")?, RunId::new("r9")?);
//! publisher.publish(RunEvent::new(scope, RunStatus::Running)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Over HTTP, to a hub
//!
//! ```no_run
//! use publisher::events::SystemError;
//! use publisher::{HttpSink, Publisher};
//!
//! # async fn example() -> Result<(), publisher::Error> {
//! let publisher = Publisher::new(HttpSink::new("http://realtime-hub:8080").with_token("<jwt with a publish claim>"));
//! let published = publisher.publish(SystemError::new("scheduler", "queue stalled")).await?;
//! println!("stored as {:?}", published.ids);
//! # Ok(())
//! # }
//! ```

pub mod error;
pub mod events;
pub mod log_stream;
pub mod publisher;
pub mod redact;
pub mod sink;
pub mod trace;

pub use error::{Error, Result};
pub use log_stream::{ChunkChecker, LogStreamWriter, LogTarget, MissingChunks};
pub use publisher::{Published, Publisher, Sink, redact_event};
pub use redact::Redactor;
pub use sink::http::{HttpSink, RetryPolicy};
pub use sink::memory::MemorySink;
pub use sink::nats::NatsSink;
pub use sink::postgres::PgSink;
pub use sink::redis::RedisSink;
