//! One direction's output: what was scanned and not yet all written, and the write loop that
//! drains it into the client's stream or the server connection, partial writes and TLS
//! flushes included.

use super::link::RelayError;
use crate::server::ServerConn;
use crate::stream::Stream;
use bytes::{Buf, BytesMut};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// Bytes scanned for one direction and not yet all written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outgoing {
    Empty,
    /// The first this many bytes of the source's read buffer.
    Read(usize),
    /// All of the direction's composed buffer.
    Composed,
    /// All written; TLS may still hold some of it.
    Flushing,
}

impl Outgoing {
    /// The same kind of output, with `left` bytes of it still to write.
    fn shrunk_to(self, left: usize) -> Outgoing {
        match self {
            Outgoing::Read(_) => Outgoing::Read(left),
            other => other,
        }
    }
}

/// Where one direction writes: the client's stream or the server connection.
pub(super) trait Sink {
    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8])
        -> Poll<Result<usize, RelayError>>;
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>>;
    fn is_tls(&self) -> bool;
}

pub(super) struct ClientSink<'a>(pub(super) &'a mut Stream);

impl Sink for ClientSink<'_> {
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<Result<usize, RelayError>> {
        match Pin::new(&mut *self.0).poll_write(cx, bytes) {
            Poll::Ready(Ok(0)) => Poll::Ready(Err(RelayError::ClientClosed)),
            Poll::Ready(result) => Poll::Ready(result.map_err(RelayError::Client)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        Pin::new(&mut *self.0)
            .poll_flush(cx)
            .map_err(RelayError::Client)
    }

    fn is_tls(&self) -> bool {
        self.0.is_tls()
    }
}

pub(super) struct ServerSink<'a>(pub(super) &'a mut ServerConn);

impl Sink for ServerSink<'_> {
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<Result<usize, RelayError>> {
        self.0.poll_write(cx, bytes).map_err(RelayError::Server)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayError>> {
        self.0.poll_flush(cx).map_err(RelayError::Server)
    }

    fn is_tls(&self) -> bool {
        self.0.stream.is_tls()
    }
}

/// Writes what `out` says one direction owes, from the first bytes of its source's read
/// buffer or from its composed buffer (`source`), advancing past what was written. Ready once
/// something was written (or flushed) or it failed.
pub(super) fn drain(
    cx: &mut Context<'_>,
    out: &mut Outgoing,
    (read, composed): (&mut BytesMut, &mut BytesMut),
    sink: &mut impl Sink,
) -> Poll<Result<(), RelayError>> {
    let mut wrote = false;
    loop {
        let bytes = match *out {
            Outgoing::Empty => break,
            Outgoing::Read(n) => &read[..n],
            Outgoing::Composed => &composed[..],
            Outgoing::Flushing => {
                if let Poll::Ready(flushed) = sink.poll_flush(cx) {
                    flushed?;
                    *out = Outgoing::Empty;
                    wrote = true;
                }
                break;
            }
        };
        let n = match sink.poll_write(cx, bytes) {
            Poll::Ready(written) => written?,
            Poll::Pending => break,
        };
        wrote = true;
        let left = match *out {
            Outgoing::Read(len) => {
                read.advance(n);
                len - n
            }
            _ => {
                composed.advance(n);
                composed.len()
            }
        };
        *out = match left {
            0 if sink.is_tls() => Outgoing::Flushing,
            0 => Outgoing::Empty,
            _ => out.shrunk_to(left),
        };
    }
    match wrote {
        true => Poll::Ready(Ok(())),
        false => Poll::Pending,
    }
}
