//! The relay, the hot path: while a client holds a server, move bytes between them both ways at
//! once, streaming, with small bounded buffers. `scan` is the pure part (walk headers, feed the
//! tracker, decide what to forward, rewrite for prepared statements); `link` owns the borrowed
//! server and the I/O loop. Below `client`: it knows nothing of logins, timeouts or pooling
//! policy, which the session keeps.

mod link;
mod outgoing;
mod scan;

pub use link::{
    streams, ClientSide, Composed, Linked, Prelude, RelayError, Step, Tail, CLIENT_READ,
};
pub use scan::{
    held_whole, scan_client, scan_server, ClientScan, Passthrough, ServerScan, ServerSide,
    HELD_LIMIT,
};
