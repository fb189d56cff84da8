//! The socket under an HTTP connection, which a WebSocket's queue writes to directly
//! ([`Outbound::with_socket`](crate::connections::outbound::Outbound::with_socket)).

use std::any::Any;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use actix_web::dev::Extensions;

/// The descriptor of a connection's socket, kept in the connection's data ([`remember`]).
///
/// It is valid while the connection's HTTP dispatcher holds its I/O, and a response's body is dropped before that
/// (the dispatcher declares its state, which holds the body, before its I/O: fields drop in declaration order).
/// So a body may use the descriptor until it is dropped: the WebSocket's outbound queue keeps it, and the body's drop
/// takes it out under the queue's lock, which every send holds. No descriptor is duplicated: a process may
/// hold as many connections as it may hold descriptors.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSocket(RawFd);

/// `HttpServer::on_connect`: keeps each plain TCP connection's descriptor (a number; nothing is opened).
pub fn remember(connection: &dyn Any, data: &mut Extensions) {
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        data.insert(ConnectionSocket(stream.as_raw_fd()));
    }
}

impl ConnectionSocket {
    /// Sends what the socket takes of `buf` without waiting (the server's sockets are non-blocking). Only while
    /// the connection's response body is alive (the type's doc).
    pub fn send(self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: the caller holds the socket only while the connection's response body is alive, and the HTTP
        // dispatcher closes the descriptor only after it dropped that body (the type's doc).
        let fd = unsafe { BorrowedFd::borrow_raw(self.0) };
        socket2::SockRef::from(&fd).send(buf)
    }

    /// The socket of a stream the test owns, open for as long as the test uses it.
    #[cfg(test)]
    pub fn of(stream: &std::net::TcpStream) -> Self {
        Self(stream.as_raw_fd())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::net::TcpStream;

    use super::*;

    #[actix_web::test]
    async fn a_remembered_connection_is_written_through_its_descriptor() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let server = actix_web::rt::net::TcpStream::from_std(accepted).unwrap();

        let mut data = Extensions::new();
        remember(&server, &mut data);
        let socket = data.get::<ConnectionSocket>().expect("a TCP connection is remembered");
        assert_eq!(socket.send(b"hello").unwrap(), 5);
        let mut got = [0; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");

        let mut other = Extensions::new();
        remember(&"not a socket", &mut other);
        assert!(other.get::<ConnectionSocket>().is_none());
    }
}
