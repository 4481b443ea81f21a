//! systemd's readiness protocol (sd_notify): one datagram to the socket named by NOTIFY_SOCKET.
//! Without that variable (not started by systemd with Type=notify*), nothing happens.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` to `socket` (a path, or `@name` for an abstract socket).
pub fn notify_to(socket: &str, state: &str) -> std::io::Result<()> {
    let addr = match socket.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

fn notify(state: &str) {
    if let Some(socket) = std::env::var_os("NOTIFY_SOCKET") {
        if let Err(e) = notify_to(&socket.to_string_lossy(), state) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
}

/// Microseconds of CLOCK_MONOTONIC, which systemd wants with RELOADING=1.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

pub fn ready() {
    notify("READY=1\nSTATUS=accepting connections");
}

pub fn reloading() {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

pub fn stopping() {
    notify("STOPPING=1");
}

/// After a takeover: this process is the service's main process now (the unit needs
/// NotifyAccess=all to take this from a process it did not start).
pub fn main_pid() {
    notify(&format!(
        "MAINPID={}\nREADY=1\nSTATUS=accepting connections (took over)",
        std::process::id()
    ));
}

/// First file descriptor systemd passes with socket activation.
const LISTEN_FDS_START: i32 = 3;

/// A listening socket systemd passed.
pub enum Activated {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// The listening sockets systemd passed (socket activation: LISTEN_PID is this process and
/// LISTEN_FDS counts them), TCP and Unix alike; empty without socket activation. Called once,
/// at start. The descriptors are marked close-on-exec: the only process pgmux starts (the
/// console's UPGRADE) takes its sockets over the takeover instead, and is started without
/// these variables.
pub fn activated_listeners() -> Vec<Activated> {
    use std::os::fd::FromRawFd;
    let pid = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|c| c.parse::<i32>().ok());
    let (Some(pid), Some(count)) = (pid, count) else {
        return Vec::new();
    };
    if pid != std::process::id() {
        return Vec::new();
    }
    let mut sockets = Vec::new();
    for fd in LISTEN_FDS_START..LISTEN_FDS_START + count.clamp(0, 64) {
        // SAFETY: fcntl on a descriptor number; on one that is not open it fails, harmlessly.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        match socket_family(fd) {
            // SAFETY: systemd hands this descriptor to this process alone for it to own, and
            // its family was just checked.
            Some(libc::AF_INET | libc::AF_INET6) => sockets.push(Activated::Tcp(unsafe {
                std::net::TcpListener::from_raw_fd(fd)
            })),
            // SAFETY: as above.
            Some(libc::AF_UNIX) => sockets.push(Activated::Unix(unsafe {
                std::os::unix::net::UnixListener::from_raw_fd(fd)
            })),
            _ => tracing::error!(
                fd,
                "LISTEN_FDS passed a descriptor that is not a TCP or Unix socket"
            ),
        }
    }
    sockets
}

/// The address family of socket `fd`, or None if it is not a socket.
pub(crate) fn socket_family(fd: i32) -> Option<i32> {
    // SAFETY: an all-zero sockaddr_storage is valid, and getsockname writes at most `len`
    // bytes into it.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the pointers are to memory we own, sized by `len`.
    let rc = unsafe {
        libc::getsockname(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(addr.ss_family as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_reaches_the_socket() {
        let path = std::env::temp_dir().join(format!("pgmux-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        notify_to(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_file(&path).unwrap();
        assert!(monotonic_usec() > 0);
    }
}
