//! The WebSocket session actor: one per connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web;
use actix_web_actors::ws::{self, CloseCode, CloseReason};
use bytestring::ByteString;
use protocol::server_frame::event_frame;
use protocol::{ClientFrame, ErrorCode, FrameError, PROTOCOL_VERSION, ServerFrame, SubName, Subscribe};
use storage::{LogQuery, Page};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use super::dispatcher::{Join, Leave};
use super::subscriber::{Deliver, FrameFormat, SessionId, SubKey, Subscriber};
use crate::outbound::{Outbound, ws_frame_len};
use crate::rate::TokenBucket;
use crate::state::HubState;
use crate::subscription::{AfterPage, REPLAY_PAGE, Subscription};

/// Close code for a client that does not read fast enough.
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
/// Close code for binary or malformed frames past the tolerance.
pub const CLOSE_PROTOCOL_VIOLATION: u16 = 4009;

/// While replaying, a subscription waits for the network to take what it wrote before reading more once the
/// connection holds this fraction of its outbound bound.
const REPLAY_PAUSE_FRACTION: u64 = 4;
const REPLAY_PAUSE: Duration = Duration::from_millis(5);

pub struct WsSession {
    id: SessionId,
    state: web::Data<HubState>,
    outbound: Arc<Outbound>,
    /// Subscriptions by the client's name.
    subs: HashMap<SubName, Subscription>,
    /// Subscription names by generation, to route deliveries.
    generations: HashMap<u64, SubName>,
    /// Never reused within the session, so deliveries for a replaced subscription are recognised.
    next_generation: u64,
    /// Last time anything came from the client; a peer silent for two heartbeats is closed.
    last_heard: Instant,
    /// Malformed or binary frames so far.
    violations: u32,
    subscribe_budget: TokenBucket,
    /// The subscription given by query parameters, made once the session starts.
    auto_subscribe: Option<Subscribe>,
}

impl WsSession {
    pub fn new(state: web::Data<HubState>, outbound: Arc<Outbound>, auto_subscribe: Option<Subscribe>) -> Self {
        let rate = f64::from(state.settings.subscribe_rate);
        Self {
            id: SessionId::new(),
            outbound,
            subs: HashMap::new(),
            generations: HashMap::new(),
            next_generation: 1,
            last_heard: Instant::now(),
            violations: 0,
            subscribe_budget: TokenBucket::new(rate, rate * 2.0),
            auto_subscribe,
            state,
        }
    }

    /// Writes a text frame, accounting its bytes; closes the connection as a slow consumer past the bound.
    fn write(&mut self, ctx: &mut ws::WebsocketContext<Self>, frame: ByteString) {
        self.outbound.queued(ws_frame_len(frame.len()));
        ctx.text(frame);
        if self.outbound.pending() > self.state.settings.max_outbound_bytes as u64 {
            warn!(session = %self.id, pending = self.outbound.pending(), "slow consumer; closing with 4008");
            metrics::counter!("hub_slow_consumer_closes_total").increment(1);
            ctx.close(Some(CloseReason {
                code: CloseCode::Other(CLOSE_SLOW_CONSUMER),
                description: Some("slow consumer".into()),
            }));
            ctx.stop();
        }
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
        let interval = self.state.settings.heartbeat;
        ctx.run_interval(interval, move |act, ctx| {
            if act.last_heard.elapsed() > interval * 2 {
                info!(session = %act.id, "peer silent for two heartbeats; closing");
                ctx.close(Some(CloseReason { code: CloseCode::Away, description: Some("heartbeat timeout".into()) }));
                ctx.stop();
                return;
            }
            act.outbound.queued(ws_frame_len(0));
            ctx.ping(b"");
        });
    }

    /// Counts a protocol violation; past the tolerance the connection is closed with 4009.
    fn violation(&mut self, ctx: &mut ws::WebsocketContext<Self>, error: FrameError) {
        self.violations += 1;
        metrics::counter!("hub_protocol_violations_total").increment(1);
        self.send_error(ctx, error.code, error.message, error.sub);
        if self.violations > self.state.settings.protocol_tolerance {
            ctx.close(Some(CloseReason {
                code: CloseCode::Other(CLOSE_PROTOCOL_VIOLATION),
                description: Some("protocol violation".into()),
            }));
            ctx.stop();
        }
    }

    fn on_text(&mut self, ctx: &mut ws::WebsocketContext<Self>, text: &str) {
        if text.len() > self.state.settings.max_frame_bytes {
            let message =
                format!("frame is {} bytes, the limit is {}", text.len(), self.state.settings.max_frame_bytes);
            self.send_error(ctx, ErrorCode::TooLarge, message, None);
            return;
        }
        match ClientFrame::parse(text) {
            Ok(ClientFrame::Subscribe(subscribe)) => self.subscribe(ctx, subscribe),
            Ok(ClientFrame::Unsubscribe { sub }) => self.unsubscribe(ctx, sub),
            Ok(ClientFrame::Ack { id }) => {
                let lag = self.state.health.dispatched().saturating_sub(id);
                metrics::histogram!("hub_client_ack_lag_events").record(lag as f64);
            }
            Ok(ClientFrame::Refresh { .. }) => {
                // Development mode holds no token, so there is nothing to replace.
            }
            Ok(ClientFrame::Ping) => self.send(ctx, ServerFrame::Pong),
            Err(error) => self.violation(ctx, error),
        }
    }

    fn subscribe(&mut self, ctx: &mut ws::WebsocketContext<Self>, request: Subscribe) {
        let name = request.sub.to_string();
        if !self.subscribe_budget.take() {
            metrics::counter!("hub_rate_limited_total", "what" => "subscribe").increment(1);
            let message = format!("more than {} subscribe frames per second", self.state.settings.subscribe_rate);
            return self.send_error(ctx, ErrorCode::RateLimited, message, Some(name));
        }
        let replacing = self.subs.contains_key(&request.sub);
        if !replacing && self.subs.len() >= self.state.settings.max_subscriptions {
            let message =
                format!("a connection may hold at most {} subscriptions", self.state.settings.max_subscriptions);
            return self.send_error(ctx, ErrorCode::LimitExceeded, message, Some(name));
        }
        if replacing {
            self.remove(&request.sub);
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let subscriber = Arc::new(Subscriber {
            key: SubKey { session: self.id, generation },
            sub: request.sub.clone(),
            filter: request.filter.clone(),
            format: FrameFormat::WebSocket,
            recipient: ctx.address().recipient(),
        });
        let query = LogQuery::new(request.topics.clone(), request.filter);
        let subscription =
            Subscription::new(request.sub.clone(), generation, request.topics.clone(), query, request.since);
        self.generations.insert(generation, request.sub.clone());
        self.subs.insert(request.sub.clone(), subscription);
        self.state.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
        let (joined, joined_rx) = oneshot::channel();
        self.state.dispatcher.do_send(Join { subscriber, patterns: request.topics, joined });
        let log = self.state.log.clone();
        let sub = request.sub;
        ctx.spawn(
            async move {
                joined_rx.await.map_err(|_| "the dispatcher stopped".to_owned())?;
                log.bounds().await.map_err(|e| e.to_string())
            }
            .into_actor(self)
            .map(move |bounds, act, ctx| {
                let Some(subscription) = act.current(&sub, generation) else { return };
                match bounds {
                    Ok(bounds) => {
                        let start = subscription.start(bounds);
                        act.send(ctx, ServerFrame::Subscribed { sub: sub.to_string(), head: start.head });
                        if let Some(info) = start.reset {
                            metrics::counter!("hub_resets_total").increment(1);
                            act.send(ctx, ServerFrame::Reset { sub: sub.to_string(), info });
                        }
                        act.read_replay(ctx, sub, generation);
                    }
                    Err(e) => act.fail(ctx, &sub, e),
                }
            }),
        );
    }

    /// The subscription `name` if it is still the one of `generation`.
    fn current(&mut self, name: &SubName, generation: u64) -> Option<&mut Subscription> {
        self.subs.get_mut(name).filter(|s| s.generation == generation)
    }

    fn read_replay(&mut self, ctx: &mut ws::WebsocketContext<Self>, name: SubName, generation: u64) {
        let Some(subscription) = self.current(&name, generation) else { return };
        let (after, query) = (subscription.through, subscription.query.clone());
        let paused = self.outbound.pending() > self.state.settings.max_outbound_bytes as u64 / REPLAY_PAUSE_FRACTION;
        if paused {
            ctx.run_later(REPLAY_PAUSE, move |act, ctx| act.read_replay(ctx, name, generation));
            return;
        }
        let log = self.state.log.clone();
        ctx.spawn(async move { log.read_after(after, &query, REPLAY_PAGE).await }.into_actor(self).map(
            move |page, act, ctx| match page {
                Ok(page) => act.on_replay_page(ctx, name, generation, page),
                Err(e) => act.fail(ctx, &name, e.to_string()),
            },
        ));
    }

    fn on_replay_page(&mut self, ctx: &mut ws::WebsocketContext<Self>, name: SubName, generation: u64, page: Page) {
        let Some(subscription) = self.current(&name, generation) else { return };
        let replayed = page.events.len();
        let (frames, next) =
            subscription.on_page(page, |event| ByteString::from(event_frame(name.as_str(), event.json())));
        metrics::counter!("hub_events_replayed_total").increment(frames.len() as u64);
        debug!(session = %self.id, sub = %name, replayed, "replay page");
        for frame in frames {
            self.write(ctx, frame);
        }
        match next {
            AfterPage::ReadMore => self.read_replay(ctx, name, generation),
            AfterPage::Live { frames, announce, last_id } => {
                metrics::counter!("hub_events_delivered_total").increment(frames.len() as u64);
                for frame in frames {
                    self.write(ctx, frame);
                }
                if announce {
                    self.send(ctx, ServerFrame::Live { sub: name.to_string(), last_id });
                }
            }
        }
    }

    /// The log failed under a subscription: say so and drop it; the client may subscribe again.
    fn fail(&mut self, ctx: &mut ws::WebsocketContext<Self>, name: &SubName, cause: String) {
        warn!(session = %self.id, sub = %name, cause, "subscription failed");
        self.remove(name);
        let message = "the event log is unavailable; subscribe again with since to resume".to_owned();
        self.send_error(ctx, ErrorCode::Internal, message, Some(name.to_string()));
    }

    fn unsubscribe(&mut self, ctx: &mut ws::WebsocketContext<Self>, name: SubName) {
        if self.remove(&name) {
            self.send(ctx, ServerFrame::Unsubscribed { sub: name.to_string() });
        } else {
            let message = format!("no subscription named {:?}", name.as_str());
            self.send_error(ctx, ErrorCode::BadRequest, message, Some(name.to_string()));
        }
    }

    /// Forgets a subscription and takes it out of its rooms; `false` when there was none of that name.
    fn remove(&mut self, name: &SubName) -> bool {
        let Some(subscription) = self.subs.remove(name) else { return false };
        self.generations.remove(&subscription.generation);
        self.state.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        self.state.dispatcher.do_send(Leave {
            key: SubKey { session: self.id, generation: subscription.generation },
            patterns: subscription.patterns,
        });
        true
    }
}

impl Actor for WsSession {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.state.stats.connections.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("hub_connections").increment(1.0);
        debug!(session = %self.id, "session started");
        let welcome = ServerFrame::Welcome {
            session: self.id.to_string(),
            node: self.state.node.clone(),
            protocol: PROTOCOL_VERSION,
            heartbeat_s: self.state.settings.heartbeat.as_secs().max(1),
        };
        self.send(ctx, welcome);
        self.heartbeat(ctx);
        let mut shutdown = self.state.shutdown.clone();
        ctx.spawn(async move { shutdown.wait_for(|down| *down).await.is_ok() }.into_actor(self).map(|down, _, ctx| {
            if down {
                ctx.close(Some(CloseReason {
                    code: CloseCode::Restart,
                    description: Some("server restarting".into()),
                }));
                ctx.stop();
            }
        }));
        if let Some(subscribe) = self.auto_subscribe.take() {
            self.subscribe(ctx, subscribe);
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        let names: Vec<SubName> = self.subs.keys().cloned().collect();
        for name in names {
            self.remove(&name);
        }
        self.state.stats.connections.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("hub_connections").decrement(1.0);
        debug!(session = %self.id, "session stopped");
    }
}

impl Handler<Deliver> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        let mut delivered = 0;
        for item in msg.items {
            let Some(name) = self.generations.get(&item.generation) else { continue };
            let Some(subscription) = self.subs.get_mut(name) else { continue };
            if let Some(frame) = subscription.on_live(item) {
                delivered += 1;
                self.write(ctx, frame);
            }
        }
        metrics::counter!("hub_events_delivered_total").increment(delivered);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for WsSession {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match msg {
            Ok(ws::Message::Text(text)) => self.on_text(ctx, &text),
            Ok(ws::Message::Ping(payload)) => {
                self.outbound.queued(ws_frame_len(payload.len()));
                ctx.pong(&payload);
            }
            Ok(ws::Message::Pong(_)) | Ok(ws::Message::Nop) => {}
            Ok(ws::Message::Binary(_)) | Ok(ws::Message::Continuation(_)) => {
                let message = "only JSON text frames are accepted".to_owned();
                self.violation(ctx, FrameError { code: ErrorCode::BadRequest, message, sub: None });
            }
            Ok(ws::Message::Close(reason)) => {
                ctx.close(reason);
                ctx.stop();
            }
            Err(ws::ProtocolError::Overflow) => {
                ctx.close(Some(CloseReason { code: CloseCode::Size, description: Some("frame too large".into()) }));
                ctx.stop();
            }
            Err(e) => {
                debug!(session = %self.id, error = %e, "websocket protocol error");
                ctx.close(Some(CloseReason {
                    code: CloseCode::Other(CLOSE_PROTOCOL_VIOLATION),
                    description: Some("protocol violation".into()),
                }));
                ctx.stop();
            }
        }
    }
}
