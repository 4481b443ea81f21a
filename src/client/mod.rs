//! One task per client: startup and authentication (startup.rs), then the session that borrows
//! servers and relays (session.rs). Failures become ErrorResponses in one place
//! ([`ClientError`], beside the connection type the console shares).

mod adopt;
mod auth;
mod session;
mod spare;
mod startup;
mod timeouts;
mod waits;

pub use adopt::adopt;
pub(crate) use startup::pool_for;
use startup::Admitted;

use crate::connection::{ClientConn, ClientError, TlsSession, CLIENT_BUFFER};
use crate::shared::Shared;
use crate::stream::Stream;
use bytes::BytesMut;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Counts a connection just accepted among the clients (for max_client_conn, and so that a
/// takeover waits for it), before its task runs; [`serve`] uncounts it at its end. Returns
/// whether it is over max_client_conn.
pub fn count_accepted(shared: &Shared) -> bool {
    let max_client_conn = shared.config().general.max_client_conn as usize;
    shared.clients.fetch_add(1, Ordering::AcqRel) >= max_client_conn
}

/// Serves one client from accept to close, counted by [`count_accepted`]. An async block
/// rather than an async fn: what the block captures is its only copy, where an async fn keeps
/// room for its arguments beside the locals they move into, for the task's whole life.
#[allow(clippy::manual_async_fn)]
pub fn serve(
    mut conn: ClientConn,
    shared: Arc<Shared>,
    over_limit: bool,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // In a block of its own, so that the login's outcome is gone before the session
        // starts: only the small `Next` stays in the task.
        let next = {
            // Boxed: the login's state (SCRAM, buffers) is large and short-lived.
            let login = Box::pin(startup::login(&mut conn, &shared, over_limit));
            match tokio::time::timeout(login_timeout(&shared), login).await {
                Err(_) => Next::Other(Box::new(Err(ClientError::LoginTimeout))),
                Ok(Ok(Some(Admitted::Pool(login)))) => Next::Session(login),
                Ok(other) => Next::Other(Box::new(other)),
            }
        };
        let result = match next {
            Next::Session(login) => session::run(&mut conn, login, &shared, None).await,
            Next::Other(admitted) => Box::pin(serve_other(&mut conn, *admitted, &shared)).await,
        };
        if let Err(e) = result {
            tell_why(&mut conn, e).await;
        }
        shared.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What follows a login: a pooled session (nearly every client, and the one an idle client
/// waits in), or anything else, boxed.
enum Next {
    Session(Box<startup::Login>),
    Other(Box<Result<Option<Admitted>, ClientError>>),
}

/// client_login_timeout; 0 disables it, as for the other timeouts.
fn login_timeout(shared: &Shared) -> Duration {
    match shared.config().general.client_login_timeout {
        t if t > 0.0 => Duration::from_secs_f64(t),
        _ => Duration::MAX,
    }
}

/// A login that did not end in a pooled session: a failure, the console, or a takeover.
async fn serve_other(
    conn: &mut ClientConn,
    admitted: Result<Option<Admitted>, ClientError>,
    shared: &Arc<Shared>,
) -> Result<(), ClientError> {
    match admitted? {
        None => Ok(()),
        Some(Admitted::Pool(login)) => session::run(conn, login, shared, None).await,
        Some(Admitted::Console {
            user,
            role,
            application_name,
        }) => crate::admin::serve(conn, &user, &application_name, role, shared).await,
        Some(Admitted::Takeover) => {
            if let Stream::Unix(stream) = std::mem::replace(&mut conn.stream, Stream::Detached) {
                let buffered = std::mem::take(&mut conn.buf);
                Box::pin(crate::takeover::give(stream, buffered, shared.clone())).await;
            }
            Ok(())
        }
    }
}

/// Logs why a client is closed, and tells it with an ErrorResponse where there is one.
async fn tell_why(conn: &mut ClientConn, e: ClientError) {
    match &e {
        // Logged where the database is known too.
        e if e.is_authentication_failure() => {}
        ClientError::Io(_) => {
            tracing::debug!(peer = %conn.peer, error = %e, "client connection error")
        }
        _ => tracing::info!(peer = %conn.peer, error = %e, "client closed with error"),
    }
    let mut out = BytesMut::new();
    e.write_response(&mut out);
    if !out.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), conn.stream.send(&out)).await;
    }
}

#[cfg(test)]
mod tests {
    /// Every client's task holds this future for its whole life, idle or not: large states of
    /// short phases (login, opening a server) are boxed so that it stays small.
    #[tokio::test]
    async fn a_clients_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let config = crate::config::Config::parse("[pgmux]\n", std::path::Path::new(".")).unwrap();
        let shared = std::sync::Arc::new(crate::shared::Shared::new(config));
        let task = super::serve(super::ClientConn::accepted(client, addr), shared, false);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 2 * 1024, "{size} bytes per client task");
    }
}
