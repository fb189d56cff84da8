//! The live feed: `LISTEN` on the log's channels, on a connection of its own that also reads the log for the storage
//! actor. A notification of a small transaction carries its events (`20261207000002_carried_events.sql`): when
//! they follow the storage actor's cursor, they are delivered without reading the log.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::DateTime;
use protocol::Scope;
use serde::Deserialize;
use serde_json::value::RawValue;
use sqlx::postgres::PgListener;
use tracing::debug;

use super::read::{LogRow, read_page};
use super::shared::{INBOX_CHANNEL, Shared};
use super::statement::{unavailable, within};
use crate::event::{LogBounds, LogQuery, Page, SharedEvent};
use crate::event_log::LiveFeed;
use crate::{Error, Result};

pub(super) struct PgFeed {
    /// Always `Some` until dropped.
    pub(super) listener: Option<PgListener>,
    pub(super) shared: Arc<Shared>,
    /// What the storage actor reads: every event.
    pub(super) all: LogQuery,
    /// Every policy's key: the storage actor's reads reach them all.
    pub(super) keys: Vec<String>,
    pub(super) carried: CarriedEvents,
}

impl Drop for PgFeed {
    fn drop(&mut self) {
        let Some(listener) = self.listener.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            return drop(listener);
        }
        // Outside a runtime (at process or test teardown) sqlx's listener cannot hand its connection back and
        // would panic in its destructor: close it on a throwaway runtime instead.
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(async move {
                drop(listener);
                tokio::task::yield_now().await;
            });
        }
    }
}

#[async_trait]
impl LiveFeed for PgFeed {
    async fn changed(&mut self, _cursor: u64) -> Result<()> {
        loop {
            // `try_recv` answers `None` when the connection was lost: notifications sent meanwhile are gone, so
            // the caller must read the log again rather than trust a silently reconnected listener.
            let Some(listener) = self.listener.as_mut() else {
                return Err(Error::Unavailable("the listener is closed".into()));
            };
            match listener.try_recv().await {
                Ok(Some(notification)) if notification.channel() == INBOX_CHANNEL => {
                    self.shared.inbox_wake.notify_one()
                }
                Ok(Some(notification)) => {
                    self.carried.note(notification.payload());
                    return Ok(());
                }
                Ok(None) => return Err(Error::Unavailable("the listening connection was lost".into())),
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// The events notifications carried when they follow `after`; otherwise reads the log on the listener's own
    /// connection: the storage actor's reads never queue behind the requests on the pool (under a burst of
    /// replays and long-polls, live delivery goes on and `/readyz` stays 200), and a listener whose connection
    /// died without a word is found out by its next read's deadline.
    async fn read(&mut self, after: u64, limit: usize) -> Result<Option<Page>> {
        if let Some(page) = self.carried.take(after, limit) {
            metrics::counter!("hub_pg_carried_events_total").increment(page.events.len() as u64);
            return Ok(Some(page));
        }
        self.carried.reading_the_log();
        let Some(listener) = self.listener.as_mut() else {
            return Err(Error::Unavailable("the listener is closed".into()));
        };
        let page = within(self.shared.db.timeout, read_page(listener, after, &self.all, &self.keys, limit)).await;
        if let Err(e) = &page {
            self.shared.db.went_silent(e);
        }
        page.map(Some)
    }
}

/// Events that notifications carried and the storage actor has not taken yet, in id order.
#[derive(Default)]
pub(super) struct CarriedEvents {
    events: VecDeque<SharedEvent>,
    /// A notification came without its events (a large transaction) or with events that could not be decoded:
    /// the next read goes to the log.
    must_read: bool,
}

impl CarriedEvents {
    /// Takes in a notification of `realtime_events`.
    fn note(&mut self, payload: &str) {
        match carried_events(payload) {
            Some(Ok(events)) => self.events.extend(events),
            None => self.must_read = true,
            Some(Err(e)) => {
                // The log is the truth: it is read instead.
                debug!(error = %e, "a notification's events could not be decoded");
                self.must_read = true;
            }
        }
    }

    /// The feed reads the log now: it sees everything the notifications so far announced.
    fn reading_the_log(&mut self) {
        self.must_read = false;
    }

    /// The carried events right after `after`, unless a notification since the last read of the log said the
    /// log holds more. Those at or below `after` (read from the log meanwhile) are dropped.
    fn take(&mut self, after: u64, limit: usize) -> Option<Page> {
        while self.events.front().is_some_and(|e| e.id() <= after) {
            self.events.pop_front();
        }
        if self.must_read || self.events.front()?.id() != after + 1 {
            return None;
        }
        let mut events = Vec::new();
        while events.len() < limit
            && let Some(event) = self.events.pop_front_if(|e| e.id() == after + 1 + events.len() as u64)
        {
            events.push(event);
        }
        let through = after + events.len() as u64;
        // Ids are dense, so nothing between `after` and these events is gone. More carried events (past a gap, or
        // past the limit) are left for the next read, which this page's being incomplete asks for.
        let complete = self.events.is_empty();
        Some(Page { events, through, complete, bounds: LogBounds { head: through, earliest: after + 1 } })
    }
}

/// One event of a notification: `[id, created_at (µs since 1970), topic, scope, stream_key, seq, payload,
/// correlation_id, traceparent]`.
type CarriedRow<'a> =
    (i64, i64, String, Scope, Option<String>, Option<i64>, &'a RawValue, Option<String>, Option<String>);

#[derive(Deserialize)]
struct Carried<'a> {
    #[serde(borrow)]
    events: Vec<CarriedRow<'a>>,
}

/// The events a notification of `realtime_events` carries, in id order; `None` when it carries only the head.
fn carried_events(payload: &str) -> Option<Result<Vec<SharedEvent>>> {
    if !payload.starts_with('{') {
        return None;
    }
    let decode = || -> Result<Vec<SharedEvent>> {
        let carried: Carried<'_> =
            serde_json::from_str(payload).map_err(|e| Error::Corrupt(format!("a notification: {e}")))?;
        let mut events = Vec::with_capacity(carried.events.len());
        for (id, micros, topic, scope, key, seq, payload, correlation_id, traceparent) in carried.events {
            let created_at = DateTime::from_timestamp_micros(micros)
                .ok_or_else(|| Error::Corrupt(format!("event {id}: a time out of range: {micros}")))?;
            let row =
                LogRow { id, topic, scope, key, seq, payload: payload.get(), correlation_id, traceparent, created_at };
            events.push(Arc::new(row.into_event()?));
        }
        Ok(events)
    };
    Some(decode())
}

#[cfg(test)]
mod tests {
    use super::CarriedEvents;

    /// A notification as `realtime_notify_events` writes it (PostgreSQL's spacing), for events `ids`.
    fn notification(ids: &[u64]) -> String {
        let rows: Vec<String> = ids
            .iter()
            .map(|id| {
                format!(
                    r#"[{id}, 1765110275123456, "run.status", {{"project_id": "p1"}}, null, {id}, {{"n": {id}, "s": "a: b, c"}}, "c-{id}", null]"#
                )
            })
            .collect();
        format!(r#"{{"events" : [{}]}}"#, rows.join(", \n "))
    }

    fn ids(carried: &mut CarriedEvents, after: u64) -> Option<(Vec<u64>, u64, bool)> {
        let page = carried.take(after, 1000)?;
        assert!(!page.skips(after), "carried events never skip");
        Some((page.events.iter().map(|e| e.id()).collect(), page.through, page.complete))
    }

    #[test]
    fn carried_events_are_taken_when_they_follow_the_cursor_and_render_as_read_from_the_log() {
        let mut carried = CarriedEvents::default();
        carried.note(&notification(&[5, 6]));
        let page = carried.take(4, 1000).unwrap();
        assert_eq!(
            page.events[0].json(),
            r#"{"id":5,"topic":"run.status","scope":{"project_id":"p1"},"seq":5,"ts":"2025-12-07T12:24:35.123Z","v":1,"correlation_id":"c-5","payload":{"n":5,"s":"a: b, c"}}"#
        );
        assert_eq!((page.through, page.complete), (6, true));
        assert!(carried.take(6, 1000).is_none(), "taken once");
    }

    #[test]
    fn carried_events_at_or_below_the_cursor_are_dropped_and_a_gap_sends_the_reader_to_the_log() {
        let mut carried = CarriedEvents::default();
        carried.note(&notification(&[5, 6]));
        assert_eq!(ids(&mut carried, 5), Some((vec![6], 6, true)), "5 was read from the log meanwhile");
        carried.note(&notification(&[9]));
        assert_eq!(ids(&mut carried, 6), None, "7 and 8 are in the log only");
        assert_eq!(ids(&mut carried, 8), Some((vec![9], 9, true)));
        carried.note(&notification(&[10, 11]));
        let page = carried.take(9, 1).unwrap();
        assert_eq!((page.events.len(), page.through, page.complete), (1, 10, false), "the limit leaves 11");
        assert_eq!(ids(&mut carried, 10), Some((vec![11], 11, true)));
    }

    #[test]
    fn a_notification_without_its_events_sends_the_next_read_to_the_log() {
        for without_events in ["14", r#"{"events": [[13, "not a time"]]}"#] {
            let mut carried = CarriedEvents::default();
            carried.note(without_events);
            carried.note(&notification(&[15]));
            assert_eq!(ids(&mut carried, 14), None, "{without_events}: the log is read first");
            carried.reading_the_log();
            assert_eq!(ids(&mut carried, 14), Some((vec![15], 15, true)));
        }
    }
}
