//! This hub's publishes: coalesced, then stored under the head row's lock, on the sequencer's connection when this
//! hub is the sequencer, on the pool otherwise.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use protocol::{EventId, NewEvent};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::shared::Shared;
use super::statement::within;
use super::write::append_with;
use crate::{Error, Result};

/// How many coalesced appends a hub that is not the sequencer has in flight on the pool: while one holds the head
/// row's lock, PostgreSQL parses the next one's arrays on another backend (batches of 100: 8-18 % faster).
const APPENDS_IN_FLIGHT: usize = 2;

/// The smallest request whose append may overlap with another: below it, appends run one at a time.
const OVERLAP_MIN_EVENTS: usize = 50;

/// Most events one `realtime_append` call carries.
pub(super) const MAX_EVENTS_PER_APPEND: usize = 5000;

pub(super) struct AppendRequest {
    pub(super) events: Vec<NewEvent>,
    pub(super) ids: oneshot::Sender<Result<Vec<EventId>>>,
}

/// Requests taken together: their events in request order, and where each request's share of the ids goes.
pub(super) struct Coalesced {
    pub(super) events: Vec<NewEvent>,
    answers: Vec<(usize, oneshot::Sender<Result<Vec<EventId>>>)>,
}

/// Takes every request queued behind `first`, up to `MAX_EVENTS_PER_APPEND` events; the events are moved, not
/// copied.
pub(super) fn coalesce(first: AppendRequest, requests: &mut mpsc::UnboundedReceiver<AppendRequest>) -> Coalesced {
    let mut batch = Coalesced { events: Vec::new(), answers: Vec::new() };
    let mut next = Some(first);
    while let Some(request) = next.take() {
        batch.answers.push((request.events.len(), request.ids));
        if batch.events.is_empty() {
            batch.events = request.events;
        } else {
            batch.events.extend(request.events);
        }
        if batch.events.len() < MAX_EVENTS_PER_APPEND {
            next = requests.try_recv().ok();
        }
    }
    batch
}

impl Coalesced {
    /// Answers each request with its share of `ids` (in order), or all of them with the error.
    pub(super) fn answer(self, ids: Result<Vec<EventId>>) {
        match ids {
            Ok(ids) => {
                let mut ids = ids.into_iter();
                for (count, answer) in self.answers {
                    // The publisher may have given up waiting; its events are stored all the same.
                    let _ = answer.send(Ok(ids.by_ref().take(count).collect()));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (_, answer) in self.answers {
                    let _ = answer.send(Err(Error::Unavailable(message.clone().into())));
                }
            }
        }
    }
}

/// Routes this hub's publishes: to the sequencer when this hub is it; otherwise stored here by the locked path,
/// one coalesced `realtime_append` per round trip on the pool (one commit and one notification, as on the
/// sequencer: the head row's lock is then contended by a few hubs, each with at most `APPENDS_IN_FLIGHT` appends
/// in flight, not by every writer).
pub(super) async fn run_appender(
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<AppendRequest>,
    local: mpsc::UnboundedSender<AppendRequest>,
) {
    let in_flight = Arc::new(Semaphore::new(APPENDS_IN_FLIGHT));
    while let Some(first) = requests.recv().await {
        if shared.sequencing.load(Ordering::Acquire) {
            // If the sequencer lost its lock meanwhile, it stores the request by the locked path.
            let _ = local.send(first);
            continue;
        }
        // A large append overlaps with the next one; a small one runs alone, as its cost is the commit, which a
        // second append in flight would only contend for (single events: a fifth slower with two in flight).
        // Requests that arrive while waiting join the append.
        let share = if first.events.len() >= OVERLAP_MIN_EVENTS { 1 } else { APPENDS_IN_FLIGHT as u32 };
        let Ok(permit) = in_flight.clone().acquire_many_owned(share).await else { return };
        let batch = coalesce(first, &mut requests);
        let shared = shared.clone();
        tokio::spawn(async move {
            let ids = append_on_pool(&shared, &batch.events).await;
            batch.answer(ids);
            drop(permit);
        });
    }
}

/// Stores `events` under the head row's lock on the pool: this hub's publishes when it is not the sequencer, and
/// the sequencer's while it has lost its lock's connection.
pub(super) async fn append_on_pool(shared: &Shared, events: &[NewEvent]) -> Result<Vec<EventId>> {
    shared.db.run(async |conn, timeout| within(timeout, append_with(conn, events)).await).await
}
