//! The Server-Sent Events session actor: one per `GET /sse` stream, sharing the subscription engine.

use std::sync::Arc;

use actix::prelude::*;
use actix_web::web;
use bytes::Bytes;
use bytestring::ByteString;
use protocol::{ServerFrame, SubName, Subscribe};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::auth::Grant;
use crate::connections::engine::{self, SubscriptionHost, Subscriptions};
use crate::connections::outbound::{Outbound, one_chunk};
use crate::delivery::{Deliver, SessionId, Transport};
use crate::fanout::sessions::{Cut, Notice};
use crate::fanout::subscription::{Reset, Start};
use crate::limits::ConnectionPermit;
use crate::state::HubState;

/// What a browser waits before reconnecting, sent once as `retry:`.
pub const RETRY_MS: u64 = 2000;

/// The SSE event name of an operator's disconnect notice.
pub const DISCONNECT_EVENT: &str = "@disconnect";

pub struct SseSession {
    hub: web::Data<HubState>,
    outbound: Arc<Outbound>,
    subs: Subscriptions,
    subscription: Option<Subscribe>,
    /// Fired once the subscription is established, so the response starts only then: when a browser's
    /// EventSource opens, everything published afterwards will reach it.
    established: Option<oneshot::Sender<()>>,
    /// The stream ends when the token expires (EventSource reconnects with a fresh token); operators' commands
    /// are matched against it.
    grant: Grant,
    _permit: ConnectionPermit,
    /// When the stream opened, and from where: for operators' listings.
    opened: chrono::DateTime<chrono::Utc>,
    peer: Option<std::net::SocketAddr>,
}

impl SseSession {
    pub fn new(
        hub: web::Data<HubState>,
        outbound: Arc<Outbound>,
        subscription: Subscribe,
        established: oneshot::Sender<()>,
        grant: Grant,
        permit: ConnectionPermit,
        peer: Option<std::net::SocketAddr>,
    ) -> Self {
        Self {
            subs: Subscriptions::new(SessionId::new(), Transport::ServerSentEvents),
            hub,
            outbound,
            subscription: Some(subscription),
            established: Some(established),
            grant,
            _permit: permit,
            opened: chrono::Utc::now(),
            peer,
        }
    }

    fn write_bytes(&mut self, ctx: &mut Context<Self>, bytes: Bytes) {
        if !self.outbound.write(bytes) {
            // The client went away and the body was dropped, or the stream was cut.
            ctx.stop();
        }
    }
}

impl SseSession {
    /// `event: reset` whose `id:` is where the subscription stands after it, so a reconnecting EventSource
    /// resumes from there.
    fn write_reset(&mut self, ctx: &mut Context<Self>, reset: Reset) {
        let data = serde_json::to_string(&reset.info).expect("a reset always serializes");
        self.write_bytes(ctx, Bytes::from(format!("id: {}\nevent: reset\ndata: {data}\n\n", reset.through)));
    }

    /// Who is present, or who joined or left: `event: @presence`, `@join` or `@leave` (names no topic can have),
    /// with the frame as WebSocket sends it, and no `id:`, so a reconnecting EventSource resumes from its last event.
    fn write_presence(&mut self, ctx: &mut Context<Self>, frame: &ServerFrame) {
        let name = match frame {
            ServerFrame::Presence { .. } => "@presence",
            ServerFrame::Join { .. } => "@join",
            ServerFrame::Leave { .. } => "@leave",
            _ => return,
        };
        self.write_bytes(ctx, Bytes::from(format!("event: {name}\ndata: {}\n\n", frame.to_json())));
    }

    /// An operator's command: when it matches, `event: @disconnect` (a name no topic can have: `@` is not a topic
    /// character), then the end of the stream.
    fn cut(&mut self, ctx: &mut Context<Self>, cut: &Cut) -> bool {
        if !cut.matches(Some(self.subs.session()), &self.grant) {
            return false;
        }
        let (code, reason) = cut.code();
        let data = serde_json::json!({"type": "disconnect", "code": code, "reason": reason});
        self.write_bytes(ctx, Bytes::from(format!("event: {DISCONNECT_EVENT}\ndata: {data}\n\n")));
        // Nothing follows it, not even a delivery the fan-out writes before the session stops.
        self.outbound.finish();
        ctx.stop();
        true
    }
}

impl SubscriptionHost for SseSession {
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
        Transport::ServerSentEvents
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

    fn write(&mut self, ctx: &mut Self::Context, frame: ByteString) {
        self.write_bytes(ctx, frame.into_bytes());
    }

    /// The blocks of a page of replay go out as one chunk.
    fn write_all(&mut self, ctx: &mut Self::Context, frames: Vec<ByteString>) {
        if let Some(chunk) = one_chunk(frames.iter().map(ByteString::as_bytes)) {
            self.write_bytes(ctx, chunk);
        }
    }

    fn write_wire(&mut self, ctx: &mut Self::Context, frames: Vec<Bytes>) {
        if let Some(chunk) = one_chunk(&frames) {
            self.write_bytes(ctx, chunk);
        }
    }

    fn cut_slow_consumer(&mut self, ctx: &mut Self::Context) {
        warn!(session = %self.subs.session(), pending = self.outbound.pending(), "slow consumer; ending the SSE stream");
        crate::telemetry::instruments::slow_consumer_closed(Transport::ServerSentEvents);
        // The stream ends with what the client already took: its Last-Event-ID resumes without a gap.
        self.outbound.cut(None);
        ctx.stop();
    }

    fn subscription_started(&mut self, ctx: &mut Self::Context, _: &SubName, start: Start) {
        if let Some(established) = self.established.take() {
            // The request may have been abandoned meanwhile; the stream then ends on the next write.
            let _ = established.send(());
        }
        if let Some(info) = start.reset {
            // The subscription goes on from the head: the browser's next Last-Event-ID resumes from there.
            let through = info.head;
            self.write_reset(ctx, Reset { info, through });
        }
    }

    fn reset(&mut self, ctx: &mut Self::Context, _: &SubName, reset: Reset) {
        self.write_reset(ctx, reset);
    }

    fn went_live(&mut self, _: &mut Self::Context, _: &SubName, _: u64, _: bool) {}

    fn failed(&mut self, ctx: &mut Self::Context, _: &SubName, _: String) {
        // Ending the stream makes the browser reconnect with Last-Event-ID.
        ctx.stop();
    }
}

impl Actor for SseSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        crate::telemetry::instruments::connection_opened(Transport::ServerSentEvents);
        self.write_bytes(ctx, Bytes::from(format!("retry: {RETRY_MS}\n\n")));
        if let Some(left) = self.grant.expires_in() {
            ctx.run_later(left, |_, ctx| ctx.stop());
        }
        if !self.hub.sessions.register(
            self.subs.session(),
            Transport::ServerSentEvents,
            ctx.address().downgrade().recipient(),
        ) {
            return ctx.stop();
        }
        if let Some(subscription) = self.subscription.take() {
            engine::subscribe(self, ctx, subscription);
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.outbound.finish();
        self.hub.sessions.unregister(self.subs.session());
        self.subs.remove_all(&self.hub);
        crate::telemetry::instruments::connection_closed(Transport::ServerSentEvents);
        debug!(session = %self.subs.session(), "SSE stream ended");
    }
}

impl Handler<Notice> for SseSession {
    type Result = ();

    fn handle(&mut self, notice: Notice, ctx: &mut Self::Context) {
        match notice {
            // A comment keeps proxies from closing an idle stream.
            Notice::Heartbeat => self.write_bytes(ctx, Bytes::from_static(b": hb\n\n")),
            Notice::Closing => ctx.stop(),
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
                    self.write_presence(ctx, &frame);
                }
            }
        }
    }
}

impl Handler<Deliver> for SseSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        engine::deliver(self, ctx, msg);
    }
}
