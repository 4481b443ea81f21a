//! How a session waits without holding what it does not need: for its client's next message
//! with no read buffer, and for a server with no timer.

use super::ClientError;
use crate::pool::{Checkout, Pool, PooledServer, Waited, Waiter};
use crate::stream::Stream;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// A client's turn at a server: after any PAUSE, in line for an idle server or room to open
/// one, then whatever a server handed over still needs (a health check, a connect). The wait
/// in line holds no timer: the pool's janitor ends waits past query_wait_timeout, and only the
/// rare slow parts run under `deadline`.
pub(super) async fn wait_turn(
    pool: &Arc<Pool>,
    waiter: &mut Waiter,
    control: &crate::control::Control,
    database: &str,
    deadlines: Deadlines,
    client: &mut Stream,
) -> Result<PooledServer, ClientError> {
    let deadline = deadlines.fail;
    if control.any_paused() {
        // A PAUSE holds new transactions, without an error, until RESUME. Boxed with its
        // timer, as the slow part below: neither widens every client's task.
        Box::pin(within(deadline, control.wait_unpaused(database))).await?;
    }
    let mut waited = pool
        .take_or_wait(
            waiter,
            deadline.map(Instant::into_std),
            deadlines.notice.map(Instant::into_std),
        )
        .await;
    let grant = loop {
        match waited {
            Waited::Granted(grant) => break grant,
            Waited::Notice => {
                tell_it_waits(client);
                waited = pool.wait_on(waiter).await;
            }
        }
    };
    match pool.ready(grant) {
        Ok(server) => Ok(server),
        // Too late for a health check or a connect: the grant goes back untouched.
        Err(_) if deadline.is_some_and(|at| Instant::now() >= at) => {
            Err(ClientError::QueryWaitTimeout)
        }
        Err(grant) => {
            let finish = pool.finish(grant, Checkout::Wait);
            Ok(Box::pin(within(deadline, finish)).await??)
        }
    }
}

/// When a wait for a server fails (query_wait_timeout) and when its client is told it waits
/// (query_wait_notify).
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    pub(super) fail: Option<Instant>,
    pub(super) notice: Option<Instant>,
}

/// The NOTICE a client waiting query_wait_notify gets, as PgBouncer 1.25 sends one. Best
/// effort, without waiting: a client that does not read must not keep a server granted to it
/// meanwhile waiting for its socket.
fn tell_it_waits(client: &mut Stream) {
    let mut notice = BytesMut::new();
    crate::protocol::backend::error_response(
        &mut notice,
        crate::protocol::backend::Severity::Notice,
        "00000",
        "no server connection is free in this pool yet: the client is queued (query_wait_notify)",
    );
    client.try_send(&notice);
}

/// `work` bounded by query_wait_timeout's deadline, if any.
async fn within<T>(
    deadline: Option<Instant>,
    work: impl std::future::Future<Output = T>,
) -> Result<T, ClientError> {
    match deadline {
        None => Ok(work.await),
        Some(at) => tokio::time::timeout_at(at, work)
            .await
            .map_err(|_| ClientError::QueryWaitTimeout),
    }
}

/// Reads client bytes into `buf`. Between transactions `buf` is empty: then, on plain TCP or a Unix socket, the
/// buffer is given back and the wait for the next message holds none, so an idle client costs
/// no read buffer. Cancel-safe: waiting reads nothing, and read_buf either appends bytes or
/// reads none.
pub(super) async fn read_holding_no_buffer(
    stream: &mut crate::stream::Stream,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    use crate::stream::Stream;
    if buf.is_empty() && matches!(stream, Stream::Plain(_) | Stream::Unix(_)) {
        if buf.capacity() > 0 {
            super::spare::give_back(std::mem::take(buf));
        }
        // poll_read_ready parks on the socket's one reader slot; `readable()` would enqueue a
        // waiter under the socket's lock, on every wait of every idle client.
        std::future::poll_fn(|cx| match &*stream {
            Stream::Plain(tcp) => tcp.poll_read_ready(cx),
            Stream::Unix(unix) => unix.poll_read_ready(cx),
            _ => std::task::Poll::Ready(Ok(())),
        })
        .await?;
        *buf = super::spare::take();
    }
    // A read through poll_read, not try_read: a short read tells tokio the socket is drained,
    // so the next wait starts parked instead of with a read that can only find nothing (one
    // system call per transaction). The socket is ready: this waits only on a false alarm.
    stream.read_buf(buf).await
}
