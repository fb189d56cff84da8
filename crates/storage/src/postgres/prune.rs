//! Retention: events older than the cutoff removed, oldest first, in bounded batches.

use chrono::{DateTime, Utc};

use super::pool::Db;
use super::statement::{fetch, within};
use crate::Result;

/// Most rows one retention statement deletes, so no delete holds locks for long.
pub(super) const RETENTION_BATCH: i64 = 5000;

/// Removes events older than `cutoff`, oldest first, a bounded batch per statement: short locks, and autovacuum
/// keeps up.
pub(super) async fn prune(db: &Db, cutoff: DateTime<Utc>) -> Result<u64> {
    let mut removed = 0;
    loop {
        let statement = sqlx::query(
            "DELETE FROM realtime_events WHERE id IN \
             (SELECT id FROM realtime_events ORDER BY id LIMIT $2) AND created_at < $1",
        )
        .bind(cutoff)
        .bind(RETENTION_BATCH);
        let deleted =
            db.run(async |conn, timeout| within(timeout, fetch(statement.execute(conn))).await).await?.rows_affected();
        removed += deleted;
        if deleted < RETENTION_BATCH as u64 {
            break;
        }
    }
    // Idempotency keys live as long as their events: a retry after that stores anew.
    let statement = sqlx::query("DELETE FROM realtime_idempotency WHERE created_at < $1").bind(cutoff);
    db.run(async |conn, timeout| within(timeout, fetch(statement.execute(conn))).await).await?;
    Ok(removed)
}
