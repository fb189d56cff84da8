//! The cluster's sequencer: the hub that holds the advisory lock stores its own hub's publishes and moves the
//! inbox into the log; the others try the lock until it is free.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use protocol::{EventId, NewEvent};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::appender::{AppendRequest, append_on_pool, coalesce};
use super::shared::{SEQUENCER_LOCK, Shared};
use super::statement::{fetch, within};
use super::write::{append_with, move_inbox};
use crate::{Error, Result};

/// How often a hub that is not the sequencer tries to become it: the longest a cluster goes without one after its
/// sequencer's connection is gone.
pub(super) const SEQUENCER_RETRY: Duration = Duration::from_millis(250);

/// How often a busy sequencer moves the inbox.
pub(super) const MOVE_GAP: Duration = Duration::from_millis(2);

/// How many moved inbox rows make the sequencer vacuum the inbox, and how long it waits at most between two
/// vacuums while rows are moved (at a few events a second the count alone would leave the dead rows growing
/// for hours where autovacuum is slow or off).
pub(super) const VACUUM_EVERY: u64 = 20_000;

pub(super) const VACUUM_INTERVAL: Duration = Duration::from_secs(10);

/// How long the sequencer stays busy after its last move that found rows. The publisher crate's sink wakes it at
/// most every 25 ms, which must not be longer: a wake-up left out is then always covered by a busy spell.
pub(super) const LINGER: Duration = Duration::from_millis(50);

/// Becomes the cluster's sequencer when its lock is free, then stores this hub's publishes and moves the inbox
/// until the lock's connection fails. Requests that reach it while it is not the sequencer take the locked path.
pub(super) async fn run_sequencer(
    shared: Arc<Shared>,
    options: PgConnectOptions,
    mut requests: mpsc::UnboundedReceiver<AppendRequest>,
    poll: Duration,
) {
    let mut lock: Option<PgConnection> = None;
    // Moves come at most every `MOVE_GAP`, each taking all that arrived meanwhile: the per-move costs (a commit, a
    // notification, every hub's read) are paid per batch, not per publish. A wake-up moves at once when the last
    // move is older than that. After a move that found rows the sequencer is *busy*: it also moves every
    // `MOVE_GAP` by itself, so writers that wake it at most every `WAKE_INTERVAL` lose no latency, until `LINGER`
    // passes with nothing to move.
    let mut last_move = Instant::now();
    let mut busy_until: Option<Instant> = None;
    let mut retry = tokio::time::interval(SEQUENCER_RETRY);
    let mut poll = tokio::time::interval(poll);
    for ticker in [&mut retry, &mut poll] {
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        let next_move = last_move + MOVE_GAP;
        tokio::select! {
            request = requests.recv() => {
                let Some(first) = request else { break };
                let batch = coalesce(first, &mut requests);
                let ids = store(&shared, &mut lock, &batch.events).await;
                batch.answer(ids);
                continue;
            }
            _ = shared.inbox_wake.notified(), if lock.is_some() => {
                tokio::time::sleep_until(next_move.into()).await;
            }
            _ = tokio::time::sleep_until(next_move.into()), if busy_until.is_some() => {}
            _ = poll.tick(), if lock.is_some() && busy_until.is_none() => {}
            // Not while publishes wait: trying the lock can take as long as a statement's deadline when
            // PostgreSQL does not answer, and they are stored by the locked path meanwhile.
            _ = retry.tick(), if lock.is_none() && requests.is_empty() => {
                match take_lock(&options, shared.db.timeout).await {
                    Ok(Some(conn)) => {
                        info!("this hub is the sequencer (it holds the lock {SEQUENCER_LOCK:?})");
                        lock = Some(conn);
                        shared.set_sequencing(true);
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        debug!(error = %e, "cannot try the sequencer lock");
                        continue;
                    }
                }
            }
        }
        last_move = Instant::now();
        if sequence_inbox(&shared, &mut lock).await > 0 {
            busy_until = Some(last_move + LINGER);
        } else if busy_until.is_some_and(|until| last_move >= until) || lock.is_none() {
            busy_until = None;
        }
    }
    shared.set_sequencing(false);
}

/// Stores `events` by the locked path: on the sequencer's connection, or on the pool when this hub is not the
/// sequencer.
async fn store(shared: &Shared, lock: &mut Option<PgConnection>, events: &[NewEvent]) -> Result<Vec<EventId>> {
    let Some(conn) = lock.as_mut() else {
        return append_on_pool(shared, events).await;
    };
    let ids = within(shared.db.timeout, append_with(&mut *conn, events)).await;
    if let Err(e) = &ids {
        lost_lock(shared, lock, e);
    }
    ids
}

/// Connects and tries the sequencer lock once; the connection is kept only if it got the lock.
async fn take_lock(options: &PgConnectOptions, timeout: Duration) -> Result<Option<PgConnection>> {
    let mut conn = within(timeout, fetch(options.connect())).await?;
    let statement = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))").bind(SEQUENCER_LOCK);
    let locked: bool = within(timeout, fetch(statement.fetch_one(&mut conn))).await?;
    Ok(locked.then_some(conn))
}

/// Moves the inbox on the lock's connection; returns how many rows moved. Every `VACUUM_EVERY` rows moved, and
/// at least every `VACUUM_INTERVAL` while rows are moved, the inbox is vacuumed on the pool: its dead rows would
/// otherwise pile up until autovacuum comes by (never, where it is off), and every move would step over them.
async fn sequence_inbox(shared: &Arc<Shared>, lock: &mut Option<PgConnection>) -> u64 {
    let Some(conn) = lock.as_mut() else { return 0 };
    match move_inbox(&mut *conn, shared.db.timeout).await {
        Ok(moved) => {
            let since = shared.moved_since_vacuum.fetch_add(moved, Ordering::AcqRel) + moved;
            let waited = shared.vacuumed_at.lock().unwrap_or_else(|e| e.into_inner()).elapsed();
            let due = since >= VACUUM_EVERY || (since > 0 && waited >= VACUUM_INTERVAL);
            if due && !shared.vacuuming.swap(true, Ordering::AcqRel) {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let vacuum = async |conn: &mut PgConnection, timeout| {
                        within(timeout, fetch(sqlx::query("VACUUM realtime_inbox").execute(conn))).await
                    };
                    if let Err(e) = shared.db.run(vacuum).await {
                        debug!(error = %e, "vacuuming the inbox failed");
                    }
                    shared.moved_since_vacuum.store(0, Ordering::Release);
                    *shared.vacuumed_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                    shared.vacuuming.store(false, Ordering::Release);
                });
            }
            moved
        }
        Err(e) => {
            lost_lock(shared, lock, &e);
            0
        }
    }
}

/// The lock's connection failed: whatever it held is released with it, and another hub may be the sequencer now.
fn lost_lock(shared: &Shared, lock: &mut Option<PgConnection>, e: &Error) {
    warn!(error = %e, "the sequencer's connection failed; this hub is no longer the sequencer");
    shared.db.went_silent(e);
    *lock = None;
    shared.set_sequencing(false);
}
