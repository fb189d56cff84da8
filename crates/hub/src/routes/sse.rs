//! `GET /sse`: the Server-Sent Events transport.

use std::sync::Arc;

use actix::Actor;
use actix_web::{HttpRequest, HttpResponse, web};
use protocol::ErrorCode;
use tokio::sync::oneshot;

use crate::cluster::presence::check_watch;
use crate::connections::outbound::{Outbound, OutboundBody};
use crate::connections::sse::SseSession;
use crate::error::ApiError;
use crate::routes::access;
use crate::routes::query::{STREAM_PARAMETERS, SubscriptionQuery};
use crate::state::HubState;

#[tracing::instrument(name = "sse", skip_all)]
pub async fn sse(req: HttpRequest, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    access::not_shutting_down(&state)?;
    let grant = access::grant(&req, &state).await?;
    let mut query = SubscriptionQuery::parse(req.query_string(), &state.scope_keys, &STREAM_PARAMETERS)?;
    // An EventSource reconnecting with Last-Event-ID resumes from it: the tail it opened with is behind it.
    if SubscriptionQuery::resumes_by_header(&req) {
        query.tail = None;
    }
    // Every browser EventSource sends Last-Event-ID when it reconnects: it wins over `since`.
    let since = query.resume_point(&req)?;
    let subscription = query.subscription(since, &grant)?.with_presence(query.presence()?);
    check_watch(&state.policies, &subscription).map_err(ApiError::bad_request)?;
    grant
        .allows_subscription(&subscription.topics, &subscription.filter)
        .map_err(|why| ApiError::new(ErrorCode::Forbidden, why))?;
    let permit =
        access::admit(&state, &grant).ok_or_else(|| ApiError::new(ErrorCode::LimitExceeded, "too many connections"))?;
    let outbound = Arc::new(Outbound::default());
    let (established, is_established) = oneshot::channel();
    let peer = req.peer_addr();
    SseSession::new(state, outbound.clone(), subscription, established, grant, permit, peer).start();
    // Answer once the subscription is in its rooms and has read the log's head: "live from now" then means from
    // the moment the client sees the response. The session drops `established` if the log failed.
    is_established.await.map_err(|_| ApiError::new(ErrorCode::Unavailable, "the event log is unavailable"))?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache, no-transform"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(OutboundBody::new(outbound)))
}
