//! A client another pgmux process hands over in a takeover: registered here as it was there
//! (user, database, cancel key, connect time, parameters), then, once the old process lets go
//! of it, served by a session of its own that starts with its statements and session
//! settings. It logged in to the old process; nothing is asked of it again, and it is told
//! nothing: to the client, the connection simply goes on.

use super::session::{self, Restored};
use super::startup::{settings_of, Login};
use super::ClientConn;
use crate::address::Address;
use crate::config::PoolMode;
use crate::handover::MovedClient;
use crate::protocol::params::ParamSet;
use crate::registry::{ClientCaps, NewClient};
use crate::server::ServerCredentials;
use crate::shared::Shared;
use crate::stream::Stream;
use crate::takeover::Pending;
use bytes::BytesMut;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Takes `moved`, whose connection is `socket`, without reading from it yet. Err (and the
/// client stays with the old process) when this process cannot serve it as it was served
/// there.
pub fn adopt(
    shared: &Arc<Shared>,
    mut moved: MovedClient,
    socket: OwnedFd,
) -> Result<Box<dyn Pending>, String> {
    if shared.shutdown.mode().is_some() {
        return Err("this process is shutting down".into());
    }
    let config = shared.config();
    let (user, database) = (moved.user.clone(), moved.database.clone());
    let db = config
        .database(&database)
        .ok_or_else(|| format!("database {database:?} is not in this process's config"))?;
    if shared.control.is_disabled(&database) {
        return Err(format!("database {database:?} is disabled here"));
    }
    let (pid, secret) = moved.cancel_key;
    if crate::peers::route(&config, pid, secret) != crate::peers::Route::Here {
        return Err("its cancel key names another peer_id than this process's".into());
    }
    let server_user = db.user.clone().unwrap_or_else(|| user.clone());
    let settings = settings_of(&config, &database, &server_user);
    // What the client holds must be what this process keeps for it, or it would be lost.
    if !moved.statements.is_empty()
        && (settings.mode == PoolMode::Session || config.general.max_prepared_statements == 0)
    {
        return Err("its prepared statements would not be kept here".into());
    }
    let follows = settings.mode == PoolMode::Transaction && config.general.follow_session_state;
    let holds_session = !moved.settings.is_empty() || !moved.prepared.is_empty();
    if holds_session && !follows {
        return Err("its session settings would not be kept here".into());
    }
    let (stream, peer) = stream_of(socket, config.general.listen_port)?;
    let cancel = shared
        .cancels
        .adopt(moved.cancel_key)
        .ok_or("its cancel key is taken here")?;
    let mut params = ParamSet::default();
    for (name, value) in &moved.params {
        params.set(name, value);
    }
    let new_client = NewClient {
        user: &user,
        database: &database,
        server_user: &server_user,
        addr: peer.clone(),
        local_addr: stream.local_address(config.general.listen_port),
        application_name: params.get("application_name").unwrap_or(""),
        connect_time: Some(SystemTime::UNIX_EPOCH + Duration::from_micros(moved.connect_time_us)),
    };
    // It was admitted under the caps once; it is not turned away now.
    let entry = match shared.registry.add(new_client, ClientCaps::default()) {
        Ok(entry) => entry,
        Err(_) => {
            shared.cancels.unregister(moved.cancel_key);
            return Err("no room in the registry".into());
        }
    };
    let pool = shared.pools.join(&database, &server_user, move || settings);
    let credentials = std::mem::replace(&mut moved.credentials, ServerCredentials::None);
    if !matches!(credentials, ServerCredentials::None) && !pool.has_credentials() {
        // What a login taught the old process (SCRAM keys, an auth_query secret).
        pool.set_credentials(credentials);
    }
    let mode = pool.settings().mode;
    let login = Box::new(Login {
        pool,
        mode,
        params,
        cancel_key: moved.cancel_key,
        cancel,
        entry,
    });
    let restored = Box::new(Restored::from_moved(&mut moved));
    let mut conn = ClientConn::over(stream, peer);
    conn.buf = BytesMut::from(&moved.buffered[..]);
    Ok(Box::new(Adopted {
        shared: shared.clone(),
        parts: Some((conn, login, restored)),
    }))
}

/// A client taken and not started yet.
struct Adopted {
    shared: Arc<Shared>,
    parts: Option<(ClientConn, Box<Login>, Box<Restored>)>,
}

impl Pending for Adopted {
    fn start(mut self: Box<Self>) {
        let Some((mut conn, login, restored)) = self.parts.take() else {
            return;
        };
        let shared = self.shared.clone();
        shared.clients.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let result = session::run(&mut conn, login, &shared, Some(restored)).await;
            if let Err(e) = result {
                super::tell_why(&mut conn, e).await;
            }
            shared.clients.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

impl Drop for Adopted {
    /// Never started: the old process kept the client. Forgotten here, its copy of the
    /// socket closed (the old process still has its own).
    fn drop(&mut self) {
        if let Some((_, login, _)) = self.parts.take() {
            self.shared.cancels.unregister(login.cancel_key);
            self.shared.registry.remove(login.entry.id);
        }
    }
}

/// The client's connection as a stream of this process, and its address as SHOW CLIENTS
/// shows it.
fn stream_of(socket: OwnedFd, listen_port: u16) -> Result<(Stream, Address), String> {
    let broken = |e: std::io::Error| format!("its socket cannot be used here: {e}");
    match crate::notify::socket_family(socket.as_raw_fd()) {
        Some(libc::AF_INET | libc::AF_INET6) => {
            let tcp = std::net::TcpStream::from(socket);
            tcp.set_nonblocking(true).map_err(broken)?;
            let peer = tcp.peer_addr().map_err(broken)?;
            let tcp = tokio::net::TcpStream::from_std(tcp).map_err(broken)?;
            Ok((Stream::Plain(tcp), peer.into()))
        }
        Some(libc::AF_UNIX) => {
            let unix = std::os::unix::net::UnixStream::from(socket);
            unix.set_nonblocking(true).map_err(broken)?;
            let local = unix.local_addr().map_err(broken)?;
            let path = local
                .as_pathname()
                .ok_or("its Unix socket has no file name")?;
            let address = Address::Unix {
                path: path.into(),
                port: listen_port,
            };
            let unix = tokio::net::UnixStream::from_std(unix).map_err(broken)?;
            Ok((Stream::Unix(unix), address))
        }
        _ => Err("it came without a TCP or Unix socket".into()),
    }
}
