//! The tail of a query: the newest matching events below a position, read backwards in growing windows with the
//! forward reads every backend already has, so it works the same on each and its work is bounded.
//!
//! A window of [`FIRST_WINDOW`] ids below the position is read forward (the backend's indexes serve it as they
//! serve replay); if it holds fewer than the events asked for, the window before it, four times larger, and so on,
//! until enough are found, the retained history begins, or [`SCAN_IDS`] ids have been walked. A tail over a topic
//! so sparse that the last million ids hold fewer of its events than asked for answers with those it found.

use std::collections::VecDeque;

use crate::Result;
use crate::event::{LogQuery, SharedEvent};
use crate::event_log::EventLog;

/// The most ids one tail read walks back over.
pub const SCAN_IDS: u64 = 1_000_000;
/// The first window, in ids; each next one is four times larger.
pub const FIRST_WINDOW: u64 = 1_000;
/// How many events one forward read of a window asks for.
const PAGE: usize = 1_000;

/// The newest matching events below a position, oldest first.
#[derive(Debug, Default)]
pub struct Tail {
    pub events: Vec<SharedEvent>,
    /// The read found every event asked for, or reached the start of the retained history: there is nothing
    /// older that matches. `false` when it stopped at [`SCAN_IDS`].
    pub complete: bool,
    /// The log's head when the read began (no event above it was read).
    pub head: u64,
}

impl Tail {
    /// Where a replay that delivers this tail, then everything after it, starts: before its oldest event; from
    /// the start of what is retained (`0`) when the log holds fewer matching events than asked for; from the head
    /// when a bounded read found none.
    pub fn replay_from(&self, count: usize) -> u64 {
        match self.events.first() {
            _ if self.events.len() < count && self.complete => 0,
            Some(oldest) => oldest.id() - 1,
            None => self.head,
        }
    }
}

/// The `count` newest events matching `query` with ids below `before` (`u64::MAX`: the last `count` events).
pub async fn read_before(log: &dyn EventLog, before: u64, query: &LogQuery, count: usize) -> Result<Tail> {
    read_before_within(log, before, query, count, SCAN_IDS).await
}

/// As [`read_before`], walking back over at most `scan_ids` ids.
async fn read_before_within(
    log: &dyn EventLog,
    before: u64,
    query: &LogQuery,
    count: usize,
    scan_ids: u64,
) -> Result<Tail> {
    let bounds = log.bounds(query).await?;
    // Nothing lies above the head: the walk starts there at the latest.
    let before = before.min(bounds.head + 1);
    let head = bounds.head;
    if count == 0 || before <= 1 {
        return Ok(Tail { events: Vec::new(), complete: true, head });
    }
    let earliest = bounds.earliest;
    // Newest last; everything in it is below `upper`.
    let mut found: VecDeque<SharedEvent> = VecDeque::new();
    let (mut upper, mut window) = (before, FIRST_WINDOW);
    loop {
        // Ids in (lower, upper): the window, never below the retained history.
        let lower = upper.saturating_sub(window).max(earliest.saturating_sub(1));
        let older = read_window(log, lower, upper, query, count).await?;
        let room = count - found.len();
        for event in older.into_iter().rev().take(room) {
            found.push_front(event);
        }
        let reached_start = lower < earliest;
        if found.len() >= count || reached_start {
            return Ok(Tail { events: found.into(), complete: true, head });
        }
        if before - lower >= scan_ids {
            return Ok(Tail { events: found.into(), complete: false, head });
        }
        upper = lower;
        window = window.saturating_mul(4);
    }
}

/// The newest (at most `keep`) matching events with ids in `(lower, upper)`, oldest first.
async fn read_window(
    log: &dyn EventLog,
    lower: u64,
    upper: u64,
    query: &LogQuery,
    keep: usize,
) -> Result<VecDeque<SharedEvent>> {
    let mut kept = VecDeque::with_capacity(keep.min(PAGE));
    let mut after = lower;
    while after + 1 < upper {
        let page = log.read_after(after, query, PAGE).await?;
        for event in page.events.iter().take_while(|e| e.id() < upper) {
            if kept.len() == keep {
                kept.pop_front();
            }
            kept.push_back(event.clone());
        }
        if page.complete || page.through >= upper.saturating_sub(1) || page.through <= after {
            break;
        }
        after = page.through;
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use protocol::{NewEvent, Scope, Topic, TopicPattern};
    use serde_json::Map;

    use super::*;
    use crate::{MemoryLog, Retention};

    fn query(topic: &str) -> LogQuery {
        LogQuery::new(vec![TopicPattern::parse(topic).unwrap()], Default::default())
    }

    async fn append(log: &MemoryLog, topic: &str, count: usize) -> Vec<u64> {
        let events = (0..count).map(|_| NewEvent::new(Topic::parse(topic).unwrap(), Scope::default(), Map::new()));
        log.append(events.collect()).await.unwrap().iter().map(|id| id.get()).collect()
    }

    fn ids(tail: &Tail) -> Vec<u64> {
        tail.events.iter().map(|e| e.id()).collect()
    }

    #[tokio::test]
    async fn the_tail_is_the_newest_matching_events_below_the_position_in_id_order() {
        let log = MemoryLog::new(Retention::default());
        let old = append(&log, "chat", 10).await;
        append(&log, "noise", 5_000).await;
        let recent = append(&log, "chat", 3).await;
        append(&log, "noise", 10).await;

        let tail = read_before(&log, u64::MAX >> 12, &query("chat"), 5).await.unwrap();
        let below = read_before(&log, recent[1], &query("chat"), 2).await.unwrap();
        let all = read_before(&log, u64::MAX >> 12, &query("chat"), 50).await.unwrap();

        assert_eq!(ids(&tail), [old[8], old[9], recent[0], recent[1], recent[2]]);
        assert!(tail.complete);
        assert_eq!(tail.replay_from(5), old[8] - 1);
        assert_eq!(all.replay_from(50), 0, "fewer than asked: from the start of what is retained");
        assert_eq!(ids(&below), [old[9], recent[0]], "below the position only, across the windows");
        assert_eq!(all.events.len(), 13, "fewer than asked: all there is");
        assert!(all.complete, "the start of the history was reached");
    }

    #[tokio::test]
    async fn a_tail_over_a_topic_too_sparse_for_the_scan_bound_answers_what_it_found() {
        let log = MemoryLog::new(Retention::default());
        let lonely = append(&log, "rare", 1).await;
        append(&log, "noise", 30_000).await;
        let near = append(&log, "rare", 1).await;

        let bounded = read_before_within(&log, near[0] + 1, &query("rare"), 2, 20_000).await.unwrap();
        let unbounded = read_before(&log, near[0] + 1, &query("rare"), 2).await.unwrap();

        assert_eq!(ids(&bounded), near, "the event 30,000 ids back is past a 20,000-id bound");
        assert!(!bounded.complete);
        assert_eq!(bounded.replay_from(2), near[0] - 1, "what it found, not the whole history");
        assert_eq!(ids(&unbounded), [lonely[0], near[0]]);
    }
}
