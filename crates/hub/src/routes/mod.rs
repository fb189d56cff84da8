//! HTTP routes.

pub mod access;
pub mod admin;
pub mod dashboard;
pub mod health;
pub mod poll;
pub mod presence;
pub mod publish;
pub mod query;
pub mod sse;
pub mod token_in_query;
pub mod ws;

use actix_web::{middleware, web};

/// Mounts the streaming routes (WebSocket, SSE), each request in a span of its own while it is handled.
///
/// They are kept out of `TracingLogger`, which wraps a response's body to enter the request's span on each poll
/// of it: for a stream that is every delivery, and the span would last as long as the connection.
pub fn configure_streams(cfg: &mut web::ServiceConfig) {
    let span = || middleware::from_fn(crate::telemetry::request_span);
    cfg.service(web::resource("/ws").wrap(span()).route(web::get().to(ws::websocket)))
        .service(web::resource("/api/ws").wrap(span()).route(web::get().to(ws::websocket)))
        .service(web::resource("/sse").wrap(span()).route(web::get().to(sse::sse)))
        // The path of the SSE broker this hub replaces, so pages behind the same ingress keep their URL.
        .service(web::resource("/api/stream").wrap(span()).route(web::get().to(sse::sse)));
}

/// Mounts every other route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/events", web::get().to(poll::events))
        .route("/api/publish", web::post().to(publish::publish))
        .route("/api/presence", web::get().to(presence::presence))
        .route("/api/admin/connections", web::get().to(admin::connections))
        .route("/api/admin/disconnect", web::post().to(admin::disconnect))
        .route("/api/admin/revoke", web::post().to(admin::revoke))
        .route("/api/admin/revoke", web::delete().to(admin::lift))
        .route("/api/admin/revocations", web::get().to(admin::revocations))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/api/health/pubsub", web::get().to(health::pubsub))
        .route("/metrics", web::get().to(health::metrics))
        .route("/dashboard", web::get().to(dashboard::asset))
        .route("/dashboard/", web::get().to(dashboard::asset))
        .route("/dashboard/{path:.*}", web::get().to(dashboard::asset));
}
