//! Configuration: the TOML schema with PgBouncer's setting names, validation that collects every
//! problem (key path, line and message), and PgBouncer's userlist.txt. Reads files; no sockets, no
//! tokio.

pub mod hba;
mod messages;
mod schema;
pub mod suggest;
mod userlist;
mod validate;

pub use schema::{
    AuthType, Database, General, LogFormat, Peer, PoolMode, SslMode, User, DEFAULT_AUTH_QUERY,
};
pub use userlist::parse_userlist;

use crate::auth::Secret;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config file: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key (`databases.app.port`), or `(syntax)` / `(file)`.
    pub key: String,
    pub message: String,
    /// Line in the file (1-based) of the key, when the key is written there: a rule across
    /// keys or a missing key has none, nor has text that did not come from a file.
    pub line: Option<usize>,
    /// Column (1-based, in characters) where a syntax error was found.
    pub column: Option<usize>,
}

impl Problem {
    /// A problem not yet placed in the file.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }
}

/// Every problem found in a config file; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

/// A summary line, then one line per problem as compilers write them (`FILE:LINE: key: message`,
/// which editors jump to), in the order of the file; problems with no line come last.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        write!(f, "{file}: {} problem(s)", self.problems.len())?;
        let mut in_file_order: Vec<&Problem> = self.problems.iter().collect();
        in_file_order.sort_by_key(|p| (p.line.is_none(), p.line, p.column));
        for p in in_file_order {
            write!(f, "\n{file}:")?;
            if let Some(line) = p.line {
                write!(f, "{line}:")?;
            }
            if let Some(column) = p.column {
                write!(f, "{column}:")?;
            }
            write!(f, " {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

/// A validated configuration, with the auth_file already read.
#[derive(Debug, Clone)]
pub struct Config {
    pub general: General,
    pub databases: BTreeMap<String, Database>,
    pub users: BTreeMap<String, User>,
    /// Secrets from auth_file, by user name.
    pub userlist: BTreeMap<String, Secret>,
    /// TLS configurations built from the TLS settings' files when the config was validated.
    pub tls: crate::tls::TlsConfigs,
    /// auth_hba_file, read when the config was validated, under auth_type = "hba".
    pub hba: Option<std::sync::Arc<hba::HbaRules>>,
    /// `[peers]`: the other pgmux processes of a fleet, by peer_id.
    pub peers: BTreeMap<u16, Peer>,
}

/// The `[databases]` name of the fallback for names not listed.
pub const FALLBACK_DATABASE: &str = "*";

/// Names of the admin console's database, which no `[databases]` entry may take.
pub const CONSOLE_DATABASES: [&str; 2] = ["pgmux", "pgbouncer"];

impl Config {
    /// Reads and validates a config file; relative paths inside resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |message: String| ConfigError {
            file: path.to_owned(),
            problems: vec![Problem::new("(file)", message)],
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|problems| ConfigError {
            file: path.to_owned(),
            problems,
        })
    }

    /// Parses and validates config text; `base` resolves a relative auth_file.
    pub fn parse(text: &str, base: &Path) -> Result<Config, Vec<Problem>> {
        validate::parse_and_validate(text, base)
    }

    /// This config with one `[pgmux]` setting changed (the console's SET), validated whole.
    pub fn with_setting(&self, key: &str, value: &str) -> Result<Config, Vec<Problem>> {
        validate::with_setting(self, key, value)
    }

    /// The secret a user logs in with: the `[users.NAME]` password first, then auth_file.
    pub fn secret_for(&self, user: &str) -> Option<Secret> {
        if let Some(p) = self.users.get(user).and_then(|u| u.password.as_deref()) {
            return Secret::parse(p).ok();
        }
        self.userlist.get(user).cloned()
    }

    /// The `[databases]` table that serves `name`: its own, else the `*` fallback's.
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases
            .get(name)
            .or_else(|| self.databases.get(FALLBACK_DATABASE))
    }

    /// Where `db`'s PostgreSQL is: its host, else the directory of the Unix socket.
    pub fn server_host(&self, db: &Database) -> String {
        db.host
            .clone()
            .unwrap_or_else(|| self.general.unix_socket_dir.clone())
    }

    /// Whether `name` is served by the `*` fallback rather than a table of its own.
    pub fn is_auto_database(&self, name: &str) -> bool {
        !self.databases.contains_key(name) && self.databases.contains_key(FALLBACK_DATABASE)
    }

    /// Pool mode for a (database, user): user overrides database overrides the global setting.
    pub fn pool_mode(&self, db: &str, user: &str) -> PoolMode {
        self.users
            .get(user)
            .and_then(|u| u.pool_mode)
            .or_else(|| self.database(db).and_then(|d| d.pool_mode))
            .unwrap_or(self.general.pool_mode)
    }

    /// Cap on a database's server connections across users; 0 = none.
    pub fn max_db_connections(&self, db: &str) -> usize {
        self.database(db)
            .and_then(|d| d.max_db_connections)
            .unwrap_or(self.general.max_db_connections) as usize
    }

    /// Cap on a database's client connections across users; 0 = none.
    pub fn max_db_client_connections(&self, db: &str) -> usize {
        self.database(db)
            .and_then(|d| d.max_db_client_connections)
            .unwrap_or(self.general.max_db_client_connections) as usize
    }

    /// Cap on a user's client connections across databases; 0 = none.
    pub fn max_user_client_connections(&self, user: &str) -> usize {
        self.users
            .get(user)
            .and_then(|u| u.max_user_client_connections)
            .unwrap_or(self.general.max_user_client_connections) as usize
    }

    /// Cap on a user's server connections across databases; 0 = none.
    pub fn max_user_connections(&self, user: &str) -> usize {
        self.users
            .get(user)
            .and_then(|u| u.max_user_connections)
            .unwrap_or(self.general.max_user_connections) as usize
    }

    /// Server connections allowed in the pool of (database, user): the user's pool_size, else
    /// the database's, else default_pool_size.
    pub fn pool_size(&self, db: &str, user: &str) -> usize {
        self.users
            .get(user)
            .and_then(|u| u.pool_size)
            .or_else(|| self.database(db).and_then(|d| d.pool_size))
            .unwrap_or(self.general.default_pool_size) as usize
    }

    /// max_pinned_servers for a pool: -1 leaves one of its servers for unpinned clients.
    pub fn max_pinned_servers(&self, db: &str, user: &str) -> usize {
        match usize::try_from(self.general.max_pinned_servers) {
            Ok(cap) => cap,
            Err(_) => self.pool_size(db, user).saturating_sub(1),
        }
    }
}

/// General settings a reload cannot change (a restart applies them).
pub const RESTART_ONLY: [&str; 11] = [
    "listen_addr",
    "listen_port",
    "so_reuseport",
    "peer_id",
    "unix_socket_dir",
    "unix_socket_mode",
    "unix_socket_group",
    "metrics_addr",
    "stats_period",
    "log_format",
    "workers",
];

impl General {
    /// The runtime's worker threads: `workers`, or half the CPUs (at least one) for 0.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get() / 2)
                .max(1),
            n => n,
        }
    }
}

/// Every general setting as (name, value) text, sorted by name, for SHOW CONFIG.
pub fn general_settings(general: &General) -> BTreeMap<String, String> {
    let Ok(toml::Value::Table(table)) = toml::Value::try_from(general) else {
        return BTreeMap::new();
    };
    table
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            (key, text)
        })
        .collect()
}

#[cfg(test)]
mod tests;
