//! The newest events the storage actor has read, kept in memory so that reads near the head of the log (a
//! long-poll's next request, a client resuming a moment back, a subscription that starts live) are answered
//! without asking the backend.
//!
//! The window holds every event with an id in `(start, head]`, in id order, all topics: the storage actor reads
//! the log without a gap and adds each page before it hands the page to dispatch, so anything a connection is
//! woken for is already here. A read is answered from the window only when it can be answered exactly:
//! - the read has events to return, or the storage actor is attached to the live feed and has caught up on it:
//!   while the feed is lost the window stops growing but stays exact up to its head, so it still answers reads
//!   and subscriptions that start inside it (a client reconnecting while a NATS stream elects its leader, or a
//!   database restarts, gets what it missed at once; what is stored meanwhile reaches it live once the storage
//!   actor reads it), and a read at its head asks the backend, which may hold more;
//! - the read starts inside the window (`start ≤ after ≤ head`): a position above `head` may be one another hub
//!   has already given out, and only the backend knows whether it exists; one below `start` is older history;
//! - what it would return is younger than the retention (`max_age`): older events may be gone from the backend,
//!   which then says `reset`, and the answer must not depend on which hub the client asked;
//! - the window holds every event this hub had appended (acked to its publisher) when the read began: a client
//!   that publishes and then subscribes, reads or resumes on the same hub finds its own events in the answer, not
//!   only after it (its replay before `live`, its long-poll's first answer), as when the backend answers. A read
//!   that finds the window behind waits for it ([`caught_up`](RecentEvents::caught_up): the few milliseconds the
//!   storage actor takes to read what was appended), and goes to the backend if it does not catch up in
//!   [`CATCH_UP`].
//!
//! The answer's `through` is the window's head, which may be a few milliseconds behind the backend's (events
//! another hub or a service appended): the reader asks again from there, and whatever follows is dispatched to it
//! live, so nothing is skipped.

use std::collections::VecDeque;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use crate::event::{LogBounds, LogQuery, Page, SharedEvent};

/// The most JSON the window holds, whatever its capacity in events: large payloads shorten it instead of
/// growing the hub.
pub const MAX_WINDOW_BYTES: usize = 32 << 20;

/// How long a read waits for the window to hold what this hub appended before it asks the backend.
pub const CATCH_UP: Duration = Duration::from_millis(250);

/// The newest events, in a window of at most `capacity` events and [`MAX_WINDOW_BYTES`] of their JSON.
#[derive(Debug)]
pub struct RecentEvents {
    capacity: usize,
    max_bytes: usize,
    max_age: Duration,
    attached: AtomicBool,
    /// The newest id this hub appended.
    appended: AtomicU64,
    /// The window's head, for reads waiting for it to reach what was appended.
    head: watch::Sender<u64>,
    window: RwLock<Window>,
}

#[derive(Debug, Default)]
struct Window {
    /// Every event with an id in `(start, head]` is in `events`.
    start: u64,
    head: u64,
    /// The storage actor has given the window a first position.
    begun: bool,
    events: VecDeque<SharedEvent>,
    /// The JSON length of `events`.
    bytes: usize,
}

impl RecentEvents {
    /// A window of the newest `capacity` events, none older than `max_age` answered.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        Self::with_max_bytes(capacity, MAX_WINDOW_BYTES, max_age)
    }

    fn with_max_bytes(capacity: usize, max_bytes: usize, max_age: Duration) -> Self {
        let window = RwLock::new(Window::default());
        let (appended, head) = (AtomicU64::new(0), watch::Sender::new(0));
        Self { capacity, max_bytes, max_age, attached: AtomicBool::new(false), appended, head, window }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Window> {
        // The window is plain data updated in one place; a panic there leaves it no worse than any state.
        self.window.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Window> {
        self.window.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The storage actor is attached to the live feed and caught up (`true`), or lost it (`false`).
    pub fn set_attached(&self, attached: bool) {
        self.attached.store(attached, Ordering::Release);
    }

    /// This hub appended events up to `newest`.
    pub fn appended(&self, newest: u64) {
        self.appended.fetch_max(newest, Ordering::AcqRel);
    }

    /// Whether the window holds everything this hub had appended when the call began, waiting [`CATCH_UP`] at
    /// most for the storage actor to read it; a read from the window is exact for this hub's own writes only
    /// after `true`.
    pub async fn caught_up(&self) -> bool {
        let appended = self.appended.load(Ordering::Acquire);
        if *self.head.borrow() >= appended {
            return true;
        }
        let mut head = self.head.subscribe();
        matches!(tokio::time::timeout(CATCH_UP, head.wait_for(|head| *head >= appended)).await, Ok(Ok(_)))
    }

    /// The storage actor read `page` of every event after `after`: the window grows by it, or starts again at
    /// `after` when the page does not follow the window (the actor's first read, or events lost under it).
    pub fn extend(&self, after: u64, page: &Page) {
        let mut window = self.write();
        let from = if page.skips(after) { page.bounds.earliest - 1 } else { after };
        if !window.begun || from != window.head {
            window.events.clear();
            window.bytes = 0;
            window.start = from;
            window.head = from;
            window.begun = true;
        }
        for event in &page.events {
            if event.id() > window.head {
                window.head = event.id();
                window.bytes += event.json().len();
                window.events.push_back(event.clone());
            }
        }
        window.head = window.head.max(page.through);
        while window.events.len() > self.capacity || window.bytes > self.max_bytes {
            let Some(oldest) = window.events.pop_front() else { break };
            window.start = oldest.id();
            window.bytes -= oldest.json().len();
        }
        self.head.send_replace(window.head);
    }

    /// The bounds a subscription starting at `since` (`None`: live only) may start from, when the window can
    /// answer its replay: its head, and its start as the earliest id.
    pub fn bounds_for(&self, since: Option<u64>) -> Option<LogBounds> {
        let window = self.read();
        let bounds = LogBounds { head: window.head, earliest: window.start + 1 };
        match since {
            None if window.begun => Some(bounds),
            Some(since) if self.first_after(&window, since).is_some() => Some(bounds),
            _ => None,
        }
    }

    /// Matching events after `after`, at most `limit`, when the window can answer exactly (see the module).
    pub fn read_after(&self, after: u64, query: &LogQuery, limit: usize) -> Option<Page> {
        let window = self.read();
        let first = self.first_after(&window, after)?;
        if first == window.events.len() && !self.attached.load(Ordering::Acquire) {
            // At the head of a window the feed no longer extends: only the backend knows what came after.
            return None;
        }
        let mut events = Vec::new();
        for event in window.events.range(first..) {
            if query.matches(event) {
                events.push(event.clone());
                if events.len() == limit {
                    break;
                }
            }
        }
        let full = events.len() == limit;
        let through = if full { events.last().map_or(after, |e| e.id()) } else { window.head };
        let bounds = LogBounds { head: window.head, earliest: window.start + 1 };
        Some(Page { events, through, complete: !full, bounds })
    }

    /// Where a read after `after` starts in the window (the index of the first event above it), when the read is
    /// the window's to answer: inside it, and nothing it would return old enough for retention to have removed it
    /// from the backend.
    fn first_after(&self, window: &Window, after: u64) -> Option<usize> {
        if !window.begun || after < window.start || after > window.head {
            return None;
        }
        let first = window.events.partition_point(|e| e.id() <= after);
        let oldest_allowed = Utc::now() - self.max_age;
        window.events.get(first).is_none_or(|e| e.created_at > oldest_allowed).then_some(first)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::DateTime;
    use protocol::{EventId, NewEvent, Scope, Topic, TopicPattern};
    use serde_json::Map;

    use super::*;
    use crate::StoredEvent;

    fn stored(id: u64, topic: &str, at: DateTime<Utc>) -> SharedEvent {
        let new = NewEvent::new(Topic::parse(topic).unwrap(), Scope::default(), Map::new());
        Arc::new(StoredEvent::from_new(EventId::new(id).unwrap(), at, new))
    }

    fn page(ids: std::ops::RangeInclusive<u64>, through: u64) -> Page {
        let events = ids.map(|id| stored(id, if id % 2 == 0 { "even" } else { "odd" }, Utc::now())).collect();
        Page { events, through, complete: true, bounds: LogBounds { head: through, earliest: 1 } }
    }

    fn topic(name: &str) -> LogQuery {
        LogQuery::new(vec![TopicPattern::parse(name).unwrap()], Default::default())
    }

    fn ids(page: &Page) -> Vec<u64> {
        page.events.iter().map(|e| e.id()).collect()
    }

    fn window(capacity: usize) -> RecentEvents {
        let recent = RecentEvents::new(capacity, Duration::from_secs(60));
        recent.set_attached(true);
        recent
    }

    #[test]
    fn a_read_inside_the_window_gets_the_matching_events_up_to_its_head() {
        let recent = window(100);
        recent.extend(10, &page(11..=20, 20));

        let answer = recent.read_after(14, &topic("even"), 100).unwrap();
        assert_eq!(ids(&answer), vec![16, 18, 20]);
        assert_eq!((answer.through, answer.complete), (20, true));
        let limited = recent.read_after(10, &LogQuery::all(), 3).unwrap();
        assert_eq!((ids(&limited), limited.through, limited.complete), (vec![11, 12, 13], 13, false));
        assert_eq!(ids(&recent.read_after(20, &LogQuery::all(), 10).unwrap()), Vec::<u64>::new());
    }

    #[test]
    fn reads_before_the_window_or_after_its_head_go_to_the_backend() {
        let recent = window(5);
        recent.extend(10, &page(11..=20, 20));

        assert!(recent.read_after(14, &LogQuery::all(), 10).is_none(), "evicted: the window starts at 15");
        assert_eq!(ids(&recent.read_after(15, &LogQuery::all(), 10).unwrap()), vec![16, 17, 18, 19, 20]);
        assert!(recent.read_after(21, &LogQuery::all(), 10).is_none(), "another hub may be ahead");
        assert!(recent.bounds_for(Some(21)).is_none());
    }

    /// A stream electing its leader, a database restarting: the feed is lost and the backend does not answer. A
    /// client reconnecting then gets what it missed from the window as it stood, and starts from its head; only a
    /// read at that head, where the backend may hold more, is the backend's.
    #[test]
    fn a_window_that_lost_its_feed_still_answers_up_to_its_head() {
        let recent = window(5);
        recent.extend(10, &page(11..=20, 20));
        recent.set_attached(false);

        let answer = recent.read_after(17, &LogQuery::all(), 10).unwrap();
        assert_eq!((ids(&answer), answer.through, answer.complete), (vec![18, 19, 20], 20, true));
        assert_eq!(recent.bounds_for(Some(17)), Some(LogBounds { head: 20, earliest: 16 }));
        assert_eq!(recent.bounds_for(None), Some(LogBounds { head: 20, earliest: 16 }));
        assert!(recent.read_after(20, &LogQuery::all(), 10).is_none(), "at the head: only the backend knows more");
        assert!(recent.read_after(14, &LogQuery::all(), 10).is_none(), "before the window");
        recent.set_attached(true);
        assert_eq!(ids(&recent.read_after(20, &LogQuery::all(), 10).unwrap()), Vec::<u64>::new());
    }

    #[test]
    fn the_window_is_bounded_by_the_bytes_of_its_events_as_well() {
        let events: Vec<SharedEvent> = (11..=20).map(|id| stored(id, "a", Utc::now())).collect();
        let one = events[0].json().len();
        let recent = RecentEvents::with_max_bytes(100, one * 3, Duration::from_secs(60));
        recent.set_attached(true);
        recent.extend(10, &Page { events, through: 20, complete: true, bounds: LogBounds { head: 20, earliest: 11 } });

        assert!(recent.read_after(16, &LogQuery::all(), 10).is_none());
        assert_eq!(ids(&recent.read_after(17, &LogQuery::all(), 10).unwrap()), vec![18, 19, 20]);
    }

    #[test]
    fn a_page_that_does_not_follow_the_window_starts_it_again() {
        let recent = window(100);
        recent.extend(10, &page(11..=12, 12));
        recent.extend(30, &page(31..=31, 31));
        assert!(recent.read_after(12, &LogQuery::all(), 10).is_none());

        let mut lost = page(50..=51, 51);
        lost.bounds.earliest = 50;
        recent.extend(31, &lost);
        assert!(recent.read_after(31, &LogQuery::all(), 10).is_none(), "41..49 are gone: the backend says reset");
        assert_eq!(ids(&recent.read_after(49, &LogQuery::all(), 10).unwrap()), vec![50, 51]);
        assert_eq!(recent.bounds_for(Some(49)), Some(LogBounds { head: 51, earliest: 50 }));
    }

    /// A client that publishes and then reads on the same hub gets its own events in the answer: a read waits
    /// for the window to hold what was appended before it began, and not for what is appended while it waits.
    #[tokio::test]
    async fn a_read_waits_for_the_window_to_hold_what_this_hub_appended_before_it() {
        let recent = Arc::new(window(100));
        recent.extend(10, &page(11..=12, 12));
        assert!(recent.caught_up().await, "nothing appended here yet");
        recent.appended(15);
        let waiting = tokio::spawn({
            let recent = recent.clone();
            async move { recent.caught_up().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "answered before the window held event 15");
        recent.appended(99);
        recent.extend(12, &page(13..=15, 15));
        assert!(waiting.await.unwrap(), "held back by an append made while it waited");
        assert!(!recent.caught_up().await, "event 99 never reached the window: the backend answers");
    }

    #[test]
    fn events_older_than_the_retention_are_left_to_the_backend() {
        let recent = window(100);
        let old = Utc::now() - chrono::Duration::seconds(120);
        let events = vec![stored(1, "a", old), stored(2, "a", Utc::now())];
        recent.extend(0, &Page { events, through: 2, complete: true, bounds: LogBounds { head: 2, earliest: 1 } });

        assert!(recent.read_after(0, &LogQuery::all(), 10).is_none());
        assert!(recent.bounds_for(Some(0)).is_none());
        assert_eq!(ids(&recent.read_after(1, &LogQuery::all(), 10).unwrap()), vec![2]);
    }
}
