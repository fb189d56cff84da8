//! The WebSocket session actor: one per connection.
//!
//! A plain actor: it encodes its frames straight into the connection's [`Outbound`] queue, which the HTTP
//! response body drains, and handles the client's frames as a stream decoded from the request's payload
//! ([`ClientFrames`]). Nothing stands between a delivery and the queue but the actor's own mailbox, and the
//! actor runs whether or not the network takes its output (the slow-consumer check and the heartbeat with it).
//! Its heartbeat is a [`Notice`] from the hub's ticker, not a timer of its own, which the actor's context would
//! poll on every delivery.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use actix::prelude::*;
use actix_codec::{Decoder, Encoder};
use actix_http::error::PayloadError;
use actix_http::ws::{self, CloseCode, CloseReason, Codec, Frame};
use actix_web::web;
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use protocol::{ClientFrame, ErrorCode, FrameError, PROTOCOL_VERSION, ServerFrame, SubName, Subscribe};
use tracing::{debug, info, warn};

use crate::auth::Grant;
use crate::cluster::presence::check_watch;
use crate::connections::engine::{self, SubscriptionHost, Subscriptions};
use crate::connections::outbound::{Outbound, one_chunk};
use crate::delivery::{Deliver, SessionId, Transport};
use crate::fanout::sessions::{Cut, Notice};
use crate::fanout::subscription::{Reset, Start};
use crate::limits::ConnectionPermit;
use crate::limits::rate::TokenBucket;
use crate::state::HubState;

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
    /// Encodes the frames the session sends (server frames: unmasked).
    encoder: Codec,
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
    /// When the connection opened, and from where: for operators' listings.
    opened: chrono::DateTime<chrono::Utc>,
    peer: Option<std::net::SocketAddr>,
}

impl WsSession {
    pub fn new(
        hub: web::Data<HubState>,
        outbound: Arc<Outbound>,
        grant: Grant,
        permit: Option<ConnectionPermit>,
        auto_subscribe: Option<Subscribe>,
        peer: Option<std::net::SocketAddr>,
    ) -> Self {
        let rate = f64::from(hub.settings.subscribe_rate);
        Self {
            subs: Subscriptions::new(SessionId::new(), Transport::WebSocket),
            outbound,
            encoder: Codec::new(),
            grant,
            permit,
            expiry: None,
            last_heard: Instant::now(),
            violations: 0,
            subscribe_budget: TokenBucket::new(rate, rate * 2.0),
            auto_subscribe,
            closing: false,
            opened: chrono::Utc::now(),
            peer,
            hub,
        }
    }

    fn id(&self) -> SessionId {
        self.subs.session()
    }

    fn close(&mut self, ctx: &mut Context<Self>, code: CloseCode, why: &str) {
        self.queue(ctx, ws::Message::Close(Some(CloseReason { code, description: Some(why.to_owned()) })));
        self.closing = true;
        // Nothing follows the close frame, not even a delivery the fan-out writes before the session stops.
        self.outbound.finish();
        ctx.stop();
    }

    fn queue(&mut self, ctx: &mut Context<Self>, message: ws::Message) {
        self.queue_all(ctx, std::iter::once(message));
    }

    /// Encodes frames into one chunk of the outbound queue, accounting its bytes; a client that is gone, or was
    /// cut, stops the session. Nothing follows a close frame.
    fn queue_all(&mut self, ctx: &mut Context<Self>, messages: impl IntoIterator<Item = ws::Message>) {
        if self.closing {
            return;
        }
        let Some(chunk) = self.encode(messages) else { return };
        if chunk.is_empty() {
            return;
        }
        self.outbound.produced(chunk.len());
        if !self.outbound.push(chunk.freeze()) {
            ctx.stop();
        }
    }

    /// The frames, encoded one after the other; `None` if one cannot be (only a continuation out of order, which
    /// a session never sends).
    fn encode(&mut self, messages: impl IntoIterator<Item = ws::Message>) -> Option<BytesMut> {
        let mut chunk = BytesMut::new();
        for message in messages {
            if let Err(e) = self.encoder.encode(message, &mut chunk) {
                warn!(session = %self.id(), error = %e, "a frame could not be encoded");
                return None;
            }
        }
        Some(chunk)
    }

    fn send(&mut self, ctx: &mut Context<Self>, frame: ServerFrame) {
        self.write(ctx, ByteString::from(frame.to_json()));
    }

    fn send_error(&mut self, ctx: &mut Context<Self>, code: ErrorCode, message: String, sub: Option<String>) {
        self.send(ctx, ServerFrame::Error { code, message, sub });
    }

    /// Told by the hub's heartbeat ticker once per interval (`crate::connections::heartbeat`).
    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        if self.last_heard.elapsed() > self.hub.settings.heartbeat * 2 {
            info!(session = %self.id(), "peer silent for two heartbeats; closing");
            return self.close(ctx, CloseCode::Away, "heartbeat timeout");
        }
        self.queue(ctx, ws::Message::Ping(Bytes::new()));
    }

    /// Closes the connection with 4001 when the grant expires.
    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
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
    fn violation(&mut self, ctx: &mut Context<Self>, error: FrameError) {
        self.violations += 1;
        metrics::counter!("hub_protocol_violations_total").increment(1);
        self.send_error(ctx, error.code, error.message, error.sub);
        if self.violations > self.hub.settings.protocol_tolerance {
            self.close(ctx, CloseCode::Other(CLOSE_PROTOCOL_VIOLATION), "protocol violation");
        }
    }

    fn on_text(&mut self, ctx: &mut Context<Self>, text: &str) {
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

    fn subscribe(&mut self, ctx: &mut Context<Self>, request: Subscribe) {
        let name = request.sub.to_string();
        if !self.subscribe_budget.take() {
            metrics::counter!("hub_rate_limited_total", "what" => "subscribe").increment(1);
            let message = format!("more than {} subscribe frames per second", self.hub.settings.subscribe_rate);
            return self.send_error(ctx, ErrorCode::RateLimited, message, Some(name));
        }
        if let Err(why) = self.grant.allows_subscription(&request.topics, &request.filter) {
            return self.send_error(ctx, ErrorCode::Forbidden, why, Some(name));
        }
        if let Err(why) = check_watch(&self.hub.policies, &request) {
            return self.send_error(ctx, ErrorCode::BadRequest, why, Some(name));
        }
        if !self.subs.contains(&request.sub) && self.subs.len() >= self.hub.settings.max_subscriptions {
            let message =
                format!("a connection may hold at most {} subscriptions", self.hub.settings.max_subscriptions);
            return self.send_error(ctx, ErrorCode::LimitExceeded, message, Some(name));
        }
        engine::subscribe(self, ctx, request);
    }

    fn unsubscribe(&mut self, ctx: &mut Context<Self>, name: SubName) {
        if self.subs.remove(&name, &self.hub) {
            self.send(ctx, ServerFrame::Unsubscribed { sub: name.to_string() });
        } else {
            let message = format!("no subscription named {:?}", name.as_str());
            self.send_error(ctx, ErrorCode::BadRequest, message, Some(name.to_string()));
        }
    }

    /// Replaces the connection's token once it is verified. Subscriptions the new token no longer allows are
    /// removed.
    fn refresh(&mut self, ctx: &mut Context<Self>, token: String) {
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
                let expires_at = act.grant.token_expires_at();
                act.send(ctx, ServerFrame::Refreshed { expires_at });
            },
        ));
    }

    /// An operator's command: closes the connection with the command's code if it matches.
    fn cut(&mut self, ctx: &mut Context<Self>, cut: &Cut) -> bool {
        if self.closing || !cut.matches(Some(self.id()), &self.grant) {
            return false;
        }
        let (code, why) = cut.code();
        info!(session = %self.id(), code, "closed by an operator's command");
        self.close(ctx, CloseCode::Other(code), why);
        true
    }

    fn apply_grant(&mut self, ctx: &mut Context<Self>, grant: Grant) {
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

    fn notices(&self, ctx: &mut Self::Context) -> Recipient<Notice> {
        ctx.address().recipient()
    }

    fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Writes a text frame, accounting its bytes.
    fn write(&mut self, ctx: &mut Self::Context, frame: ByteString) {
        self.queue(ctx, ws::Message::Text(frame));
    }

    /// The frames of a page of replay go out as one chunk.
    fn write_all(&mut self, ctx: &mut Self::Context, frames: Vec<ByteString>) {
        self.queue_all(ctx, frames.into_iter().map(ws::Message::Text));
    }

    /// Live frames come encoded: one chunk, accounted, unless the connection is closing.
    fn write_wire(&mut self, ctx: &mut Self::Context, frames: Vec<Bytes>) {
        if self.closing {
            return;
        }
        if let Some(chunk) = one_chunk(&frames)
            && !self.outbound.write(chunk)
        {
            ctx.stop();
        }
    }

    fn cut_slow_consumer(&mut self, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        warn!(session = %self.id(), pending = self.outbound.pending(), "slow consumer; closing with 4008");
        crate::telemetry::instruments::slow_consumer_closed(Transport::WebSocket);
        // What the reader did not take is dropped, and so is every frame after it: the close follows the last
        // frame the reader took, and `since` resumes without a gap.
        let reason =
            CloseReason { code: CloseCode::Other(CLOSE_SLOW_CONSUMER), description: Some("slow consumer".into()) };
        let close = self.encode([ws::Message::Close(Some(reason))]);
        self.outbound.cut(close.map(BytesMut::freeze));
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
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.permit.is_none() {
            metrics::counter!("hub_connections_refused_total").increment(1);
            return self.close(ctx, CloseCode::Other(CLOSE_TOO_MANY_CONNECTIONS), "too many connections");
        }
        crate::telemetry::instruments::connection_opened(Transport::WebSocket);
        debug!(session = %self.id(), "session started");
        let welcome = ServerFrame::Welcome {
            session: self.id().to_string(),
            node: self.hub.node.clone(),
            protocol: PROTOCOL_VERSION,
            heartbeat_s: self.hub.settings.heartbeat.as_secs().max(1),
            expires_at: self.grant.token_expires_at(),
        };
        self.send(ctx, welcome);
        self.schedule_expiry(ctx);
        if !self.hub.sessions.register(self.id(), Transport::WebSocket, ctx.address().downgrade().recipient()) {
            return self.close(ctx, CloseCode::Restart, "server restarting");
        }
        if let Some(subscribe) = self.auto_subscribe.take() {
            self.subscribe(ctx, subscribe);
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // The body ends once the network has taken what is queued (a close frame last, when there is one).
        self.outbound.finish();
        if self.permit.take().is_none() {
            return;
        }
        self.hub.sessions.unregister(self.id());
        self.subs.remove_all(&self.hub);
        crate::telemetry::instruments::connection_closed(Transport::WebSocket);
        debug!(session = %self.id(), "session stopped");
    }
}

impl Handler<Notice> for WsSession {
    type Result = ();

    fn handle(&mut self, notice: Notice, ctx: &mut Self::Context) {
        match notice {
            Notice::Heartbeat => self.heartbeat(ctx),
            Notice::Closing => self.close(ctx, CloseCode::Restart, "server restarting"),
            Notice::Cut(cut, answer) => {
                let closed = self.cut(ctx, &cut);
                let _ = answer.send(closed);
            }
            Notice::Describe(answer) => {
                let info = engine::describe(self, self.opened, self.peer);
                let _ = answer.send(info);
            }
            Notice::Presence { generation, frame } => {
                if self.subs.holds(generation) {
                    self.send(ctx, frame);
                }
            }
        }
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
            Ok(ws::Message::Ping(payload)) => self.queue(ctx, ws::Message::Pong(payload)),
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => {
                let message = "only JSON text frames are accepted".to_owned();
                self.violation(ctx, FrameError { code: ErrorCode::BadRequest, message, sub: None });
            }
            Ok(ws::Message::Close(reason)) => {
                self.queue(ctx, ws::Message::Close(reason));
                self.closing = true;
                self.outbound.finish();
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

/// The client's frames, decoded from the request's payload by `codec` (which bounds a frame's size). The stream
/// ends with the payload (the client went away), and after the first error, which the session answers by
/// closing.
pub struct ClientFrames<S> {
    payload: S,
    codec: Codec,
    buf: BytesMut,
    ended: bool,
}

impl<S> ClientFrames<S> {
    pub fn new(payload: S, codec: Codec) -> Self {
        Self { payload, codec, buf: BytesMut::new(), ended: false }
    }
}

impl<S> Stream for ClientFrames<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<ws::Message, ws::ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => return Poll::Ready(Some(message(frame))),
                Ok(None) if this.ended => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    this.ended = true;
                    this.buf.clear();
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.buf.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(e))) => {
                    this.ended = true;
                    this.buf.clear();
                    return Poll::Ready(Some(Err(ws::ProtocolError::Io(io::Error::other(e.to_string())))));
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn message(frame: Frame) -> Result<ws::Message, ws::ProtocolError> {
    Ok(match frame {
        Frame::Text(data) => ws::Message::Text(
            ByteString::try_from(data).map_err(|e| ws::ProtocolError::Io(io::Error::other(e.to_string())))?,
        ),
        Frame::Binary(data) => ws::Message::Binary(data),
        Frame::Ping(data) => ws::Message::Ping(data),
        Frame::Pong(data) => ws::Message::Pong(data),
        Frame::Close(reason) => ws::Message::Close(reason),
        Frame::Continuation(item) => ws::Message::Continuation(item),
    })
}

#[cfg(test)]
mod tests {
    use actix_http::ws::{OpCode, Parser};
    use futures_util::StreamExt;

    use super::*;

    /// A frame as a client sends it (masked).
    fn client_frame(message: ws::Message) -> Bytes {
        let mut frame = BytesMut::new();
        Codec::new().client_mode().encode(message, &mut frame).unwrap();
        frame.freeze()
    }

    async fn decode(reads: Vec<Bytes>, codec: Codec) -> Vec<Result<ws::Message, ws::ProtocolError>> {
        let payload = futures_util::stream::iter(reads.into_iter().map(Ok::<_, PayloadError>));
        ClientFrames::new(payload, codec).collect().await
    }

    #[actix_web::test]
    async fn frames_split_across_reads_are_decoded_whole_and_in_order() {
        let text = client_frame(ws::Message::Text(r#"{"type":"ping"}"#.into()));
        let close = client_frame(ws::Message::Close(None));
        let wire = Bytes::from([&text[..], &close[..]].concat());
        // Three reads, each cutting through a frame.
        let cut = text.len() + 1;
        let frames = decode(vec![wire.slice(..3), wire.slice(3..cut), wire.slice(cut..)], Codec::new()).await;
        assert!(
            matches!(&frames[..], [Ok(ws::Message::Text(t)), Ok(ws::Message::Close(None))] if &**t == r#"{"type":"ping"}"#),
            "{frames:?}"
        );
    }

    #[actix_web::test]
    async fn a_frame_past_the_bound_is_an_overflow_and_nothing_after_it_is_read() {
        let big = client_frame(ws::Message::Text("x".repeat(200).into()));
        let after = client_frame(ws::Message::Ping(Bytes::new()));
        let frames = decode(vec![big, after], Codec::new().max_size(100)).await;
        assert!(matches!(&frames[..], [Err(ws::ProtocolError::Overflow)]), "{frames:?}");
    }

    #[actix_web::test]
    async fn a_text_frame_that_is_not_utf8_is_an_error() {
        let mut frame = BytesMut::new();
        Parser::write_message(&mut frame, [0xff, 0xfe], OpCode::Text, true, true);
        let frames = decode(vec![frame.freeze()], Codec::new()).await;
        assert!(matches!(&frames[..], [Err(ws::ProtocolError::Io(_))]), "{frames:?}");
    }
}
