//! `GET /ws` and `GET /api/ws`: the WebSocket transport.

use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_web_actors::ws;
use protocol::ErrorCode;

use crate::cluster::presence::check_watch;
use crate::connections::outbound::{Outbound, OutboundBody};
use crate::connections::socket::ConnectionSocket;
use crate::connections::ws::{ClientFrames, WsSession};
use crate::error::ApiError;
use crate::routes::access;
use crate::routes::query::{STREAM_PARAMETERS, SubscriptionQuery};
use crate::state::HubState;

/// Frames above the configured bound get a `too_large` error and the connection stays open; frames this many
/// times above it are not read at all and close the connection (1009).
const HARD_FRAME_FACTOR: usize = 16;

#[tracing::instrument(name = "websocket", skip_all)]
pub async fn websocket(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<HubState>,
) -> Result<HttpResponse, actix_web::Error> {
    access::not_shutting_down(&state)?;
    access::origin_allowed(&req, &state)?;
    let grant = access::grant(&req, &state).await?;
    let query = SubscriptionQuery::parse(req.query_string(), &state.scope_keys, &STREAM_PARAMETERS)?;
    let since = query.resume_point(&req)?;
    let auto_subscribe = if query.asks_for_subscription() || since.is_some() {
        let subscribe = query.subscription(since, &grant)?.with_presence(query.presence()?);
        check_watch(&state.policies, &subscribe).map_err(ApiError::bad_request)?;
        grant
            .allows_subscription(&subscribe.topics, &subscribe.filter)
            .map_err(|why| ApiError::new(ErrorCode::Forbidden, why))?;
        Some(subscribe)
    } else {
        None
    };
    // Past a connection limit the upgrade still happens, so the client sees close code 4029.
    let permit = access::admit(&state, &grant);
    tracing::debug!(auto_subscribe = auto_subscribe.is_some(), admitted = permit.is_some(), "upgrading to WebSocket");
    let mut response = ws::handshake(&req)?;
    // With the connection's socket, deliveries are sent to it directly while nothing waits in the queue.
    let outbound = Arc::new(
        req.conn_data::<ConnectionSocket>().map_or_else(Outbound::default, |socket| Outbound::with_socket(*socket)),
    );
    let hard_limit = state.settings.max_frame_bytes.saturating_mul(HARD_FRAME_FACTOR);
    let codec = actix_http::ws::Codec::new().max_size(hard_limit);
    let session = WsSession::new(state, outbound.clone(), grant, permit, auto_subscribe, req.peer_addr());
    WsSession::create(move |ctx| {
        ctx.add_stream(ClientFrames::new(payload, codec));
        session
    });
    Ok(response.streaming(OutboundBody::new(outbound)))
}
