//! The dispatcher: owns the topic rooms, and turns the storage actor's ordered batches into ordered deliveries.
//!
//! Order across rooms: rooms only *route* (answer which subscriptions match which events); the dispatcher alone
//! *delivers*. For each batch it asks every room concerned, then awaits the answers batch by batch in arrival
//! order, merges them per connection, sorts them by id and sends each connection one [`Deliver`]. A connection's
//! mailbox is FIFO and the dispatcher is the only producer of live events, so a subscription spanning several
//! rooms sees ids strictly increasing. Joins go through the same mailboxes as routes, so a room routes to a
//! subscription exactly from the first batch after its join. See `docs/ARCHITECTURE.md`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;
use chrono::Utc;
use protocol::server_frame::event_frame;
use protocol::{Profile, ResetInfo, TopicPattern};
use storage::{EventsAppended, SharedEvent};
use tokio::sync::{mpsc, oneshot};

use super::room::{AddSubscriber, Match, RemoveSubscriber, Route, TopicRoom};
use super::senders::Senders;
use crate::delivery::{Deliver, Delivery, FrameFormat, Items, SessionId, SharedSubscriber, SubKey, Target, Transport};
use crate::telemetry::stats::HubStats;

/// Registers a subscription with the room of each of its patterns; `joined` fires when every room has it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub subscriber: SharedSubscriber,
    pub patterns: Vec<TopicPattern>,
    pub joined: oneshot::Sender<()>,
}

/// Removes a subscription from the rooms it joined.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub key: SubKey,
    pub patterns: Vec<TopicPattern>,
}

struct RoomSlot {
    /// Never reused; groups a batch's events per room.
    id: u64,
    addr: Addr<TopicRoom>,
    members: usize,
}

/// A batch whose routing answers are awaited, in batch order.
struct PendingBatch {
    events: Arc<[SharedEvent]>,
    /// Events before this batch were lost: the reset, and every connection with a subscription at that moment.
    lost: Option<(ResetInfo, Vec<Target>)>,
    answers: Vec<oneshot::Receiver<Vec<Match>>>,
    /// Fired once the batch has been handed to every connection; the storage actor waits for it.
    delivered: oneshot::Sender<()>,
}

pub struct Dispatcher {
    /// Rooms of exact topics, by topic.
    exact: HashMap<String, RoomSlot>,
    /// Rooms of prefix patterns, by prefix (`""` for `*`).
    prefixes: HashMap<String, RoomSlot>,
    /// Every connection with a subscription, and how many it has: the ones told when the log lost events.
    sessions: HashMap<SessionId, (Target, usize)>,
    pipeline: mpsc::UnboundedSender<PendingBatch>,
    /// Taken by `started`, which spawns the delivery loop over them.
    pipeline_rx: Option<(mpsc::UnboundedReceiver<PendingBatch>, Senders)>,
    next_room_id: u64,
    stats: Arc<HubStats>,
}

impl Dispatcher {
    /// `sending_threads`: how many threads beside its own the fan-out shares a step it sends itself with
    /// ([`Senders`]).
    pub fn new(stats: Arc<HubStats>, sending_threads: usize) -> Self {
        let (pipeline, pipeline_rx) = mpsc::unbounded_channel();
        Self {
            exact: HashMap::new(),
            prefixes: HashMap::new(),
            sessions: HashMap::new(),
            pipeline,
            pipeline_rx: Some((pipeline_rx, Senders::start(sending_threads))),
            next_room_id: 0,
            stats,
        }
    }

    fn slot(&mut self, pattern: &TopicPattern) -> &mut RoomSlot {
        let (map, name) = match pattern {
            TopicPattern::Exact(t) => (&mut self.exact, t.as_str()),
            TopicPattern::Prefix(p) => (&mut self.prefixes, p.as_str()),
        };
        if !map.contains_key(name) {
            self.next_room_id += 1;
            self.stats.topics.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if matches!(pattern, TopicPattern::Prefix(_)) {
                self.stats.patterns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let slot = RoomSlot { id: self.next_room_id, addr: TopicRoom::new(pattern.clone()).start(), members: 0 };
            map.insert(name.to_owned(), slot);
        }
        // Inserted just above when missing.
        map.get_mut(name).expect("the room exists")
    }

    fn rooms_for<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a RoomSlot> + 'a {
        self.exact
            .get(topic)
            .into_iter()
            .chain(self.prefixes.iter().filter(move |(p, _)| topic.starts_with(p.as_str())).map(|(_, s)| s))
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some((pending, senders)) = self.pipeline_rx.take() {
            ctx.spawn(actix::fut::wrap_future(delivery_loop(pending, senders)));
        }
    }
}

/// Awaits each batch's routing answers in batch order and delivers them. Batches already waiting when a fan-out
/// starts are merged into it, so a connection gets one `Deliver` (and the socket one write) for all of them: when
/// dispatch falls behind, it catches up in fewer, larger steps.
async fn delivery_loop(mut pending: mpsc::UnboundedReceiver<PendingBatch>, senders: Senders) {
    let mut pace = Pace::default();
    while let Some(first) = pending.recv().await {
        let started = Instant::now();
        let mut batches = vec![first];
        while let Ok(next) = pending.try_recv() {
            batches.push(next);
        }
        let mut fan_out = FanOut { send_now: pace.has_time(started), ..FanOut::default() };
        for batch in batches {
            let mut matches = Vec::new();
            for answer in batch.answers {
                // A room that stopped had no subscriptions left: nothing to deliver from it.
                if let Ok(found) = answer.await {
                    matches.extend(found);
                }
            }
            if let Some((reset, sessions)) = batch.lost {
                // After the events before the loss and before the batch's own, through the same mailboxes.
                fan_out.deliver(&senders);
                for session in sessions {
                    session.deliver(Deliver {
                        lost: Some(reset.clone()),
                        items: Items::new(),
                        spread: false,
                        send_now: false,
                    });
                }
            }
            fan_out.add(&batch.events, matches, batch.delivered);
        }
        fan_out.deliver(&senders);
        pace.stepped(started, fan_out.send_now);
    }
}

/// Whether the fan-out has time to spare for sending deliveries to sockets itself ([`Deliver::send_now`]): it
/// does while it was idle since its last step at least [`Pace::IDLE_FACTOR`] times as long as its last step that
/// sent took. At a low rate it then wakes no connection's task; under load the connections' workers send, in
/// parallel and several events per `send`, and the fan-out's one thread only routes. What a sending step took
/// counts for less as time passes (halved every [`Pace::HALF_LIFE`]): one step slowed down by the machine does
/// not keep the fan-out from sending for good.
#[derive(Default)]
struct Pace {
    /// When the last step ended.
    ended: Option<Instant>,
    /// The last step that sent to sockets: when it ended, and how long it took.
    sending: Option<(Instant, Duration)>,
}

impl Pace {
    const IDLE_FACTOR: u32 = 4;
    const HALF_LIFE: Duration = Duration::from_secs(1);

    fn has_time(&self, now: Instant) -> bool {
        let (Some(ended), Some((sent, took))) = (self.ended, self.sending) else { return true };
        let halvings = now.duration_since(sent).as_secs_f64() / Self::HALF_LIFE.as_secs_f64();
        now.duration_since(ended) >= took.mul_f64(0.5f64.powf(halvings)) * Self::IDLE_FACTOR
    }

    fn stepped(&mut self, started: Instant, sent: bool) {
        let now = Instant::now();
        self.ended = Some(now);
        if sent {
            self.sending = Some((now, now.duration_since(started)));
        }
    }
}

/// Consecutive batches merged into one delivery.
#[derive(Default)]
struct FanOut {
    /// The fan-out has time to send to sockets itself ([`Pace`]).
    send_now: bool,
    events: Vec<SharedEvent>,
    matches: Vec<Match>,
    delivered: Vec<oneshot::Sender<()>>,
}

impl FanOut {
    fn add(&mut self, events: &[SharedEvent], matches: Vec<Match>, delivered: oneshot::Sender<()>) {
        let offset = self.events.len() as u32;
        self.events.extend(events.iter().cloned());
        self.matches.extend(matches.into_iter().map(|m| Match { index: m.index + offset, ..m }));
        self.delivered.push(delivered);
    }

    /// Delivers what was added and tells the storage actor.
    fn deliver(&mut self, senders: &Senders) {
        let step = Step { spread: self.events.len() > 1, send_now: self.send_now, senders };
        deliver(&self.events, std::mem::take(&mut self.matches), step);
        self.events.clear();
        for delivered in self.delivered.drain(..) {
            // The storage actor may have stopped waiting (it is shutting down).
            let _ = delivered.send(());
        }
    }
}

impl Handler<Join> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Join, _: &mut Self::Context) {
        let session = &msg.subscriber;
        self.sessions.entry(session.key.session).or_insert_with(|| (session.target.clone(), 0)).1 += 1;
        let mut acks = Vec::with_capacity(msg.patterns.len());
        for pattern in &msg.patterns {
            let slot = self.slot(pattern);
            slot.members += 1;
            let (joined, ack) = oneshot::channel();
            slot.addr.do_send(AddSubscriber { subscriber: msg.subscriber.clone(), joined });
            acks.push(ack);
        }
        actix::spawn(async move {
            for ack in acks {
                let _ = ack.await;
            }
            // The session may have gone meanwhile; its own leave cleans up.
            let _ = msg.joined.send(());
        });
    }
}

impl Handler<Leave> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Self::Context) {
        if let Some((_, count)) = self.sessions.get_mut(&msg.key.session) {
            *count -= 1;
            if *count == 0 {
                self.sessions.remove(&msg.key.session);
            }
        }
        for pattern in &msg.patterns {
            let (map, name) = match pattern {
                TopicPattern::Exact(t) => (&mut self.exact, t.as_str()),
                TopicPattern::Prefix(p) => (&mut self.prefixes, p.as_str()),
            };
            let Some(slot) = map.get_mut(name) else { continue };
            slot.addr.do_send(RemoveSubscriber { key: msg.key });
            slot.members = slot.members.saturating_sub(1);
            if slot.members == 0 {
                // Dropping the last address stops the room once its mailbox is drained.
                map.remove(name);
                self.stats.topics.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                if matches!(pattern, TopicPattern::Prefix(_)) {
                    self.stats.patterns.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
}

impl Handler<EventsAppended> for Dispatcher {
    type Result = ();

    /// Routes a batch and queues it for delivery; `msg.delivered` fires once every connection has it, so the
    /// storage actor reads the log no faster than batches are delivered (a backlog stays in the log).
    fn handle(&mut self, msg: EventsAppended, _: &mut Self::Context) {
        metrics::counter!("hub_events_dispatched_total").increment(msg.events.len() as u64);
        let lost = msg.lost.map(|reset| (reset, self.sessions.values().map(|(r, _)| r.clone()).collect::<Vec<_>>()));
        let mut per_room: HashMap<u64, (&Addr<TopicRoom>, Vec<u32>)> = HashMap::new();
        for (index, event) in msg.events.iter().enumerate() {
            for room in self.rooms_for(event.topic()) {
                per_room.entry(room.id).or_insert_with(|| (&room.addr, Vec::new())).1.push(index as u32);
            }
        }
        if per_room.is_empty() && lost.is_none() {
            let _ = msg.delivered.send(());
            return;
        }
        let answers = per_room
            .into_values()
            .map(|(room, indices)| {
                let (matched, answer) = oneshot::channel();
                room.do_send(Route { events: msg.events.clone(), indices, matched });
                answer
            })
            .collect();
        // The delivery loop lives as long as the dispatcher: the channel cannot be closed here.
        let _ = self.pipeline.send(PendingBatch { events: msg.events, lost, answers, delivered: msg.delivered });
    }
}

/// How a step is sent: see [`Deliver::spread`] and [`Deliver::send_now`]; a step the fan-out sends itself is shared
/// with its [`Senders`].
struct Step<'a> {
    spread: bool,
    send_now: bool,
    senders: &'a Senders,
}

/// Sends each connection its matches of one batch, merged across rooms, sorted by id, without duplicates.
///
/// One sort by (connection, event, subscription) groups, orders and de-duplicates at once. Frames are built once
/// per event and format (and subscription name, for WebSocket; nearly every connection uses `default`) and kept
/// in a short list per event, so a delivery costs a comparison or two, not a hash of its subscription's name.
fn deliver(events: &[SharedEvent], mut matches: Vec<Match>, step: Step<'_>) {
    let now = Utc::now();
    let Step { spread, send_now, senders } = step;
    matches.sort_unstable_by_key(|m| (m.key.session, m.index, m.key.generation));
    matches.dedup_by_key(|m| (m.key.session, m.index, m.key.generation));
    let connections = || matches.chunk_by(|a, b| a.key.session == b.key.session);
    // The helpers' shares first, each handed over in parts as it is built; the fan-out's thread sends the last
    // share. Only a step of one event is shared (the sessions write a spread one), and only its WebSocket
    // connections: an SSE delivery is written by the connection's worker, so the fan-out's part of it is a push
    // and a wake-up, which a helper would not make cheaper.
    let mut sharing = senders.step(if send_now && !spread { connections().count() } else { 0 });
    let mut frames: Vec<Vec<(FrameFormat, &str, Bytes)>> = vec![Vec::new(); events.len()];
    for session_matches in connections() {
        let target = &session_matches[0].subscriber.target;
        let items = match target {
            // Waiting long-polls read the events themselves: no frames to build.
            Target::Wake(_) => Items::new(),
            Target::Session(_) => session_matches
                .iter()
                .map(|m| {
                    let event = &events[m.index as usize];
                    let format = m.subscriber.format;
                    let name = match format {
                        FrameFormat { transport: Transport::WebSocket, profile: Profile::Hub } => {
                            m.subscriber.sub.as_str()
                        }
                        _ => "",
                    };
                    let built = &mut frames[m.index as usize];
                    let wire = match built.iter().find(|(f, n, _)| *f == format && *n == name) {
                        Some((_, _, wire)) => wire.clone(),
                        None => {
                            let wire = Delivery::wire_form(&build_frame(event, format, name), format.transport);
                            built.push((format, name, wire.clone()));
                            wire
                        }
                    };
                    Delivery { generation: m.key.generation, id: event.id(), wire }
                })
                .collect(),
        };
        let deliver = Deliver { lost: None, items, spread, send_now };
        let websocket = session_matches[0].subscriber.format.transport == Transport::WebSocket;
        let mine = if websocket && matches!(target, Target::Session(_)) {
            sharing.offer(target, deliver)
        } else {
            Some(deliver)
        };
        if let Some(deliver) = mine {
            target.deliver(deliver);
        }
    }
    sharing.finish();
    trace_fan_out(events, &matches);
    if let Some(newest) = events.last() {
        let lag = (now - newest.created_at).to_std().unwrap_or_default();
        metrics::histogram!("hub_dispatch_lag_seconds").record(lag.as_secs_f64());
    }
}

/// One `hub.deliver` span per event whose publisher's span was sampled, as a child of that span: a trace backend
/// then shows the publish, the append and the fan-out to N connections as one story. Never a span per delivery.
fn trace_fan_out(events: &[SharedEvent], matches: &[Match]) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let mut connections: Option<Vec<u32>> = None;
    for (index, event) in events.iter().enumerate() {
        let Some(parent) = crate::telemetry::event_parent(event.traceparent.as_deref()) else { continue };
        let counts = connections.get_or_insert_with(|| {
            let mut counts = vec![0u32; events.len()];
            for m in matches {
                counts[m.index as usize] += 1;
            }
            counts
        });
        let span = tracing::info_span!(
            "hub.deliver",
            event_id = event.id(),
            topic = event.topic(),
            subscriptions = counts[index]
        );
        // A span that is not recorded (filtered out) has no parent to set.
        let _ = span.set_parent(parent);
        drop(span.entered());
    }
}

/// The frame of one event in one format: on WebSocket, the hub profile's `event` frame for `sub`, or the
/// profile's object alone; on SSE, a block whose `id:` is always the hub's id, so `Last-Event-ID` resumes.
pub fn build_frame(event: &SharedEvent, format: FrameFormat, sub: &str) -> ByteString {
    match (format.transport, format.profile) {
        (Transport::WebSocket, Profile::Hub) => ByteString::from(event_frame(sub, event.json())),
        (Transport::WebSocket, profile) => ByteString::from(profile.render(&event.envelope, event.json())),
        (Transport::ServerSentEvents, Profile::Hub) => {
            ByteString::from(format!("id: {}\nevent: {}\ndata: {}\n\n", event.id(), event.topic(), event.json()))
        }
        (Transport::ServerSentEvents, profile) => ByteString::from(format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            event.id(),
            event.topic(),
            profile.render(&event.envelope, event.json())
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use protocol::{EventId, Filter, NewEvent, Scope, SubName, Topic};
    use storage::StoredEvent;

    use super::*;
    use crate::delivery::Subscriber;

    /// What a connection was sent, one entry per `Deliver`.
    #[derive(Debug, Clone, PartialEq)]
    enum Sent {
        Reset,
        Events(Vec<u64>),
    }

    /// A connection that records what it is sent.
    struct Recorder(Arc<Mutex<Vec<Sent>>>);

    impl crate::delivery::SessionSink for Recorder {
        fn deliver(&self, msg: Deliver) {
            let mut sent = self.0.lock().unwrap();
            if msg.lost.is_some() {
                sent.push(Sent::Reset);
            }
            if !msg.items.is_empty() {
                sent.push(Sent::Events(msg.items.iter().map(|d| d.id).collect()));
            }
        }
    }

    fn batch(ids: &[u64]) -> EventsAppended {
        let events = ids
            .iter()
            .map(|id| {
                let new = NewEvent::new(Topic::parse("t").unwrap(), Scope::default(), Default::default());
                Arc::new(StoredEvent::from_new(EventId::new(*id).unwrap(), Utc::now(), new))
            })
            .collect();
        EventsAppended { events, lost: None, delivered: oneshot::channel().0 }
    }

    /// A dispatcher with one connection subscribed to `t`, and what that connection is sent.
    async fn one_connection() -> (Addr<Dispatcher>, Arc<Mutex<Vec<Sent>>>) {
        let dispatcher = Dispatcher::new(Arc::new(HubStats::default()), 0).start();
        let received = Arc::new(Mutex::new(Vec::new()));
        let subscriber = Arc::new(Subscriber {
            key: SubKey { session: SessionId::new(), generation: 1 },
            sub: SubName::default_name(),
            filter: Filter::default(),
            format: FrameFormat { transport: Transport::WebSocket, profile: Profile::Hub },
            target: Target::Session(Arc::new(Recorder(received.clone()))),
        });
        let (joined, ack) = oneshot::channel();
        dispatcher.do_send(Join { subscriber, patterns: vec![TopicPattern::parse("t").unwrap()], joined });
        ack.await.unwrap();
        (dispatcher, received)
    }

    /// The event ids in what a connection was sent, in order.
    fn ids(sent: &[Sent]) -> Vec<u64> {
        sent.iter().flat_map(|s| if let Sent::Events(ids) = s { ids.clone() } else { Vec::new() }).collect()
    }

    /// Waits until `count` events have arrived (5 s at most); everything the connection was sent.
    async fn sent_once(received: &Mutex<Vec<Sent>>, count: usize) -> Vec<Sent> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ids(&received.lock().unwrap()).len() < count && std::time::Instant::now() < deadline {
            actix_web::rt::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        received.lock().unwrap().clone()
    }

    #[test]
    fn the_fan_out_sends_itself_only_after_idling_four_times_as_long_as_its_last_sending_step_took() {
        let mut pace = Pace::default();
        let start = Instant::now();
        assert!(pace.has_time(start), "the first step");
        pace.ended = Some(start);
        pace.sending = Some((start, Duration::from_millis(5)));
        assert!(!pace.has_time(start + Duration::from_millis(15)), "5 ms, a little less 15 ms after, times 4");
        assert!(pace.has_time(start + Duration::from_millis(20)));
        // A step that queued (under load) says nothing of what sending would take.
        pace.stepped(start, false);
        let ended = pace.ended.unwrap();
        assert_eq!(pace.sending, Some((start, Duration::from_millis(5))));
        // A slow step counts for less as time passes: 300 ms of it count for 246 ms 300 ms later, and ask for
        // 985 ms of idling; 1.5 s later they count for 106 ms and ask for 424.
        pace.sending = Some((ended, Duration::from_millis(300)));
        assert!(!pace.has_time(ended + Duration::from_millis(300)));
        assert!(pace.has_time(ended + Duration::from_millis(1500)));
        pace.stepped(Instant::now(), true);
        let (_, took) = pace.sending.unwrap();
        assert!(took < Duration::from_millis(5), "a step of nothing took {took:?}");
    }

    /// A connection that records each event it is sent, and on which thread.
    #[derive(Default)]
    struct ThreadRecorder(Mutex<Vec<(std::thread::ThreadId, u64)>>);

    impl crate::delivery::SessionSink for ThreadRecorder {
        fn deliver(&self, msg: Deliver) {
            let thread = std::thread::current().id();
            self.0.lock().unwrap().extend(msg.items.iter().map(|d| (thread, d.id)));
        }
    }

    /// `count` connections, those for which `sse` holds over SSE, the others over WebSocket; one match each for
    /// event 0, in no particular order (as rooms answer).
    fn connections(count: usize, sse: impl Fn(usize) -> bool) -> (Vec<Arc<ThreadRecorder>>, Vec<Match>) {
        let recorders: Vec<_> = (0..count).map(|_| Arc::new(ThreadRecorder::default())).collect();
        let matches = recorders
            .iter()
            .enumerate()
            .rev()
            .map(|(n, recorder)| {
                let transport = if sse(n) { Transport::ServerSentEvents } else { Transport::WebSocket };
                let subscriber = Arc::new(Subscriber {
                    key: SubKey { session: SessionId::new(), generation: 1 },
                    sub: SubName::default_name(),
                    filter: Filter::default(),
                    format: FrameFormat { transport, profile: Profile::Hub },
                    target: Target::Session(recorder.clone()),
                });
                Match { index: 0, key: subscriber.key, subscriber }
            })
            .collect();
        (recorders, matches)
    }

    #[test]
    fn a_step_the_fan_out_sends_itself_is_shared_with_its_helpers_and_ends_once_every_connection_has_it() {
        let senders = Senders::start(2);
        // One in four over SSE, which the fan-out's own thread delivers.
        let sse = |n: usize| n.is_multiple_of(4);
        let (recorders, matches) = connections(600, sse);
        let here = std::thread::current().id();
        // Sent by the fan-out, twice; queued; spread (the sessions write it, as for a step of several events).
        for (id, send_now, spread) in [(1, true, false), (2, true, false), (3, false, false), (4, true, true)] {
            deliver(&batch(&[id]).events, matches.clone(), Step { spread, send_now, senders: &senders });
            // The step has ended: every connection has the event.
            for recorder in &recorders {
                let got: Vec<u64> = recorder.0.lock().unwrap().iter().map(|(_, id)| *id).collect();
                assert_eq!(got, (1..=id).collect::<Vec<_>>());
            }
        }
        let threads = |id: u64| -> std::collections::HashSet<_> {
            recorders.iter().flat_map(|c| c.0.lock().unwrap().clone()).filter(|e| e.1 == id).map(|e| e.0).collect()
        };
        // 600 connections: three shares of 200, two of them sent by the helpers. Only WebSocket connections go to
        // helpers: the 450 fill both shares, and the fan-out's thread has the rest.
        assert_eq!(threads(1).len(), 3);
        for (n, recorder) in recorders.iter().enumerate().filter(|(n, _)| sse(*n)) {
            assert!(recorder.0.lock().unwrap().iter().all(|(thread, _)| *thread == here), "SSE connection {n}");
        }
        // A step that queues, or that the sessions write, is not shared: the connections' workers send it.
        assert_eq!(threads(3), [here].into());
        assert_eq!(threads(4), [here].into());
    }

    #[test]
    fn a_helpers_share_that_the_steps_websocket_connections_do_not_fill_ends_short() {
        let senders = Senders::start(2);
        // 300 connections make two shares; only 10 are over WebSocket, all for the first helper.
        let (recorders, matches) = connections(300, |n| n >= 10);
        deliver(&batch(&[1]).events, matches, Step { spread: false, send_now: true, senders: &senders });
        assert!(recorders.iter().all(|r| r.0.lock().unwrap().len() == 1));
        let here = std::thread::current().id();
        let by_helper = recorders.iter().filter(|r| r.0.lock().unwrap()[0].0 != here).count();
        assert_eq!(by_helper, 10);
    }

    #[actix_web::test]
    async fn batches_delivered_together_reach_a_connection_once_each_in_order() {
        let (dispatcher, received) = one_connection().await;
        // Back to back: the later ones queue while the first is routed, and are merged with each other.
        for ids in [&[1][..], &[2, 3], &[4, 5], &[6, 7]] {
            dispatcher.do_send(batch(ids));
        }
        let received = sent_once(&received, 7).await;
        assert_eq!(ids(&received), vec![1, 2, 3, 4, 5, 6, 7]);
        assert!(received.len() < 4, "queued batches go out together: {received:?}");
    }

    /// A loss inside a merged fan-out: the events before it go out first, then the reset, then the batch after
    /// it; a reset is never followed by an id at or below one already delivered.
    #[actix_web::test]
    async fn a_loss_in_merged_batches_is_told_between_the_events_before_and_after_it() {
        let (dispatcher, received) = one_connection().await;
        let mut after_loss = batch(&[10, 11]);
        after_loss.lost = Some(protocol::ResetInfo::history_truncated(10, 12));
        for appended in [batch(&[1]), batch(&[2, 3]), after_loss, batch(&[12])] {
            dispatcher.do_send(appended);
        }
        let received = sent_once(&received, 6).await;
        let reset_at = received.iter().position(|s| *s == Sent::Reset).expect("a reset was sent");
        assert_eq!(ids(&received[..reset_at]), vec![1, 2, 3], "{received:?}");
        assert_eq!(ids(&received[reset_at..]), vec![10, 11, 12], "{received:?}");
        assert_eq!(received.iter().filter(|s| **s == Sent::Reset).count(), 1);
    }
}
