//! The event-log abstraction every backend implements.

use async_trait::async_trait;
use protocol::{EventId, NewEvent};

use crate::Result;
use crate::event::{LogBounds, LogQuery, Page};
use crate::policy::{PolicyState, TopicPolicies};
use crate::recent::RecentEvents;

/// An append-only, id-assigning event log.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// The backend's name, as `/api/health/pubsub` reports it.
    fn provider(&self) -> &'static str;

    /// Appends a batch atomically and returns its ids in order, once the events are durable and visible.
    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>>;

    /// Reads matching events with id > `after`, at most `limit`, in id order.
    async fn read_after(&self, after: u64, query: &LogQuery, limit: usize) -> Result<Page>;

    /// Where the log stands for reads of `query`: its head, and the id from which every event `query` matches is
    /// retained (judged from the removal positions of the topic policies its patterns reach).
    async fn bounds(&self, query: &LogQuery) -> Result<LogBounds>;

    /// The topic policies this log keeps its events by.
    fn policies(&self) -> &TopicPolicies;

    /// Removes what each topic policy no longer keeps; returns how many events went, by policy index.
    async fn prune(&self) -> Result<Vec<u64>>;

    /// What each topic policy holds, by policy index.
    async fn policy_states(&self) -> Result<Vec<PolicyState>>;

    /// Opens the wake-up feed that tells when the log may have grown.
    async fn live_feed(&self) -> Result<Box<dyn LiveFeed>>;

    /// What the backend can say about itself beyond its bounds (a replicated stream's leader and replicas), for the
    /// health answer and `hub smoke`.
    async fn describe(&self) -> Option<serde_json::Value> {
        None
    }

    /// The window of newest events in front of this log's reads, when there is one ([`crate::recent`]).
    fn recent(&self) -> Option<&RecentEvents> {
        None
    }
}

/// Wake-ups from a log: a hint to read, never the data itself.
#[async_trait]
pub trait LiveFeed: Send {
    /// Waits until the log may have grown past `cursor` (the newest id the caller has read). It may also return
    /// early for nothing. An error means the feed is lost: what happened meanwhile is unknown, so the caller
    /// re-reads the log from its cursor after opening a new feed.
    async fn changed(&mut self, cursor: u64) -> Result<()>;

    /// Every event after `after` that the feed itself carries, up to `limit`, read without asking the log again
    /// (a feed that delivers the events, such as a NATS consumer); `None` when the caller must read the log. A
    /// page that starts above `after + 1` says the events between are gone, as [`Page::skips`] tells.
    async fn read(&mut self, _after: u64, _limit: usize) -> Result<Option<Page>> {
        Ok(None)
    }
}
