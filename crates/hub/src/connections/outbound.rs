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
//!
//! A WebSocket connection's queue also holds its socket ([`Outbound::with_socket`]). After the handshake the HTTP
//! layer writes nothing on such a connection but what its body yields, and it polls that body first in a round only
//! once everything before is written (the vendored actix-http's change, `vendor/README.md`). So while the body waits
//! with the queue empty since such a poll, the HTTP layer holds none of the connection's bytes, and
//! [`Outbound::send`] writes a chunk to the socket itself: no task is woken and the HTTP layer does nothing. What
//! the socket does not take at once (its buffer is full) is queued, and from then on everything goes through the
//! body, as for SSE, until the queue is empty again. The fan-out sends so while it has time to spare
//! ([`crate::delivery::Deliver::send_now`]); under load it queues, and the connections' own workers write, several
//! events per `send`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;

use crate::connections::socket::ConnectionSocket;

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
    /// The connection's socket, where [`Outbound::send`] may write directly; taken out when the body is dropped,
    /// before the HTTP layer closes it.
    socket: Option<ConnectionSocket>,
    /// The body waits with the queue empty, and the HTTP layer holds none of the connection's bytes: a chunk may go
    /// to the socket at once.
    direct: bool,
    /// The body's last poll yielded a chunk, which the HTTP layer may not have written yet.
    yielded: bool,
}

impl Queue {
    /// Sends as much of `chunk` as the socket takes now, and returns how much that was: 0 when the socket's
    /// buffer is full or writing failed (the HTTP layer then writes the rest, and meets the error itself).
    fn send_now(&self, chunk: &[u8]) -> usize {
        let Some(socket) = self.socket else { return 0 };
        let mut sent = 0;
        while sent < chunk.len() {
            match socket.send(&chunk[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        sent
    }
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
    /// The queue of a connection whose HTTP layer writes nothing after the response's head but what the body
    /// yields (an upgraded connection: a WebSocket), with the connection's socket, which [`send`](Self::send) may
    /// then use directly (the module's doc). The socket must be in non-blocking mode, as the server's sockets are.
    pub fn with_socket(socket: ConnectionSocket) -> Self {
        let outbound = Self::default();
        outbound.queue().socket = Some(socket);
        outbound
    }

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
        self.enqueue(chunk, false)
    }

    /// Writes and counts a chunk, to the socket at once when the queue may ([`with_socket`](Self::with_socket),
    /// the module's doc), else into the queue as [`write`](Self::write) does.
    pub fn send(&self, chunk: Bytes) -> bool {
        self.produced(chunk.len());
        self.enqueue(chunk, true)
    }

    fn enqueue(&self, chunk: Bytes, send_now: bool) -> bool {
        let mut queue = self.queue();
        if queue.reader_gone || queue.cut || queue.finished {
            return false;
        }
        let mut chunk = chunk;
        if send_now && queue.direct {
            let sent = queue.send_now(&chunk);
            self.taken.fetch_add(sent as u64, Ordering::Relaxed);
            if sent == chunk.len() {
                return true;
            }
            // The rest waits in the queue: the body writes it when the socket can take it.
            chunk = chunk.slice(sent..);
        }
        // Whatever is queued goes through the body, and everything after it, until the body finds the queue empty.
        queue.direct = false;
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
            queue.yielded = true;
            return Poll::Ready(Some(Ok(chunk)));
        }
        if queue.finished {
            return Poll::Ready(None);
        }
        if queue.socket.is_some() {
            if std::mem::take(&mut queue.yielded) {
                // The HTTP layer may still hold what was just yielded: it writes it, then polls again (woken
                // here), and that first poll of its next round comes only once everything is written.
                cx.waker().wake_by_ref();
            } else {
                // The first poll of a round, with the queue empty: everything written so far is in the kernel.
                queue.direct = true;
            }
        }
        if !queue.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            queue.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        let mut queue = self.0.queue();
        queue.reader_gone = true;
        queue.chunks.clear();
        // The HTTP layer closes the socket after this: nothing may use it any more.
        queue.socket = None;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::TcpStream;

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

    /// Polls the body as the patched HTTP/1 dispatcher does on an upgraded connection: a round polls it until it
    /// waits, then writes what it yielded (blocking, in the test); a body that yielded is polled again in a new round.
    /// Returns whether it yielded.
    fn drain_as_the_http_layer_does(body: &mut OutboundBody, socket: &TcpStream) -> bool {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut yielded = false;
        loop {
            // A round: chunks until the body waits, then everything is written.
            let mut round = false;
            while let Poll::Ready(Some(Ok(chunk))) = Pin::new(&mut *body).poll_next(&mut cx) {
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    match (&*socket).write(rest) {
                        Ok(n) => rest = &rest[n..],
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                        Err(e) => panic!("{e}"),
                    }
                }
                round = true;
            }
            yielded |= round;
            if !round {
                // A body that yielded woke itself: the next round follows.
                return yielded;
            }
        }
    }

    #[test]
    fn writers_send_to_the_socket_while_the_body_waits_and_keep_the_order_once_it_is_full() {
        use std::io::Read as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&server).set_send_buffer_size(4096).unwrap();
        let outbound = Arc::new(Outbound::with_socket(ConnectionSocket::of(&server)));
        let mut body = OutboundBody::new(outbound.clone());

        // Before the body was polled, the HTTP layer may still hold the response's head: queued.
        assert!(outbound.send(Bytes::from_static(b"head;")));
        assert_eq!(outbound.pending(), 5);
        assert!(drain_as_the_http_layer_does(&mut body, &server));
        // The body waits with the queue empty: the next chunk goes to the socket, and the body yields nothing.
        assert!(outbound.send(Bytes::from_static(b"direct;")));
        assert_eq!(outbound.pending(), 0);
        assert!(!drain_as_the_http_layer_does(&mut body, &server), "the direct chunk was also queued");
        // A chunk written rather than sent goes through the body, and the next one sent follows it there.
        assert!(outbound.write(Bytes::from_static(b"queued;")));
        assert!(outbound.send(Bytes::from_static(b"after;")));
        assert_eq!(outbound.pending(), 13);
        assert!(drain_as_the_http_layer_does(&mut body, &server));
        let mut got = vec![0; 25];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, b"head;direct;queued;after;");

        // A reader that does not read: the socket takes what fits, the rest and everything after it are queued.
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let chunk = Bytes::from(format!("{i:04}:").repeat(256));
            expected.extend_from_slice(&chunk);
            assert!(outbound.send(chunk));
        }
        assert!(outbound.pending() > 0, "a socket that nobody reads took 2.5 MB");
        let reader = std::thread::spawn(move || {
            let mut got = vec![0; expected.len()];
            client.read_exact(&mut got).unwrap();
            assert!(got == expected, "the bytes arrived out of order");
            client
        });
        assert!(drain_as_the_http_layer_does(&mut body, &server));
        let mut client = reader.join().unwrap();
        assert_eq!(outbound.pending(), 0);

        // Drained, the body waits again: direct once more.
        assert!(outbound.send(Bytes::from_static(b"again")));
        assert!(!drain_as_the_http_layer_does(&mut body, &server));
        let mut got = vec![0; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, b"again");

        // Once the body is dropped (the connection is closing), nothing is written, to the socket or the queue.
        drop(body);
        assert!(!outbound.send(Bytes::from_static(b"late")));
        client.set_read_timeout(Some(std::time::Duration::from_millis(50))).unwrap();
        assert!(client.read(&mut got).is_err(), "something was written after the body was dropped");
    }

    #[test]
    fn writes_after_the_body_is_dropped_report_the_client_gone() {
        let outbound = Arc::new(Outbound::default());
        drop(OutboundBody::new(outbound.clone()));
        assert!(!outbound.write(Bytes::from_static(b"x")));
    }
}
