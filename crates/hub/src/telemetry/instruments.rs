//! The hub's metrics: every name, its labels and its meaning in one place (the catalog `docs/OBSERVABILITY.md`
//! documents), registered at zero when the hub starts so dashboards and alerts see every series from the first
//! scrape. Labels are bounded sets (transport, backend, source, what): never a topic, a user or a connection.
//!
//! The names of the PubSub layer the hub replaces are exported too, with the same meaning, so existing dashboards
//! keep working: `pubsub_messages_published_total`, `pubsub_messages_received_total`, `pubsub_subscriptions_active`.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::delivery::Transport;

/// Every transport label value.
pub const TRANSPORTS: [Transport; 2] = [Transport::WebSocket, Transport::ServerSentEvents];

impl Transport {
    /// The value of the `transport` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::ServerSentEvents => "sse",
        }
    }
}

/// Describes every metric and creates every series at zero.
pub fn register(backend: &'static str, policies: &[String], sources: &[String]) {
    describe();
    for transport in TRANSPORTS {
        let t = transport.label();
        gauge!("hub_connections", "transport" => t).set(0.0);
        gauge!("hub_subscriptions", "transport" => t).set(0.0);
        counter!("hub_events_delivered_total", "transport" => t).absolute(0);
        counter!("hub_events_replayed_total", "transport" => t).absolute(0);
        counter!("hub_slow_consumer_closes_total", "transport" => t).absolute(0);
        counter!("hub_client_resumes_total", "transport" => t).absolute(0);
    }
    gauge!("pubsub_subscriptions_active").set(0.0);
    for name in [
        "hub_events_published_total",
        "hub_events_dispatched_total",
        "hub_resets_total",
        "hub_log_losses_total",
        "hub_db_pool_renewals_total",
        "hub_pg_carried_events_total",
        "hub_protocol_violations_total",
        "hub_connections_refused_total",
        "hub_origin_refused_total",
        "pubsub_messages_published_total",
        "pubsub_messages_received_total",
    ] {
        counter!(name).absolute(0);
    }
    counter!("hub_listener_reconnects_total", "backend" => backend).absolute(0);
    // PostgreSQL's log sets it as it connects and as its sequencer lock comes and goes; elsewhere it is 0.
    if backend != "postgres" {
        gauge!("hub_sequencer").set(0.0);
    }
    for what in ["publish", "subscribe"] {
        counter!("hub_rate_limited_total", "what" => what).absolute(0);
    }
    counter!("hub_tokens_refused_total", "reason" => "revoked").absolute(0);
    for action in ["disconnect", "revoke", "lift"] {
        counter!("hub_admin_actions_total", "action" => action).absolute(0);
    }
    // Histograms appear with their first observation; these start with an empty one.
    let _ = histogram!("hub_dispatch_lag_seconds");
    let _ = histogram!("hub_publish_latency_seconds");
    let _ = histogram!("hub_client_ack_lag_events");
    // Retention sets the positions at its first run, a moment after start-up.
    for policy in policies {
        counter!("hub_policy_removed_total", "policy" => policy.clone()).absolute(0);
        gauge!("hub_policy_oldest_id", "policy" => policy.clone()).set(0.0);
        gauge!("hub_policy_removed_through", "policy" => policy.clone()).set(0.0);
    }
    for source in sources {
        counter!("hub_source_errors_total", "source" => source.clone()).absolute(0);
        counter!("hub_source_rows_rejected_total", "source" => source.clone()).absolute(0);
        let _ = histogram!("hub_source_lag_seconds", "source" => source.clone());
    }
}

/// Events appended through this hub (HTTP publish and database sources).
pub fn published(count: u64) {
    counter!("hub_events_published_total").increment(count);
    counter!("pubsub_messages_published_total").increment(count);
}

/// Live events written to connections.
///
/// Called for every live delivery to every connection, so the counters are looked up once: a lookup hashes the
/// name and labels and clones them, a few percent of the hub's CPU at 500k deliveries/s. The first call comes
/// after start-up has installed the recorder.
pub fn delivered(transport: Transport, count: u64) {
    struct Counters {
        websocket: metrics::Counter,
        sse: metrics::Counter,
        received: metrics::Counter,
    }
    static COUNTERS: std::sync::OnceLock<Counters> = std::sync::OnceLock::new();
    let counters = COUNTERS.get_or_init(|| Counters {
        websocket: counter!("hub_events_delivered_total", "transport" => Transport::WebSocket.label()),
        sse: counter!("hub_events_delivered_total", "transport" => Transport::ServerSentEvents.label()),
        received: counter!("pubsub_messages_received_total"),
    });
    match transport {
        Transport::WebSocket => counters.websocket.increment(count),
        Transport::ServerSentEvents => counters.sse.increment(count),
    }
    counters.received.increment(count);
}

/// Events written to connections by replay.
pub fn replayed(transport: Transport, count: u64) {
    counter!("hub_events_replayed_total", "transport" => transport.label()).increment(count);
    counter!("pubsub_messages_received_total").increment(count);
}

pub fn connection_opened(transport: Transport) {
    gauge!("hub_connections", "transport" => transport.label()).increment(1.0);
}

pub fn connection_closed(transport: Transport) {
    gauge!("hub_connections", "transport" => transport.label()).decrement(1.0);
}

pub fn subscription_added(transport: Transport, resumed: bool) {
    gauge!("hub_subscriptions", "transport" => transport.label()).increment(1.0);
    gauge!("pubsub_subscriptions_active").increment(1.0);
    if resumed {
        counter!("hub_client_resumes_total", "transport" => transport.label()).increment(1);
    }
}

pub fn subscription_removed(transport: Transport) {
    gauge!("hub_subscriptions", "transport" => transport.label()).decrement(1.0);
    gauge!("pubsub_subscriptions_active").decrement(1.0);
}

pub fn slow_consumer_closed(transport: Transport) {
    counter!("hub_slow_consumer_closes_total", "transport" => transport.label()).increment(1);
}

pub fn resets(count: u64) {
    counter!("hub_resets_total").increment(count);
}

fn describe() {
    describe_gauge!("hub_connections", "Open connections, by transport (websocket, sse).");
    describe_gauge!("hub_subscriptions", "Active subscriptions, by transport.");
    describe_counter!(
        "hub_events_published_total",
        "Events appended through this hub (HTTP publish, database sources)."
    );
    describe_counter!("hub_events_dispatched_total", "Events handed from the log to dispatch.");
    describe_counter!("hub_events_delivered_total", "Live events written to connections, by transport.");
    describe_counter!("hub_events_replayed_total", "Events written to connections by replay, by transport.");
    describe_counter!("hub_client_resumes_total", "Subscriptions that resumed from a position (since, Last-Event-ID).");
    describe_counter!(
        "hub_resets_total",
        "Resets sent: a resume point no longer retained, or events lost under a reader."
    );
    describe_counter!(
        "hub_log_losses_total",
        "Times events were lost under the storage actor (retention, cap, new epoch)."
    );
    describe_counter!("hub_slow_consumer_closes_total", "Connections closed as slow consumers, by transport.");
    describe_counter!(
        "hub_listener_reconnects_total",
        "Times the live feed of the log was lost and reopened, by backend."
    );
    describe_counter!(
        "hub_db_pool_renewals_total",
        "Times the PostgreSQL pool was replaced: a connection missed its deadline, or no connection came for 15 s."
    );
    describe_counter!(
        "hub_pg_carried_events_total",
        "Events delivered from the PostgreSQL notification that announced them, without reading the log."
    );
    describe_counter!("hub_protocol_violations_total", "Malformed or binary client frames.");
    describe_counter!("hub_rate_limited_total", "Requests refused by a rate limit, by what (publish, subscribe).");
    describe_counter!("hub_connections_refused_total", "Connections refused by a connection limit.");
    describe_counter!("hub_origin_refused_total", "WebSocket upgrades refused for their Origin.");
    describe_counter!("hub_tokens_refused_total", "Valid tokens refused anyway, by reason (revoked).");
    describe_counter!("hub_admin_actions_total", "Operators' changes made through this hub, by action.");
    describe_counter!("hub_source_errors_total", "Database source polls that failed, by source.");
    describe_counter!(
        "hub_source_rows_rejected_total",
        "Database source rows that could not become events, by source."
    );
    describe_histogram!("hub_dispatch_lag_seconds", "Time from append to dispatch of a batch's newest event.");
    describe_histogram!("hub_publish_latency_seconds", "Time to answer POST /api/publish.");
    describe_histogram!("hub_client_ack_lag_events", "Events dispatched but not yet acknowledged by a client.");
    describe_histogram!("hub_source_lag_seconds", "Age of database source rows when they are published, by source.");
    describe_counter!("pubsub_messages_published_total", "PubSub-layer name of hub_events_published_total.");
    describe_counter!(
        "pubsub_messages_received_total",
        "PubSub-layer name: events written to subscribers (live and replay)."
    );
    describe_gauge!("pubsub_subscriptions_active", "PubSub-layer name: active subscriptions on every transport.");
}
