//! The storage actor: follows the log from a cursor and hands new events to dispatch, in id order.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use tracing::{info, warn};

use crate::event::{LogQuery, SharedEvent};
use crate::event_log::{EventLog, LiveFeed};
use crate::recent::RecentEvents;

/// Batches handed to dispatch and not yet delivered; past this the storage actor waits before reading on.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// New events, in strictly increasing id order, following the previous batch without a gap unless `lost` says
/// otherwise. Sent with `do_send`, which keeps the order; dispatch fires `delivered` once the batch has been handed
/// to every connection.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct EventsAppended {
    pub events: Arc<[SharedEvent]>,
    /// Events between the previous batch and this one are gone (retention or a length cap overtook the storage
    /// actor, or the log was replaced, as by a Redis that restarted empty): every subscription that had not passed
    /// them must be told, before this batch's events, with this reset.
    pub lost: Option<protocol::ResetInfo>,
    pub delivered: tokio::sync::oneshot::Sender<()>,
}

/// What the storage actor knows about the log's health, shared with `/readyz` and `/api/health/pubsub`.
#[derive(Debug, Default)]
pub struct LogHealth {
    /// The last read of the log succeeded.
    reachable: AtomicBool,
    /// The wake-up feed (for PostgreSQL, the `LISTEN` connection) is open and the cursor has caught up once on it.
    attached: AtomicBool,
    /// The newest id handed to dispatch.
    dispatched: AtomicU64,
    /// How many times the feed was lost and opened again.
    reconnects: AtomicU64,
    /// How many times events were lost under the storage actor (see [`EventsAppended::lost`]).
    losses: AtomicU64,
}

impl LogHealth {
    /// Ready: the log answers and the live feed is attached.
    pub fn is_ready(&self) -> bool {
        self.reachable.load(Ordering::Acquire) && self.attached.load(Ordering::Acquire)
    }

    pub fn dispatched(&self) -> u64 {
        self.dispatched.load(Ordering::Acquire)
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    fn set(&self, reachable: bool, attached: bool) {
        self.reachable.store(reachable, Ordering::Release);
        self.attached.store(attached, Ordering::Release);
    }
}

/// How the storage actor follows the log.
#[derive(Debug, Clone)]
pub struct TailSettings {
    /// The most events one read (and one dispatched batch) holds.
    pub batch: usize,
    /// Read the log this often even without a wake-up, so a lost notification only adds latency.
    pub safety_interval: Duration,
    /// Run retention this often.
    pub prune_interval: Duration,
    /// First and longest wait before opening the feed again after losing it.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for TailSettings {
    fn default() -> Self {
        Self {
            batch: 1000,
            safety_interval: Duration::from_secs(1),
            prune_interval: Duration::from_secs(60),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// Owns the event log's live feed, follows the log from a cursor, and sends every new event to dispatch exactly
/// once and in id order; also runs retention.
pub struct EventLogActor {
    log: Arc<dyn EventLog>,
    dispatch: Recipient<EventsAppended>,
    health: Arc<LogHealth>,
    settings: TailSettings,
    recent: Option<Arc<RecentEvents>>,
    cursor: u64,
}

impl EventLogActor {
    /// Follows `log` after `cursor`: the head read before the hub takes its first subscription. A subscription
    /// starting "now" starts from a head read later, so every event it waits for comes after the cursor and is
    /// dispatched. (A cursor read by the actor once running could pass events published after a subscription had
    /// started: the subscription would never get them.)
    pub fn new(
        log: Arc<dyn EventLog>,
        dispatch: Recipient<EventsAppended>,
        health: Arc<LogHealth>,
        settings: TailSettings,
        cursor: u64,
    ) -> Self {
        health.dispatched.store(cursor, Ordering::Release);
        Self { log, dispatch, health, settings, recent: None, cursor }
    }

    /// Adds every page read to `recent` before dispatch sees it, and says there whether the feed is attached.
    pub fn with_recent(mut self, recent: Arc<RecentEvents>) -> Self {
        self.recent = Some(recent);
        self
    }
}

impl Actor for EventLogActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let follower = Follower {
            log: self.log.clone(),
            dispatch: self.dispatch.clone(),
            health: self.health.clone(),
            settings: self.settings.clone(),
            recent: self.recent.clone(),
        };
        ctx.spawn(actix::fut::wrap_future(follower.run(self.cursor)));
        ctx.run_interval(self.settings.prune_interval, |act, ctx| {
            let log = act.log.clone();
            ctx.spawn(actix::fut::wrap_future(prune(log)));
        });
    }
}

/// Runs each topic policy's retention once, and says what it did in the log and in `/metrics`.
async fn prune(log: Arc<dyn EventLog>) {
    match log.prune().await {
        Ok(removed) => {
            for (policy, n) in log.policies().iter().zip(removed) {
                if n > 0 {
                    info!(policy = %policy.name, removed = n, "retention removed old events");
                    metrics::counter!("hub_policy_removed_total", "policy" => policy.name.clone()).increment(n);
                }
            }
        }
        Err(e) => warn!(error = %e, "retention failed; will retry"),
    }
    match log.policy_states().await {
        Ok(states) => {
            for state in states {
                let oldest = state.oldest.map_or(f64::NAN, |id| id as f64);
                metrics::gauge!("hub_policy_oldest_id", "policy" => state.name.clone()).set(oldest);
                metrics::gauge!("hub_policy_removed_through", "policy" => state.name).set(state.removed_through as f64);
            }
        }
        Err(e) => warn!(error = %e, "reading the topic policies' state failed; will retry"),
    }
}

/// The state of the follow loop, owned by the future the actor spawns.
struct Follower {
    log: Arc<dyn EventLog>,
    dispatch: Recipient<EventsAppended>,
    health: Arc<LogHealth>,
    settings: TailSettings,
    recent: Option<Arc<RecentEvents>>,
}

impl Follower {
    fn set_health(&self, reachable: bool, attached: bool) {
        self.health.set(reachable, attached);
        if let Some(recent) = &self.recent {
            recent.set_attached(reachable && attached);
        }
    }

    async fn run(self, mut cursor: u64) {
        let mut backoff = self.settings.backoff_min;
        info!(cursor, provider = self.log.provider(), "following the event log");
        let all = LogQuery::all();
        let mut in_flight = VecDeque::new();
        loop {
            let mut feed = match self.log.live_feed().await {
                Ok(feed) => feed,
                Err(e) => {
                    warn!(error = %e, "cannot open the live feed; retrying");
                    self.set_health(false, false);
                    backoff = self.pause(backoff).await;
                    continue;
                }
            };
            // Whatever was appended while the feed was closed is found by reading from the cursor.
            loop {
                if let Err(e) = self.catch_up(&mut cursor, &all, feed.as_mut(), &mut in_flight).await {
                    warn!(error = %e, "reading the event log failed");
                    break;
                }
                self.set_health(true, true);
                backoff = self.settings.backoff_min;
                match tokio::time::timeout(self.settings.safety_interval, feed.changed(cursor)).await {
                    Ok(Ok(())) | Err(_) => continue,
                    Ok(Err(e)) => {
                        warn!(error = %e, "the live feed was lost; reconnecting");
                        break;
                    }
                }
            }
            self.set_health(false, false);
            self.health.reconnects.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("hub_listener_reconnects_total", "backend" => self.log.provider()).increment(1);
            backoff = self.pause(backoff).await;
        }
    }

    /// Reads everything after the cursor and hands it to dispatch, with at most `MAX_BATCHES_IN_FLIGHT` batches
    /// not yet delivered.
    async fn catch_up(
        &self,
        cursor: &mut u64,
        all: &LogQuery,
        feed: &mut dyn LiveFeed,
        in_flight: &mut VecDeque<tokio::sync::oneshot::Receiver<()>>,
    ) -> crate::Result<()> {
        loop {
            // A feed that carries the events serves them itself; the others are wake-ups, and the log is read.
            let page = match feed.read(*cursor, self.settings.batch).await? {
                Some(page) => page,
                None => self.log.read_after(*cursor, all, self.settings.batch).await?,
            };
            let lost = page.skips(*cursor).then(|| page.bounds.reset());
            if let Some(reset) = &lost {
                warn!(
                    cursor = *cursor,
                    earliest = reset.earliest_id,
                    head = reset.head,
                    "events after the cursor are gone from the log; subscriptions get a reset"
                );
                self.health.losses.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("hub_log_losses_total").increment(1);
                // Nothing between the cursor and the retained history can still come.
                *cursor = page.bounds.earliest - 1;
            }
            if let Some(recent) = &self.recent {
                // Before dispatch: a connection woken for these events finds them there.
                recent.extend(*cursor, &page);
            }
            if !page.events.is_empty() || lost.is_some() {
                while in_flight.len() >= MAX_BATCHES_IN_FLIGHT {
                    // An error means dispatch dropped the batch unanswered: it had no subscriber, or it stopped.
                    if let Some(oldest) = in_flight.pop_front() {
                        let _ = oldest.await;
                    }
                }
                let newest = page.events.last().map_or(*cursor, |e| e.id());
                let (delivered, is_delivered) = tokio::sync::oneshot::channel();
                self.dispatch.do_send(EventsAppended { events: page.events.into(), lost, delivered });
                in_flight.push_back(is_delivered);
                self.health.dispatched.store(newest, Ordering::Release);
            }
            *cursor = page.through.max(*cursor);
            if page.complete {
                return Ok(());
            }
        }
    }

    async fn pause(&self, backoff: Duration) -> Duration {
        tokio::time::sleep(backoff).await;
        (backoff * 2).min(self.settings.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use protocol::{NewEvent, Scope, Topic};
    use serde_json::Map;

    use super::*;
    use crate::{MemoryLog, Retention};

    struct Collector(Arc<Mutex<Vec<u64>>>);

    impl Actor for Collector {
        type Context = Context<Self>;
    }

    impl Handler<EventsAppended> for Collector {
        type Result = ();
        fn handle(&mut self, msg: EventsAppended, _: &mut Self::Context) {
            self.0.lock().unwrap().extend(msg.events.iter().map(|e| e.id()));
        }
    }

    /// Takes batches but confirms none until told to.
    struct Stalled(Arc<Mutex<Vec<tokio::sync::oneshot::Sender<()>>>>);

    impl Actor for Stalled {
        type Context = Context<Self>;
    }

    impl Handler<EventsAppended> for Stalled {
        type Result = ();
        fn handle(&mut self, msg: EventsAppended, _: &mut Self::Context) {
            self.0.lock().unwrap().push(msg.delivered);
        }
    }

    #[actix::test]
    async fn a_dispatcher_that_falls_behind_stops_the_reading_instead_of_queueing_batches() {
        let log = Arc::new(MemoryLog::new(Retention::default()));
        let held = Arc::new(Mutex::new(Vec::new()));
        let stalled = Stalled(held.clone()).start();
        let health = Arc::new(LogHealth::default());
        let settings = TailSettings { batch: 1, ..TailSettings::default() };
        let _actor = EventLogActor::new(log.clone(), stalled.recipient(), health.clone(), settings, 0).start();
        while !health.is_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        for _ in 0..10 {
            log.append(vec![event()]).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = held.lock().unwrap().len();
        for delivered in held.lock().unwrap().drain(..) {
            delivered.send(()).unwrap();
        }
        while health.dispatched() < 10 {
            for delivered in held.lock().unwrap().drain(..) {
                let _ = delivered.send(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        assert_eq!(waiting, MAX_BATCHES_IN_FLIGHT, "batches handed over before any was confirmed");
    }

    fn event() -> NewEvent {
        NewEvent::new(Topic::parse("a").unwrap(), Scope::default(), Map::new())
    }

    /// The cursor is the head before the hub took subscriptions: what was appended after it and before the actor
    /// ran (a subscriber may already wait for it) is dispatched too, and nothing before it.
    #[actix::test]
    async fn every_event_after_the_cursor_is_dispatched_once_in_order_even_if_appended_before_start() {
        let log = Arc::new(MemoryLog::new(Retention::default()));
        log.append(vec![event()]).await.unwrap(); // before the cursor: history, not live
        let cursor = log.bounds(&LogQuery::all()).await.unwrap().head;
        log.append(vec![event()]).await.unwrap(); // after the cursor, before the actor runs
        let seen = Arc::new(Mutex::new(Vec::new()));
        let collector = Collector(seen.clone()).start();
        let health = Arc::new(LogHealth::default());
        let settings = TailSettings::default();
        let _actor = EventLogActor::new(log.clone(), collector.recipient(), health.clone(), settings, cursor).start();
        while !health.is_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..50 {
            log.append(vec![event(), event()]).await.unwrap();
        }
        while health.dispatched() < 102 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(*seen.lock().unwrap(), (2..=102).collect::<Vec<_>>());
    }
}
