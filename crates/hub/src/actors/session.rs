//! The WebSocket session actor: one per connection.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web::web;
use actix_web_actors::ws::{self, CloseCode, CloseReason};
use bytestring::ByteString;
use protocol::{ClientFrame, ErrorCode, FrameError, PROTOCOL_VERSION, ServerFrame, SubName, Subscribe};
use tracing::{debug, info, warn};

use super::subscriber::{Deliver, SessionId, Transport};
use crate::auth::Grant;
use crate::engine::{self, SubscriptionHost, Subscriptions};
use crate::limits::ConnectionPermit;
use crate::outbound::{Outbound, ws_frame_len};
use crate::rate::TokenBucket;
use crate::state::HubState;
use crate::subscription::{Reset, Start};

/// Close code when the token expired (or was invalid) on an open connection.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// Close code for a client that does not read fast enough.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code for binary or malformed frames past the tolerance.
pub const CLOSE_PROTOCOL_VIOLATION: u16 = 4009;
/// Close code when the hub, or the token's subject, has too many connections.
pub const CLOSE_TOO_MANY_CONNECTIONS: u16 = 4029;

pub struct WsSession {
    hub: web::Data<HubState>,
    outbound: Arc<Outbound>,
    subs: Subscriptions,
    grant: Grant,
    /// The connection's slot; `None` when the hub refused it (the session then closes with 4029 at once).
    permit: Option<ConnectionPermit>,
    /// Closes the connection with 4001 when the token expires; replaced on `refresh`.
    expiry: Option<SpawnHandle>,
    /// Last time anything came from the client; a peer silent for two heartbeats is closed.
    last_heard: Instant,
    /// Malformed or binary frames so far.
    violations: u32,
    subscribe_budget: TokenBucket,
    /// The subscription given by query parameters, made once the session starts.
    auto_subscribe: Option<Subscribe>,
    closing: bool,
}

impl WsSession {
    pub fn new(
        hub: web::Data<HubState>,
        outbound: Arc<Outbound>,
        grant: Grant,
        permit: Option<ConnectionPermit>,
        auto_subscribe: Option<Subscribe>,
    ) -> Self {
        let rate = f64::from(hub.settings.subscribe_rate);
        Self {
            subs: Subscriptions::new(SessionId::new(), Transport::WebSocket),
            outbound,
            grant,
            permit,
            expiry: None,
            last_heard: Instant::now(),
            violations: 0,
            subscribe_budget: TokenBucket::new(rate, rate * 2.0),
            auto_subscribe,
            closing: false,
            hub,
        }
    }

    fn id(&self) -> SessionId {
        self.subs.session()
    }

    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: CloseCode, why: &str) {
        if !self.closing {
            self.closing = true;
            ctx.close(Some(CloseReason { code, description: Some(why.to_owned()) }));
        }
        ctx.stop();
    }

    fn send(&mut self, ctx: &mut ws::WebsocketContext<Self>, frame: ServerFrame) {
        self.write(ctx, ByteString::from(frame.to_json()));
    }

    fn send_error(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        code: ErrorCode,
        message: String,
        sub: Option<String>,
    ) {
        self.send(ctx, ServerFrame::Error { code, message, sub });
    }

    fn heartbeat(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let interval = self.hub.settings.heartbeat;
        ctx.run_interval(interval, move |act, ctx| {
            if act.last_heard.elapsed() > interval * 2 {
                info!(session = %act.id(), "peer silent for two heartbeats; closing");
                return act.close(ctx, CloseCode::Away, "heartbeat timeout");
            }
            act.outbound.produced(ws_frame_len(0));
            ctx.ping(b"");
        });
    }

    /// Closes the connection with 4001 when the grant expires.
    fn schedule_expiry(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if let Some(handle) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
        if let Some(left) = self.grant.expires_in() {
            self.expiry = Some(ctx.run_later(left, |act, ctx| {
                info!(session = %act.id(), "token expired; closing with 4001");
                act.close(ctx, CloseCode::Other(CLOSE_TOKEN_EXPIRED), "token expired");
            }));
        }
    }

    /// Counts a protocol violation; past the tolerance the connection is closed with 4009.
    fn violation(&mut self, ctx: &mut ws::WebsocketContext<Self>, error: FrameError) {
        self.violations += 1;
        metrics::counter!("hub_protocol_violations_total").increment(1);
        self.send_error(ctx, error.code, error.message, error.sub);
        if self.violations > self.hub.settings.protocol_tolerance {
            self.close(ctx, CloseCode::Other(CLOSE_PROTOCOL_VIOLATION), "protocol violation");
        }
    }

    fn on_text(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) {
        if text.len() > self.hub.settings.max_frame_bytes {
            let message = format!("frame is {} bytes, the limit is {}", text.len(), self.hub.settings.max_frame_bytes);
            self.send_error(ctx, ErrorCode::TooLarge, message, None);
            return;
        }
        match ClientFrame::parse(text) {
            Ok(ClientFrame::Subscribe(subscribe)) => self.subscribe(ctx, subscribe),
            Ok(ClientFrame::Unsubscribe { sub }) => self.unsubscribe(ctx, sub),
            Ok(ClientFrame::Ack { id }) => {
                let lag = self.hub.health.dispatched().saturating_sub(id);
                metrics::histogram!("hub_client_ack_lag_events").record(lag as f64);
            }
            Ok(ClientFrame::Refresh { token }) => self.refresh(ctx, token),
            Ok(ClientFrame::Ping) => self.send(ctx, ServerFrame::Pong),
            Err(error) => self.violation(ctx, error),
        }
    }

    fn subscribe(&mut self, ctx: &mut ws::WebsocketContext<Self>, request: Subscribe) {
        let name = request.sub.to_string();
        if !self.subscribe_budget.take() {
            metrics::counter!("hub_rate_limited_total", "what" => "subscribe").increment(1);
            let message = format!("more than {} subscribe frames per second", self.hub.settings.subscribe_rate);
            return self.send_error(ctx, ErrorCode::RateLimited, message, Some(name));
        }
        if let Err(why) = self.grant.allows_subscription(&request.topics, &request.filter) {
            return self.send_error(ctx, ErrorCode::Forbidden, why, Some(name));
        }
        if !self.subs.contains(&request.sub) && self.subs.len() >= self.hub.settings.max_subscriptions {
            let message =
                format!("a connection may hold at most {} subscriptions", self.hub.settings.max_subscriptions);
            return self.send_error(ctx, ErrorCode::LimitExceeded, message, Some(name));
        }
        engine::subscribe(self, ctx, request);
    }

    fn unsubscribe(&mut self, ctx: &mut ws::WebsocketContext<Self>, name: SubName) {
        if self.subs.remove(&name, &self.hub) {
            self.send(ctx, ServerFrame::Unsubscribed { sub: name.to_string() });
        } else {
            let message = format!("no subscription named {:?}", name.as_str());
            self.send_error(ctx, ErrorCode::BadRequest, message, Some(name.to_string()));
        }
    }

    /// Replaces the connection's token once it is verified. Subscriptions the new token no longer allows are
    /// removed.
    fn refresh(&mut self, ctx: &mut ws::WebsocketContext<Self>, token: String) {
        let hub = self.hub.clone();
        ctx.spawn(async move { hub.auth.authenticate(Some(&token)).await }.into_actor(self).map(
            |verified, act, ctx| {
                let grant = match verified {
                    Ok(grant) if grant.subject() == act.grant.subject() => grant,
                    Ok(_) => {
                        let message = "the new token names another subject".to_owned();
                        return act.send_error(ctx, ErrorCode::Forbidden, message, None);
                    }
                    Err(_) => {
                        return act.send_error(ctx, ErrorCode::Forbidden, "the token was refused".to_owned(), None);
                    }
                };
                act.apply_grant(ctx, grant);
            },
        ));
    }

    fn apply_grant(&mut self, ctx: &mut ws::WebsocketContext<Self>, grant: Grant) {
        self.grant = grant;
        self.schedule_expiry(ctx);
        let revoked: Vec<(SubName, String)> = self
            .subs
            .iter()
            .filter_map(|s| {
                self.grant.allows_subscription(&s.query.topics, &s.query.filter).err().map(|e| (s.name.clone(), e))
            })
            .collect();
        for (name, why) in revoked {
            self.subs.remove(&name, &self.hub);
            self.send_error(ctx, ErrorCode::Forbidden, why, Some(name.to_string()));
        }
    }
}

impl SubscriptionHost for WsSession {
    fn hub(&self) -> &web::Data<HubState> {
        &self.hub
    }

    fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

    fn subscriptions(&mut self) -> &mut Subscriptions {
        &mut self.subs
    }

    fn transport(&self) -> Transport {
        Transport::WebSocket
    }

    fn recipient(&self, ctx: &mut Self::Context) -> Recipient<Deliver> {
        ctx.address().recipient()
    }

    /// Writes a text frame, accounting its bytes.
    fn write(&mut self, ctx: &mut Self::Context, frame: ByteString) {
        if self.closing {
            return;
        }
        self.outbound.produced(ws_frame_len(frame.len()));
        ctx.text(frame);
    }

    fn cut_slow_consumer(&mut self, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        warn!(session = %self.id(), pending = self.outbound.pending(), "slow consumer; closing with 4008");
        crate::instruments::slow_consumer_closed(Transport::WebSocket);
        // What the reader did not take is dropped, and so is every frame after it, even those the context still
        // holds: the close follows the last frame the reader took, and `since` resumes without a gap.
        let reason =
            CloseReason { code: CloseCode::Other(CLOSE_SLOW_CONSUMER), description: Some("slow consumer".into()) };
        let mut close = bytes::BytesMut::new();
        actix_http::ws::Parser::write_close(&mut close, Some(reason), false);
        self.outbound.cut(Some(close.freeze()));
        self.closing = true;
        ctx.stop();
    }

    fn subscription_started(&mut self, ctx: &mut Self::Context, name: &SubName, start: Start) {
        self.send(ctx, ServerFrame::Subscribed { sub: name.to_string(), head: start.head });
        if let Some(info) = start.reset {
            self.send(ctx, ServerFrame::Reset { sub: name.to_string(), info });
        }
    }

    fn reset(&mut self, ctx: &mut Self::Context, name: &SubName, reset: Reset) {
        self.send(ctx, ServerFrame::Reset { sub: name.to_string(), info: reset.info });
    }

    fn went_live(&mut self, ctx: &mut Self::Context, name: &SubName, last_id: u64, announce: bool) {
        if announce {
            self.send(ctx, ServerFrame::Live { sub: name.to_string(), last_id });
        }
    }

    fn failed(&mut self, ctx: &mut Self::Context, name: &SubName, _cause: String) {
        let message = "the event log is unavailable; subscribe again with since to resume".to_owned();
        self.send_error(ctx, ErrorCode::Internal, message, Some(name.to_string()));
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.permit.is_none() {
            metrics::counter!("hub_connections_refused_total").increment(1);
            return self.close(ctx, CloseCode::Other(CLOSE_TOO_MANY_CONNECTIONS), "too many connections");
        }
        crate::instruments::connection_opened(Transport::WebSocket);
        debug!(session = %self.id(), "session started");
        let welcome = ServerFrame::Welcome {
            session: self.id().to_string(),
            node: self.hub.node.clone(),
            protocol: PROTOCOL_VERSION,
            heartbeat_s: self.hub.settings.heartbeat.as_secs().max(1),
        };
        self.send(ctx, welcome);
        self.heartbeat(ctx);
        self.schedule_expiry(ctx);
        let mut shutdown = self.hub.shutdown.clone();
        ctx.spawn(async move { shutdown.wait_for(|down| *down).await.is_ok() }.into_actor(self).map(
            |down, act, ctx| {
                if down {
                    act.close(ctx, CloseCode::Restart, "server restarting");
                }
            },
        ));
        if let Some(subscribe) = self.auto_subscribe.take() {
            self.subscribe(ctx, subscribe);
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if self.permit.take().is_none() {
            return;
        }
        self.subs.remove_all(&self.hub);
        crate::instruments::connection_closed(Transport::WebSocket);
        debug!(session = %self.id(), "session stopped");
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        engine::deliver(self, ctx, msg);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(ctx, &text),
            Ok(ws::Message::Ping(payload)) => {
                self.outbound.produced(ws_frame_len(payload.len()));
                ctx.pong(&payload);
            }
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => {
                let message = "only JSON text frames are accepted".to_owned();
                self.violation(ctx, FrameError { code: ErrorCode::BadRequest, message, sub: None });
            }
            Ok(ws::Message::Close(reason)) => {
                self.closing = true;
                ctx.close(reason);
                ctx.stop();
            }
            Err(ws::ProtocolError::Overflow) => self.close(ctx, CloseCode::Size, "frame too large"),
            Err(e) => {
                debug!(session = %self.id(), error = %e, "websocket protocol error");
                self.close(ctx, CloseCode::Other(CLOSE_PROTOCOL_VIOLATION), "protocol violation");
            }
        }
    }
}
