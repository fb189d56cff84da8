//! The ids this hub's publishes through the inbox wait for, and how the log's reads hand them over.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use protocol::EventId;
use tokio::sync::oneshot;

/// The ids this hub's publishes through the inbox wait for.
#[derive(Default)]
pub(super) struct Pending {
    /// Inbox id → where its event's id goes.
    pub(super) waiting: HashMap<i64, oneshot::Sender<EventId>>,
    /// Inserts into the inbox whose waiters are not registered yet.
    pub(super) inserting: usize,
    /// Ids read from the log while an insert was not registered yet, newest last: an insert's events may be moved
    /// and read before its waiters exist, and then find their ids here.
    pub(super) recent: HashMap<i64, EventId>,
    pub(super) recent_order: VecDeque<i64>,
}

/// How many read ids `Pending::recent` keeps.
pub(super) const RECENT_IDS: usize = 65_536;

impl Pending {
    /// Registers waiters for `inbox_ids`, answering at once those already read.
    pub(super) fn register(&mut self, inbox_ids: &[i64]) -> Vec<oneshot::Receiver<EventId>> {
        self.inserting -= 1;
        let receivers = inbox_ids
            .iter()
            .map(|inbox_id| {
                let (tx, rx) = oneshot::channel();
                match self.recent.remove(inbox_id) {
                    Some(id) => {
                        let _ = tx.send(id);
                    }
                    None => {
                        self.waiting.insert(*inbox_id, tx);
                    }
                }
                rx
            })
            .collect();
        if self.inserting == 0 {
            self.recent.clear();
            self.recent_order.clear();
        }
        receivers
    }
}

/// Hands each id read from the log to the publish that waits for its event, if any.
pub(super) fn resolve(pending: &Mutex<Pending>, found: impl IntoIterator<Item = (i64, EventId)>) {
    let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
    if pending.waiting.is_empty() && pending.inserting == 0 {
        return;
    }
    for (inbox_id, id) in found {
        if let Some(waiter) = pending.waiting.remove(&inbox_id) {
            let _ = waiter.send(id);
        } else if pending.inserting > 0 {
            pending.recent.insert(inbox_id, id);
            pending.recent_order.push_back(inbox_id);
            if pending.recent_order.len() > RECENT_IDS
                && let Some(oldest) = pending.recent_order.pop_front()
            {
                pending.recent.remove(&oldest);
            }
        }
    }
}
