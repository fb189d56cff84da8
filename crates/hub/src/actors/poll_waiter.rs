//! A long-poll request waiting for its first matching event.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::subscriber::Deliver;

/// Fires `wake` on the first delivery; the request then reads the log itself.
pub struct PollWaiter {
    wake: Option<oneshot::Sender<()>>,
}

impl PollWaiter {
    pub fn new(wake: oneshot::Sender<()>) -> Self {
        Self { wake: Some(wake) }
    }
}

impl Actor for PollWaiter {
    type Context = Context<Self>;
}

impl Handler<Deliver> for PollWaiter {
    type Result = ();

    fn handle(&mut self, _: Deliver, ctx: &mut Self::Context) {
        if let Some(wake) = self.wake.take() {
            // The request may have timed out meanwhile; then nobody listens.
            let _ = wake.send(());
        }
        ctx.stop();
    }
}
