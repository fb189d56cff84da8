//! The embedded in-memory event log: one process, bounded by count and age.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;
use protocol::{EventId, NewEvent};
use tokio::sync::watch;

use crate::event::{LogBounds, LogQuery, Page, SharedEvent, StoredEvent};
use crate::event_log::{EventLog, LiveFeed};
use crate::{Error, Result, Retention};

/// How many retained events one read looks at before it returns a page, so a rare filter over a long history
/// never holds the lock for long; the reader asks again from `through`.
const MAX_SCAN_PER_READ: usize = 16_384;

/// An event log held in memory. Ids are dense (no gaps), so an event's position is its id minus the first id.
pub struct MemoryLog {
    state: Mutex<State>,
    /// Carries the head to the live feeds; `send_replace` never fails, even with no feed open.
    head_tx: watch::Sender<u64>,
    retention: Retention,
}

struct State {
    events: VecDeque<SharedEvent>,
    head: u64,
    /// Idempotency keys of recent appends and the ids they got, at most `max_events` of them (oldest forgotten).
    idempotency: HashMap<String, EventId>,
    idempotency_order: VecDeque<String>,
}

impl MemoryLog {
    pub fn new(retention: Retention) -> Self {
        let (head_tx, _) = watch::channel(0);
        let capacity = retention.max_events.min(1 << 20);
        let state = State {
            events: VecDeque::with_capacity(capacity),
            head: 0,
            idempotency: HashMap::new(),
            idempotency_order: VecDeque::new(),
        };
        Self { state: Mutex::new(state), head_tx, retention }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this file; the data is still consistent because every
        // mutation below is a single push or pop, so recover the guard rather than poison the whole hub.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn earliest(&self) -> u64 {
        self.events.front().map_or(self.head + 1, |e| e.id())
    }

    fn bounds(&self) -> LogBounds {
        LogBounds { head: self.head, earliest: self.earliest() }
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    fn provider(&self) -> &'static str {
        "memory"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>> {
        let now = Utc::now();
        let mut state = self.state();
        if state.head + events.len() as u64 >= EventId::LIMIT {
            return Err(Error::Corrupt("the id space of the log is exhausted".into()));
        }
        let mut ids = Vec::with_capacity(events.len());
        for event in events {
            if let Some(known) = event.idempotency_key.as_ref().and_then(|k| state.idempotency.get(k)) {
                ids.push(*known);
                continue;
            }
            state.head += 1;
            let id = EventId::new(state.head).map_err(|e| Error::Corrupt(e.to_string()))?;
            if let Some(key) = &event.idempotency_key {
                state.idempotency.insert(key.clone(), id);
                state.idempotency_order.push_back(key.clone());
                if state.idempotency_order.len() > self.retention.max_events
                    && let Some(oldest) = state.idempotency_order.pop_front()
                {
                    state.idempotency.remove(&oldest);
                }
            }
            state.events.push_back(Arc::new(StoredEvent::from_new(id, now, event)));
            ids.push(id);
        }
        while state.events.len() > self.retention.max_events {
            state.events.pop_front();
        }
        let head = state.head;
        drop(state);
        self.head_tx.send_replace(head);
        Ok(ids)
    }

    async fn read_after(&self, after: u64, query: &LogQuery, limit: usize) -> Result<Page> {
        let state = self.state();
        let first = state.earliest();
        let start = usize::try_from((after + 1).saturating_sub(first)).unwrap_or(usize::MAX);
        let mut page = Page {
            events: Vec::new(),
            through: after.max(first.saturating_sub(1)),
            complete: false,
            bounds: state.bounds(),
        };
        for event in state.events.iter().skip(start).take(MAX_SCAN_PER_READ) {
            if page.events.len() == limit {
                return Ok(page);
            }
            if query.matches(event) {
                page.events.push(event.clone());
            }
            page.through = event.id();
        }
        page.through = page.through.min(state.head);
        page.complete = page.through >= state.head;
        Ok(page)
    }

    async fn bounds(&self) -> Result<LogBounds> {
        Ok(self.state().bounds())
    }

    async fn prune(&self) -> Result<u64> {
        let cutoff = Utc::now() - self.retention.max_age;
        let mut state = self.state();
        let before = state.events.len();
        while state.events.front().is_some_and(|e| e.created_at < cutoff) {
            state.events.pop_front();
        }
        Ok((before - state.events.len()) as u64)
    }

    async fn live_feed(&self) -> Result<Box<dyn LiveFeed>> {
        Ok(Box::new(MemoryFeed { head_rx: self.head_tx.subscribe() }))
    }
}

struct MemoryFeed {
    head_rx: watch::Receiver<u64>,
}

#[async_trait]
impl LiveFeed for MemoryFeed {
    async fn changed(&mut self, _cursor: u64) -> Result<()> {
        // The sender lives as long as the log, and the log outlives every feed it opened.
        self.head_rx.changed().await.map_err(|e| Error::Unavailable(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::{Filter, Scope, Topic, TopicPattern};
    use serde_json::json;

    use super::*;

    fn event(topic: &str, project: &str) -> NewEvent {
        let payload = json!({"n": 1}).as_object().cloned().unwrap();
        NewEvent::new(Topic::parse(topic).unwrap(), Scope::try_from([("project_id", project)]).unwrap(), payload)
    }

    fn log(max_events: usize) -> MemoryLog {
        MemoryLog::new(Retention { max_age: Duration::from_secs(3600), max_events })
    }

    #[tokio::test]
    async fn appends_get_dense_increasing_ids() {
        let log = log(100);
        let ids = log.append(vec![event("a", "p1"), event("b", "p1")]).await.unwrap();
        let more = log.append(vec![event("a", "p1")]).await.unwrap();
        let ids: Vec<u64> = ids.into_iter().chain(more).map(EventId::get).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(log.bounds().await.unwrap(), LogBounds { head: 3, earliest: 1 });
    }

    #[tokio::test]
    async fn reads_filter_by_topic_and_scope_and_page_by_limit() {
        let log = log(100);
        for i in 0..10 {
            log.append(vec![event(if i % 2 == 0 { "run.logs" } else { "chat:1" }, "p1")]).await.unwrap();
        }
        log.append(vec![event("run.logs", "p2")]).await.unwrap();
        let query = LogQuery::new(
            vec![TopicPattern::parse("run.*").unwrap()],
            Filter::try_from([("project_id", "p1")]).unwrap(),
        );
        let page = log.read_after(0, &query, 3).await.unwrap();
        let ids: Vec<u64> = page.events.iter().map(|e| e.id()).collect();
        assert_eq!(ids, vec![1, 3, 5]);
        assert!(!page.complete);
        let page = log.read_after(page.through, &query, 3).await.unwrap();
        let ids: Vec<u64> = page.events.iter().map(|e| e.id()).collect();
        assert_eq!(ids, vec![7, 9]);
        assert!(page.complete);
        assert_eq!(page.through, 11);
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_answers_the_first_id_and_stores_nothing() {
        let log = log(100);
        let keyed = |k: &str| NewEvent { idempotency_key: Some(k.into()), ..event("a", "p") };
        let first = log.append(vec![keyed("k1"), event("a", "p")]).await.unwrap();
        let again = log.append(vec![keyed("k1"), keyed("k2"), keyed("k2")]).await.unwrap();
        let ids = |v: Vec<EventId>| v.into_iter().map(EventId::get).collect::<Vec<_>>();
        assert_eq!(ids(first), vec![1, 2]);
        assert_eq!(ids(again), vec![1, 3, 3]);
        assert_eq!(log.bounds().await.unwrap().head, 3);
    }

    #[tokio::test]
    async fn capacity_drops_the_oldest_events() {
        let log = log(3);
        for _ in 0..5 {
            log.append(vec![event("a", "p")]).await.unwrap();
        }
        assert_eq!(log.bounds().await.unwrap(), LogBounds { head: 5, earliest: 3 });
        let page = log.read_after(0, &LogQuery::all(), 10).await.unwrap();
        assert_eq!(page.events.first().map(|e| e.id()), Some(3));
    }

    #[tokio::test]
    async fn prune_removes_events_older_than_the_retention_age() {
        let log = MemoryLog::new(Retention { max_age: Duration::ZERO, max_events: 10 });
        log.append(vec![event("a", "p"), event("a", "p")]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(log.prune().await.unwrap(), 2);
        assert_eq!(log.bounds().await.unwrap(), LogBounds { head: 2, earliest: 3 });
    }

    #[tokio::test]
    async fn the_live_feed_wakes_on_append() {
        let log = log(10);
        let mut feed = log.live_feed().await.unwrap();
        log.append(vec![event("a", "p")]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), feed.changed(0)).await.unwrap().unwrap();
    }
}
