//! Reads of the log: its bounds, and one page after a position for a query, decoded into events.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use protocol::scope::WELL_KNOWN_KEYS;
use protocol::{ENVELOPE_VERSION, Envelope, EventId, Scope, Topic, TopicPattern};
use serde_json::value::RawValue;
use sqlx::types::Json;
use sqlx::{QueryBuilder, Row};

use super::statement::unavailable;
use crate::event::{LogBounds, LogQuery, Page, StoredEvent, format_ts};
use crate::{Error, Result};

/// The head, and the highest removal position of the policies named by `keys`, in one snapshot.
const STATE: &str = "SELECT head, (SELECT coalesce(max(removed_through), 0) FROM realtime_policies \
                     WHERE key = ANY($1)) AS removed FROM realtime_log_state WHERE singleton";

/// The log's bounds for reads that reach the policies named by `keys` (see `PgPolicies::keys_for`).
pub(super) async fn bounds(db: impl sqlx::PgExecutor<'_>, keys: &[String]) -> Result<LogBounds> {
    let row = sqlx::query(STATE).bind(keys).fetch_one(db).await.map_err(unavailable)?;
    let head = row.try_get::<i64, _>("head").map_err(unavailable)? as u64;
    let removed = row.try_get::<i64, _>("removed").map_err(unavailable)? as u64;
    Ok(LogBounds { head, earliest: removed + 1 })
}

/// One page of the log after `after` matching `query`, with the head read in the same snapshot.
pub(super) async fn read_page<'e>(
    db: impl sqlx::PgExecutor<'e>,
    after: u64,
    query: &LogQuery,
    keys: &[String],
    limit: usize,
) -> Result<Page> {
    let mut sql = QueryBuilder::new(
        "SELECT s.head, s.removed, e.id, e.topic, e.scope, e.stream_key, e.seq, e.payload::text AS payload, \
         e.correlation_id, \
         e.traceparent, e.created_at FROM (SELECT head, (SELECT coalesce(max(removed_through), 0) \
         FROM realtime_policies WHERE key = ANY(",
    );
    sql.push_bind(keys.to_vec());
    sql.push(
        ")) AS removed FROM realtime_log_state WHERE singleton) s \
         LEFT JOIN LATERAL (SELECT * FROM realtime_events WHERE id > ",
    );
    sql.push_bind(after as i64);
    push_topics(&mut sql, &query.topics);
    for (key, value) in query.filter.iter() {
        if WELL_KNOWN_KEYS.contains(&key) {
            // The key is one of six fixed column names, never client text.
            sql.push(format!(" AND {key} = ")).push_bind(value.to_owned());
        } else {
            sql.push(" AND scope ->> ").push_bind(key.to_owned()).push(" = ").push_bind(value.to_owned());
        }
    }
    sql.push(" ORDER BY id LIMIT ").push_bind(limit as i64).push(") e ON true ORDER BY e.id");
    let rows = sql.build().fetch_all(db).await.map_err(unavailable)?;
    let head = rows.first().map(|r| r.try_get::<i64, _>("head")).transpose().map_err(unavailable)?.unwrap_or(0) as u64;
    let removed = rows.first().map(|r| r.try_get::<i64, _>("removed")).transpose().map_err(unavailable)?;
    let bounds = LogBounds { head, earliest: removed.unwrap_or(0) as u64 + 1 };
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let Some(id) = row.try_get::<Option<i64>, _>("id").map_err(unavailable)? else { continue };
        events.push(Arc::new(decode(id, row)?));
    }
    let full = events.len() == limit;
    let through = if full { events.last().map_or(after, |e| e.id()) } else { head.max(after) };
    Ok(Page { events, through, complete: !full, bounds })
}

/// Appends the topic condition: nothing when a pattern is `*`; `topic = $1` for one exact topic (so replay walks
/// the `(topic, id)` index in id order and stops at the page's limit); otherwise `topic = ANY(…)` and/or
/// `topic LIKE ANY(…)`, leaving out an empty list so the planner is not pushed off the indexes.
fn push_topics(sql: &mut QueryBuilder<'_, sqlx::Postgres>, patterns: &[TopicPattern]) {
    if patterns.iter().any(|p| matches!(p, TopicPattern::Prefix(prefix) if prefix.is_empty())) {
        return;
    }
    let exact: Vec<String> = patterns
        .iter()
        .filter_map(|p| match p {
            TopicPattern::Exact(t) => Some(t.as_str().to_owned()),
            TopicPattern::Prefix(_) => None,
        })
        .collect();
    let prefixes: Vec<String> = patterns
        .iter()
        .filter_map(|p| match p {
            // `_` is a topic character and a LIKE wildcard: escape it (and the escape character).
            TopicPattern::Prefix(prefix) => Some(format!("{}%", prefix.replace('\\', "\\\\").replace('_', "\\_"))),
            TopicPattern::Exact(_) => None,
        })
        .collect();
    match (exact.as_slice(), prefixes.is_empty()) {
        ([one], true) => {
            sql.push(" AND topic = ").push_bind(one.clone());
        }
        (_, true) => {
            sql.push(" AND topic = ANY(").push_bind(exact).push(")");
        }
        ([], false) => {
            sql.push(" AND topic LIKE ANY(").push_bind(prefixes).push(")");
        }
        (_, false) => {
            sql.push(" AND (topic = ANY(").push_bind(exact).push(") OR topic LIKE ANY(").push_bind(prefixes).push("))");
        }
    }
}

fn decode(id: i64, row: &sqlx::postgres::PgRow) -> Result<StoredEvent> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| Error::Corrupt(format!("event {id}: {what}: {e}"));
    let Json(scope): Json<Scope> = row.try_get("scope").map_err(|e| corrupt("scope", &e))?;
    let payload: String = row.try_get("payload").map_err(|e| corrupt("payload", &e))?;
    LogRow {
        id,
        topic: row.try_get("topic").map_err(unavailable)?,
        scope,
        key: row.try_get("stream_key").map_err(unavailable)?,
        seq: row.try_get("seq").map_err(unavailable)?,
        payload: &payload,
        correlation_id: row.try_get("correlation_id").map_err(unavailable)?,
        traceparent: row.try_get("traceparent").map_err(unavailable)?,
        created_at: row.try_get("created_at").map_err(unavailable)?,
    }
    .into_event()
}

/// An event as `realtime_events` holds it, read from a row or carried by a notification (`listener.rs`).
pub(super) struct LogRow<'a> {
    pub(super) id: i64,
    pub(super) topic: String,
    pub(super) scope: Scope,
    pub(super) key: Option<String>,
    pub(super) seq: Option<i64>,
    /// The payload as PostgreSQL writes `jsonb`.
    pub(super) payload: &'a str,
    pub(super) correlation_id: Option<String>,
    pub(super) traceparent: Option<String>,
    pub(super) created_at: DateTime<Utc>,
}

impl LogRow<'_> {
    pub(super) fn into_event(self) -> Result<StoredEvent> {
        let id = self.id;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| Error::Corrupt(format!("event {id}: {what}: {e}"));
        let envelope = Envelope {
            id: EventId::new(id as u64).map_err(|e| corrupt("id", &e))?,
            topic: Topic::parse(self.topic).map_err(|e| corrupt("topic", &e))?,
            scope: self.scope,
            key: self.key,
            seq: self.seq.map(|s| s as u64),
            ts: format_ts(self.created_at),
            v: ENVELOPE_VERSION,
            correlation_id: self.correlation_id,
            // Kept as the log's text, never parsed into values: delivery needs only the JSON.
            payload: RawValue::from_string(compact(self.payload)).map_err(|e| corrupt("payload", &e))?,
        };
        Ok(StoredEvent::new(envelope, self.created_at, self.traceparent))
    }
}

/// JSON without the whitespace between tokens: PostgreSQL writes `jsonb` with a space after every `:` and `,`,
/// which would otherwise go out to every subscriber of every event (and differ from the other backends' JSON).
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut start, mut in_string, mut escaped) = (0, false, false);
    for (i, byte) in json.bytes().enumerate() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if matches!(byte, b' ' | b'\n' | b'\t' | b'\r') {
            // ASCII bytes never occur inside a multi-byte character: `i` is a character boundary.
            out.push_str(&json[start..i]);
            start = i + 1;
        }
    }
    out.push_str(&json[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::compact;

    #[test]
    fn compacting_removes_the_space_between_tokens_and_keeps_strings_whole() {
        assert_eq!(compact(r#"{"a": 1, "b": [1, 2], "c": {"d": null}}"#), r#"{"a":1,"b":[1,2],"c":{"d":null}}"#);
        assert_eq!(
            compact(r#"{"s": "two  words, a: colon", "q": "a \"quoted\" word , x", "e": "\\", "t": "é ü"}"#),
            r#"{"s":"two  words, a: colon","q":"a \"quoted\" word , x","e":"\\","t":"é ü"}"#
        );
        assert_eq!(compact("{}"), "{}");
    }
}
