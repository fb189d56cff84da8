//! Drives subscriptions for any transport whose connection is an actor (WebSocket and SSE sessions): join the
//! rooms, read the bounds, replay page by page, then go live (see [`crate::fanout::subscription`] for the rules).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web::web;
use bytes::Bytes;
use bytestring::ByteString;
use protocol::{SubName, Subscribe};
use storage::{LogQuery, Page, SharedEvent};
use tokio::sync::oneshot;

use crate::auth::Grant;
use crate::cluster::presence::{Watcher, presence_topics};
use crate::connections::outbound::Outbound;
use crate::connections::sink::DirectSink;
use crate::delivery::{Deliver, FrameFormat, Items, SessionId, SubKey, Subscriber, Target, Transport};
use crate::fanout::dispatcher::{Join, Leave, build_frame};
use crate::fanout::sessions::{ConnectionInfo, Notice, SubscriptionInfo};
use crate::fanout::subscription::{AfterPage, REPLAY_PAGE, Reset, Start, Subscription};
use crate::state::HubState;

/// While replaying, a subscription waits for the network to take what was written before reading more once the
/// connection holds this fraction of its outbound bound.
const REPLAY_PAUSE_FRACTION: u64 = 4;
const REPLAY_PAUSE: Duration = Duration::from_millis(5);
/// How long a subscription waits for an unavailable log before it fails with `internal`, and how often it reads
/// again meanwhile.
const LOG_RETRY_FOR: Duration = Duration::from_secs(30);
const LOG_RETRY_EVERY: Duration = Duration::from_millis(250);

/// The subscriptions of one connection: a short list (nearly every connection has one, and the hub allows a few
/// dozen at most), searched by name or by generation.
#[derive(Debug)]
pub struct Subscriptions {
    session: SessionId,
    /// For the per-transport subscription gauge.
    transport: Transport,
    list: Vec<Subscription>,
    /// Never reused, so deliveries for a replaced or removed subscription are recognised and dropped.
    next_generation: u64,
    /// The subscriptions present on topics that keep presence, by generation: as which subject, on which topics,
    /// and whether they also watch who else is.
    present: Vec<Present>,
    /// Where the fan-out delivers to this connection; made with the first subscription (it needs the session's
    /// address).
    sink: Option<Arc<DirectSink>>,
}

#[derive(Debug)]
struct Present {
    generation: u64,
    subject: Option<String>,
    topics: Vec<String>,
    watching: bool,
}

impl Subscriptions {
    pub fn new(session: SessionId, transport: Transport) -> Self {
        Self { session, transport, list: Vec::new(), next_generation: 1, present: Vec::new(), sink: None }
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn contains(&self, name: &SubName) -> bool {
        self.list.iter().any(|s| s.name == *name)
    }

    /// Whether the subscription of `generation` is still there.
    pub fn holds(&self, generation: u64) -> bool {
        self.list.iter().any(|s| s.generation == generation)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.list.iter()
    }

    /// The subscription `name` if it is still the one of `generation`.
    pub fn current(&mut self, name: &SubName, generation: u64) -> Option<&mut Subscription> {
        self.list.iter_mut().find(|s| s.generation == generation && s.name == *name)
    }

    /// The log lost events: the resets to send now, by subscription name.
    pub fn lost(&mut self, info: &protocol::ResetInfo) -> Vec<(SubName, Reset)> {
        self.list
            .iter_mut()
            .filter_map(|subscription| {
                subscription.on_lost(info.clone()).map(|reset| (subscription.name.clone(), reset))
            })
            .collect()
    }

    /// The id each subscription has reached, taking the live ones' from the sink, which advances them while the
    /// fan-out writes to the connection itself.
    fn take_positions(&mut self, positions: Vec<(u64, u64)>) {
        for (generation, through) in positions {
            if let Some(subscription) = self.list.iter_mut().find(|s| s.generation == generation) {
                subscription.through = through;
            }
        }
    }

    /// The live subscriptions and the id each has reached.
    fn live_positions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.list.iter().filter(|s| s.is_live()).map(|s| (s.generation, s.through))
    }

    /// Live deliveries: the frames to write now, in their wire form.
    pub fn deliver(&mut self, items: Items) -> Vec<Bytes> {
        let mut frames = Vec::with_capacity(items.len());
        for item in items {
            // Deliveries for a replaced or removed subscription find no generation and are dropped.
            let Some(subscription) = self.list.iter_mut().find(|s| s.generation == item.generation) else { continue };
            frames.extend(subscription.on_live(item));
        }
        frames
    }

    /// Forgets a subscription and takes it out of its rooms; `false` when there was none of that name.
    pub fn remove(&mut self, name: &SubName, hub: &HubState) -> bool {
        let Some(index) = self.list.iter().position(|s| s.name == *name) else { return false };
        let subscription = self.list.swap_remove(index);
        if let Some(sink) = &self.sink {
            sink.forget(subscription.generation);
        }
        if let Some(at) = self.present.iter().position(|p| p.generation == subscription.generation) {
            let present = self.present.swap_remove(at);
            let presence = &hub.cluster.presence;
            if present.watching {
                presence.unwatch(self.session, present.generation);
            }
            for topic in &present.topics {
                presence.exit(topic, self.session, present.subject.as_deref());
            }
        }
        hub.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        crate::telemetry::instruments::subscription_removed(self.transport);
        hub.dispatcher.do_send(Leave {
            key: SubKey { session: self.session, generation: subscription.generation },
            patterns: subscription.query.topics,
        });
        true
    }

    pub fn remove_all(&mut self, hub: &HubState) {
        let names: Vec<SubName> = self.list.iter().map(|s| s.name.clone()).collect();
        for name in names {
            self.remove(&name, hub);
        }
    }
}

/// A connection actor that holds subscriptions.
pub trait SubscriptionHost: Actor + Sized
where
    Self::Context: AsyncContext<Self>,
{
    fn hub(&self) -> &web::Data<HubState>;
    fn outbound(&self) -> &Arc<Outbound>;
    fn subscriptions(&mut self) -> &mut Subscriptions;
    fn transport(&self) -> Transport;
    fn recipient(&self, ctx: &mut Self::Context) -> Recipient<Deliver>;
    /// Where the hub's notices to the session go (presence among them).
    fn notices(&self, ctx: &mut Self::Context) -> Recipient<Notice>;
    /// What the connection's token allows, and who it names.
    fn grant(&self) -> &Grant;
    /// Writes one frame to the connection.
    fn write(&mut self, ctx: &mut Self::Context, frame: ByteString);
    /// Writes frames in order: a page of replay.
    fn write_all(&mut self, ctx: &mut Self::Context, frames: Vec<ByteString>) {
        for frame in frames {
            self.write(ctx, frame);
        }
    }
    /// Writes live frames, already in their wire form ([`crate::delivery::Delivery::wire`]), as one chunk.
    fn write_wire(&mut self, ctx: &mut Self::Context, frames: Vec<Bytes>);
    /// The client has not taken what earlier turns wrote, past the bound: cut it (contract section 2.5) so that
    /// what it got is a prefix of what was written, and it resumes from its last id without a gap.
    fn cut_slow_consumer(&mut self, ctx: &mut Self::Context);
    /// The bounds are known: tell the client (WebSocket: `subscribed`, maybe `reset`; SSE: maybe `reset`).
    fn subscription_started(&mut self, ctx: &mut Self::Context, name: &SubName, start: Start);
    /// Events the subscription waited for are gone: tell the client (the `reset` frame or SSE block).
    fn reset(&mut self, ctx: &mut Self::Context, name: &SubName, reset: Reset);
    /// Replay is over (WebSocket: the `live` marker when `announce`).
    fn went_live(&mut self, ctx: &mut Self::Context, name: &SubName, last_id: u64, announce: bool);
    /// The log failed under the subscription, which was removed.
    fn failed(&mut self, ctx: &mut Self::Context, name: &SubName, cause: String);
}

/// Writes the frames of a delivery that the connection's subscriptions take.
///
/// A slow consumer is one that has not taken what earlier deliveries wrote: the bound is checked before this
/// delivery's frames, not after each of them, so one burst larger than the bound (a big batch) does not cut a
/// reader that keeps up. What the connection may hold is then the bound plus one delivery.
///
/// A delivery reaches the session only when the fan-out could not write it itself (`crate::connections::sink`):
/// the live subscriptions' positions are the sink's until it is handled.
pub fn deliver<A>(act: &mut A, ctx: &mut A::Context, msg: Deliver)
where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    let sink = act.subscriptions().sink.clone();
    if let Some(sink) = &sink {
        act.subscriptions().take_positions(sink.positions());
    }
    deliver_in_order(act, ctx, msg);
    if let Some(sink) = &sink {
        sink.handled(act.subscriptions().live_positions());
    }
}

fn deliver_in_order<A>(act: &mut A, ctx: &mut A::Context, msg: Deliver)
where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    if act.outbound().pending() > act.hub().settings.max_outbound_bytes as u64 {
        return act.cut_slow_consumer(ctx);
    }
    if let Some(info) = &msg.lost {
        let resets = act.subscriptions().lost(info);
        crate::telemetry::instruments::resets(resets.len() as u64);
        for (name, reset) in resets {
            act.reset(ctx, &name, reset);
        }
    }
    let frames = act.subscriptions().deliver(msg.items);
    crate::telemetry::instruments::delivered(act.transport(), frames.len() as u64);
    act.write_wire(ctx, frames);
}

/// What the connection is, for an operator's listing: its subscriptions with the id each has reached, and the
/// bytes written for it that the network has not taken.
pub fn describe<A>(
    act: &mut A,
    opened: chrono::DateTime<chrono::Utc>,
    peer: Option<std::net::SocketAddr>,
) -> ConnectionInfo
where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    let (transport, node, unsent_bytes) = (act.transport(), act.hub().node.clone(), act.outbound().pending());
    let subject = act.grant().subject().map(str::to_owned);
    let subscriptions = act.subscriptions();
    let sink = subscriptions.sink.clone();
    ConnectionInfo {
        id: subscriptions.session().to_string(),
        node,
        transport: transport.label().to_owned(),
        subject,
        subscriptions: subscriptions
            .iter()
            .map(|s| SubscriptionInfo {
                sub: s.name.to_string(),
                topics: s.query.topics.iter().map(|t| t.to_string()).collect(),
                filter: s.query.filter.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
                position: sink.as_ref().and_then(|sink| sink.position(s.generation)).unwrap_or(s.through),
            })
            .collect(),
        since: opened.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        peer: peer.map(|p| p.to_string()),
        unsent_bytes,
    }
}

/// Registers `request` (replacing a subscription of the same name) and starts it.
pub fn subscribe<A>(act: &mut A, ctx: &mut A::Context, request: Subscribe)
where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    let hub_dispatcher = act.hub().dispatcher.clone();
    let sink = match act.subscriptions().sink.clone() {
        Some(sink) => sink,
        None => {
            let max_outbound_bytes = act.hub().settings.max_outbound_bytes as u64;
            let sink = DirectSink::new(act.recipient(ctx), act.outbound().clone(), act.transport(), max_outbound_bytes);
            act.subscriptions().sink.insert(Arc::new(sink)).clone()
        }
    };
    let format = FrameFormat { transport: act.transport(), profile: request.profile };
    let stats = act.hub().stats.clone();
    let hub = act.hub().clone();
    act.subscriptions().remove(&request.sub, &hub);
    let subs = act.subscriptions();
    let generation = subs.next_generation;
    subs.next_generation += 1;
    let subscriber = Arc::new(Subscriber {
        key: SubKey { session: subs.session, generation },
        sub: request.sub.clone(),
        filter: request.filter.clone(),
        format,
        target: Target::Session(sink),
    });
    let presence_on = presence_topics(&hub.policies, &request.topics);
    let query = LogQuery::new(request.topics.clone(), request.filter);
    let mut subscription = Subscription::new(request.sub.clone(), generation, query, request.since, format);
    subscription.tail = request.tail.map(|n| n as usize);
    subs.list.push(subscription);
    stats.subscriptions.fetch_add(1, Ordering::Relaxed);
    crate::telemetry::instruments::subscription_added(format.transport, request.since.is_some());
    if !presence_on.is_empty() {
        enter_presence(act, ctx, &request.sub, generation, presence_on, request.presence);
    }
    let (joined, joined_rx) = oneshot::channel();
    hub_dispatcher.do_send(Join { subscriber, patterns: request.topics, joined });
    let (name, tail) = (request.sub, request.tail.is_some());
    ctx.spawn(async move { joined_rx.await.is_ok() }.into_actor(act).map(move |joined, act, ctx| {
        match (joined, tail) {
            (true, false) => read_bounds(act, ctx, name, generation, None),
            (true, true) => find_tail(act, ctx, name, generation, None),
            (false, _) => fail(act, ctx, &name, "the dispatcher stopped".to_owned()),
        }
    }));
}

/// The subscription of `generation` names `topics`, which keep presence: its subject is present there, and when it
/// asked for presence, it watches who else is.
fn enter_presence<A>(
    act: &mut A,
    ctx: &mut A::Context,
    sub: &SubName,
    generation: u64,
    topics: Vec<String>,
    watch: bool,
) where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    let hub = act.hub().clone();
    let subject = act.grant().subject().map(str::to_owned);
    let info = act.grant().info().map(|info| {
        let mut value = serde_json::Value::Object(info.clone());
        hub.redactor.redact_value(&mut value);
        match value {
            serde_json::Value::Object(info) => info,
            _ => serde_json::Map::new(),
        }
    });
    let session = act.subscriptions().session;
    let presence = &hub.cluster.presence;
    for topic in &topics {
        presence.enter(topic, session, subject.as_deref(), info.clone());
    }
    if watch {
        let to = act.notices(ctx);
        let ask: Vec<String> = topics
            .iter()
            .filter(|topic| presence.watch(topic, Watcher::new(session, generation, sub.clone(), to.clone())))
            .cloned()
            .collect();
        hub.cluster.ask_presence(ask);
    }
    act.subscriptions().present.push(Present { generation, subject, topics, watching: watch });
}

/// A subscription that asked for its last `count` events: once its rooms have it (so nothing newer is missed),
/// finds where they begin below the log's head and replays from there, as if it had asked for `since`.
fn find_tail<A>(act: &mut A, ctx: &mut A::Context, name: SubName, generation: u64, failing: Option<Instant>)
where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    let log = act.hub().log.clone();
    let Some(subscription) = act.subscriptions().current(&name, generation) else { return };
    let (query, count) = (subscription.query.clone(), subscription.tail.unwrap_or(1));
    let start = async move {
        let tail = storage::tail::read_before(&*log, u64::MAX, &query, count).await?;
        Ok::<_, storage::Error>(tail.replay_from(count))
    };
    ctx.spawn(start.into_actor(act).map(move |since, act, ctx| match since {
        Ok(since) => {
            if let Some(subscription) = act.subscriptions().current(&name, generation) {
                subscription.since = Some(since);
            }
            read_bounds(act, ctx, name, generation, None);
        }
        Err(e) => retry_or_fail(act, ctx, name, generation, failing, e.to_string(), find_tail),
    }));
}

/// Learns the log's bounds, then starts the replay (or goes live).
fn read_bounds<A>(act: &mut A, ctx: &mut A::Context, name: SubName, generation: u64, failing: Option<Instant>)
where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    let log = act.hub().log.clone();
    let Some(subscription) = act.subscriptions().current(&name, generation) else { return };
    let (since, query) = (subscription.since, subscription.query.clone());
    // A subscription starting live or a moment back starts from the window of newest events, if the hub has one
    // and it holds what this hub appended.
    let bounds = async move {
        match window_bounds(&*log, since).await {
            Some(bounds) => Ok(bounds),
            None => log.bounds(&query).await,
        }
    };
    ctx.spawn(bounds.into_actor(act).map(move |bounds, act, ctx| match bounds {
        Ok(bounds) => start_replay(act, ctx, name, generation, bounds),
        Err(e) => retry_or_fail(act, ctx, name, generation, failing, e.to_string(), read_bounds),
    }));
}

/// The bounds the window of newest events gives a subscription starting at `since`, once it holds what this hub
/// appended; `None` when the backend must answer.
async fn window_bounds(log: &dyn storage::EventLog, since: Option<u64>) -> Option<storage::LogBounds> {
    let recent = log.recent()?;
    if !recent.caught_up().await {
        return None;
    }
    recent.bounds_for(since)
}

fn start_replay<A>(act: &mut A, ctx: &mut A::Context, name: SubName, generation: u64, bounds: storage::LogBounds)
where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    let Some(subscription) = act.subscriptions().current(&name, generation) else { return };
    let start = subscription.start(bounds);
    if start.reset.is_some() {
        crate::telemetry::instruments::resets(1);
    }
    act.subscription_started(ctx, &name, start);
    read_replay(act, ctx, name, generation, None);
}

/// A read of the log failed: read again shortly while the log has been unavailable for less than
/// [`LOG_RETRY_FOR`] (a database restarting, a failover: the subscription only waits, its live events buffered),
/// else fail the subscription.
fn retry_or_fail<A>(
    act: &mut A,
    ctx: &mut A::Context,
    name: SubName,
    generation: u64,
    failing: Option<Instant>,
    cause: String,
    again: fn(&mut A, &mut A::Context, SubName, u64, Option<Instant>),
) where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    let since = failing.unwrap_or_else(Instant::now);
    if since.elapsed() >= LOG_RETRY_FOR {
        return fail(act, ctx, &name, cause);
    }
    tracing::debug!(sub = %name, cause, "the log is unavailable; reading again shortly");
    ctx.run_later(LOG_RETRY_EVERY, move |act, ctx| again(act, ctx, name, generation, Some(since)));
}

fn fail<A>(act: &mut A, ctx: &mut A::Context, name: &SubName, cause: String)
where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    tracing::warn!(sub = %name, cause, "subscription failed");
    let hub = act.hub().clone();
    act.subscriptions().remove(name, &hub);
    act.failed(ctx, name, cause);
}

fn read_replay<A>(act: &mut A, ctx: &mut A::Context, name: SubName, generation: u64, failing: Option<Instant>)
where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    let pending = act.outbound().pending();
    let pause_at = act.hub().settings.max_outbound_bytes as u64 / REPLAY_PAUSE_FRACTION;
    let log = act.hub().log.clone();
    let Some(subscription) = act.subscriptions().current(&name, generation) else { return };
    if pending > pause_at {
        ctx.run_later(REPLAY_PAUSE, move |act, ctx| read_replay(act, ctx, name, generation, failing));
        return;
    }
    let (after, query) = (subscription.through, subscription.query.clone());
    ctx.spawn(async move { log.read_after(after, &query, REPLAY_PAGE).await }.into_actor(act).map(
        move |page, act, ctx| match page {
            Ok(page) => on_page(act, ctx, name, generation, page),
            Err(e) => retry_or_fail(act, ctx, name, generation, failing, e.to_string(), read_replay),
        },
    ));
}

fn on_page<A>(act: &mut A, ctx: &mut A::Context, name: SubName, generation: u64, page: Page)
where
    A: SubscriptionHost,
    A::Context: AsyncContext<A>,
{
    let pause_at = act.hub().settings.max_outbound_bytes as u64 / REPLAY_PAUSE_FRACTION;
    let budget = pause_at.saturating_sub(act.outbound().pending()) as usize;
    let Some(subscription) = act.subscriptions().current(&name, generation) else { return };
    let format = subscription.format;
    let frame_of = |event: &SharedEvent| build_frame(event, format, name.as_str());
    let outcome = subscription.on_page(page, budget, frame_of);
    if let Some(reset) = outcome.reset {
        crate::telemetry::instruments::resets(1);
        act.reset(ctx, &name, reset);
    }
    crate::telemetry::instruments::replayed(act.transport(), outcome.frames.len() as u64);
    act.write_all(ctx, outcome.frames);
    match outcome.next {
        AfterPage::ReadMore => read_replay(act, ctx, name, generation, None),
        AfterPage::Live { reset, frames, announce, last_id } => {
            if let Some(reset) = reset {
                crate::telemetry::instruments::resets(1);
                act.reset(ctx, &name, reset);
            }
            crate::telemetry::instruments::delivered(act.transport(), frames.len() as u64);
            act.write_wire(ctx, frames);
            act.went_live(ctx, &name, last_id, announce);
            // Everything before the subscription's next live event is written: the fan-out may write it.
            if let Some(sink) = &act.subscriptions().sink {
                sink.go_live(generation, last_id);
            }
        }
    }
}
