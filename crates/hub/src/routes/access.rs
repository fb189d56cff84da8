//! Authentication and connection admission shared by the routes.

use actix_web::HttpRequest;
use protocol::ErrorCode;

use crate::auth::Grant;
use crate::error::ApiError;
use crate::limits::ConnectionPermit;
use crate::state::HubState;

/// The request's grant, or the one 401 every token failure gets.
pub fn grant(req: &HttpRequest, state: &HubState) -> Result<Grant, ApiError> {
    state.auth.authenticate_request(req).map_err(|e| ApiError::new(ErrorCode::Unauthorized, e.to_string()))
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

/// Refuses new connections while the hub shuts down.
pub fn not_shutting_down(state: &HubState) -> Result<(), ApiError> {
    if state.shutting_down() {
        return Err(ApiError::new(ErrorCode::Unavailable, "the hub is shutting down; connect to another instance"));
    }
    Ok(())
}
