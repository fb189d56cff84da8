//! The statements that write: an append under the head lock (`realtime_append`), an insert into the inbox (the
//! publisher crate's, in the caller's transaction when it wants, and this hub's), and the inbox's move into the log.

use std::time::Duration;

use protocol::{EventId, NewEvent, Scope};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

use super::statement::{fetch, unavailable, within};
use crate::{Error, Result};

/// Most inbox rows one move takes.
pub(super) const INBOX_MOVE_BATCH: i32 = 5000;

/// Appends a batch in one statement within `executor`'s transaction (or its own); returns the ids.
pub async fn append_with<'e, E>(executor: E, events: &[NewEvent]) -> Result<Vec<EventId>>
where
    E: sqlx::PgExecutor<'e>,
{
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let columns = Columns::of(events);
    let row = columns
        .bind(sqlx::query("SELECT realtime_append($1, $2, $3, $4, $5, $6, $7, $8)"))
        .fetch_one(executor)
        .await
        .map_err(unavailable)?;
    let ids: Vec<i64> = row.try_get(0).map_err(unavailable)?;
    if ids.len() != events.len() {
        return Err(Error::Corrupt(format!("{} ids for {} events", ids.len(), events.len())));
    }
    ids.into_iter().map(|id| EventId::new(id as u64).map_err(|e| Error::Corrupt(e.to_string()))).collect()
}

/// Queues a batch in the inbox within `executor`'s transaction: it gets ids, and becomes visible to
/// subscribers, only after that transaction commits.
pub async fn enqueue_with<'e, E>(executor: E, events: &[NewEvent]) -> Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    if let [event] = events {
        // One event, the common case of a service publishing as it works: a plain one-row insert, without the
        // arrays a batch needs (which cost PostgreSQL more to build and unnest than the row itself).
        sqlx::query(
            "INSERT INTO realtime_inbox \
             (topic, scope, stream_key, seq, payload, correlation_id, traceparent, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(event.topic.as_str())
        .bind(Json(&event.scope))
        .bind(event.effective_key())
        // Validation keeps seq below 2^53.
        .bind(event.seq.map(|s| s as i64))
        .bind(Json(&event.payload))
        .bind(event.correlation_id.as_deref())
        .bind(event.traceparent.as_deref())
        .bind(event.idempotency_key.as_deref())
        .execute(executor)
        .await
        .map_err(unavailable)?;
        return Ok(());
    }
    if events.is_empty() {
        return Ok(());
    }
    let columns = Columns::of(events);
    columns
        .bind(sqlx::query(
            "INSERT INTO realtime_inbox \
             (topic, scope, stream_key, seq, payload, correlation_id, traceparent, idempotency_key) \
             SELECT * FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::bigint[], $5::jsonb[], $6::text[], \
                                  $7::text[], $8::text[])",
        ))
        .execute(executor)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// A batch as parallel arrays, the shape `realtime_append` and the inbox insert take.
struct Columns<'a> {
    topics: Vec<&'a str>,
    scopes: Vec<Json<&'a Scope>>,
    keys: Vec<Option<String>>,
    seqs: Vec<Option<i64>>,
    payloads: Vec<Json<&'a Map<String, Value>>>,
    correlation_ids: Vec<Option<&'a str>>,
    traceparents: Vec<Option<&'a str>>,
    idempotency_keys: Vec<Option<&'a str>>,
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

impl<'a> Columns<'a> {
    /// Binds the eight arrays as `$1` … `$8`, in the order of `realtime_append` and the inbox.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.topics)
            .bind(&self.scopes)
            .bind(&self.keys)
            .bind(&self.seqs)
            .bind(&self.payloads)
            .bind(&self.correlation_ids)
            .bind(&self.traceparents)
            .bind(&self.idempotency_keys)
    }

    fn of(events: &'a [NewEvent]) -> Self {
        Self {
            topics: events.iter().map(|e| e.topic.as_str()).collect(),
            scopes: events.iter().map(|e| Json(&e.scope)).collect(),
            keys: events.iter().map(NewEvent::effective_key).collect(),
            // Validation keeps seq below 2^53.
            seqs: events.iter().map(|e| e.seq.map(|s| s as i64)).collect(),
            payloads: events.iter().map(|e| Json(&e.payload)).collect(),
            correlation_ids: events.iter().map(|e| e.correlation_id.as_deref()).collect(),
            traceparents: events.iter().map(|e| e.traceparent.as_deref()).collect(),
            idempotency_keys: events.iter().map(|e| e.idempotency_key.as_deref()).collect(),
        }
    }
}

/// Moves committed inbox rows into the log until the inbox is empty; returns how many moved.
pub(super) async fn move_inbox(conn: &mut PgConnection, timeout: Duration) -> Result<u64> {
    let mut moved = 0;
    loop {
        let statement = sqlx::query_scalar::<_, i32>("SELECT realtime_move_inbox($1)").bind(INBOX_MOVE_BATCH);
        let taken = within(timeout, fetch(statement.fetch_one(&mut *conn))).await?;
        moved += taken as u64;
        if taken < INBOX_MOVE_BATCH {
            return Ok(moved);
        }
    }
}
