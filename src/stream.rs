//! A connection's byte stream, plain TCP, a Unix socket or TLS, for clients and servers alike. TLS writes are
//! buffered by rustls, so [`Stream::send`] writes and flushes: every write pgmux makes goes
//! through it, and nothing waits on a reply to bytes still sitting in a buffer.

use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

pub enum Stream {
    Plain(TcpStream),
    /// A Unix socket, never with TLS (PostgreSQL does not offer it there either).
    Unix(UnixStream),
    /// A client's connection after pgmux accepted TLS.
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// A server connection pgmux opened with TLS.
    Connected(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Only while a plain stream is handed over to a TLS handshake: every operation fails.
    Detached,
    /// An in-memory pipe, for tests of the relay with sockets that fill up at will.
    #[cfg(test)]
    Memory(tokio::io::DuplexStream),
}

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "stream detached for a TLS handshake",
    )
}

impl Stream {
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Accepted(s) => Some(s.get_ref().0),
            Stream::Connected(s) => Some(s.get_ref().0),
            Stream::Unix(_) | Stream::Detached => None,
            #[cfg(test)]
            Stream::Memory(_) => None,
        }
    }

    /// This end's address: the local TCP address, or the Unix socket's file and `port`.
    pub fn local_address(&self, port: u16) -> Option<crate::address::Address> {
        match self {
            Stream::Unix(s) => {
                let local = s.local_addr().ok()?;
                let path = local.as_pathname()?;
                Some(crate::address::Address::Unix {
                    path: path.into(),
                    port,
                })
            }
            other => other.tcp()?.local_addr().ok().map(Into::into),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Accepted(_) | Stream::Connected(_))
    }

    /// Writes all of `bytes` and flushes them out of any TLS buffer.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes).await?;
        if self.is_tls() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Reads what is there into `buf`, first making room for `want` more bytes, and for at
    /// least `chunk` when little room is left. Returns the bytes read; 0 is the end of the stream.
    pub fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
        want: usize,
        chunk: usize,
    ) -> Poll<io::Result<usize>> {
        if buf.capacity() - buf.len() < want.max(chunk / 4).max(1) {
            buf.reserve(want.max(chunk));
        }
        std::pin::pin!(self.read_buf(buf)).poll(cx)
    }

    /// For an idle connection: true if there is nothing to read and it is not closed, found
    /// without waiting. TLS records that carry no data (session tickets) do not count.
    pub fn idle_and_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(Pin::new(self).poll_read(&mut cx, &mut buf), Poll::Pending)
    }

    /// Best effort, without waiting: for a Terminate on a connection about to be dropped.
    pub fn try_send(&mut self, bytes: &[u8]) {
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(Ok(_)) = Pin::new(&mut *self).poll_write(&mut cx, bytes) {
            let _ = Pin::new(self).poll_flush(&mut cx);
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Accepted(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Connected(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
            #[cfg(test)]
            Stream::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Accepted(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Connected(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
            #[cfg(test)]
            Stream::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Accepted(s) => Pin::new(s).poll_flush(cx),
            Stream::Connected(s) => Pin::new(s).poll_flush(cx),
            Stream::Detached => Poll::Ready(Err(detached())),
            #[cfg(test)]
            Stream::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Accepted(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Connected(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Detached => Poll::Ready(Err(detached())),
            #[cfg(test)]
            Stream::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
