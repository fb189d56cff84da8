//! A connection's outbound queue: what its session produced, and what the network has taken.
//!
//! The session writes into the queue and the HTTP response body drains it only as fast as the socket accepts
//! bytes. The difference (`pending`) is what a reader that does not read costs the hub; past the bound the
//! session is a slow consumer and is [cut](Outbound::cut): the queue is emptied and nothing more of the session's
//! output goes out but its last word (a WebSocket close frame). What the client got is then a prefix of what was
//! written, so resuming from its last id loses nothing; a gap followed by later frames would.
//!
//! Sessions are plain actors that write into the queue (WebSocket frames encoded by the session itself), so they
//! run whether or not the network takes their output: a stalled reader cannot stall its session's heartbeat,
//! slow-consumer check or mailbox.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

#[derive(Debug, Default)]
pub struct Outbound {
    /// Bytes the session produced.
    produced: AtomicU64,
    /// Bytes the network took, or that were discarded.
    taken: AtomicU64,
    queue: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    /// No more chunks will come.
    finished: bool,
    /// The response body was dropped: the client is gone.
    reader_gone: bool,
    /// The session was cut as a slow consumer: later chunks are refused.
    cut: bool,
    waker: Option<Waker>,
}

/// Frames already in their wire form as one chunk: a single frame as it is (shared, not copied), several
/// concatenated; `None` when there are none.
pub fn one_chunk<'a>(frames: impl IntoIterator<Item = &'a Bytes>) -> Option<Bytes> {
    let mut frames = frames.into_iter();
    let first = frames.next()?;
    let Some(second) = frames.next() else { return Some(first.clone()) };
    let mut chunk = BytesMut::with_capacity(first.len() + second.len());
    chunk.extend_from_slice(first);
    chunk.extend_from_slice(second);
    frames.for_each(|frame| chunk.extend_from_slice(frame));
    Some(chunk.freeze())
}

impl Outbound {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Every critical section below is a few pushes and pops: a panic inside one is impossible in practice,
        // and the queue is still consistent if it happened.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts bytes the session produced.
    pub fn produced(&self, bytes: usize) {
        self.produced.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes produced and not yet taken by the network.
    pub fn pending(&self) -> u64 {
        self.produced.load(Ordering::Relaxed).saturating_sub(self.taken.load(Ordering::Relaxed))
    }

    /// Queues a chunk for the network; `false` when the client is gone, was cut, or the body was finished (nothing
    /// follows a close frame, even a delivery the fan-out writes meanwhile).
    pub fn push(&self, chunk: Bytes) -> bool {
        let mut queue = self.queue();
        if queue.reader_gone || queue.cut || queue.finished {
            return false;
        }
        queue.chunks.push_back(chunk);
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
        true
    }

    /// Writes and counts a chunk (for sessions that produce bytes directly, like SSE).
    pub fn write(&self, chunk: Bytes) -> bool {
        self.produced(chunk.len());
        self.push(chunk)
    }

    /// Cuts a slow consumer: drops everything queued and not yet taken, refuses every later chunk, and ends the
    /// body after `last` (a WebSocket close frame), if given. Only the first cut does anything.
    pub fn cut(&self, last: Option<Bytes>) {
        let mut queue = self.queue();
        if queue.cut {
            return;
        }
        queue.cut = true;
        let dropped: usize = queue.chunks.drain(..).map(|c| c.len()).sum();
        self.taken.fetch_add(dropped as u64, Ordering::Relaxed);
        if let Some(last) = last {
            queue.chunks.push_back(last);
        }
        queue.finished = true;
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
    }

    /// No more chunks: the body ends once the queue is drained.
    pub fn finish(&self) {
        let mut queue = self.queue();
        queue.finished = true;
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
    }
}

/// The HTTP response body of a connection: drains its [`Outbound`] queue.
pub struct OutboundBody(Arc<Outbound>);

impl OutboundBody {
    pub fn new(outbound: Arc<Outbound>) -> Self {
        Self(outbound)
    }
}

impl Stream for OutboundBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut queue = self.0.queue();
        if let Some(chunk) = queue.chunks.pop_front() {
            self.0.taken.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            return Poll::Ready(Some(Ok(chunk)));
        }
        if queue.finished {
            return Poll::Ready(None);
        }
        queue.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        let mut queue = self.0.queue();
        queue.reader_gone = true;
        queue.chunks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_counts_what_was_produced_and_not_taken_and_discard_frees_it() {
        let outbound = Arc::new(Outbound::default());
        outbound.write(Bytes::from_static(b"hello"));
        outbound.write(Bytes::from_static(b"world!"));
        assert_eq!(outbound.pending(), 11);
        let mut body = OutboundBody::new(outbound.clone());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(Pin::new(&mut body).poll_next(&mut cx), Poll::Ready(Some(Ok(c))) if c == "hello"));
        assert_eq!(outbound.pending(), 6);
        outbound.cut(None);
        assert_eq!(outbound.pending(), 0);
        assert!(matches!(Pin::new(&mut body).poll_next(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn a_cut_sends_its_last_word_and_refuses_everything_after_it() {
        let outbound = Arc::new(Outbound::default());
        let mut body = OutboundBody::new(outbound.clone());
        outbound.write(Bytes::from_static(b"queued"));
        outbound.cut(Some(Bytes::from_static(b"close")));
        outbound.cut(Some(Bytes::from_static(b"again")));

        assert!(!outbound.write(Bytes::from_static(b"later")), "a chunk after the cut was taken");
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(Pin::new(&mut body).poll_next(&mut cx), Poll::Ready(Some(Ok(c))) if c == "close"));
        assert!(matches!(Pin::new(&mut body).poll_next(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn writes_after_the_body_is_dropped_report_the_client_gone() {
        let outbound = Arc::new(Outbound::default());
        drop(OutboundBody::new(outbound.clone()));
        assert!(!outbound.write(Bytes::from_static(b"x")));
    }
}
