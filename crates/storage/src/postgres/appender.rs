//! This hub's publishes: coalesced, then stored by the sequencer when this hub is it, or inserted into the inbox
//! and answered with the ids the sequencer gives them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use protocol::{EventId, NewEvent};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::pending;
use super::shared::{INBOX_CHANNEL, Shared};
use super::statement::{fetch, within};
use super::write::{append_with, insert_inbox, move_inbox};
use crate::{Error, Result};

/// Most events one `realtime_append` call carries.
pub(super) const MAX_EVENTS_PER_APPEND: usize = 5000;

/// How long a publish through the inbox waits for the sequencer before this hub looks the ids up itself, and moves
/// the inbox itself if they are not there yet (a sequencer that died with its lock not yet released).
pub(super) const STEP_IN_AFTER: Duration = Duration::from_millis(500);

/// How many events after its floor a publish's own look-up reads.
pub(super) const LOOK_UP_WINDOW: i64 = 100_000;

/// How long a publish through the inbox waits for its ids in all before it answers that the log is unavailable
/// (its events are stored, and will be delivered once a sequencer moves them).
pub(super) const IDS_DEADLINE: Duration = Duration::from_secs(30);

pub(super) struct AppendRequest {
    pub(super) events: Vec<NewEvent>,
    pub(super) ids: oneshot::Sender<Result<Vec<EventId>>>,
}

/// Takes every request queued behind `first`, up to `MAX_EVENTS_PER_APPEND` events.
pub(super) fn coalesce(
    first: AppendRequest,
    requests: &mut mpsc::UnboundedReceiver<AppendRequest>,
) -> Vec<AppendRequest> {
    let mut count = first.events.len();
    let mut batch = vec![first];
    while count < MAX_EVENTS_PER_APPEND {
        match requests.try_recv() {
            Ok(more) => {
                count += more.events.len();
                batch.push(more);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Answers each request of `batch` with its share of `ids` (in order), or all of them with the error.
pub(super) fn answer(batch: Vec<AppendRequest>, ids: Result<Vec<EventId>>) {
    match ids {
        Ok(ids) => {
            let mut ids = ids.into_iter();
            for request in batch {
                let mine = ids.by_ref().take(request.events.len()).collect();
                // The publisher may have given up waiting; its events are stored all the same.
                let _ = request.ids.send(Ok(mine));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for request in batch {
                let _ = request.ids.send(Err(Error::Unavailable(message.clone().into())));
            }
        }
    }
}

pub(super) fn events_of(batch: &[AppendRequest]) -> Vec<NewEvent> {
    batch.iter().flat_map(|r| r.events.iter().cloned()).collect()
}

/// Routes this hub's publishes: to the sequencer when this hub is it; otherwise into the inbox, one coalesced
/// insert per round trip (batches with idempotency keys take the locked path, which answers a known key with its
/// first id).
pub(super) async fn run_appender(
    shared: Arc<Shared>,
    mut requests: mpsc::UnboundedReceiver<AppendRequest>,
    local: mpsc::UnboundedSender<AppendRequest>,
    remote_wake: mpsc::Sender<()>,
) {
    while let Some(first) = requests.recv().await {
        if shared.sequencing.load(Ordering::Acquire) {
            // If the sequencer lost its lock meanwhile, it stores the request by the locked path.
            let _ = local.send(first);
            continue;
        }
        let batch = coalesce(first, &mut requests);
        let events = events_of(&batch);
        if events.iter().any(|e| e.idempotency_key.is_some()) {
            let ids = shared.db.run(async |conn, timeout| within(timeout, append_with(conn, &events)).await).await;
            answer(batch, ids);
            continue;
        }
        shared.pending.lock().unwrap_or_else(|e| e.into_inner()).inserting += 1;
        let inserted = shared.db.run(async |conn, timeout| within(timeout, insert_inbox(conn, &events)).await).await;
        let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        match inserted {
            Ok((inbox_ids, floor)) => {
                let waiters = pending.register(&inbox_ids);
                drop(pending);
                if shared.sequencing.load(Ordering::Acquire) {
                    shared.inbox_wake.notify_one();
                } else {
                    // Full means a wake-up is already on its way; it will find these rows too.
                    let _ = remote_wake.try_send(());
                }
                tokio::spawn(wait_for_ids(shared.clone(), batch, inbox_ids, waiters, floor));
            }
            Err(e) => {
                pending.inserting -= 1;
                drop(pending);
                warn!(error = %e, events = events.len(), "publishing into the inbox failed");
                answer(batch, Err(e));
            }
        }
    }
}

/// Waits until every event of `batch` has its id, found by this hub's reads of the log (the storage actor reads
/// every new event). A publish that waits longer than `STEP_IN_AFTER` looks its ids up in the log itself and, if
/// they are not there, moves the inbox itself: correct whoever else is moving it, as the head row lock serializes
/// every mover.
async fn wait_for_ids(
    shared: Arc<Shared>,
    batch: Vec<AppendRequest>,
    inbox_ids: Vec<i64>,
    waiters: Vec<oneshot::Receiver<EventId>>,
    floor: u64,
) {
    let started = Instant::now();
    let mut ids = Vec::with_capacity(waiters.len());
    let mut stepped_in = false;
    for mut waiter in waiters {
        loop {
            match tokio::time::timeout(STEP_IN_AFTER, &mut waiter).await {
                Ok(Ok(id)) => {
                    ids.push(id);
                    break;
                }
                Err(_) if started.elapsed() < IDS_DEADLINE => {
                    let missing = &inbox_ids[ids.len()..];
                    if let Err(e) = look_up(&shared, missing, floor).await {
                        debug!(error = %e, "looking up published ids failed");
                    } else if !stepped_in || started.elapsed() > STEP_IN_AFTER * 4 {
                        stepped_in = true;
                        debug!(events = missing.len(), "the sequencer is slow; moving the inbox");
                        let moved = shared.db.run(async |conn, timeout| move_inbox(conn, timeout).await).await;
                        if let Err(e) = moved {
                            debug!(error = %e, "moving the inbox failed");
                        }
                        let _ = look_up(&shared, missing, floor).await;
                    }
                }
                // Timed out for good, or (never expected) the waiter was dropped unanswered.
                Err(_) | Ok(Err(_)) => {
                    let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
                    for inbox_id in &inbox_ids {
                        pending.waiting.remove(inbox_id);
                    }
                    drop(pending);
                    warn!(events = inbox_ids.len(), "no sequencer gave the published events ids in time");
                    let e = Error::Unavailable(
                        "the events are stored but no sequencer gave them ids in time; they will be delivered".into(),
                    );
                    return answer(batch, Err(e));
                }
            }
        }
    }
    answer(batch, Ok(ids));
}

/// Finds the ids of the inbox rows `inbox_ids` among the events after `floor`.
async fn look_up(shared: &Shared, inbox_ids: &[i64], floor: u64) -> Result<()> {
    // By the primary key from the floor: the planner must not pick a scan of the whole log.
    let query = sqlx::query_as(
        "SELECT inbox_id, id FROM (SELECT inbox_id, id FROM realtime_events WHERE id > $1 ORDER BY id LIMIT $3) e \
         WHERE inbox_id = ANY($2)",
    )
    .bind(floor as i64)
    .bind(inbox_ids)
    .bind(LOOK_UP_WINDOW);
    let rows: Vec<(i64, i64)> =
        shared.db.run(async |conn, timeout| within(timeout, fetch(query.fetch_all(conn))).await).await?;
    let found = rows.into_iter().filter_map(|(inbox_id, id)| Some((inbox_id, EventId::new(id as u64).ok()?)));
    pending::resolve(&shared.pending, found);
    Ok(())
}

/// Sends the coalesced `NOTIFY realtime_inbox` that wakes the sequencer on another hub: one at a time, the
/// inserts made meanwhile folded into the next. Without durability: a lost wake-up only costs latency (the sequencer polls), and a commit that
/// waits for no disk holds PostgreSQL's cluster-wide notify lock only for a moment.
pub(super) async fn run_waker(shared: Arc<Shared>, mut wakes: mpsc::Receiver<()>) {
    while wakes.recv().await.is_some() {
        let wake =
            sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')").bind(INBOX_CHANNEL);
        if let Err(e) = shared.db.run(async |conn, timeout| within(timeout, fetch(wake.execute(conn))).await).await {
            debug!(error = %e, "waking the sequencer failed; it will find the events by polling");
        }
    }
}
