//! HTTP routes.

pub mod access;
pub mod dashboard;
pub mod health;
pub mod poll;
pub mod publish;
pub mod query;
pub mod sse;
pub mod token_in_query;
pub mod ws;

use actix_web::web;

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws", web::get().to(ws::websocket))
        .route("/api/ws", web::get().to(ws::websocket))
        .route("/sse", web::get().to(sse::sse))
        // The path of the SSE broker this hub replaces, so pages behind the same ingress keep their URL.
        .route("/api/stream", web::get().to(sse::sse))
        .route("/api/events", web::get().to(poll::events))
        .route("/api/publish", web::post().to(publish::publish))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/api/health/pubsub", web::get().to(health::pubsub))
        .route("/metrics", web::get().to(health::metrics))
        .route("/dashboard", web::get().to(dashboard::asset))
        .route("/dashboard/", web::get().to(dashboard::asset))
        .route("/dashboard/{path:.*}", web::get().to(dashboard::asset));
}
