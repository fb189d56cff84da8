//! [`WindowedLog`]: a backend with the [`RecentEvents`] window in front of its reads (see [`crate::recent`] for
//! when the window answers); everything else goes to the backend.

use std::sync::Arc;

use async_trait::async_trait;
use protocol::{EventId, NewEvent};

use crate::Result;
use crate::event::{LogBounds, LogQuery, Page};
use crate::event_log::{EventLog, LiveFeed};
use crate::policy::{PolicyState, TopicPolicies};
use crate::recent::RecentEvents;

/// A backend with the [`RecentEvents`] window in front of its reads; everything else goes to the backend.
pub struct WindowedLog {
    inner: Arc<dyn EventLog>,
    recent: Arc<RecentEvents>,
}

impl WindowedLog {
    pub fn new(inner: Arc<dyn EventLog>, recent: Arc<RecentEvents>) -> Self {
        Self { inner, recent }
    }
}

#[async_trait]
impl EventLog for WindowedLog {
    fn provider(&self) -> &'static str {
        self.inner.provider()
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>> {
        let ids = self.inner.append(events).await?;
        if let Some(newest) = ids.iter().map(|id| id.get()).max() {
            self.recent.appended(newest);
        }
        Ok(ids)
    }

    async fn read_after(&self, after: u64, query: &LogQuery, limit: usize) -> Result<Page> {
        if self.recent.caught_up().await
            && let Some(page) = self.recent.read_after(after, query, limit)
        {
            return Ok(page);
        }
        self.inner.read_after(after, query, limit).await
    }

    async fn bounds(&self, query: &LogQuery) -> Result<LogBounds> {
        self.inner.bounds(query).await
    }

    fn policies(&self) -> &TopicPolicies {
        self.inner.policies()
    }

    async fn prune(&self) -> Result<Vec<u64>> {
        self.inner.prune().await
    }

    async fn policy_states(&self) -> Result<Vec<PolicyState>> {
        self.inner.policy_states().await
    }

    async fn live_feed(&self) -> Result<Box<dyn LiveFeed>> {
        self.inner.live_feed().await
    }

    async fn describe(&self) -> Option<serde_json::Value> {
        self.inner.describe().await
    }

    fn recent(&self) -> Option<&RecentEvents> {
        Some(&self.recent)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::{Scope, Topic};
    use serde_json::Map;

    use super::*;

    /// Through the windowed log: what this hub appended and the window has not read yet is still in the answer
    /// (from the backend), never a page that ends before it.
    #[tokio::test]
    async fn a_read_after_an_append_the_window_has_not_read_yet_returns_it() {
        let backend: Arc<dyn EventLog> = Arc::new(crate::MemoryLog::new(crate::Retention::default()));
        let recent = Arc::new(RecentEvents::new(100, Duration::from_secs(60)));
        recent.set_attached(true);
        let log = WindowedLog::new(backend.clone(), recent.clone());
        let first = log.append(vec![NewEvent::new(Topic::parse("a").unwrap(), Scope::default(), Map::new())]).await;
        let first = first.unwrap()[0].get();
        recent.extend(0, &backend.read_after(0, &LogQuery::all(), 10).await.unwrap());
        let second = log.append(vec![NewEvent::new(Topic::parse("a").unwrap(), Scope::default(), Map::new())]).await;

        let page = log.read_after(first, &LogQuery::all(), 10).await.unwrap();
        let ids: Vec<u64> = page.events.iter().map(|e| e.id()).collect();
        assert_eq!(ids, vec![second.unwrap()[0].get()], "the window answered without the appended event");
    }
}
