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

/// Part of a share of one step: deliveries, or (empty, with `done`) the mark that the helper has delivered everything
/// handed to it before.
struct Part {
    work: Vec<(Target, Deliver)>,
    done: Option<mpsc::SyncSender<()>>,
}

pub struct Senders {
    helpers: Vec<mpsc::Sender<Part>>,
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
                        part.deliver();
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

    /// The hand-over of a step to `connections` connections (0: a step the fan-out does not share).
    pub fn step(&self, connections: usize) -> Sharing<'_> {
        let shares = (connections / Self::MIN_SHARE).clamp(1, self.helpers.len() + 1);
        Sharing {
            senders: self,
            helpers: shares - 1,
            per_share: connections.div_ceil(shares),
            taken: 0,
            part: Vec::new(),
        }
    }

    /// Gives helper `n` a part; `false` when the helper is gone, and the part was delivered here.
    fn send(&self, n: usize, part: Part) -> bool {
        match self.helpers[n].send(part) {
            Ok(()) => true,
            Err(mpsc::SendError(part)) => {
                part.deliver();
                false
            }
        }
    }
}

impl Part {
    fn deliver(self) {
        for (target, deliver) in self.work {
            target.deliver(deliver);
        }
        if let Some(done) = self.done {
            // The step waits for this; it cannot have stopped waiting.
            let _ = done.send(());
        }
    }
}

/// One step's hand-over. Deliveries are offered in connection order: the first `per_share` go to helper 0, the
/// next to helper 1, and so on; once the helpers' shares are full, an offer is given back for the fan-out's own
/// thread. Parts go out as they fill; [`finish`](Self::finish) returns once every helper delivered its share.
pub struct Sharing<'a> {
    senders: &'a Senders,
    /// How many helpers take a share of this step.
    helpers: usize,
    per_share: usize,
    /// Deliveries taken so far: the next one is helper `taken / per_share`'s.
    taken: usize,
    part: Vec<(Target, Deliver)>,
}

impl Sharing<'_> {
    /// Takes `deliver` for a helper, or gives it back for the caller to deliver.
    pub fn offer(&mut self, target: &Target, deliver: Deliver) -> Option<Deliver> {
        if self.taken == self.helpers * self.per_share {
            return Some(deliver);
        }
        self.part.push((target.clone(), deliver));
        self.taken += 1;
        if self.part.len() == Senders::PART || self.taken.is_multiple_of(self.per_share) {
            self.hand_part();
        }
        None
    }

    fn hand_part(&mut self) {
        if !self.part.is_empty() {
            let helper = (self.taken - 1) / self.per_share;
            let work = std::mem::replace(&mut self.part, Vec::with_capacity(Senders::PART));
            self.senders.send(helper, Part { work, done: None });
        }
    }

    /// Hands over what is left (a share the step's offers did not fill) and returns once every helper that took
    /// part of the step has delivered it: each is sent a mark after its last part, and answers it in order.
    pub fn finish(mut self) {
        self.hand_part();
        let marked: Vec<_> = (0..self.taken.div_ceil(self.per_share.max(1)))
            .filter_map(|n| {
                let (done, delivered) = mpsc::sync_channel(1);
                self.senders.send(n, Part { work: Vec::new(), done: Some(done) }).then_some(delivered)
            })
            .collect();
        for delivered in marked {
            // An error means the helper dropped the mark unanswered: it finished by unwinding, and its own panic
            // message says why. Nothing more can be sent for it.
            let _ = delivered.recv();
        }
    }
}
