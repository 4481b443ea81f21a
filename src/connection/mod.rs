//! A client's connection as the client sessions and the admin console both hold it: the socket,
//! its read buffer and what TLS established; and [`ClientError`], every way a client's
//! connection ends, each with the ErrorResponse the client is told.

mod error;

pub use error::ClientError;

use crate::address::Address;
use crate::stream::Stream;
use bytes::BytesMut;
use tokio::net::TcpStream;

/// A client's socket and its read buffer.
pub struct ClientConn {
    pub stream: Stream,
    pub buf: BytesMut,
    pub peer: Address,
    /// What the TLS handshake established, once there was one. Boxed: most clients have none,
    /// and every client's task holds this struct.
    pub tls: Option<Box<TlsSession>>,
}

/// What pgmux keeps of a client's TLS session.
pub struct TlsSession {
    /// tls-server-end-point data of pgmux's certificate, for SCRAM-SHA-256-PLUS.
    pub end_point: Option<Vec<u8>>,
    /// Common name of the client's certificate, when it presented one that was verified.
    pub peer_common_name: Option<String>,
    /// Protocol version and cipher suite, for SHOW CLIENTS.
    pub description: String,
}

/// Read buffer a client starts with; it grows for large messages.
pub const CLIENT_BUFFER: usize = 8 * 1024;

impl ClientConn {
    /// A client just accepted over TCP.
    pub fn accepted(stream: TcpStream, peer: std::net::SocketAddr) -> ClientConn {
        ClientConn::over(Stream::Plain(stream), peer.into())
    }

    /// A client just accepted, over either kind of socket.
    pub fn over(stream: Stream, peer: Address) -> ClientConn {
        ClientConn {
            stream,
            buf: BytesMut::with_capacity(CLIENT_BUFFER),
            peer,
            tls: None,
        }
    }
}
