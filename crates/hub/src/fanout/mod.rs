//! The fan-out: the storage actor's ordered batches become ordered deliveries to the subscriptions that match.
//!
//! - [`dispatcher::Dispatcher`]: owns the rooms, forwards joins and leaves, builds each event's frame once per
//!   format and delivers each batch.
//! - [`room::TopicRoom`]: one per topic pattern; an index of subscriptions by the scope pair they route on.
//! - [`subscription`]: one subscription's replay-then-live state and its ordering rules.
//! - [`senders`]: the threads a step the fan-out sends to sockets itself is shared with.
//! - [`poll_wakes`]: the subscriptions that waiting long-poll requests share.
//! - [`sessions`]: the open sessions, told when their heartbeat is due and when shutdown begins.

pub mod dispatcher;
pub mod poll_wakes;
pub mod room;
pub mod senders;
pub mod sessions;
pub mod subscription;
