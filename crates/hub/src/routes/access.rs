//! Authentication and connection admission shared by the routes.

use actix_web::HttpRequest;
use protocol::ErrorCode;

use crate::auth::Grant;
use crate::error::ApiError;
use crate::limits::ConnectionPermit;
use crate::state::HubState;

/// The request's grant, or the one 401 every token failure gets.
pub async fn grant(req: &HttpRequest, state: &HubState) -> Result<Grant, ApiError> {
    state.auth.authenticate_request(req).await.map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.to_string()))
}

/// Whom rates and connection counts are kept for: the token's subject, else the peer address.
pub fn who(req: &HttpRequest, grant: &Grant) -> String {
    match grant.subject() {
        Some(subject) => format!("sub:{subject}"),
        None => format!("peer:{}", req.peer_addr().map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string())),
    }
}

/// A connection slot: per token subject when the token names one, otherwise only the hub-wide bound applies.
pub fn admit(state: &HubState, grant: &Grant) -> Option<ConnectionPermit> {
    state.connections.acquire(grant.subject())
}

/// Refuses a browser's WebSocket from an origin that is not allowed (403, before any upgrade). Allowed: requests
/// without `Origin` (non-browser clients), the hub's own origin, and `HUB_ALLOWED_ORIGINS` (by default the CORS
/// origins; `*` allows any).
pub fn origin_allowed(req: &HttpRequest, state: &HubState) -> Result<(), ApiError> {
    let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or_default();
    let allowed = &state.allowed_origins;
    let same_origin = origin
        .split_once("://")
        .is_some_and(|(_, authority)| Some(authority) == req.headers().get("host").and_then(|h| h.to_str().ok()));
    if same_origin || allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    metrics::counter!("hub_origin_refused_total").increment(1);
    tracing::info!(origin, "WebSocket refused: origin not allowed");
    Err(ApiError::new(ErrorCode::Forbidden, format!("origin {origin} is not allowed to connect")))
}

/// Refuses new connections while the hub shuts down.
pub fn not_shutting_down(state: &HubState) -> Result<(), ApiError> {
    if state.shutting_down() {
        return Err(ApiError::new(ErrorCode::Unavailable, "the hub is shutting down; connect to another instance"));
    }
    Ok(())
}
