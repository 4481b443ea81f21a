//! Accepting clients: the accept loop, which never exits on one failed accept (it backs off when
//! out of file descriptors), and the count that enforces max_client_conn.

use crate::config::General;
use crate::Shared;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

pub fn listen_address(general: &General) -> SocketAddr {
    let ip = match general.listen_addr.as_str() {
        "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other.parse().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    };
    SocketAddr::new(ip, general.listen_port)
}

pub async fn accept_loop(
    socket: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = crate::client::ClientConn::accepted(stream, peer);
                    tasks.spawn(crate::client::serve(conn, shared.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    }
    drop(socket);
    tasks.shutdown().await;
}
