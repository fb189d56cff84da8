//! The open sessions: told when to send a heartbeat, and once when shutdown begins.
//!
//! An actor context polls every future it holds on each of its wake-ups, so a session that waited for shutdown
//! with a future of its own, or kept its heartbeat as an interval timer in its context, paid a poll of each on
//! every delivery. Here a session is an entry in a map: one ticker per transport tells each session when its
//! heartbeat is due, and shutdown is one message to each.
//!
//! The ticker spreads the heartbeats over the interval: it ticks [`HEARTBEAT_SLOTS`] times per interval and each
//! tick tells the sessions of one slot, so 15,000 connections get 1/8 of their pings every 3 s rather than all of
//! them at once, and each session still gets exactly one heartbeat per interval.

use std::collections::HashMap;
use std::sync::Mutex;

use actix::WeakRecipient;
use actix::prelude::*;

use crate::delivery::{SessionId, Transport};

/// How many slots a heartbeat interval is split into.
pub const HEARTBEAT_SLOTS: u64 = 8;

/// What the hub tells an open session.
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq)]
#[rtype(result = "()")]
pub enum Notice {
    /// The session's heartbeat is due (WebSocket: check the peer, send a ping; SSE: a comment).
    Heartbeat,
    /// Shutdown began: close.
    Closing,
}

#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    closing: bool,
    open: HashMap<SessionId, (Transport, WeakRecipient<Notice>)>,
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

    struct Recording(Arc<Mutex<Vec<Notice>>>);

    impl Actor for Recording {
        type Context = Context<Self>;
    }

    impl Handler<Notice> for Recording {
        type Result = ();

        fn handle(&mut self, notice: Notice, _: &mut Self::Context) {
            self.0.lock().unwrap().push(notice);
        }
    }

    async fn until(told: &Mutex<Vec<Notice>>, count: usize) {
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
        assert_eq!(
            *told.lock().unwrap(),
            vec![Notice::Closing; 2],
            "each open session once, the unregistered one never"
        );
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
        assert_eq!(*websockets.lock().unwrap(), vec![Notice::Heartbeat; 20]);
        assert!(streams.lock().unwrap().is_empty(), "SSE sessions were told a WebSocket heartbeat");
    }
}
