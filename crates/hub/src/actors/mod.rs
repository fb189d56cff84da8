//! The actors of the hub: sessions register subscriptions with topic rooms through the dispatcher, which turns
//! the storage actor's ordered batches into ordered deliveries.
//!
//! - [`dispatcher::Dispatcher`]: owns the rooms, forwards joins and leaves, and delivers each batch.
//! - [`room::TopicRoom`]: one per topic pattern; an index of subscriptions by the scope pair they route on.
//! - [`session::WsSession`]: one per WebSocket connection.
//! - [`sse::SseSession`]: one per SSE stream.
//! - A long-poll request that waits is no actor: rooms wake it directly ([`subscriber::Target::Wake`]).

pub mod dispatcher;
pub mod room;
pub mod session;
pub mod sse;
pub mod subscriber;
