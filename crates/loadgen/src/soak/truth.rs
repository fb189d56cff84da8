//! What the soak knows for certain, and every check made against it.
//!
//! The truth is what the publishers were told (`acked`: event `i` stored, with its id when the route says it) and
//! what the auditors read: one long-poll cursor per hub over every topic, each resuming from its own position, so
//! that together they see every id the log holds. A subscriber's connection is a [`Segment`]: its start (the
//! resume point, or the head it was told), its filter and the ids it got. Order is checked as events arrive; the
//! gap check waits until an auditor has read past the segment's end, then asks: is every event of the truth that
//! matches the filter, with start < id ≤ end, among the ids this connection got? A `reset` closes a segment and
//! starts the next at the head it names, so events the contract lets go are never counted as lost. On a log that
//! loses nothing during the run (PostgreSQL within its retention) there is nothing to let go: every `reset` is a
//! violation, with the range it announced gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

/// An event's routing: topic `soak.t<topic>`, scope `{"project_id": "p<project>"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Meta {
    pub topic: u8,
    pub project: u8,
}

/// What a subscription asked for: one topic or all (`soak.*`), one project or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Filter {
    pub topic: Option<u8>,
    pub project: Option<u8>,
}

impl Filter {
    pub const ALL: Filter = Filter { topic: None, project: None };

    pub fn matches(&self, meta: Meta) -> bool {
        self.topic.is_none_or(|t| t == meta.topic) && self.project.is_none_or(|p| p == meta.project)
    }

    /// The topic pattern: `soak.t<n>` or `soak.*`.
    pub fn topics(&self) -> String {
        self.topic.map_or_else(|| "soak.*".to_owned(), |t| format!("soak.t{t}"))
    }

    /// The query string of this subscription: `topics=…` and the scope filter.
    pub fn query(&self) -> String {
        let topics = self.topics();
        match self.project {
            Some(p) => format!("topics={topics}&project_id=p{p}"),
            None => format!("topics={topics}"),
        }
    }
}

/// The transports a client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Ws,
    Sse,
    Poll,
}

/// One connection's view: everything matching `filter` with `start < id ≤ through` must be in `ids`.
#[derive(Debug)]
pub struct Segment {
    pub client: u64,
    pub kind: Kind,
    pub hub: usize,
    pub filter: Filter,
    pub start: u64,
    /// Up to where the connection claims completeness: its last event, or a `live` frame's or a long-poll
    /// answer's position when that is further.
    pub through: u64,
    /// Strictly increasing (checked on arrival).
    pub ids: Vec<u64>,
}

impl Segment {
    pub fn new(client: u64, kind: Kind, hub: usize, filter: Filter, start: u64) -> Self {
        Self { client, kind, hub, filter, start, through: start, ids: Vec::new() }
    }
}

/// A broken guarantee, with the ids that show it.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    pub at_s: f64,
    pub what: String,
    pub client: Option<u64>,
    pub kind: Option<Kind>,
    pub hub: Option<usize>,
    pub ids: Vec<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Observed {
    i: u64,
    meta: Option<Meta>,
}

#[derive(Debug, Default)]
struct State {
    /// Every publish that was answered with success: event `i` → the id the route gave, when it gives one.
    acked: HashMap<u64, Option<u64>>,
    /// Every id the auditors read → the event it carries.
    ids: BTreeMap<u64, Observed>,
    /// Event `i` → the id it was read at (a second id is a stored duplicate).
    id_of: HashMap<u64, u64>,
    /// Each auditor's position: everything up to it has been read.
    covered: Vec<u64>,
    /// The oldest id an auditor read: the log's history starts there.
    first: Option<u64>,
    /// Segments waiting for the auditors to pass their end.
    pending: Vec<Segment>,
    violations: Vec<Violation>,
    /// Ids the log said are gone (a reset's range as an auditor met it): acked events there are not lost.
    truncated: Vec<(u64, u64)>,
    verified_segments: u64,
}

/// The shared truth of one soak run.
pub struct Truth {
    started: Instant,
    /// The log loses nothing during the run: a `reset` announces a loss that did not happen.
    lossless: bool,
    state: Mutex<State>,
}

/// The verdict at the end of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub acked: u64,
    pub read_by_auditors: u64,
    /// Acked events that no auditor read, outside every announced reset.
    pub lost: Vec<u64>,
    /// Acked events that went with an announced reset (a Redis that restarted empty).
    pub lost_with_reset: u64,
    pub verified_segments: u64,
    pub violations: Vec<Violation>,
}

impl Truth {
    pub fn new(auditors: usize, lossless: bool) -> Self {
        let state = State { covered: vec![0; auditors], ..State::default() };
        Self { started: Instant::now(), lossless, state: Mutex::new(state) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock is a bug of the soak itself; its data is still the best there is.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// A publish was answered with success.
    pub fn acked(&self, i: u64, id: Option<u64>) {
        self.lock().acked.insert(i, id);
    }

    /// The newest position any auditor has read to: a recent resume point for new clients.
    pub fn watermark(&self) -> u64 {
        self.lock().covered.iter().copied().max().unwrap_or(0)
    }

    /// The lowest resume point a client of this log can hold: the position before its first event (0 before any
    /// was read). A log whose ids start high (Redis and NATS start above the clock) answers a point below it with
    /// a reset, rightly: no client could have had it.
    pub fn floor(&self) -> u64 {
        self.lock().first.map_or(0, |first| first - 1)
    }

    /// Records a violation found by a client (order, a frame it should not have got) and prints it at once.
    pub fn violation(&self, what: String, segment: Option<&Segment>, ids: Vec<u64>) {
        let violation = Violation {
            at_s: self.elapsed_s(),
            what,
            client: segment.map(|s| s.client),
            kind: segment.map(|s| s.kind),
            hub: segment.map(|s| s.hub),
            ids,
        };
        Self::print(&violation);
        self.lock().violations.push(violation);
    }

    fn print(violation: &Violation) {
        let line = serde_json::json!({ "violation": violation });
        eprintln!("{line}");
        println!("{line}");
    }

    /// A connection (`segment`) met a `reset` announcing `(from, to]` gone: on a lossless log, a violation.
    pub fn reset(&self, segment: &Segment, from: u64, to: u64) {
        if self.lossless {
            let what = format!("a reset announced ({from}, {to}] gone from a log that loses nothing");
            self.violation(what, Some(segment), vec![from, to]);
        }
    }

    pub fn violations(&self) -> usize {
        self.lock().violations.len()
    }

    /// An auditor read `events` (id, event index, routing) up to `through`; `reset` is the range `(from, to]`
    /// the log said is gone before them.
    pub fn audited(&self, auditor: usize, events: &[(u64, u64, Meta)], through: u64, reset: Option<(u64, u64)>) {
        let mut state = self.lock();
        let mut found = Vec::new();
        if let Some(range) = reset {
            state.truncated.push(range);
        }
        if let Some(&(oldest, _, _)) = events.first() {
            state.first = Some(state.first.map_or(oldest, |first| first.min(oldest)));
        }
        for &(id, i, meta) in events {
            let observed = Observed { i, meta: Some(meta) };
            match state.ids.get(&id) {
                Some(known) if known.i != i || known.meta != observed.meta => found.push(Violation {
                    at_s: self.elapsed_s(),
                    what: format!("id {id} carried event {} and event {i}", known.i),
                    client: None,
                    kind: Some(Kind::Poll),
                    hub: Some(auditor),
                    ids: vec![id],
                }),
                Some(_) => {}
                None => {
                    state.ids.insert(id, observed);
                    if let Some(&other) = state.id_of.get(&i) {
                        found.push(Violation {
                            at_s: self.elapsed_s(),
                            what: format!("event {i} stored twice"),
                            client: None,
                            kind: Some(Kind::Poll),
                            hub: Some(auditor),
                            ids: vec![other, id],
                        });
                    } else {
                        state.id_of.insert(i, id);
                    }
                }
            }
        }
        let covered = &mut state.covered[auditor];
        *covered = (*covered).max(through);
        for violation in &found {
            Self::print(violation);
        }
        state.violations.extend(found);
    }

    /// A connection ended (or met a reset): its segment is checked once an auditor has read past its end.
    pub fn closed(&self, segment: Segment) {
        if segment.through > segment.start || !segment.ids.is_empty() {
            self.lock().pending.push(segment);
        }
    }

    /// Checks every closed segment the auditors have passed (all of them with `all`); returns how many.
    pub fn verify(&self, all: bool) -> usize {
        let mut state = self.lock();
        let watermark = state.covered.iter().copied().max().unwrap_or(0);
        let (ready, waiting): (Vec<Segment>, Vec<Segment>) =
            std::mem::take(&mut state.pending).into_iter().partition(|s| all || s.through <= watermark);
        state.pending = waiting;
        let mut found = Vec::new();
        for segment in &ready {
            let mut got = segment.ids.iter().copied().peekable();
            let mut missing = Vec::new();
            for (&id, observed) in state.ids.range(segment.start + 1..=segment.through) {
                if !observed.meta.is_some_and(|m| segment.filter.matches(m)) {
                    continue;
                }
                while got.next_if(|&g| g < id).is_some() {}
                if got.next_if_eq(&id).is_none() {
                    missing.push(id);
                }
            }
            if !missing.is_empty() {
                missing.truncate(20);
                found.push(Violation {
                    at_s: self.elapsed_s(),
                    what: format!(
                        "a gap: {:?} connection got {} events of ({}, {}] for {:?} and missed some (first 20 listed)",
                        segment.kind,
                        segment.ids.len(),
                        segment.start,
                        segment.through,
                        segment.filter
                    ),
                    client: Some(segment.client),
                    kind: Some(segment.kind),
                    hub: Some(segment.hub),
                    ids: missing,
                });
            }
        }
        state.verified_segments += ready.len() as u64;
        for violation in &found {
            Self::print(violation);
        }
        state.violations.extend(found);
        ready.len()
    }

    /// The end of a run: every segment checked, every acked event looked for.
    pub fn verdict(&self) -> Verdict {
        self.verify(true);
        let state = self.lock();
        let mut lost = Vec::new();
        let mut lost_with_reset = 0;
        for (&i, &id) in &state.acked {
            if state.id_of.contains_key(&i) {
                continue;
            }
            let announced = id.is_none_or(|id| state.truncated.iter().any(|&(from, to)| from < id && id <= to))
                && !state.truncated.is_empty();
            if announced {
                lost_with_reset += 1;
            } else {
                lost.push(i);
            }
        }
        lost.sort_unstable();
        let mut violations = state.violations.clone();
        if !lost.is_empty() {
            violations.push(Violation {
                at_s: self.elapsed_s(),
                what: format!("{} acked events never read from the log (first 20 listed by event index)", lost.len()),
                client: None,
                kind: None,
                hub: None,
                ids: lost.iter().copied().take(20).collect(),
            });
        }
        Verdict {
            acked: state.acked.len() as u64,
            read_by_auditors: state.ids.len() as u64,
            lost,
            lost_with_reset,
            verified_segments: state.verified_segments,
            violations,
        }
    }

    /// How many acked events no auditor has read yet: the end of a run waits for none.
    pub fn unread_acked(&self) -> usize {
        let state = self.lock();
        state.acked.keys().filter(|i| !state.id_of.contains_key(i)).count()
    }
}

/// Waits until the auditors have read every acked event, or `limit` passes.
pub async fn drain(truth: &Truth, limit: Duration) {
    let deadline = Instant::now() + limit;
    while truth.unread_acked() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Meta = Meta { topic: 1, project: 2 };
    const OTHER: Meta = Meta { topic: 3, project: 2 };

    fn segment(start: u64, through: u64, ids: &[u64]) -> Segment {
        let mut s = Segment::new(1, Kind::Ws, 0, Filter { topic: Some(1), project: None }, start);
        s.through = through;
        s.ids = ids.to_vec();
        s
    }

    #[test]
    fn a_segment_that_got_every_matching_event_passes() {
        let truth = Truth::new(1, false);
        truth.audited(0, &[(1, 10, M), (2, 11, OTHER), (3, 12, M)], 3, None);

        truth.closed(segment(0, 3, &[1, 3]));

        assert_eq!(truth.verify(false), 1);
        assert_eq!(truth.violations(), 0);
    }

    #[test]
    fn a_segment_that_missed_a_matching_event_is_a_violation_with_its_id() {
        let truth = Truth::new(1, false);
        truth.audited(0, &[(1, 10, M), (2, 11, M), (3, 12, M)], 3, None);

        truth.closed(segment(0, 3, &[1, 3]));
        truth.verify(false);

        let verdict = truth.verdict();
        assert_eq!(verdict.violations.len(), 1);
        assert_eq!(verdict.violations[0].ids, vec![2]);
    }

    #[test]
    fn a_segment_waits_until_an_auditor_has_read_past_its_end() {
        let truth = Truth::new(2, false);
        truth.audited(0, &[(1, 10, M)], 1, None);
        truth.closed(segment(0, 2, &[1, 2]));

        assert_eq!(truth.verify(false), 0);
        truth.audited(1, &[(1, 10, M), (2, 11, M)], 2, None);
        assert_eq!(truth.verify(false), 1);
        assert_eq!(truth.violations(), 0);
    }

    #[test]
    fn an_acked_event_no_auditor_read_is_lost_unless_a_reset_announced_it() {
        let truth = Truth::new(1, false);
        truth.acked(10, Some(1));
        truth.acked(11, Some(2));
        truth.audited(0, &[(2, 11, M)], 2, None);
        assert_eq!(truth.verdict().lost, vec![10]);

        let announced = Truth::new(1, false);
        announced.acked(10, Some(1));
        announced.audited(0, &[], 1000, Some((0, 999)));
        let verdict = announced.verdict();
        assert!(verdict.lost.is_empty());
        assert_eq!(verdict.lost_with_reset, 1);
    }

    #[test]
    fn a_reset_is_a_violation_only_on_a_log_that_loses_nothing() {
        let lossy = Truth::new(1, false);
        lossy.reset(&segment(4, 4, &[]), 4, 9);
        assert_eq!(lossy.violations(), 0);

        let lossless = Truth::new(1, true);
        lossless.reset(&segment(4, 4, &[]), 4, 9);
        let verdict = lossless.verdict();
        assert_eq!(verdict.violations.len(), 1);
        assert_eq!((verdict.violations[0].client, verdict.violations[0].ids.clone()), (Some(1), vec![4, 9]));
    }

    #[test]
    fn one_event_at_two_ids_and_two_events_at_one_id_are_violations() {
        let truth = Truth::new(2, false);
        truth.audited(0, &[(1, 10, M), (2, 10, M)], 2, None);
        truth.audited(1, &[(1, 11, M)], 1, None);

        let verdict = truth.verdict();
        assert_eq!(verdict.violations.len(), 2, "{:?}", verdict.violations);
    }
}
