//! Wake-ups for waiting long-poll requests, shared by every request that waits on the same subscription.
//!
//! A long-poll client asks again the moment it is answered, so at a low event rate every delivery is a request that
//! waits. Joining and leaving the rooms per request cost two messages to the dispatcher's thread and a room entry
//! each time; instead, the requests waiting on the same topics and filter share one subscription of the
//! dispatcher's, whose deliveries wake them all ([`Target::Wake`]). It is joined when the first request waits on it
//! and left once none has for [`LINGER`] (clients come straight back).
//!
//! Exactness: a request registers before it reads the log, and the dispatcher delivers an event only once it is in
//! the log, so an event its read misses reaches the shared subscription after the request waits on it. A wake-up
//! can come for an event the request already read; it then reads nothing new and waits again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Addr;
use protocol::{Filter, Profile, SubName, TopicPattern};
use tokio::sync::{Notify, SetOnce, oneshot};

use crate::delivery::{FrameFormat, SessionId, SubKey, Subscriber, Target, Transport};
use crate::fanout::dispatcher::{Dispatcher, Join, Leave};

/// How long a shared subscription outlives its last waiting request.
pub const LINGER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WakeKey {
    topics: Vec<TopicPattern>,
    filter: Filter,
}

#[derive(Debug)]
struct Entry {
    notify: Arc<Notify>,
    /// Set once the dispatcher has joined the rooms: `true`, or `false` when it had stopped.
    joined: Arc<SetOnce<bool>>,
    key: SubKey,
    waiting: usize,
    idle_since: Option<Instant>,
}

/// The shared subscriptions of one hub.
#[derive(Debug)]
pub struct PollWakes {
    dispatcher: Addr<Dispatcher>,
    entries: Mutex<HashMap<WakeKey, Entry>>,
}

/// A request waiting on a shared subscription; dropping it stops the waiting.
pub struct Waiting<'a> {
    wakes: &'a PollWakes,
    key: WakeKey,
    /// Fired on every delivery to the subscription: enable a `notified()` before reading the log.
    pub notify: Arc<Notify>,
}

impl PollWakes {
    pub fn new(dispatcher: Addr<Dispatcher>) -> Self {
        Self { dispatcher, entries: Mutex::new(HashMap::new()) }
    }

    /// Waits on the subscription to `topics` with `filter`, joining it first when no request has lately.
    /// `None` when the dispatcher has stopped.
    pub async fn wait_on(&self, topics: &[TopicPattern], filter: &Filter) -> Option<Waiting<'_>> {
        let key = WakeKey { topics: topics.to_vec(), filter: filter.clone() };
        let (notify, joined) = {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let entry = entries.entry(key.clone()).or_insert_with(|| self.join(&key));
            entry.waiting += 1;
            entry.idle_since = None;
            (entry.notify.clone(), entry.joined.clone())
        };
        let waiting = Waiting { wakes: self, key, notify };
        joined.wait().await.then_some(waiting)
    }

    fn join(&self, key: &WakeKey) -> Entry {
        let notify = Arc::new(Notify::new());
        let joined = Arc::new(SetOnce::new());
        let sub_key = SubKey { session: SessionId::new(), generation: 1 };
        let subscriber = Arc::new(Subscriber {
            key: sub_key,
            sub: SubName::default_name(),
            filter: key.filter.clone(),
            // The dispatcher builds no frames for a wake-up: the format is never used.
            format: FrameFormat { transport: Transport::ServerSentEvents, profile: Profile::Hub },
            target: Target::Wake(notify.clone()),
        });
        let (ack, acked) = oneshot::channel();
        self.dispatcher.do_send(Join { subscriber, patterns: key.topics.clone(), joined: ack });
        // Not awaited by the first request itself: if it went away, the others would wait on nothing.
        let set = joined.clone();
        actix_web::rt::spawn(async move {
            let _ = set.set(acked.await.is_ok());
        });
        Entry { notify, joined, key: sub_key, waiting: 0, idle_since: None }
    }

    /// Leaves the subscriptions no request has waited on for [`LINGER`].
    pub fn sweep(&self, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|key, entry| {
            let idle = entry.waiting == 0 && entry.idle_since.is_some_and(|since| now >= since + LINGER);
            if idle {
                self.dispatcher.do_send(Leave { key: entry.key, patterns: key.topics.clone() });
            }
            !idle
        });
    }

    /// How many shared subscriptions are held, and how many requests wait on them.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        (entries.len(), entries.values().map(|e| e.waiting).sum())
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut entries = self.wakes.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(&self.key) {
            entry.waiting -= 1;
            if entry.waiting == 0 {
                entry.idle_since = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix::Actor;
    use chrono::Utc;
    use protocol::{EventId, NewEvent, Scope, Topic};
    use storage::{EventsAppended, StoredEvent};

    use super::*;
    use crate::telemetry::stats::HubStats;

    fn appended(id: u64, topic: &str) -> EventsAppended {
        let new = NewEvent::new(Topic::parse(topic).unwrap(), Scope::default(), Default::default());
        let event = Arc::new(StoredEvent::from_new(EventId::new(id).unwrap(), Utc::now(), new));
        EventsAppended { events: vec![event].into(), lost: None, delivered: oneshot::channel().0 }
    }

    #[actix_web::test]
    async fn requests_on_one_subscription_share_it_are_all_woken_and_it_is_left_once_idle() {
        let dispatcher = Dispatcher::new(Arc::new(HubStats::default()), 0).start();
        let wakes = PollWakes::new(dispatcher.clone());
        let topics = [TopicPattern::parse("t").unwrap()];
        let (first, second) = (
            wakes.wait_on(&topics, &Filter::default()).await.unwrap(),
            wakes.wait_on(&topics, &Filter::default()).await.unwrap(),
        );
        let other = wakes.wait_on(&[TopicPattern::parse("u").unwrap()], &Filter::default()).await.unwrap();
        assert_eq!(wakes.counts(), (2, 3), "one subscription per topics and filter");
        let notifies = [first.notify.clone(), second.notify.clone(), other.notify.clone()];
        let (woken_first, woken_second, woken_other) =
            (notifies[0].notified(), notifies[1].notified(), notifies[2].notified());
        tokio::pin!(woken_first, woken_second, woken_other);
        for woken in [woken_first.as_mut(), woken_second.as_mut(), woken_other.as_mut()] {
            woken.enable();
        }

        dispatcher.do_send(appended(1, "t"));

        let within = Duration::from_secs(5);
        tokio::time::timeout(within, woken_first).await.expect("the first request is woken");
        tokio::time::timeout(within, woken_second).await.expect("the second request is woken");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), woken_other).await.is_err(),
            "a request on another topic is not woken"
        );
        drop((first, second, other));
        assert_eq!(wakes.counts(), (2, 0));
        wakes.sweep(Instant::now());
        assert_eq!(wakes.counts(), (2, 0), "kept for the clients that come straight back");
        wakes.sweep(Instant::now() + LINGER);
        assert_eq!(wakes.counts(), (0, 0), "left once idle for LINGER");
    }
}
