//! Operations endpoints: liveness, readiness, the pub/sub health report, and Prometheus metrics.

use actix_web::{HttpResponse, web};
use chrono::Utc;
use serde_json::json;
use storage::LogQuery;

use crate::state::HubState;
use crate::telemetry;

/// 200 while the process serves.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// 200 when the log is reachable and the live feed attached; 503 otherwise and during shutdown.
pub async fn readyz(state: web::Data<HubState>) -> HttpResponse {
    if state.shutting_down() {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "shutting_down"}));
    }
    if !state.health.is_ready() {
        return HttpResponse::ServiceUnavailable().json(json!({"status": "log_unavailable"}));
    }
    HttpResponse::Ok().json(json!({"status": "ready"}))
}

/// The pub/sub health report of section 8.
pub async fn pubsub(state: web::Data<HubState>) -> HttpResponse {
    let connections = state.connections.open();
    let (subscriptions, topics) = state.stats.snapshot();
    let healthy = state.health.is_ready() && !state.shutting_down();
    let mut log = match state.log.bounds(&LogQuery::all()).await {
        Ok(bounds) => json!({"head": bounds.head, "earliest": bounds.earliest}),
        Err(_) => json!({"head": null, "earliest": null}),
    };
    // Each topic policy: its retention, and where its removal stands.
    if let (Ok(states), Some(fields)) = (state.log.policy_states().await, log.as_object_mut()) {
        let policies: Vec<_> = states
            .iter()
            .zip(state.log.policies().iter())
            .map(|(held, policy)| {
                json!({
                    "name": held.name,
                    "topics": policy.topics,
                    "retention_seconds": policy.max_age.as_secs(),
                    "max_events": policy.cap,
                    "presence": policy.presence,
                    "oldest": held.oldest,
                    "removed_through": held.removed_through,
                    "removed": held.removed,
                })
            })
            .collect();
        fields.insert("policies".into(), json!(policies));
    }
    // A replicated log says where it stands too: the stream, its leader and replicas.
    if let (Some(details), Some(fields)) = (state.log.describe().await, log.as_object_mut()) {
        fields.extend(details.as_object().cloned().unwrap_or_default());
    }
    let patterns = state.stats.patterns();
    // The fields of the contract, plus those of the PubSub layer the hub replaces (`status` "ok", `instanceId`,
    // `stats.channels` and `stats.patterns`: exact-topic and pattern rooms), so its health checks keep working.
    let body = json!({
        "status": if healthy { "ok" } else { "unhealthy" },
        "provider": state.log.provider(),
        "healthy": healthy,
        "node": state.node,
        "instanceId": state.node,
        "stats": {"connections": connections, "subscriptions": subscriptions, "topics": topics,
                  "channels": topics - patterns, "patterns": patterns},
        "log": log,
        "auth": if state.auth.is_development() {
            "development: no key configured, every request is accepted"
        } else {
            "jwt"
        },
        "development_mode": state.auth.is_development(),
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if healthy { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

/// Prometheus text format.
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(telemetry::prometheus().render())
}
