//! The settings, each documented where it is declared, with PgBouncer's names, units and defaults.
//! Unknown keys are rejected (see validate.rs for how every one is named).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How long a client keeps its server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// For the client's whole session (PgBouncer's default).
    Session,
    /// From the first message of a transaction to the ReadyForQuery that ends it.
    Transaction,
    /// For one statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// How clients prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum AuthType {
    /// No password asked.
    #[serde(rename = "trust")]
    Trust,
    /// md5 challenge; a user whose stored secret is SCRAM is asked for SCRAM instead.
    #[serde(rename = "md5")]
    Md5,
    /// SCRAM-SHA-256 (and SCRAM-SHA-256-PLUS over TLS).
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// The client certificate's common name is the user name; needs client_tls_sslmode
    /// verify-ca or verify-full.
    #[serde(rename = "cert")]
    Cert,
    /// The password in clear text (over TLS only, wisely); checked against any stored secret.
    #[serde(rename = "plain")]
    Plain,
    /// The method of the first auth_hba_file line that matches the connection.
    #[serde(rename = "hba")]
    Hba,
}

pub use crate::tls::SslMode;

/// The `[pgmux]` table: general settings, PgBouncer's `[pgbouncer]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct General {
    /// Address to listen on for TCP clients. Default "127.0.0.1".
    #[serde(default = "default_listen_addr")]
    pub listen_addr: String,
    /// TCP port, and the number in the Unix socket's name. Default 6432.
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    /// Directory of the Unix socket `.s.PGSQL.<listen_port>` pgmux listens on beside TCP, and
    /// of PostgreSQL's socket for databases without a host; "" turns it off (needs a restart).
    /// Default "/tmp".
    #[serde(default = "default_unix_socket_dir")]
    pub unix_socket_dir: String,
    /// Permissions of the Unix socket file, in octal. Default "0777".
    #[serde(default = "default_unix_socket_mode")]
    pub unix_socket_mode: String,
    /// Group that owns the Unix socket file. Default: the group pgmux runs as.
    #[serde(default)]
    pub unix_socket_group: Option<String>,
    /// Let several pgmux processes listen on the same address and port (SO_REUSEPORT), the
    /// kernel spreading clients among them; give each its own unix_socket_dir and peer_id
    /// (needs a restart). Default false.
    #[serde(default)]
    pub so_reuseport: bool,
    /// This process's number among its `[peers]` (1 to 16383), carried in every cancel key it
    /// hands out so that a cancel reaching another process is forwarded here; 0 = no peering
    /// (needs a restart). Default 0.
    #[serde(default)]
    pub peer_id: u16,
    /// Default pool mode. Default "session".
    #[serde(default = "default_pool_mode")]
    pub pool_mode: PoolMode,
    /// Server connections per (database, user) pool. Default 20.
    #[serde(default = "default_pool_size")]
    pub default_pool_size: u32,
    /// Most client connections at once; more are refused with 53300. Default 100.
    #[serde(default = "default_max_client_conn")]
    pub max_client_conn: u32,
    /// trust | md5 | scram-sha-256. Default "md5".
    #[serde(default = "default_auth_type")]
    pub auth_type: AuthType,
    /// PgBouncer userlist.txt with `"user" "secret"` lines. No default.
    #[serde(default)]
    pub auth_file: Option<PathBuf>,
    /// pg_hba.conf-style file that picks the method per connection under auth_type = "hba".
    /// No default.
    #[serde(default)]
    pub auth_hba_file: Option<PathBuf>,
    /// Role that looks up users missing from auth_file with auth_query; its own secret comes
    /// from auth_file. Default: unset (no lookups).
    #[serde(default)]
    pub auth_user: Option<String>,
    /// Query that returns (user name, secret) for the user given as $1. Default: PgBouncer's.
    #[serde(default = "default_auth_query")]
    pub auth_query: String,
    /// Database (a `[databases]` name) auth_query runs in. Default: the client's database.
    #[serde(default)]
    pub auth_dbname: Option<String>,
    /// Seconds a secret found by auth_query is reused before it is looked up again (a pgmux
    /// addition, so that a login storm is not a query storm); a failed login forgets it at
    /// once; 0 looks up every login. Default 10.
    #[serde(default = "default_auth_query_cache_ttl")]
    pub auth_query_cache_ttl: f64,
    /// Users allowed every admin console command. Default [].
    #[serde(default)]
    pub admin_users: Vec<String>,
    /// Users allowed the admin console's SHOW commands. Default [].
    #[serde(default)]
    pub stats_users: Vec<String>,
    /// Run when a server is released in session mode. Default "DISCARD ALL"; "" disables.
    #[serde(default = "default_server_reset_query")]
    pub server_reset_query: String,
    /// Also run server_reset_query in transaction and statement mode. Default false.
    #[serde(default)]
    pub server_reset_query_always: bool,
    /// Startup parameters accepted and dropped instead of refused. Default [].
    #[serde(default)]
    pub ignore_startup_parameters: Vec<String>,
    /// Seconds allowed for connecting and logging in to PostgreSQL. Default 15.
    #[serde(default = "default_server_connect_timeout")]
    pub server_connect_timeout: f64,
    /// Seconds a client has to finish logging in. Default 60.
    #[serde(default = "default_client_login_timeout")]
    pub client_login_timeout: f64,
    /// 0 = info, 1 = debug, 2 = trace. RUST_LOG overrides. Default 0.
    #[serde(default)]
    pub verbose: u8,
    /// "text" (one line per event) or "json" (one JSON object per line). Default "text".
    #[serde(default)]
    pub log_format: LogFormat,
    /// Most client connections to one database, all users together; 0 = no cap. Default 0.
    #[serde(default)]
    pub max_db_client_connections: u32,
    /// Most client connections of one user, all databases together; 0 = no cap. Default 0.
    #[serde(default)]
    pub max_user_client_connections: u32,
    /// Parameters the server reports (ParameterStatus) that follow each client from server to
    /// server, beyond those pgmux always tracks. Default [].
    #[serde(default)]
    pub track_extra_parameters: Vec<String>,
    /// Seconds a (database, user) pool with no client and no server is kept; 0 = forever.
    /// Default 0.
    #[serde(default)]
    pub pool_idle_timeout: f64,
    /// In transaction mode, each client keeps its session state: SET, RESET and SQL PREPARE
    /// follow it to whichever server it gets, and state only its server can hold (temporary
    /// tables, WITH HOLD cursors, session advisory locks, LISTEN, SET ROLE) pins it to that
    /// server until it is gone. false: transaction mode as PgBouncer's. Default true.
    #[serde(default = "default_true")]
    pub follow_session_state: bool,
    /// Most servers of one pool that pinned clients may hold; a statement that would pin one
    /// more fails with 53400. -1 = the pool's size less one, so that one server always stays
    /// for everyone else. Default -1.
    #[serde(default = "default_max_pinned_servers")]
    pub max_pinned_servers: i64,
    /// Log each time a client is pinned to its server or let go, with the reason (also at
    /// verbose >= 1). Default false.
    #[serde(default)]
    pub log_pinning: bool,
    /// Most server connections to one database, all users together; 0 = no cap. Default 0.
    #[serde(default)]
    pub max_db_connections: u32,
    /// Most server connections of one user, all databases together; 0 = no cap. Default 0.
    #[serde(default)]
    pub max_user_connections: u32,
    /// TLS with clients: "disable"; "allow" and "prefer" accept TLS when a client asks for it;
    /// "require" refuses clients without TLS; "verify-ca" and "verify-full" also require a
    /// client certificate that chains to client_tls_ca_file. Default "disable".
    #[serde(default = "default_client_tls_sslmode")]
    pub client_tls_sslmode: SslMode,
    /// pgmux's private key for clients (PEM). Required unless client_tls_sslmode is disable.
    #[serde(default)]
    pub client_tls_key_file: Option<PathBuf>,
    /// pgmux's certificate chain for clients (PEM), its own certificate first. Required
    /// unless client_tls_sslmode is disable.
    #[serde(default)]
    pub client_tls_cert_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to; required for verify-ca
    /// and verify-full. No default.
    #[serde(default)]
    pub client_tls_ca_file: Option<PathBuf>,
    /// TLS versions for clients: "secure" (TLS 1.2 and 1.3), "all" and "legacy" (the same:
    /// versions before 1.2 are not offered), or a comma-separated list of "tlsv1.2" and
    /// "tlsv1.3". Default "secure".
    #[serde(default = "default_tls_protocols")]
    pub client_tls_protocols: String,
    /// TLS with PostgreSQL, as libpq's sslmode: "disable"; "allow" and "prefer" ask for TLS and
    /// go on without it when the server has none; "require" insists but checks no
    /// certificate; "verify-ca" checks the server's certificate against server_tls_ca_file;
    /// "verify-full" also checks that it names the database's host. Default "prefer".
    #[serde(default = "default_server_tls_sslmode")]
    pub server_tls_sslmode: SslMode,
    /// CA certificates (PEM) for PostgreSQL's certificate; required for verify-ca and
    /// verify-full. No default.
    #[serde(default)]
    pub server_tls_ca_file: Option<PathBuf>,
    /// Private key (PEM) for a client certificate presented to PostgreSQL. No default.
    #[serde(default)]
    pub server_tls_key_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to PostgreSQL, with server_tls_key_file.
    #[serde(default)]
    pub server_tls_cert_file: Option<PathBuf>,
    /// TLS versions for PostgreSQL, as client_tls_protocols. Default "secure".
    #[serde(default = "default_tls_protocols")]
    pub server_tls_protocols: String,
    /// Threads that serve clients (a pgmux addition; needs a restart). 0 sizes it to half the
    /// CPUs, at least one: PostgreSQL and the applications usually share the machine, and on
    /// a small one a single thread wastes no time handing work between threads. Default 0.
    #[serde(default)]
    pub workers: usize,
    /// Named prepared statements each server connection keeps prepared for clients in
    /// transaction and statement mode, least recently used closed first; 0 passes
    /// protocol-level statements through untouched (they then fail across transactions).
    /// Session mode always passes them through. Default 200.
    #[serde(default = "default_max_prepared_statements")]
    pub max_prepared_statements: usize,
    /// Servers each pool opens ahead of demand and keeps, once it can log in. Default 0.
    #[serde(default)]
    pub min_pool_size: u32,
    /// Extra servers a pool may open for clients that waited reserve_pool_timeout. Default 0.
    #[serde(default)]
    pub reserve_pool_size: u32,
    /// Seconds a client waits before the reserve pool is used for it. Default 5.
    #[serde(default = "default_reserve_pool_timeout")]
    pub reserve_pool_timeout: f64,
    /// Run on a server idle longer than server_check_delay before handing it out; "" disables.
    /// Default "select 1".
    #[serde(default = "default_server_check_query")]
    pub server_check_query: String,
    /// Seconds of idleness after which a server is checked before use; 0 = always. Default 30.
    #[serde(default = "default_server_check_delay")]
    pub server_check_delay: f64,
    /// Seconds after which a server is closed once released; 0 = use each server once.
    /// Closes are spread out. Default 3600.
    #[serde(default = "default_server_lifetime")]
    pub server_lifetime: f64,
    /// Seconds an idle server is kept (never below min_pool_size); 0 = forever. Default 600.
    #[serde(default = "default_server_idle_timeout")]
    pub server_idle_timeout: f64,
    /// Seconds to wait after a failed connect or login before trying again; meanwhile clients
    /// that need a new server get the last error at once. Default 15.
    #[serde(default = "default_server_login_retry")]
    pub server_login_retry: f64,
    /// Seconds a client may stay idle outside a transaction; 0 = forever. Default 0.
    #[serde(default)]
    pub client_idle_timeout: f64,
    /// Seconds a client may stay idle inside a transaction; 0 = forever. Default 0.
    #[serde(default)]
    pub idle_transaction_timeout: f64,
    /// Seconds a query may run; then server and client are disconnected; 0 = off. Default 0.
    #[serde(default)]
    pub query_timeout: f64,
    /// Seconds a transaction may stay open; then server and client are disconnected; 0 = off.
    /// Default 0.
    #[serde(default)]
    pub transaction_timeout: f64,
    /// Seconds a client waits for a server before it is sent a NOTICE saying so; 0 = never.
    /// Default 5.
    #[serde(default = "default_query_wait_notify")]
    pub query_wait_notify: f64,
    /// Seconds a client may wait for a server; 0 = forever. Default 120.
    #[serde(default = "default_query_wait_timeout")]
    pub query_wait_timeout: f64,
    /// Seconds a database made from the `*` fallback is kept with no client before it is
    /// dropped. Default 3600.
    #[serde(default = "default_autodb_idle_timeout")]
    pub autodb_idle_timeout: f64,
    /// Seconds over which SHOW STATS averages are taken, and between log_stats lines.
    /// Default 60.
    #[serde(default = "default_stats_period")]
    pub stats_period: f64,
    /// Address ("host:port") of the Prometheus endpoint `/metrics`; unset = off. Default unset.
    #[serde(default)]
    pub metrics_addr: Option<String>,
    /// Log one line of statistics per database every stats_period. Default true.
    #[serde(default = "default_true")]
    pub log_stats: bool,
    /// Log every client login, to a pool or to the console. Default true.
    #[serde(default = "default_true")]
    pub log_connections: bool,
    /// Log every logged-in client's disconnect. Default true.
    #[serde(default = "default_true")]
    pub log_disconnections: bool,
}

impl Default for General {
    /// Every setting at its default, as an empty `[pgmux]` table gives.
    fn default() -> General {
        General::deserialize(toml::Value::Table(Default::default()))
            .expect("every general setting has a default")
    }
}

/// A `[databases.NAME]` table: NAME is what clients connect to; `[databases."*"]` is the
/// fallback for names not listed, each served with `dbname` = the name asked for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// PostgreSQL host name or address, or a directory (starting with `/`) holding its Unix
    /// socket. Default: the Unix socket in unix_socket_dir.
    #[serde(default)]
    pub host: Option<String>,
    /// PostgreSQL port. Default 5432.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Database name on the server. Default: the table's NAME.
    #[serde(default)]
    pub dbname: Option<String>,
    /// Server user every client of this database logs in as. Default: the client's user.
    #[serde(default)]
    pub user: Option<String>,
    /// Password for logging in to PostgreSQL. Default: the user's secret.
    #[serde(default)]
    pub password: Option<String>,
    /// Server connections in this database's pools. Default: default_pool_size.
    #[serde(default)]
    pub pool_size: Option<u32>,
    /// Pool mode for this database. Default: the global pool_mode.
    #[serde(default)]
    pub pool_mode: Option<PoolMode>,
    /// Cap on this database's server connections. Default: the global max_db_connections.
    #[serde(default)]
    pub max_db_connections: Option<u32>,
    /// Cap on this database's client connections. Default: the global
    /// max_db_client_connections.
    #[serde(default)]
    pub max_db_client_connections: Option<u32>,
    /// query_wait_timeout for this database's clients. Default: the global one.
    #[serde(default)]
    pub query_wait_timeout: Option<f64>,
    /// idle_transaction_timeout for this database's clients. Default: the global one.
    #[serde(default)]
    pub idle_transaction_timeout: Option<f64>,
    /// transaction_timeout for this database's clients. Default: the global one.
    #[serde(default)]
    pub transaction_timeout: Option<f64>,
    /// auth_user for clients of this database. Default: the global auth_user.
    #[serde(default)]
    pub auth_user: Option<String>,
    /// auth_query for clients of this database. Default: the global auth_query.
    #[serde(default)]
    pub auth_query: Option<String>,
    /// auth_dbname for clients of this database. Default: the global auth_dbname.
    #[serde(default)]
    pub auth_dbname: Option<String>,
}

/// A `[peers.N]` table: the pgmux process whose peer_id is N, where cancels for its clients
/// are forwarded.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Host name or address, or (starting with `/`) the directory of its Unix socket. Required.
    pub host: String,
    /// Its port. Default 6432.
    #[serde(default = "default_listen_port")]
    pub port: u16,
    /// Cancels forwarded to it at once, at most. Default: default_pool_size.
    #[serde(default)]
    pub pool_size: Option<u32>,
}

/// A `[users.NAME]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The user's secret: plaintext, md5 hash or SCRAM secret. Default: auth_file's entry.
    #[serde(default)]
    pub password: Option<String>,
    /// Pool mode for this user. Default: the database's, then the global one.
    #[serde(default)]
    pub pool_mode: Option<PoolMode>,
    /// Server connections in this user's pools, overriding the database's pool_size and
    /// default_pool_size. Default: unset.
    #[serde(default)]
    pub pool_size: Option<u32>,
    /// Cap on this user's server connections. Default: the global max_user_connections.
    #[serde(default)]
    pub max_user_connections: Option<u32>,
    /// Cap on this user's client connections. Default: the global
    /// max_user_client_connections.
    #[serde(default)]
    pub max_user_client_connections: Option<u32>,
    /// The client timeouts for this user, overriding the database's and the global ones.
    #[serde(default)]
    pub query_timeout: Option<f64>,
    #[serde(default)]
    pub query_wait_timeout: Option<f64>,
    #[serde(default)]
    pub idle_transaction_timeout: Option<f64>,
    #[serde(default)]
    pub transaction_timeout: Option<f64>,
    #[serde(default)]
    pub client_idle_timeout: Option<f64>,
}

fn default_listen_addr() -> String {
    "127.0.0.1".into()
}
fn default_listen_port() -> u16 {
    6432
}
fn default_unix_socket_dir() -> String {
    "/tmp".into()
}
fn default_unix_socket_mode() -> String {
    "0777".into()
}
/// PgBouncer's: a role's password unless it has expired or cannot log in.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL \
     ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin";
fn default_auth_query() -> String {
    DEFAULT_AUTH_QUERY.into()
}
fn default_auth_query_cache_ttl() -> f64 {
    10.0
}
fn default_autodb_idle_timeout() -> f64 {
    3600.0
}
fn default_pool_mode() -> PoolMode {
    PoolMode::Session
}
fn default_pool_size() -> u32 {
    20
}
fn default_client_tls_sslmode() -> SslMode {
    SslMode::Disable
}

fn default_server_tls_sslmode() -> SslMode {
    SslMode::Prefer
}

fn default_tls_protocols() -> String {
    "secure".into()
}

fn default_max_prepared_statements() -> usize {
    200
}

fn default_max_client_conn() -> u32 {
    100
}
fn default_auth_type() -> AuthType {
    AuthType::Md5
}
fn default_server_reset_query() -> String {
    "DISCARD ALL".into()
}
fn default_server_connect_timeout() -> f64 {
    15.0
}
fn default_client_login_timeout() -> f64 {
    60.0
}
fn default_pg_port() -> u16 {
    5432
}
fn default_reserve_pool_timeout() -> f64 {
    5.0
}
fn default_server_check_query() -> String {
    "select 1".into()
}
fn default_server_check_delay() -> f64 {
    30.0
}
fn default_server_lifetime() -> f64 {
    3600.0
}
fn default_server_idle_timeout() -> f64 {
    600.0
}
fn default_server_login_retry() -> f64 {
    15.0
}
fn default_query_wait_notify() -> f64 {
    5.0
}
fn default_query_wait_timeout() -> f64 {
    120.0
}
fn default_stats_period() -> f64 {
    60.0
}
fn default_max_pinned_servers() -> i64 {
    -1
}

fn default_true() -> bool {
    true
}
