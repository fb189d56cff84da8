//! One subscription's life, shared by every transport: join the rooms, learn the log's bounds, replay from the
//! resume point, then switch to live without a gap or a duplicate.
//!
//! While a subscription joins and replays, live deliveries are buffered. Replay reads the log until it reaches
//! the head as it stood *after* the rooms had the subscription, so every event is either read by replay or
//! delivered live afterwards; at the switch the buffer is drained, skipping what replay already sent. Nothing at
//! or below `through` is ever sent again, which removes the overlap. The buffer is bounded: when it overflows it
//! is dropped and replay simply reads further, since everything it held is in the log.

use bytestring::ByteString;
use protocol::{ResetInfo, SubName};
use storage::{LogBounds, LogQuery, Page, SharedEvent};

use crate::actors::subscriber::Delivery;

/// Live deliveries kept per subscription while it replays; past this, replay reads them from the log instead.
pub const MAX_BUFFERED: usize = 4096;

/// How many events one replay read asks for.
pub const REPLAY_PAGE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the rooms to have it, then for the log's bounds.
    Joining,
    Replaying,
    Live,
}

#[derive(Debug)]
pub struct Subscription {
    pub name: SubName,
    pub generation: u64,
    /// Its topic patterns (the rooms it joined) and filter.
    pub query: LogQuery,
    /// The client's resume point; `None` for live only.
    pub since: Option<u64>,
    pub phase: Phase,
    /// Everything up to this id has been sent or deliberately skipped.
    pub through: u64,
    buffer: Vec<Delivery>,
    overflowed: bool,
}

/// What to tell the client when the log's bounds are known.
#[derive(Debug, PartialEq, Eq)]
pub struct Start {
    pub head: u64,
    pub reset: Option<ResetInfo>,
}

/// What follows a replay page.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterPage {
    /// Read again from `through`.
    ReadMore,
    /// Replay is over: send `frames` (buffered live events), then, if `announce`, the `live` marker with `last_id`.
    Live { frames: Vec<ByteString>, announce: bool, last_id: u64 },
}

impl Subscription {
    pub fn new(name: SubName, generation: u64, query: LogQuery, since: Option<u64>) -> Self {
        Self {
            name,
            generation,
            query,
            since,
            phase: Phase::Joining,
            through: 0,
            buffer: Vec::new(),
            overflowed: false,
        }
    }

    /// A live delivery: the frame to write now, if any.
    pub fn on_live(&mut self, delivery: Delivery) -> Option<ByteString> {
        match self.phase {
            Phase::Live if delivery.id > self.through => {
                self.through = delivery.id;
                Some(delivery.frame)
            }
            Phase::Live => None,
            Phase::Joining | Phase::Replaying => {
                if self.buffer.len() >= MAX_BUFFERED {
                    self.buffer = Vec::new();
                    self.overflowed = true;
                } else {
                    self.buffer.push(delivery);
                }
                None
            }
        }
    }

    /// The rooms have the subscription and the log's bounds were read after that: replay starts.
    pub fn start(&mut self, bounds: LogBounds) -> Start {
        self.phase = Phase::Replaying;
        match self.since {
            Some(since) if bounds.truncates(since) => {
                self.through = bounds.head;
                Start { head: bounds.head, reset: Some(ResetInfo::history_truncated(bounds.earliest, bounds.head)) }
            }
            Some(since) => {
                self.through = since;
                Start { head: bounds.head, reset: None }
            }
            None => {
                // Live only: "from now" is the head; replay from there only closes the join window.
                self.through = bounds.head;
                Start { head: bounds.head, reset: None }
            }
        }
    }

    /// A replay page: the frames to write, and what comes next.
    pub fn on_page(
        &mut self,
        page: Page,
        frame_of: impl Fn(&SharedEvent) -> ByteString,
    ) -> (Vec<ByteString>, AfterPage) {
        let mut frames = Vec::with_capacity(page.events.len());
        for event in &page.events {
            if event.id() > self.through {
                self.through = event.id();
                frames.push(frame_of(event));
            }
        }
        self.through = self.through.max(page.through);
        if !page.complete {
            return (frames, AfterPage::ReadMore);
        }
        if self.overflowed {
            // Live events were dropped from the buffer while this read ran: read on from the log.
            self.overflowed = false;
            return (frames, AfterPage::ReadMore);
        }
        let mut live = Vec::new();
        for delivery in std::mem::take(&mut self.buffer) {
            if delivery.id > self.through {
                self.through = delivery.id;
                live.push(delivery.frame);
            }
        }
        self.phase = Phase::Live;
        (frames, AfterPage::Live { frames: live, announce: self.since.is_some(), last_id: self.through })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use protocol::{EventId, NewEvent, Scope, Topic};
    use storage::StoredEvent;

    use super::*;

    fn sub(since: Option<u64>) -> Subscription {
        Subscription::new(SubName::parse("s").unwrap(), 1, LogQuery::all(), since)
    }

    fn event(id: u64) -> SharedEvent {
        let new = NewEvent::new(Topic::parse("a").unwrap(), Scope::default(), Default::default());
        Arc::new(StoredEvent::from_new(EventId::new(id).unwrap(), Utc::now(), new))
    }

    fn delivery(id: u64) -> Delivery {
        Delivery { generation: 1, id, frame: ByteString::from(id.to_string()) }
    }

    fn frame(e: &SharedEvent) -> ByteString {
        ByteString::from(e.id().to_string())
    }

    #[test]
    fn replay_then_buffered_live_events_join_without_gap_or_duplicate() {
        let mut s = sub(Some(2));
        assert_eq!(s.on_live(delivery(5)), None, "buffered while joining");
        assert_eq!(s.start(LogBounds { head: 4, earliest: 1 }), Start { head: 4, reset: None });
        assert_eq!(s.on_live(delivery(6)), None, "buffered while replaying");
        let page = Page { events: vec![event(3), event(4), event(5)], through: 5, complete: true };
        let (frames, next) = s.on_page(page, frame);
        assert_eq!(frames, vec!["3", "4", "5"]);
        assert_eq!(next, AfterPage::Live { frames: vec![ByteString::from("6")], announce: true, last_id: 6 });
        assert_eq!(s.on_live(delivery(6)), None, "no duplicate");
        assert_eq!(s.on_live(delivery(7)), Some(ByteString::from("7")));
    }

    #[test]
    fn a_resume_point_older_than_the_history_gives_a_reset_and_continues_from_the_head() {
        let mut s = sub(Some(10));
        let start = s.start(LogBounds { head: 9000, earliest: 5000 });
        assert_eq!(start.reset, Some(ResetInfo::history_truncated(5000, 9000)));
        let (frames, next) = s.on_page(Page { events: vec![], through: 9000, complete: true }, frame);
        assert!(frames.is_empty());
        assert_eq!(next, AfterPage::Live { frames: vec![], announce: true, last_id: 9000 });
    }

    #[test]
    fn live_only_subscriptions_skip_what_was_before_the_head_and_announce_nothing() {
        let mut s = sub(None);
        s.on_live(delivery(3));
        s.on_live(delivery(5));
        s.start(LogBounds { head: 4, earliest: 1 });
        let (_, next) = s.on_page(Page { events: vec![], through: 4, complete: true }, frame);
        assert_eq!(next, AfterPage::Live { frames: vec![ByteString::from("5")], announce: false, last_id: 5 });
    }

    #[test]
    fn an_overflowing_buffer_makes_replay_read_on_instead_of_losing_events() {
        let mut s = sub(Some(0));
        s.start(LogBounds { head: 0, earliest: 1 });
        for id in 1..=(MAX_BUFFERED as u64 + 1) {
            s.on_live(delivery(id));
        }
        let (_, next) = s.on_page(Page { events: vec![], through: 0, complete: true }, frame);
        assert_eq!(next, AfterPage::ReadMore);
        let page = Page { events: vec![event(1), event(2)], through: 2, complete: true };
        let (frames, next) = s.on_page(page, frame);
        assert_eq!(frames.len(), 2);
        assert!(matches!(next, AfterPage::Live { .. }));
    }
}
