//! The bus hubs talk on and the records they keep: the [`Cluster`] trait every backend implements, and its limits.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::Result;

/// The longest message [`Cluster::broadcast`] takes, in bytes: PostgreSQL's `NOTIFY` allows 8,000.
pub const MAX_MESSAGE_BYTES: usize = 7_000;

/// How long a listener waits before it opens its connection again after losing it.
pub const RELISTEN_AFTER: Duration = Duration::from_millis(500);

/// A revocation as the backend keeps it: an opaque key and value (the hub's JSON), and when it lapses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    pub value: String,
    pub until: DateTime<Utc>,
}

#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// Sends `message` (at most [`MAX_MESSAGE_BYTES`]) to every hub that listens, this one included.
    async fn broadcast(&self, message: &str) -> Result<()>;

    /// What every hub broadcasts from now on, for as long as the receiver is held. A lost connection is opened
    /// again by itself after [`RELISTEN_AFTER`]; what was broadcast meanwhile is missed.
    async fn listen(&self) -> Result<mpsc::UnboundedReceiver<String>>;

    /// Keeps `record` (replacing one with the same key) until its `until`.
    async fn put(&self, record: Record) -> Result<()>;

    /// Removes the record `key`; whether there was one.
    async fn remove(&self, key: &str) -> Result<bool>;

    /// Every record whose `until` has not passed.
    async fn records(&self) -> Result<Vec<Record>>;
}

/// Opens a lost listening connection again with `open`, every [`RELISTEN_AFTER`], until it opens, or until nobody
/// holds the receiver of `tx` any more (`None`).
pub(crate) async fn reopen<T, E, F>(tx: &mpsc::UnboundedSender<String>, open: impl Fn() -> F) -> Option<T>
where
    E: std::fmt::Display,
    F: std::future::Future<Output = std::result::Result<T, E>>,
{
    loop {
        if tx.is_closed() {
            return None;
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
        match open().await {
            Ok(opened) => return Some(opened),
            Err(e) => tracing::debug!(error = %e, "cannot listen to the cluster yet"),
        }
    }
}

/// Refuses a message longer than [`MAX_MESSAGE_BYTES`]: the hub splits what it sends below it.
pub(crate) fn check_size(message: &str) -> Result<()> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(crate::Error::Config(format!(
            "a cluster message of {} bytes is over the {MAX_MESSAGE_BYTES}-byte limit",
            message.len()
        )));
    }
    Ok(())
}
