//! Byte accounting of what a connection has been given to write versus what the network has taken.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

/// Shared between a connection's actor (which adds what it queues) and the response stream (which adds what the
/// HTTP layer takes). Their difference is what waits in memory for a reader that is not reading.
#[derive(Debug, Default)]
pub struct Outbound {
    queued: AtomicU64,
    flushed: AtomicU64,
}

impl Outbound {
    pub fn queued(&self, bytes: usize) {
        self.queued.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes queued and not yet taken by the network.
    pub fn pending(&self) -> u64 {
        self.queued.load(Ordering::Relaxed).saturating_sub(self.flushed.load(Ordering::Relaxed))
    }
}

/// Wraps a response body stream, counting the bytes the HTTP layer takes from it.
pub struct CountingStream<S> {
    inner: S,
    outbound: Arc<Outbound>,
}

impl<S> CountingStream<S> {
    pub fn new(inner: S, outbound: Arc<Outbound>) -> Self {
        Self { inner, outbound }
    }
}

impl<S, E> Stream for CountingStream<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled {
            self.outbound.flushed.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        polled
    }
}

/// The size of a WebSocket frame the server sends (unmasked) with a payload of `len` bytes.
pub fn ws_frame_len(len: usize) -> usize {
    len + match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}
