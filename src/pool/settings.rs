//! What a pool is built with, derived from the config for one (database, server user); built
//! again on reload and applied to the running pool.

use crate::config::{Config, PoolMode};
use crate::server::{ServerCredentials, ServerTarget};
use std::time::Duration;

/// Settings of one pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub target: ServerTarget,
    pub mode: PoolMode,
    pub size: usize,
    pub connect_timeout: Duration,
    pub credentials: ServerCredentials,
    pub health: Health,
    /// max_db_connections for this pool's database; 0 = no cap.
    pub max_db_connections: usize,
    /// max_user_connections for this pool's server user; 0 = no cap.
    pub max_user_connections: usize,
}

impl PoolSettings {
    /// The settings of (database, server user) under `config`; None if the database is gone.
    pub fn from_config(config: &Config, database: &str, server_user: &str) -> Option<PoolSettings> {
        let db = config.database(database)?;
        let general = &config.general;
        Some(PoolSettings {
            target: server_target(config, database, db, server_user),
            mode: config.pool_mode(database, server_user),
            size: config.pool_size(database, server_user),
            connect_timeout: Duration::from_secs_f64(general.server_connect_timeout),
            credentials: server_credentials(config, db.password.as_deref(), server_user),
            health: Health::from_config(general),
            max_db_connections: config.max_db_connections(database),
            max_user_connections: config.max_user_connections(server_user),
        })
    }
}

/// Where the servers of `db` (the `[databases]` table serving the name `database`) are, for
/// logging in as `user`.
pub fn server_target(
    config: &Config,
    database: &str,
    db: &crate::config::Database,
    user: &str,
) -> ServerTarget {
    ServerTarget {
        host: config.server_host(db),
        port: db.port,
        dbname: db.dbname.clone().unwrap_or_else(|| database.to_owned()),
        user: user.to_owned(),
        tls: config.tls.server.clone(),
    }
}

/// How a pool logs in to PostgreSQL: the database's password, else the user's secret.
pub fn server_credentials(
    config: &Config,
    db_password: Option<&str>,
    user: &str,
) -> ServerCredentials {
    if let Some(p) = db_password {
        return ServerCredentials::Password(p.to_owned());
    }
    // A SCRAM secret logs in with the ClientKey a client proves; until then, nothing.
    config
        .secret_for(user)
        .map_or(ServerCredentials::None, |s| {
            ServerCredentials::from_secret(&s)
        })
}

/// Server health and lifecycle settings of a pool (PgBouncer's names, in Duration form).
#[derive(Debug, Clone)]
pub struct Health {
    /// Run on a server idle at least `check_delay` before it is handed out; empty disables.
    pub check_query: String,
    pub check_delay: Duration,
    /// None = forever; zero = each server is used once.
    pub lifetime: Option<Duration>,
    /// None = forever.
    pub idle_timeout: Option<Duration>,
    pub login_retry: Duration,
    pub min_size: usize,
    pub reserve_size: usize,
    pub reserve_timeout: Duration,
}

impl Health {
    pub fn from_config(g: &crate::config::General) -> Health {
        let optional = |v: f64| (v > 0.0).then(|| Duration::from_secs_f64(v));
        Health {
            check_query: g.server_check_query.clone(),
            check_delay: Duration::from_secs_f64(g.server_check_delay),
            lifetime: if g.server_lifetime > 0.0 {
                Some(Duration::from_secs_f64(g.server_lifetime))
            } else {
                Some(Duration::ZERO)
            },
            idle_timeout: optional(g.server_idle_timeout),
            login_retry: Duration::from_secs_f64(g.server_login_retry),
            min_size: g.min_pool_size as usize,
            reserve_size: g.reserve_pool_size as usize,
            reserve_timeout: Duration::from_secs_f64(g.reserve_pool_timeout),
        }
    }
}
