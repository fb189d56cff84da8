//! What every route and session shares.

use std::sync::Arc;

use actix::Addr;
use protocol::EventLimits;
use storage::{EventLog, LogHealth};
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::fanout::dispatcher::Dispatcher;
use crate::fanout::poll_wakes::PollWakes;
use crate::limits::{ConnectionLimiter, CountLimiter, KeyedRate};
use crate::settings::Settings;
use crate::telemetry::stats::HubStats;

pub struct HubState {
    pub log: Arc<dyn EventLog>,
    pub health: Arc<LogHealth>,
    pub dispatcher: Addr<Dispatcher>,
    pub stats: Arc<HubStats>,
    pub settings: Arc<Settings>,
    pub node: String,
    pub auth: Authenticator,
    pub connections: Arc<ConnectionLimiter>,
    pub poll_waiters: Arc<CountLimiter>,
    /// The subscriptions waiting long-poll requests share.
    pub poll_wakes: Arc<PollWakes>,
    /// Applied to every event published over HTTP: the publisher crate's policy, plus `HUB_REDACT_KEYS`.
    pub redactor: publisher::Redactor,
    /// `None` when publish rates are not limited.
    pub publish_rate: Option<KeyedRate>,
    /// Scope keys accepted as query parameters (well-known and `HUB_SCOPE_KEYS`).
    pub scope_keys: std::collections::BTreeSet<String>,
    /// Origins allowed to open WebSockets besides the hub's own (`HUB_ALLOWED_ORIGINS`, else the CORS origins).
    pub allowed_origins: Vec<String>,
    /// Turns `true` when shutdown begins: readiness fails, new connections are refused.
    pub shutdown: watch::Receiver<bool>,
    /// The open WebSocket and SSE sessions, told when shutdown begins (WebSockets close with 1012), and the
    /// long-poll requests waiting.
    pub sessions: Arc<crate::fanout::sessions::Sessions>,
    /// The hubs of the cluster as one: operators' commands and revocations.
    pub cluster: Arc<crate::cluster::ClusterAgent>,
    /// The topic policies (`HUB_TOPIC_POLICIES`): retention per group of topics, and where presence is kept.
    pub policies: Arc<storage::TopicPolicies>,
}

impl HubState {
    pub fn event_limits(&self) -> EventLimits {
        EventLimits { max_payload_bytes: self.settings.max_payload_bytes }
    }

    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}
