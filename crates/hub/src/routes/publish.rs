//! `POST /api/publish`: publishing over HTTP for services that do not link the publisher crate.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use protocol::{ErrorCode, NewEvent, PublishBody};

use crate::error::ApiError;
use crate::routes::access;
use crate::state::HubState;

#[tracing::instrument(name = "publish", skip_all, fields(events))]
pub async fn publish(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let grant = access::grant(&req, &state).await?;
    if let Some(rate) = &state.publish_rate
        && !rate.take(&access::who(&req, &grant))
    {
        metrics::counter!("hub_rate_limited_total", "what" => "publish").increment(1);
        let message = format!("more than {} publish requests per second", state.settings.publish_rate);
        return Err(ApiError::new(ErrorCode::RateLimited, message));
    }
    let limit = state.settings.max_publish_bytes;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body failed: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(ErrorCode::TooLarge, format!("the body is larger than {limit} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    let mut events = NewEvent::parse_batch(&body, &state.event_limits(), state.settings.max_batch).map_err(|r| {
        ApiError::Rejected {
            code: if r.too_large { ErrorCode::TooLarge } else { ErrorCode::BadRequest },
            message: r.message,
            index: r.index,
        }
    })?;
    if let Some(index) = events.iter().position(|e| e.topic.is_reserved()) {
        return Err(ApiError::Rejected {
            code: ErrorCode::Forbidden,
            message: format!("{} is the hub's own topic: topics hub.* take no publishes", events[index].topic),
            index: Some(index),
        });
    }
    if let Some(index) = events.iter().position(|e| !grant.allows_publish(&e.topic)) {
        return Err(ApiError::Rejected {
            code: ErrorCode::Forbidden,
            message: format!("the token does not grant publishing to {}", events[index].topic),
            index: Some(index),
        });
    }
    for event in &mut events {
        publisher::redact_event(&state.redactor, event);
    }
    tracing::Span::current().record("events", events.len());
    let count = events.len() as u64;
    let append = tracing::info_span!("hub.append", events = count);
    // Events without a trace context of their own carry the append span's, so publish → append → deliver is one
    // trace for every caller that sent a `traceparent`, not only for those that link the publisher crate.
    if let Some(traceparent) = crate::telemetry::traceparent_of(&append) {
        for event in events.iter_mut().filter(|e| e.traceparent.is_none()) {
            event.traceparent = Some(traceparent.clone());
        }
    }
    let ids = {
        use tracing::Instrument as _;
        state.log.append(events).instrument(append).await?
    };
    crate::telemetry::instruments::published(count);
    metrics::histogram!("hub_publish_latency_seconds").record(started.elapsed().as_secs_f64());
    Ok(HttpResponse::Ok().json(PublishBody { ids }))
}
