//! [`WindowedLog`]: a backend with the [`RecentEvents`] window in front of its reads (see [`crate::recent`] for
//! when the window answers); everything else goes to the backend.

use std::sync::Arc;

use async_trait::async_trait;
use protocol::{EventId, NewEvent};

use crate::event::{LogBounds, LogQuery, Page};
use crate::event_log::{EventLog, LiveFeed};
use crate::policy::{PolicyState, TopicPolicies};
use crate::recent::RecentEvents;
use crate::{Error, Result};

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

impl WindowedLog {
    /// A backend's answer is the log's only if its head reaches what this hub already read or appended; one below
    /// comes from a replica still catching up (a NATS stream's state served while it has no leader, or by a leader
    /// just elected), and taken as the log's it would tell readers ahead of it that their position is gone. The
    /// reader tries again, as while the backend is unavailable.
    fn current(&self, bounds: LogBounds) -> Result<()> {
        let known = self.recent.known_head();
        if bounds.head < known {
            return Err(Error::Unavailable(
                format!("the log answered with head {} below {known}, which this hub has read", bounds.head).into(),
            ));
        }
        Ok(())
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
        let page = self.inner.read_after(after, query, limit).await?;
        self.current(page.bounds)?;
        Ok(page)
    }

    async fn bounds(&self, query: &LogQuery) -> Result<LogBounds> {
        let bounds = self.inner.bounds(query).await?;
        self.current(bounds)?;
        Ok(bounds)
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

    /// A replica catching up answers with a head below events this hub already read: not the log's state (a
    /// reader ahead of it would be told its position is gone), so the reader is told to try again.
    #[tokio::test]
    async fn an_answer_behind_what_the_hub_has_read_is_taken_for_unavailable() {
        let behind: Arc<dyn EventLog> = Arc::new(crate::MemoryLog::new(crate::Retention::default()));
        behind.append(vec![NewEvent::new(Topic::parse("a").unwrap(), Scope::default(), Map::new())]).await.unwrap();
        let recent = Arc::new(RecentEvents::new(100, Duration::from_secs(60)));
        let read_up_to_5 =
            Page { through: 5, complete: true, bounds: LogBounds { head: 5, earliest: 1 }, ..Page::default() };
        recent.extend(0, &read_up_to_5);
        let log = WindowedLog::new(behind, recent);

        assert!(matches!(log.bounds(&LogQuery::all()).await, Err(Error::Unavailable(_))));
        assert!(matches!(log.read_after(0, &LogQuery::all(), 10).await, Err(Error::Unavailable(_))));
    }
}
