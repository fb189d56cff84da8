//! The connection actors: one per open WebSocket or SSE stream, writing what the fan-out delivers into the
//! connection's outbound queue.
//!
//! - [`ws::WsSession`]: one per WebSocket connection; reads client frames, writes server frames.
//! - [`sse::SseSession`]: one per SSE stream.
//! - [`engine`]: drives a connection's subscriptions (join the rooms, replay page by page, then live) for either.
//! - [`outbound`]: the per-connection queue of bytes not yet sent, and the slow-consumer bound on it.
//! - [`sink`]: how the fan-out writes a live delivery into that queue itself, or hands it to the session.
//! - [`socket`]: the socket under a connection, which a WebSocket's queue writes to directly.
//! - [`heartbeat`]: the tickers that tell the open sessions when their heartbeat is due.
//!
//! A long-poll request that waits is no actor: the fan-out wakes it directly ([`crate::fanout::poll_wakes`]).

pub mod engine;
pub mod heartbeat;
pub mod outbound;
pub mod sink;
pub mod socket;
pub mod sse;
pub mod ws;
