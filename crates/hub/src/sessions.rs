//! The open sessions, told once when shutdown begins.
//!
//! A session used to wait for shutdown with a future spawned in its own context; an actor context polls every
//! future it holds on each of its wake-ups, so that wait cost every delivery a poll of the shutdown channel. Here
//! a session is an entry in a map, and shutdown is one message to each.

use std::collections::HashMap;
use std::sync::Mutex;

use actix::WeakRecipient;
use actix::prelude::*;

use crate::actors::subscriber::SessionId;

/// Sent to every open session when shutdown begins.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct ServerClosing;

#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    closing: bool,
    open: HashMap<SessionId, WeakRecipient<ServerClosing>>,
}

impl Sessions {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Each critical section is one map operation: consistent even after a panic elsewhere.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an open session; `false` when shutdown has begun, and the session should close at once.
    ///
    /// [`close_all`](Self::close_all) marks the hub closing and reads the map under the same lock, so a session
    /// is either registered before it (and told) or sees the mark here.
    pub fn register(&self, id: SessionId, session: WeakRecipient<ServerClosing>) -> bool {
        let mut inner = self.inner();
        if inner.closing {
            return false;
        }
        inner.open.insert(id, session);
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
            inner.open.values().filter_map(WeakRecipient::upgrade).collect()
        };
        for session in sessions {
            session.do_send(ServerClosing);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Counting(Arc<AtomicUsize>);

    impl Actor for Counting {
        type Context = Context<Self>;
    }

    impl Handler<ServerClosing> for Counting {
        type Result = ();

        fn handle(&mut self, _: ServerClosing, _: &mut Self::Context) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[actix_web::test]
    async fn every_open_session_is_told_once_and_later_ones_are_refused() {
        let sessions = Sessions::default();
        let told = Arc::new(AtomicUsize::new(0));
        let (a, b, gone) = (SessionId::new(), SessionId::new(), SessionId::new());
        let first = Counting(told.clone()).start();
        let second = Counting(told.clone()).start();
        assert!(sessions.register(a, first.downgrade().recipient()));
        assert!(sessions.register(b, second.downgrade().recipient()));
        assert!(sessions.register(gone, Counting(told.clone()).start().downgrade().recipient()));
        sessions.unregister(gone);

        sessions.close_all();
        sessions.close_all();
        assert!(!sessions.register(SessionId::new(), first.downgrade().recipient()), "registered after shutdown");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while told.load(Ordering::SeqCst) < 2 && std::time::Instant::now() < deadline {
            actix_web::rt::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(told.load(Ordering::SeqCst), 2, "each open session once, the unregistered one never");
    }
}
