//! One statement against the log: the error of a failed one, the deadline every one has, and the task a call runs on.

use std::time::Duration;

use crate::{Error, Result};

pub(super) fn unavailable(e: sqlx::Error) -> Error {
    Error::Unavailable(Box::new(e))
}

/// A statement that got no answer within its deadline: its connection is taken for dead.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL did not answer within {0:?}; the connection is taken for dead")]
pub(super) struct Silent(Duration);

/// Awaits `statement` for at most `timeout`; past it, the statement fails with [`Silent`].
pub(super) async fn within<T>(timeout: Duration, statement: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(timeout, statement)
        .await
        .unwrap_or_else(|_| Err(Error::Unavailable(Box::new(Silent(timeout)))))
}

/// A statement's outcome, with the log's error.
pub(super) async fn fetch<T>(statement: impl Future<Output = sqlx::Result<T>>) -> Result<T> {
    statement.await.map_err(unavailable)
}

pub(super) fn is_silent(e: &Error) -> bool {
    matches!(e, Error::Unavailable(source) if source.is::<Silent>())
}

/// Runs a database call on its own Tokio task. Actor futures live on actix's `LocalSet`, which is dropped outside
/// the runtime's context at shutdown; a sqlx connection dropped there panics in its destructor. A spawned task is
/// dropped inside the runtime's context instead, and the actor only holds the join handle.
pub(super) async fn isolated<T: Send + 'static>(call: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    tokio::spawn(call).await.map_err(|e| Error::Unavailable(Box::new(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_statement_that_misses_its_deadline_fails_as_silent() {
        let never = within(Duration::from_millis(10), std::future::pending::<Result<()>>()).await;

        assert!(never.is_err_and(|e| is_silent(&e)));
    }
}
