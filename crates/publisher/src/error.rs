//! The publisher's error.

/// Why an event was not published. Nothing is ever dropped silently: every failure is one of these.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event breaks a rule of the contract (topic, scope, key, correlation id …).
    #[error("invalid event: {0}")]
    Invalid(String),
    /// The payload is larger than the limit once serialized.
    #[error("the payload is {size} bytes serialized, the limit is {limit} bytes")]
    PayloadTooLarge { size: usize, limit: usize },
    /// The event log (or the hub in front of it) cannot be reached; retries, if any, are exhausted.
    #[error("the event log is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP sink's bounded buffer is full: the hub has been unreachable for a while.
    #[error("the publish buffer is full: {capacity} events already wait for the hub")]
    BufferFull { capacity: usize },
    /// The hub refused the events (a 4xx answer other than 429); retrying would not help.
    #[error("the hub refused the events ({status} {code}): {message}")]
    Rejected { status: u16, code: String, message: String, index: Option<usize> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<storage::Error> for Error {
    fn from(error: storage::Error) -> Self {
        Self::Unavailable(Box::new(error))
    }
}
