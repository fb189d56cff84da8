//! The fan-out's sending threads. When the fan-out sends a step's deliveries to the sockets itself
//! ([`Deliver::send_now`]), most of a delivery's cost is the kernel's `send`; one thread sending to a thousand
//! connections then takes milliseconds while the other cores idle. A step of one event to many connections is
//! therefore shared: each helper thread gets a contiguous share of the step's WebSocket connections, the fan-out's
//! own thread sends the last share and the SSE connections (whose workers write their deliveries anyway), and the
//! step ends only once every share is sent. A connection is in exactly one share of a step, and steps never
//! overlap, so each connection's deliveries keep their order.
//!
//! Only steps the fan-out sends itself are shared: those come when it has time to spare, at low rates, when the
//! cores are idle. Under load the fan-out queues, and the connections' own workers send in parallel.

use std::sync::mpsc;

use crate::delivery::{Deliver, Target};

/// Part of a share of one step: deliveries, and with the share's last part, where to say they are all handed over.
struct Part {
    work: Vec<(Target, Deliver)>,
    done: Option<mpsc::SyncSender<()>>,
}

pub struct Senders {
    helpers: Vec<mpsc::Sender<Part>>,
}

/// A share handed to a helper, to wait for before the step ends.
pub struct Handed(Option<mpsc::Receiver<()>>);

impl Handed {
    /// Returns once the helper has handed over every delivery of its share (at once if the helper delivered none
    /// because it was gone: then the fan-out's thread did).
    pub fn wait(self) {
        if let Some(done) = self.0 {
            // An error means the helper dropped the share's sender: it finished by unwinding, and its own panic
            // message says why. Nothing more can be sent for it.
            let _ = done.recv();
        }
    }
}

impl Senders {
    /// Fewer connections than this in a share do not pay for waking a thread (tens of microseconds, the cost of
    /// a few dozen sends).
    pub const MIN_SHARE: usize = 128;
    /// A share is handed over in parts of this many connections: the helper starts sending (and its wake-up
    /// starts) once the first part is built, not the whole share.
    pub const PART: usize = 32;

    /// `helpers` threads beside the fan-out's own (none: the fan-out sends alone).
    pub fn start(helpers: usize) -> Self {
        let helpers = (0..helpers)
            .filter_map(|n| {
                let (tx, rx) = mpsc::channel::<Part>();
                let spawned = std::thread::Builder::new().name(format!("hub-fanout-{n}")).spawn(move || {
                    while let Ok(part) = rx.recv() {
                        for (target, deliver) in part.work {
                            target.deliver(deliver);
                        }
                        if let Some(done) = part.done {
                            // The step waits for this; it cannot have stopped waiting.
                            let _ = done.send(());
                        }
                    }
                });
                match spawned {
                    Ok(_) => Some(tx),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot start a fan-out sending thread; the fan-out sends alone");
                        None
                    }
                }
            })
            .collect();
        Self { helpers }
    }

    /// Into how many shares a step to `connections` connections is split (1: the fan-out sends it alone).
    pub fn shares(&self, connections: usize) -> usize {
        (connections / Self::MIN_SHARE).clamp(1, self.helpers.len() + 1)
    }

    /// Hands helper `n` part of its share; with the share's `last` part, returns what to wait for before the
    /// step ends. A helper that is gone has the part delivered here, before this returns.
    pub fn hand(&self, n: usize, work: Vec<(Target, Deliver)>, last: bool) -> Option<Handed> {
        let (done, finished) = if last {
            let (done, finished) = mpsc::sync_channel(1);
            (Some(done), Some(finished))
        } else {
            (None, None)
        };
        match self.helpers[n].send(Part { work, done }) {
            Ok(()) => finished.map(|finished| Handed(Some(finished))),
            Err(mpsc::SendError(part)) => {
                for (target, deliver) in part.work {
                    target.deliver(deliver);
                }
                last.then_some(Handed(None))
            }
        }
    }
}
