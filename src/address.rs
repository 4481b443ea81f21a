//! Where the other end of a connection is: an IP address and port, or a Unix socket. One type
//! for clients and servers alike, so that SHOW CLIENTS, SHOW SERVERS, logs and cancels treat
//! both kinds of socket the same way.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    /// A Unix socket: its file, and the port number in its name (`.s.PGSQL.<port>`).
    Unix {
        path: Arc<Path>,
        port: u16,
    },
}

impl Address {
    /// The socket file PostgreSQL's (and pgmux's) convention names for `port` in `dir`.
    pub fn unix_socket(dir: &Path, port: u16) -> Address {
        Address::Unix {
            path: socket_path(dir, port).into(),
            port,
        }
    }

    /// The address column of SHOW CLIENTS and SHOW SERVERS: the IP, or "unix" as PgBouncer shows.
    pub fn host_text(&self) -> String {
        match self {
            Address::Tcp(a) => a.ip().to_string(),
            Address::Unix { .. } => "unix".into(),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            Address::Tcp(a) => a.port(),
            Address::Unix { port, .. } => *port,
        }
    }

    /// The IP address, for matching HBA lines; None for a Unix socket.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Address::Tcp(a) => Some(a.ip()),
            Address::Unix { .. } => None,
        }
    }
}

/// The directory of a Unix socket, when `host` names one as libpq reads it (it starts with
/// `/`); None for a host name or an address.
pub fn socket_dir(host: &str) -> Option<&Path> {
    host.starts_with('/').then(|| Path::new(host))
}

/// `dir/.s.PGSQL.<port>`.
pub fn socket_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => a.fmt(f),
            Address::Unix { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

impl std::str::FromStr for Address {
    type Err = std::net::AddrParseError;

    /// An IP address and port, as `SocketAddr` reads them.
    fn from_str(s: &str) -> Result<Address, Self::Err> {
        s.parse().map(Address::Tcp)
    }
}
