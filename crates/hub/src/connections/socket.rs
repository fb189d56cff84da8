//! The socket under an HTTP connection, for the handlers that write to it directly (WebSocket sessions,
//! [`Outbound::with_socket`](crate::connections::outbound::Outbound::with_socket)).

use std::any::Any;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use actix_web::dev::Extensions;

/// The descriptor of a connection's socket, kept in the connection's data ([`remember`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSocket(RawFd);

/// `HttpServer::on_connect`: keeps each plain TCP connection's descriptor (a number; nothing is opened).
pub fn remember(connection: &dyn Any, data: &mut Extensions) {
    if let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
        data.insert(ConnectionSocket(stream.as_raw_fd()));
    }
}

impl ConnectionSocket {
    /// A handle of its own on the socket, which stays valid whatever the HTTP layer does with its own. Call it
    /// only while a request of this connection is being handled.
    pub fn duplicate(self) -> std::io::Result<TcpStream> {
        // SAFETY: the descriptor is the socket of the connection whose request is being handled; the HTTP
        // dispatcher that serves the request owns it and keeps it open until the request's response is dropped.
        let socket = unsafe { BorrowedFd::borrow_raw(self.0) };
        Ok(TcpStream::from(socket.try_clone_to_owned()?))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    #[actix_web::test]
    async fn a_remembered_connection_is_written_through_its_duplicate() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let server = actix_web::rt::net::TcpStream::from_std(accepted).unwrap();

        let mut data = Extensions::new();
        remember(&server, &mut data);
        let socket = data.get::<ConnectionSocket>().expect("a TCP connection is remembered");
        let mut duplicate = socket.duplicate().unwrap();
        duplicate.write_all(b"hello").unwrap();
        let mut got = [0; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");

        let mut other = Extensions::new();
        remember(&"not a socket", &mut other);
        assert!(other.get::<ConnectionSocket>().is_none());
    }
}
