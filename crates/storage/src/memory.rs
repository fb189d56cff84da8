//! The embedded in-memory event log: one process, each topic policy bounded by its own count and age.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::Utc;
use protocol::{EventId, NewEvent};
use tokio::sync::watch;

use crate::event::{LogBounds, LogQuery, Page, SharedEvent, StoredEvent};
use crate::event_log::{EventLog, LiveFeed};
use crate::policy::{PolicySet, PolicyState, Removed, TopicPolicies};
use crate::{Error, Result, Retention};

/// How many retained events one read looks at before it returns a page, so a rare filter over a long history
/// never holds the lock for long; the reader asks again from `through`.
const MAX_SCAN_PER_READ: usize = 16_384;

/// An event log held in memory: every event by id, and each policy's events in id order for its removal.
pub struct MemoryLog {
    state: Mutex<State>,
    /// Carries the head to the live feeds; `send_replace` never fails, even with no feed open.
    head_tx: watch::Sender<u64>,
    policies: TopicPolicies,
}

struct State {
    events: BTreeMap<u64, SharedEvent>,
    head: u64,
    /// By policy index.
    kept: Vec<Kept>,
    /// Idempotency keys of recent appends and the ids they got, at most the default policy's `max_events` of
    /// them (oldest forgotten).
    idempotency: HashMap<String, EventId>,
    idempotency_order: VecDeque<String>,
}

/// One policy's events, oldest first, and what its removal has taken.
#[derive(Default)]
struct Kept {
    events: VecDeque<SharedEvent>,
    removed_through: u64,
    removed: u64,
}

impl MemoryLog {
    /// One retention for every topic.
    pub fn new(retention: Retention) -> Self {
        Self::with_policies(TopicPolicies::single(retention))
    }

    pub fn with_policies(policies: TopicPolicies) -> Self {
        let (head_tx, _) = watch::channel(0);
        let state = State {
            events: BTreeMap::new(),
            head: 0,
            kept: (0..policies.len()).map(|_| Kept::default()).collect(),
            idempotency: HashMap::new(),
            idempotency_order: VecDeque::new(),
        };
        Self { state: Mutex::new(state), head_tx, policies }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in this file; the data is still consistent because every
        // mutation below is a single insert or removal, so recover the guard rather than poison the whole hub.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn removed(&self) -> Removed {
        Removed(self.kept.iter().map(|k| k.removed_through).collect())
    }

    fn bounds(&self, reached: PolicySet) -> LogBounds {
        LogBounds { head: self.head, earliest: self.removed().through(reached) + 1 }
    }

    /// Removes policy `index`'s oldest event.
    fn remove_oldest(&mut self, index: usize) {
        let kept = &mut self.kept[index];
        if let Some(event) = kept.events.pop_front() {
            kept.removed_through = kept.removed_through.max(event.id());
            kept.removed += 1;
            self.events.remove(&event.id());
        }
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    fn provider(&self) -> &'static str {
        "memory"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>> {
        let now = Utc::now();
        let idempotency_cap = self.policies.get(self.policies.len() - 1).max_events;
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
                if state.idempotency_order.len() > idempotency_cap
                    && let Some(oldest) = state.idempotency_order.pop_front()
                {
                    state.idempotency.remove(&oldest);
                }
            }
            let index = self.policies.index_of(event.topic.as_str());
            let event = Arc::new(StoredEvent::from_new(id, now, event));
            state.events.insert(id.get(), event.clone());
            state.kept[index].events.push_back(event);
            // A cap evicts within its own policy: a flood of one policy's topics never pushes out another's.
            while state.kept[index].events.len() > self.policies.get(index).max_events {
                state.remove_oldest(index);
            }
            ids.push(id);
        }
        let head = state.head;
        drop(state);
        self.head_tx.send_replace(head);
        Ok(ids)
    }

    async fn read_after(&self, after: u64, query: &LogQuery, limit: usize) -> Result<Page> {
        let reached = self.policies.reached_by(&query.topics);
        let state = self.state();
        let bounds = state.bounds(reached);
        let mut page = Page { events: Vec::new(), through: after, complete: false, bounds };
        for (scanned, (&id, event)) in state.events.range(after + 1..).enumerate() {
            if page.events.len() == limit || scanned == MAX_SCAN_PER_READ {
                return Ok(page);
            }
            if query.matches(event) {
                page.events.push(event.clone());
            }
            page.through = id;
        }
        page.through = page.through.max(state.head);
        page.complete = true;
        Ok(page)
    }

    async fn bounds(&self, query: &LogQuery) -> Result<LogBounds> {
        Ok(self.state().bounds(self.policies.reached_by(&query.topics)))
    }

    fn policies(&self) -> &TopicPolicies {
        &self.policies
    }

    async fn prune(&self) -> Result<Vec<u64>> {
        let now = Utc::now();
        let mut state = self.state();
        let mut removed = vec![0; self.policies.len()];
        for (index, policy) in self.policies.iter().enumerate() {
            let cutoff = now - policy.max_age;
            while state.kept[index].events.front().is_some_and(|e| e.created_at < cutoff) {
                state.remove_oldest(index);
                removed[index] += 1;
            }
        }
        Ok(removed)
    }

    async fn policy_states(&self) -> Result<Vec<PolicyState>> {
        let state = self.state();
        Ok(self
            .policies
            .iter()
            .zip(&state.kept)
            .map(|(policy, kept)| PolicyState {
                name: policy.name.clone(),
                oldest: kept.events.front().map(|e| e.id()),
                removed_through: kept.removed_through,
                removed: Some(kept.removed),
            })
            .collect())
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
        assert_eq!(log.bounds(&LogQuery::all()).await.unwrap(), LogBounds { head: 3, earliest: 1 });
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
        assert_eq!(log.bounds(&LogQuery::all()).await.unwrap().head, 3);
    }

    #[tokio::test]
    async fn capacity_drops_the_oldest_events() {
        let log = log(3);
        for _ in 0..5 {
            log.append(vec![event("a", "p")]).await.unwrap();
        }
        assert_eq!(log.bounds(&LogQuery::all()).await.unwrap(), LogBounds { head: 5, earliest: 3 });
        let page = log.read_after(0, &LogQuery::all(), 10).await.unwrap();
        assert_eq!(page.events.first().map(|e| e.id()), Some(3));
    }

    #[tokio::test]
    async fn prune_removes_events_older_than_the_retention_age() {
        let log = MemoryLog::new(Retention { max_age: Duration::ZERO, max_events: 10 });
        log.append(vec![event("a", "p"), event("a", "p")]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(log.prune().await.unwrap(), vec![2]);
        assert_eq!(log.bounds(&LogQuery::all()).await.unwrap(), LogBounds { head: 2, earliest: 3 });
    }

    fn policies() -> TopicPolicies {
        let text = "[[policy]]\ntopics = [\"run.logs\"]\nmax_events = 3\n[[policy]]\ntopics = [\"audit.*\"]";
        TopicPolicies::from_toml(text, Retention { max_age: Duration::from_secs(3600), max_events: 100 }).unwrap()
    }

    fn only(pattern: &str) -> LogQuery {
        LogQuery::new(vec![TopicPattern::parse(pattern).unwrap()], Filter::default())
    }

    #[tokio::test]
    async fn a_flood_of_one_policy_evicts_only_its_own_events_and_resets_only_its_readers() {
        let log = MemoryLog::with_policies(policies());
        log.append(vec![event("audit.login", "p")]).await.unwrap();
        for _ in 0..10 {
            log.append(vec![event("run.logs", "p")]).await.unwrap();
        }
        let audit = log.read_after(0, &only("audit.*"), 10).await.unwrap();
        assert_eq!(audit.events.iter().map(|e| e.id()).collect::<Vec<_>>(), vec![1], "the audit event stays");
        assert!(!audit.skips(0), "an audit reader lost nothing");
        let logs = log.read_after(0, &only("run.logs"), 10).await.unwrap();
        assert_eq!(logs.events.iter().map(|e| e.id()).collect::<Vec<_>>(), vec![9, 10, 11]);
        assert!(logs.skips(0) && logs.skips(7) && !logs.skips(8), "2..=8 are gone for a log reader");
        assert_eq!(log.bounds(&only("run.*")).await.unwrap(), LogBounds { head: 11, earliest: 9 });
        assert_eq!(log.bounds(&only("audit.login")).await.unwrap(), LogBounds { head: 11, earliest: 1 });
        let states = log.policy_states().await.unwrap();
        assert_eq!((states[0].oldest, states[0].removed_through, states[0].removed), (Some(9), 8, Some(7)));
        assert_eq!((states[1].oldest, states[1].removed_through, states[1].removed), (Some(1), 0, Some(0)));
    }

    #[tokio::test]
    async fn each_policy_expires_on_its_own_age() {
        let text = "[[policy]]\ntopics = [\"run.logs\"]\nretention = \"1ms\"";
        let log = MemoryLog::with_policies(TopicPolicies::from_toml(text, Retention::default()).unwrap());
        log.append(vec![event("run.logs", "p"), event("deploy", "p"), event("run.logs", "p")]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(log.prune().await.unwrap(), vec![2, 0]);
        let page = log.read_after(0, &LogQuery::all(), 10).await.unwrap();
        assert_eq!(page.events.iter().map(|e| e.id()).collect::<Vec<_>>(), vec![2]);
        assert!(!log.read_after(0, &only("deploy"), 10).await.unwrap().skips(0));
        assert!(log.read_after(1, &only("run.logs"), 10).await.unwrap().skips(1), "3 was removed");
    }

    #[tokio::test]
    async fn the_live_feed_wakes_on_append() {
        let log = log(10);
        let mut feed = log.live_feed().await.unwrap();
        log.append(vec![event("a", "p")]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(1), feed.changed(0)).await.unwrap().unwrap();
    }
}
