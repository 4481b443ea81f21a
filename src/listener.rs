//! Accepting clients on TCP and on the Unix socket: binding them (or taking those systemd
//! passes), the accept loops, which never exit on one failed accept (they back off when out
//! of file descriptors), and the socket file's life (a stale one replaced, a live one
//! refused, removed at shutdown).

use crate::address::Address;
use crate::config::General;
use crate::connection::ClientConn;
use crate::shared::Shared;
use crate::stream::Stream;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
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

/// The sockets pgmux accepts clients on, once bound or handed over.
pub struct Bound {
    pub listeners: Vec<Listener>,
    /// The TCP address, when there is a TCP socket.
    pub local_addr: Option<SocketAddr>,
    /// The Unix socket file pgmux made (not one systemd passed).
    pub socket_file: Option<SocketFile>,
}

/// The sockets systemd passed (socket activation), else listen_addr and listen_port and
/// the Unix socket in unix_socket_dir.
pub fn bind(general: &General) -> std::io::Result<Bound> {
    let activated = crate::notify::activated_listeners();
    if !activated.is_empty() {
        tracing::info!(
            sockets = activated.len(),
            "listening on the sockets systemd passed (socket activation)"
        );
        return adopt(activated, general.listen_port);
    }
    let socket = bind_tcp(general)?;
    let local_addr = socket.local_addr()?;
    let mut listeners = vec![Listener::Tcp(socket)];
    let mut socket_file = None;
    if !general.unix_socket_dir.is_empty() {
        let (socket, file) = bind_unix(general, local_addr.port())?;
        tracing::info!(path = %file.path.display(), "listening on the Unix socket");
        listeners.push(socket);
        socket_file = Some(file);
    }
    Ok(Bound {
        listeners,
        local_addr: Some(local_addr),
        socket_file,
    })
}

/// The sockets a takeover handed over (the old process's), as if just bound. The Unix socket's
/// file becomes this process's to remove only once the takeover is done (SocketFile::claim);
/// the metrics endpoint's socket is returned apart.
pub fn taken(
    sockets: Vec<(crate::handover::ListenerKind, std::os::fd::OwnedFd)>,
    listen_port: u16,
) -> std::io::Result<(Bound, Option<std::net::TcpListener>)> {
    use crate::handover::ListenerKind;
    use crate::notify::Activated;
    let mut listening = Vec::new();
    let mut metrics = None;
    let mut socket_file = None;
    for (kind, fd) in sockets {
        match kind {
            ListenerKind::Tcp => listening.push(Activated::Tcp(fd.into())),
            ListenerKind::Unix { path, owned } => {
                // A file the old process did not make (socket activation) is not ours either.
                if owned {
                    // Not removed at exit until the takeover is done (see SocketFile::claim).
                    socket_file = Some(SocketFile {
                        identity: None,
                        path: PathBuf::from(path),
                    });
                }
                listening.push(Activated::Unix(fd.into()));
            }
            ListenerKind::Metrics => {
                let socket = std::net::TcpListener::from(fd);
                socket.set_nonblocking(true)?;
                metrics = Some(socket);
            }
        }
    }
    let mut bound = adopt(listening, listen_port)?;
    bound.socket_file = socket_file;
    Ok((bound, metrics))
}

/// The sockets systemd passed, TCP and Unix; a Unix one's clients are shown with the port in
/// its name (`.s.PGSQL.<port>`), else `listen_port`.
fn adopt(activated: Vec<crate::notify::Activated>, listen_port: u16) -> std::io::Result<Bound> {
    use crate::notify::Activated;
    let mut listeners = Vec::new();
    let mut local_addr = None;
    for socket in activated {
        match socket {
            Activated::Tcp(s) => {
                s.set_nonblocking(true)?;
                local_addr = local_addr.or(s.local_addr().ok());
                listeners.push(Listener::Tcp(TcpListener::from_std(s)?));
            }
            Activated::Unix(s) => {
                s.set_nonblocking(true)?;
                let path = s
                    .local_addr()?
                    .as_pathname()
                    .map_or_else(PathBuf::new, Path::to_owned);
                let port = path
                    .file_name()
                    .and_then(|name| name.to_str()?.strip_prefix(".s.PGSQL.")?.parse().ok())
                    .unwrap_or(listen_port);
                let address = Address::Unix {
                    path: path.into(),
                    port,
                };
                listeners.push(Listener::Unix(UnixListener::from_std(s)?, address));
            }
        }
    }
    Ok(Bound {
        listeners,
        local_addr,
        socket_file: None,
    })
}

/// Clients waiting to be accepted that the kernel keeps, as PgBouncer's listen_backlog.
const LISTEN_BACKLOG: u32 = 1024;

/// Listens on listen_addr and listen_port; with so_reuseport, beside other processes that do
/// the same, the kernel spreading new connections among them.
pub fn bind_tcp(general: &General) -> std::io::Result<TcpListener> {
    let addr = listen_address(general);
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // A restarted pgmux may bind while connections of the old one linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    if general.so_reuseport {
        // Any other process of the same user that does the same shares the port silently.
        tracing::info!(%addr, "so_reuseport: sharing the port with other processes that set it");
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A socket pgmux accepts clients on.
pub enum Listener {
    Tcp(TcpListener),
    /// With the address its clients are shown with (the socket file, and the port in its name).
    Unix(UnixListener, Address),
}

impl Listener {
    /// What a takeover hands over for this socket; `own_file` is the socket file this
    /// process made, if any.
    pub fn kind(&self, own_file: Option<&Path>) -> crate::handover::ListenerKind {
        use crate::handover::ListenerKind;
        match self {
            Listener::Tcp(_) => ListenerKind::Tcp,
            Listener::Unix(socket, _) => {
                let local = socket.local_addr().ok();
                let path = local.as_ref().and_then(|a| a.as_pathname());
                ListenerKind::Unix {
                    path: path.map_or(String::new(), |p| p.to_string_lossy().into_owned()),
                    owned: path.is_some() && path == own_file,
                }
            }
        }
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        match self {
            Listener::Tcp(socket) => socket.as_fd(),
            Listener::Unix(socket, _) => socket.as_fd(),
        }
    }

    async fn accept(&self) -> std::io::Result<ClientConn> {
        match self {
            Listener::Tcp(socket) => {
                let (stream, peer) = socket.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(ClientConn::accepted(stream, peer))
            }
            Listener::Unix(socket, address) => {
                let (stream, _) = socket.accept().await?;
                Ok(ClientConn::over(Stream::Unix(stream), address.clone()))
            }
        }
    }
}

/// Accepts clients until `stop`. In a fleet (so_reuseport), a shutdown that waits for its
/// clients also stops listening at once, so that the kernel gives new clients to the other
/// processes (and a new process may take this one's place) while these finish.
pub async fn accept_loop(socket: Listener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tasks = JoinSet::new();
    let mut socket = Some(socket);
    let mut shutdown = shared.shutdown.watch();
    let leaves_the_fleet = shared.config().general.so_reuseport;
    // False while a new process takes this one's place (a takeover): it accepts instead.
    let mut accepting = shared.handover.accepting();
    loop {
        let open = *accepting.borrow_and_update();
        let accept = async {
            match &socket {
                Some(socket) if open => socket.accept().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            // A takeover's pause first: no accept once the new process accepts instead.
            biased;
            _ = stop.changed() => break,
            Ok(()) = accepting.changed() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            Ok(()) = shutdown.changed(), if leaves_the_fleet && socket.is_some() => {
                if shutdown.borrow_and_update().is_some() {
                    tracing::info!("shutting down: no longer listening, the fleet takes new clients");
                    socket = None;
                }
            }
            accepted = accept => match accepted {
                Ok(conn) => {
                    let over_limit = crate::client::count_accepted(&shared);
                    tasks.spawn(crate::client::serve(conn, shared.clone(), over_limit));
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

/// The Unix socket file pgmux made; removed when this is dropped (at shutdown), unless
/// another process has put its own in its place meanwhile.
#[derive(Debug)]
pub struct SocketFile {
    pub path: PathBuf,
    /// Device and inode of the file made, to know it is still ours.
    identity: Option<(u64, u64)>,
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

impl SocketFile {
    /// Leaves the file where it is when this is dropped: a takeover gave it to a new process.
    pub fn give_away(&mut self) {
        self.identity = None;
    }

    /// Removes the file there now when this is dropped: a file taken over is this process's
    /// once the takeover is done.
    pub fn claim(&mut self) {
        if self.identity.is_none() {
            self.identity = identity(&self.path);
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.identity.is_some() && identity(&self.path) == self.identity {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Listens on `dir/.s.PGSQL.<port>` with unix_socket_mode and unix_socket_group. A socket
/// file nobody listens on any more (left by a crash) is replaced; anything else there (a live
/// socket, one we may not connect to, a file that is not a socket) is an error naming it.
pub fn bind_unix(general: &General, port: u16) -> std::io::Result<(Listener, SocketFile)> {
    use std::os::unix::fs::FileTypeExt;
    let dir = Path::new(&general.unix_socket_dir);
    let address = Address::unix_socket(dir, port);
    let path = crate::address::socket_path(dir, port);
    let in_use = |why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{} {why}", path.display()),
        )
    };
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            return Err(in_use(
                "exists and is not a socket; remove it or change unix_socket_dir",
            ));
        }
        match std::os::unix::net::UnixStream::connect(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %path.display(), "removing a stale Unix socket file");
                std::fs::remove_file(&path)?;
            }
            Ok(_) => {
                return Err(in_use(
                    "is in use by a running process (another pgmux or PgBouncer?)",
                ))
            }
            Err(e) => return Err(in_use(&format!("exists and cannot be checked: {e}"))),
        }
    }
    let listener = UnixListener::bind(&path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", path.display()),
        )
    })?;
    let file = SocketFile {
        identity: identity(&path),
        path: path.clone(),
    };
    if let Ok(mode) = u32::from_str_radix(&general.unix_socket_mode, 8) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    if let Some(group) = &general.unix_socket_group {
        let gid = group_id(group).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("unix_socket_group: no group named {group:?}"),
            )
        })?;
        std::os::unix::fs::chown(&path, None, Some(gid))?;
    }
    Ok((Listener::Unix(listener, address), file))
}

/// The id of the group named `name` (or given as a number), from the system's group database.
fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    let c_name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero group is a valid value for getgrnam_r to overwrite.
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is to memory we own, sized as passed; getgrnam_r writes the entry's
    // strings into `buf` and points `result` at `entry` on success.
    let rc = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(entry.gr_gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_by_name_or_number() {
        assert_eq!(group_id("0"), Some(0));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-pgmux"), None);
    }
}
