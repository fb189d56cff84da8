//! `GET /sse`: the Server-Sent Events transport.

use std::sync::Arc;

use actix::Actor;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use protocol::ErrorCode;
use protocol::id::parse_position_str;
use tokio::sync::mpsc;

use crate::actors::sse::SseSession;
use crate::error::ApiError;
use crate::outbound::{CountingStream, Outbound};
use crate::routes::access;
use crate::routes::query::SubscriptionQuery;
use crate::state::HubState;

#[tracing::instrument(name = "sse", skip_all)]
pub async fn sse(req: HttpRequest, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    access::not_shutting_down(&state)?;
    let grant = access::grant(&req, &state)?;
    let query = SubscriptionQuery::parse(req.query_string())?;
    // Every browser EventSource sends Last-Event-ID when it reconnects: it wins over `since`.
    let since = match req.headers().get("last-event-id") {
        Some(value) => {
            let text = value.to_str().map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?;
            Some(parse_position_str(text, "Last-Event-ID").map_err(|e| ApiError::bad_request(e.0))?)
        }
        None => query.since,
    };
    let subscription = query.subscription(since)?;
    grant
        .allows_subscription(&subscription.topics, &subscription.filter)
        .map_err(|why| ApiError::new(ErrorCode::Forbidden, why))?;
    let permit =
        access::admit(&state, &grant).ok_or_else(|| ApiError::new(ErrorCode::LimitExceeded, "too many connections"))?;
    let (body, frames) = mpsc::unbounded_channel::<Bytes>();
    let outbound = Arc::new(Outbound::default());
    SseSession::new(state, outbound.clone(), body, subscription, grant.expires_in(), permit).start();
    let stream = futures_util::stream::unfold(frames, |mut frames| async move {
        frames.recv().await.map(|bytes| (Ok::<_, actix_web::Error>(bytes), frames))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache, no-transform"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(CountingStream::new(Box::pin(stream), outbound)))
}
