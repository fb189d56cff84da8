//! One subscription's life, shared by every transport: join the rooms, learn the log's bounds, replay from the
//! resume point, then switch to live without a gap or a duplicate.
//!
//! While a subscription joins and replays, live deliveries are buffered. Replay reads the log until it reaches
//! the head as it stood *after* the rooms had the subscription, so every event is either read by replay or
//! delivered live afterwards; at the switch the buffer is drained, skipping what replay already sent. Nothing at
//! or below `through` is ever sent again, which removes the overlap. The buffer is bounded: when it overflows it
//! is dropped and replay simply reads further, since everything it held is in the log.
//!
//! Events can also vanish from under a subscription: retention or a length cap can overtake a slow replay, and a
//! Redis log that restarted empty starts a new epoch above every old id. Ids are dense, so both show the same way:
//! the retained history starts above `through + 1`. A replay page says so itself (its bounds are read with it);
//! live subscriptions learn it from the storage actor through dispatch. Either way the subscription sends a
//! `reset`, moves `through` to just before the retained history, and carries on: never silence, never an id
//! delivered twice.

use bytes::Bytes;
use bytestring::ByteString;
use protocol::{ResetInfo, SubName};
use storage::{LogBounds, LogQuery, Page, SharedEvent};

use crate::delivery::{Delivery, FrameFormat};

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
    /// How its events are written (replay builds its frames with it; live ones come built).
    pub format: FrameFormat,
    /// The client's resume point; `None` for live only.
    pub since: Option<u64>,
    /// Asked for its last events instead: found once it joined its rooms, which sets `since`.
    pub tail: Option<usize>,
    pub phase: Phase,
    /// Everything up to this id has been sent or deliberately skipped.
    pub through: u64,
    buffer: Vec<Delivery>,
    overflowed: bool,
    /// Events were lost under the storage actor while this subscription joined or replayed: checked when it
    /// goes live, unless a replay page already said so.
    lost: Option<ResetInfo>,
}

/// What to tell the client when the log's bounds are known.
#[derive(Debug, PartialEq, Eq)]
pub struct Start {
    pub head: u64,
    pub reset: Option<ResetInfo>,
}

/// What a replay page gives: maybe a reset (events before the page are gone), the page's frames, what comes next.
#[derive(Debug, PartialEq, Eq)]
pub struct PageOutcome {
    pub reset: Option<Reset>,
    pub frames: Vec<ByteString>,
    pub next: AfterPage,
}

/// A reset to send, and the position the subscription stands at after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    pub info: ResetInfo,
    pub through: u64,
}

/// What follows a replay page.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterPage {
    /// Read again from `through`.
    ReadMore,
    /// Replay is over: send `reset` if any, then `frames` (buffered live events), then, if `announce`, the `live`
    /// marker with `last_id`.
    /// `frames` are in their wire form ([`Delivery::wire`]).
    Live { reset: Option<Reset>, frames: Vec<Bytes>, announce: bool, last_id: u64 },
}

impl Subscription {
    pub fn new(name: SubName, generation: u64, query: LogQuery, since: Option<u64>, format: FrameFormat) -> Self {
        Self {
            name,
            generation,
            query,
            format,
            since,
            tail: None,
            phase: Phase::Joining,
            through: 0,
            buffer: Vec::new(),
            overflowed: false,
            lost: None,
        }
    }

    /// Events before the retained history (which starts at `info.earliest_id`) are gone: the reset to send now, if
    /// this subscription had not passed them and is live. A joining or replaying one checks when it goes live.
    pub fn on_lost(&mut self, info: ResetInfo) -> Option<Reset> {
        match self.phase {
            Phase::Live => self.skip_to(info),
            Phase::Joining | Phase::Replaying => {
                if self.lost.as_ref().is_none_or(|known| known.earliest_id < info.earliest_id) {
                    self.lost = Some(info);
                }
                None
            }
        }
    }

    /// Moves past what was lost before `info.earliest_id`, with the reset that says so; `None` when nothing this
    /// subscription still waited for was lost.
    fn skip_to(&mut self, info: ResetInfo) -> Option<Reset> {
        let before = info.earliest_id.saturating_sub(1);
        if self.through >= before {
            return None;
        }
        self.through = before;
        Some(Reset { info, through: before })
    }

    /// A live delivery: the frame to write now (in its wire form), if any.
    pub fn on_live(&mut self, delivery: Delivery) -> Option<Bytes> {
        match self.phase {
            Phase::Live if delivery.id > self.through => {
                self.through = delivery.id;
                Some(delivery.wire)
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

    pub fn is_live(&self) -> bool {
        self.phase == Phase::Live
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
    ///
    /// At most `budget` bytes of frames are taken from the page (always at least one): the rest is read again
    /// later, so that a page of large events cannot on its own push a connection past its outbound bound.
    pub fn on_page(&mut self, page: Page, budget: usize, frame_of: impl Fn(&SharedEvent) -> ByteString) -> PageOutcome {
        // The same rule as for a resume point: `through == 0` is "everything retained", never truncated.
        let reset = if page.bounds.truncates(self.through) { self.skip_to(page.bounds.reset()) } else { None };
        let mut frames = Vec::with_capacity(page.events.len());
        let mut bytes = 0;
        for event in &page.events {
            if event.id() > self.through {
                if bytes >= budget && !frames.is_empty() {
                    return PageOutcome { reset, frames, next: AfterPage::ReadMore };
                }
                self.through = event.id();
                let frame = frame_of(event);
                bytes += frame.len();
                frames.push(frame);
            }
        }
        self.through = self.through.max(page.through);
        if !page.complete {
            return PageOutcome { reset, frames, next: AfterPage::ReadMore };
        }
        if self.overflowed {
            // Live events were dropped from the buffer while this read ran: read on from the log.
            self.overflowed = false;
            return PageOutcome { reset, frames, next: AfterPage::ReadMore };
        }
        let lost = self.lost.take().and_then(|info| self.skip_to(info));
        let mut live = Vec::new();
        for delivery in std::mem::take(&mut self.buffer) {
            if delivery.id > self.through {
                self.through = delivery.id;
                live.push(delivery.wire);
            }
        }
        self.phase = Phase::Live;
        let next = AfterPage::Live { reset: lost, frames: live, announce: self.since.is_some(), last_id: self.through };
        PageOutcome { reset, frames, next }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use protocol::{EventId, NewEvent, Scope, Topic};
    use storage::StoredEvent;

    use super::*;
    use crate::delivery::Transport;

    fn sub(since: Option<u64>) -> Subscription {
        let format = FrameFormat { transport: Transport::WebSocket, profile: protocol::Profile::Hub };
        Subscription::new(SubName::parse("s").unwrap(), 1, LogQuery::all(), since, format)
    }

    fn event(id: u64) -> SharedEvent {
        let new = NewEvent::new(Topic::parse("a").unwrap(), Scope::default(), Default::default());
        Arc::new(StoredEvent::from_new(EventId::new(id).unwrap(), Utc::now(), new))
    }

    fn delivery(id: u64) -> Delivery {
        Delivery { generation: 1, id, wire: Bytes::from(id.to_string()) }
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
        let page = Page {
            events: vec![event(3), event(4), event(5)],
            through: 5,
            complete: true,
            bounds: LogBounds::default(),
        };
        let out = s.on_page(page, usize::MAX, frame);
        assert_eq!(out.frames, vec!["3", "4", "5"]);
        assert_eq!(
            out.next,
            AfterPage::Live { reset: None, frames: vec![Bytes::from("6")], announce: true, last_id: 6 }
        );
        assert_eq!(s.on_live(delivery(6)), None, "no duplicate");
        assert_eq!(s.on_live(delivery(7)), Some(Bytes::from("7")));
    }

    #[test]
    fn a_resume_point_older_than_the_history_gives_a_reset_and_continues_from_the_head() {
        let mut s = sub(Some(10));
        let start = s.start(LogBounds { head: 9000, earliest: 5000 });
        assert_eq!(start.reset, Some(ResetInfo::history_truncated(5000, 9000)));
        let page =
            Page { events: vec![], through: 9000, complete: true, bounds: LogBounds { head: 9000, earliest: 5000 } };
        let out = s.on_page(page, usize::MAX, frame);
        assert!(out.frames.is_empty());
        assert_eq!(out.next, AfterPage::Live { reset: None, frames: vec![], announce: true, last_id: 9000 });
    }

    #[test]
    fn live_only_subscriptions_skip_what_was_before_the_head_and_announce_nothing() {
        let mut s = sub(None);
        s.on_live(delivery(3));
        s.on_live(delivery(5));
        s.start(LogBounds { head: 4, earliest: 1 });
        let out = s.on_page(
            Page { events: vec![], through: 4, complete: true, bounds: LogBounds::default() },
            usize::MAX,
            frame,
        );
        assert_eq!(
            out.next,
            AfterPage::Live { reset: None, frames: vec![Bytes::from("5")], announce: false, last_id: 5 }
        );
    }

    #[test]
    fn an_overflowing_buffer_makes_replay_read_on_instead_of_losing_events() {
        let mut s = sub(Some(0));
        s.start(LogBounds { head: 0, earliest: 1 });
        for id in 1..=(MAX_BUFFERED as u64 + 1) {
            s.on_live(delivery(id));
        }
        let out = s.on_page(
            Page { events: vec![], through: 0, complete: true, bounds: LogBounds::default() },
            usize::MAX,
            frame,
        );
        assert_eq!(out.next, AfterPage::ReadMore);
        let page = Page { events: vec![event(1), event(2)], through: 2, complete: true, bounds: LogBounds::default() };
        let out = s.on_page(page, usize::MAX, frame);
        assert_eq!(out.frames.len(), 2);
        assert!(matches!(out.next, AfterPage::Live { .. }));
    }

    #[test]
    fn a_replay_page_that_starts_past_the_position_says_reset_and_delivers_what_is_there() {
        let mut s = sub(Some(10));
        s.start(LogBounds { head: 20, earliest: 1 });
        // Retention (or a new epoch) removed 11..=14 between the bounds read and the page read.
        let page = Page {
            events: vec![event(15), event(16)],
            through: 20,
            complete: true,
            bounds: LogBounds { head: 20, earliest: 15 },
        };
        let out = s.on_page(page, usize::MAX, frame);
        assert_eq!(out.reset, Some(Reset { info: ResetInfo::history_truncated(15, 20), through: 14 }));
        assert_eq!(out.frames, vec!["15", "16"]);
    }

    #[test]
    fn a_loss_seen_while_replaying_is_said_when_going_live_unless_the_replay_already_passed_it() {
        let mut s = sub(Some(10));
        s.start(LogBounds { head: 12, earliest: 1 });
        assert_eq!(s.on_lost(ResetInfo::history_truncated(100, 120)), None, "not yet: still replaying");
        s.on_live(delivery(100));
        let page = Page {
            events: vec![event(11), event(12)],
            through: 12,
            complete: true,
            bounds: LogBounds { head: 12, earliest: 1 },
        };
        let out = s.on_page(page, usize::MAX, frame);
        let AfterPage::Live { reset, frames, .. } = out.next else { panic!("not live") };
        assert_eq!(reset, Some(Reset { info: ResetInfo::history_truncated(100, 120), through: 99 }));
        assert_eq!(frames, vec!["100"]);

        let mut passed = sub(Some(10));
        passed.start(LogBounds { head: 120, earliest: 1 });
        passed.on_lost(ResetInfo::history_truncated(100, 120));
        let page = Page {
            events: vec![event(100)],
            through: 120,
            complete: true,
            bounds: LogBounds { head: 120, earliest: 100 },
        };
        let out = passed.on_page(page, usize::MAX, frame);
        assert!(out.reset.is_some(), "the page itself shows the loss");
        let AfterPage::Live { reset, .. } = out.next else { panic!("not live") };
        assert_eq!(reset, None, "said once");
    }

    #[test]
    fn a_page_larger_than_the_budget_is_taken_in_parts_and_read_on_from_the_last_frame_taken() {
        let mut s = sub(Some(0));
        s.start(LogBounds { head: 4, earliest: 1 });
        let page = || Page {
            events: vec![event(1), event(2), event(3), event(4)],
            through: 4,
            complete: true,
            bounds: LogBounds { head: 4, earliest: 1 },
        };

        // Each frame is one byte: a budget of 2 takes two, then the rest of the same page read again.
        let first = s.on_page(page(), 2, frame);
        assert_eq!(
            (first.frames, first.next),
            (vec![ByteString::from("1"), ByteString::from("2")], AfterPage::ReadMore)
        );
        assert_eq!(s.through, 2);
        let none_left = s.on_page(page(), 0, frame);
        assert_eq!(none_left.frames, vec!["3"], "at least one frame per page, whatever the budget");
        let rest = s.on_page(page(), usize::MAX, frame);
        assert_eq!(rest.frames, vec!["4"]);
        assert!(matches!(rest.next, AfterPage::Live { .. }));
    }

    #[test]
    fn live_subscriptions_are_reset_only_when_they_had_not_passed_the_loss() {
        let mut s = sub(None);
        s.start(LogBounds { head: 5, earliest: 1 });
        s.on_page(
            Page { events: vec![], through: 5, complete: true, bounds: LogBounds { head: 5, earliest: 1 } },
            usize::MAX,
            frame,
        );
        assert_eq!(s.on_lost(ResetInfo::history_truncated(6, 9)), None, "nothing after 5 was lost");
        let reset = s.on_lost(ResetInfo::history_truncated(9, 12)).expect("6..=8 were lost");
        assert_eq!(reset.through, 8);
        assert_eq!(s.on_live(delivery(9)), Some(Bytes::from("9")));
    }
}
