//! The storage crate's error.

/// Why an event-log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend cannot be reached (connection refused, pool timed out, server restarting).
    #[error("the event log is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend's configuration is wrong (a malformed URL, a server that cannot hold the log).
    #[error("{0}")]
    Config(String),
    /// The backend answered with something that breaks the log's invariants.
    #[error("the event log is inconsistent: {0}")]
    Corrupt(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
