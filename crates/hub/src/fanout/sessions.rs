//! The open sessions: told when to send a heartbeat, once when shutdown begins, and an operator's commands (close
//! the ones that match, describe themselves); and the long-poll requests waiting, which a command answers at once.
//!
//! An actor context polls every future it holds on each of its wake-ups, so a session that waited for shutdown
//! with a future of its own, or kept its heartbeat as an interval timer in its context, paid a poll of each on
//! every delivery. Here a session is an entry in a map: one ticker per transport tells each session when its
//! heartbeat is due, and shutdown is one message to each.
//!
//! The ticker spreads the heartbeats over the interval: it ticks [`HEARTBEAT_SLOTS`] times per interval and each
//! tick tells the sessions of one slot, so 15,000 connections get 1/8 of their pings every 3 s rather than all of
//! them at once, and each session still gets exactly one heartbeat per interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::WeakRecipient;
use actix::prelude::*;

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

use crate::auth::{Grant, Revocation};
use crate::delivery::{SessionId, Transport};

/// How many slots a heartbeat interval is split into.
pub const HEARTBEAT_SLOTS: u64 = 8;

/// WebSocket close code for a connection an operator disconnected: the client may reconnect with a fresh token.
pub const CLOSE_DISCONNECTED: u16 = 4002;
/// WebSocket close code for a connection whose token was revoked: the client stops.
pub const CLOSE_REVOKED: u16 = 4003;

/// What the hub tells an open session.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Notice {
    /// The session's heartbeat is due (WebSocket: check the peer, send a ping; SSE: a comment).
    Heartbeat,
    /// Shutdown began: close.
    Closing,
    /// An operator's command: close with its code if the connection matches it, and answer whether it did.
    Cut(Arc<Cut>, oneshot::Sender<bool>),
    /// An operator's listing: answer with what the connection is.
    Describe(oneshot::Sender<ConnectionInfo>),
    /// Who is present on a topic, or who joined or left it, for the subscription of `generation` (if it is still
    /// there).
    Presence { generation: u64, frame: protocol::ServerFrame },
}

/// Which connections an operator's command closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cut {
    /// Every connection of a token subject (close code 4002).
    Subject(String),
    /// One connection, by the id `welcome` gave it (4002).
    Connection(String),
    /// The connections whose token a revocation covers (4003).
    Revoked(Revocation),
}

impl Cut {
    /// Whether the connection `id` with `grant` is one this command closes.
    pub fn matches(&self, id: Option<SessionId>, grant: &Grant) -> bool {
        match self {
            Cut::Subject(subject) => grant.subject() == Some(subject.as_str()),
            Cut::Connection(wanted) => id.is_some_and(|id| id.to_string() == *wanted),
            Cut::Revoked(revocation) => grant.is_revoked_by(revocation),
        }
    }

    /// The close code, and its reason as the close frame (or SSE notice) says it.
    pub fn code(&self) -> (u16, &'static str) {
        match self {
            Cut::Subject(_) | Cut::Connection(_) => (CLOSE_DISCONNECTED, "disconnected by an operator"),
            Cut::Revoked(_) => (CLOSE_REVOKED, "token revoked"),
        }
    }
}

/// One open connection, as `GET /api/admin/connections` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub id: String,
    pub node: String,
    pub transport: String,
    pub subject: Option<String>,
    pub subscriptions: Vec<SubscriptionInfo>,
    /// When it opened (RFC 3339).
    pub since: String,
    pub peer: Option<String>,
    /// Bytes written for it that the network has not taken yet.
    pub unsent_bytes: u64,
}

/// One subscription of a listed connection: its name, patterns, filter, and the id it has reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    pub sub: String,
    pub topics: Vec<String>,
    pub filter: BTreeMap<String, String>,
    pub position: u64,
}

/// A long-poll request waiting, registered for as long as this is held: [`Sessions::cut`] wakes `cut` when a
/// command matches it, and the request answers at once.
pub struct WaitingPoll<'a> {
    sessions: &'a Sessions,
    id: u64,
    pub cut: Arc<Notify>,
}

impl Drop for WaitingPoll<'_> {
    fn drop(&mut self) {
        self.sessions.inner().polls.remove(&self.id);
    }
}

#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    closing: bool,
    open: HashMap<SessionId, (Transport, WeakRecipient<Notice>)>,
    polls: HashMap<u64, (Grant, Arc<Notify>)>,
}

impl Sessions {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each critical section is one map operation or one pass over it: consistent even after a panic
        // elsewhere.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an open session; `false` when shutdown has begun, and the session should close at once.
    ///
    /// [`close_all`](Self::close_all) marks the hub closing and reads the map under the same lock, so a session
    /// is either registered before it (and told) or sees the mark here.
    pub fn register(&self, id: SessionId, transport: Transport, session: WeakRecipient<Notice>) -> bool {
        let mut inner = self.inner();
        if inner.closing {
            return false;
        }
        inner.open.insert(id, (transport, session));
        true
    }

    pub fn unregister(&self, id: SessionId) {
        self.inner().open.remove(&id);
    }

    /// Tells every open session that shutdown began; later registrations are refused. Only the first call sends.
    pub fn close_all(&self) {
        let sessions: Vec<_> = {
            let mut inner = self.inner();
            if std::mem::replace(&mut inner.closing, true) {
                return;
            }
            inner.open.values().filter_map(|(_, session)| session.upgrade()).collect()
        };
        for session in sessions {
            session.do_send(Notice::Closing);
        }
    }

    /// Registers a waiting long-poll request of `grant` until the returned guard is dropped.
    pub fn wait_poll(&self, grant: &Grant) -> WaitingPoll<'_> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let (id, cut) = (NEXT.fetch_add(1, Ordering::Relaxed), Arc::new(Notify::new()));
        self.inner().polls.insert(id, (grant.clone(), cut.clone()));
        WaitingPoll { sessions: self, id, cut }
    }

    /// Closes the open sessions `cut` matches and answers the waiting long-polls it matches; how many sessions
    /// closed and how many long-polls were answered.
    pub async fn cut(&self, cut: Cut) -> (usize, usize) {
        let cut = Arc::new(cut);
        let polls: Vec<_> = self
            .inner()
            .polls
            .values()
            .filter(|(grant, _)| cut.matches(None, grant))
            .map(|(_, notify)| notify.clone())
            .collect();
        for poll in &polls {
            poll.notify_one();
        }
        let closed = self.ask_all(|answer| Notice::Cut(cut.clone(), answer)).await;
        (closed.into_iter().filter(|closed| *closed).count(), polls.len())
    }

    /// What every open session is.
    pub async fn describe(&self) -> Vec<ConnectionInfo> {
        self.ask_all(Notice::Describe).await
    }

    /// Sends every open session the notice `ask` makes and collects their answers (a session that stops before
    /// it answers gives none).
    async fn ask_all<T>(&self, ask: impl Fn(oneshot::Sender<T>) -> Notice) -> Vec<T> {
        let sessions: Vec<_> = self.inner().open.values().filter_map(|(_, session)| session.upgrade()).collect();
        let answers: Vec<_> = sessions
            .into_iter()
            .filter_map(|session| {
                let (tx, rx) = oneshot::channel();
                session.try_send(ask(tx)).ok().map(|()| rx)
            })
            .collect();
        let mut collected = Vec::with_capacity(answers.len());
        for answer in answers {
            collected.extend(answer.await.ok());
        }
        collected
    }

    /// Tells the sessions of `transport` in heartbeat slot `slot` that their heartbeat is due; how many.
    pub fn heartbeat(&self, transport: Transport, slot: u64) -> usize {
        let due: Vec<_> = self
            .inner()
            .open
            .iter()
            .filter(|(id, (t, _))| *t == transport && id.slot(HEARTBEAT_SLOTS) == slot)
            .filter_map(|(_, (_, session))| session.upgrade())
            .collect();
        for session in &due {
            session.do_send(Notice::Heartbeat);
        }
        due.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    struct Recording(Arc<Mutex<Vec<&'static str>>>);

    impl Actor for Recording {
        type Context = Context<Self>;
    }

    impl Handler<Notice> for Recording {
        type Result = ();

        fn handle(&mut self, notice: Notice, _: &mut Self::Context) {
            let told = match notice {
                Notice::Heartbeat => "heartbeat",
                Notice::Closing => "closing",
                Notice::Cut(..) => "cut",
                Notice::Describe(_) => "describe",
                Notice::Presence { .. } => "presence",
            };
            self.0.lock().unwrap().push(told);
        }
    }

    async fn until(told: &Mutex<Vec<&'static str>>, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while told.lock().unwrap().len() < count && std::time::Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }

    #[actix_web::test]
    async fn every_open_session_is_told_once_and_later_ones_are_refused() {
        let sessions = Sessions::default();
        let told = Arc::new(Mutex::new(Vec::new()));
        let (a, b, gone) = (SessionId::new(), SessionId::new(), SessionId::new());
        let first = Recording(told.clone()).start();
        let second = Recording(told.clone()).start();
        assert!(sessions.register(a, Transport::WebSocket, first.downgrade().recipient()));
        assert!(sessions.register(b, Transport::ServerSentEvents, second.downgrade().recipient()));
        let third = Recording(told.clone()).start();
        assert!(sessions.register(gone, Transport::WebSocket, third.downgrade().recipient()));
        sessions.unregister(gone);

        sessions.close_all();
        sessions.close_all();
        let late = sessions.register(SessionId::new(), Transport::WebSocket, first.downgrade().recipient());
        assert!(!late, "registered after shutdown");
        until(&told, 2).await;
        assert_eq!(*told.lock().unwrap(), vec!["closing"; 2], "each open session once, the unregistered one never");
    }

    /// One pass over every slot tells each session of the transport exactly once, and no session of another.
    #[actix_web::test]
    async fn a_round_of_slots_tells_each_session_of_its_transport_once() {
        let sessions = Sessions::default();
        let websockets = Arc::new(Mutex::new(Vec::new()));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let mut held = Vec::new();
        for _ in 0..20 {
            let ws = Recording(websockets.clone()).start();
            let sse = Recording(streams.clone()).start();
            assert!(sessions.register(SessionId::new(), Transport::WebSocket, ws.downgrade().recipient()));
            assert!(sessions.register(SessionId::new(), Transport::ServerSentEvents, sse.downgrade().recipient()));
            held.extend([ws, sse]);
        }
        let told: usize = (0..HEARTBEAT_SLOTS).map(|slot| sessions.heartbeat(Transport::WebSocket, slot)).sum();
        assert_eq!(told, 20);
        until(&websockets, 20).await;
        assert_eq!(*websockets.lock().unwrap(), vec!["heartbeat"; 20]);
        assert!(streams.lock().unwrap().is_empty(), "SSE sessions were told a WebSocket heartbeat");
    }
}
