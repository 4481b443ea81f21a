//! auth_query: the secrets of users missing from auth_file, looked up on PostgreSQL as
//! auth_user. Lookups run on connections of their own, never handed to a client, so no client's
//! settings (a `search_path` above all) can reach them; a few stay open between lookups, and
//! answers are kept auth_query_cache_ttl seconds, so a login storm is not a query storm.

use crate::auth::Secret;
use crate::config::{Config, DEFAULT_AUTH_QUERY};
use crate::pool::{server_credentials, server_target};
use crate::server::{ServerConn, ServerError, ServerTarget};
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Lookup connections kept open per source between lookups.
const IDLE_LOOKUP_CONNECTIONS: usize = 2;
/// Lookups running at once per source; more wait their turn. Per source, so that one whose
/// server is down holds up no other database's logins.
const LOOKUPS_AT_ONCE: usize = 4;
/// Answers kept at most, so that a flood of made-up user names cannot grow the cache.
const CACHE_LIMIT: usize = 10_000;
/// PostgreSQL's longest role name (NAMEDATALEN - 1): a longer one names nobody, and is not
/// looked up.
const MAX_ROLE_NAME: usize = 63;

/// Where and how one database's users are looked up.
struct Source {
    target: ServerTarget,
    query: String,
    /// Names target and query: the key of the cache, the idle connections and the turns.
    label: String,
}

/// An answer of auth_query (None: no such user, or no password) and when it came.
type Answer = (Option<Secret>, Instant);

#[derive(Default)]
pub struct AuthLookups {
    /// By (source label, user name).
    cache: Mutex<HashMap<(String, String), Answer>>,
    idle: Mutex<HashMap<String, Vec<ServerConn>>>,
    turns: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Why a lookup found nothing to check the password against, told apart from "no such user".
#[derive(Debug, thiserror::Error)]
#[error("auth_query as {auth_user} failed: {source}")]
pub struct LookupError {
    pub auth_user: String,
    pub source: ServerError,
}

impl AuthLookups {
    /// The secret of `user` for a client of `database`, when auth_user is set for it: None
    /// when the query finds no such user, or a NULL secret (which no password matches).
    /// Ok(None) too when no lookup applies.
    pub async fn secret(
        &self,
        config: &Config,
        database: &str,
        user: &str,
    ) -> Result<Option<Secret>, LookupError> {
        if user.len() > MAX_ROLE_NAME {
            return Ok(None);
        }
        let Some((source, auth_user)) = source(config, database) else {
            return Ok(None);
        };
        let ttl = Duration::try_from_secs_f64(config.general.auth_query_cache_ttl)
            .unwrap_or(Duration::MAX);
        let key = (source.label.clone(), user.to_owned());
        if let Some((secret, at)) = lock(&self.cache).get(&key) {
            if at.elapsed() < ttl {
                return Ok(secret.clone());
            }
        }
        let fail = |source| LookupError {
            auth_user: auth_user.clone(),
            source,
        };
        let turns = lock(&self.turns)
            .entry(source.label.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(LOOKUPS_AT_ONCE)))
            .clone();
        let _turn = turns
            .acquire()
            .await
            .map_err(|_| fail(ServerError::Closed))?;
        let timeout = Duration::try_from_secs_f64(config.general.server_connect_timeout)
            .unwrap_or(Duration::MAX);
        let answer = match self.idle_connection(&source.label) {
            // A kept connection the server closed meanwhile fails; one retry on a new one.
            Some(mut conn) => match query(&mut conn, &source, user, timeout).await {
                Ok(answer) => Some((conn, answer)),
                Err(_) => None,
            },
            None => None,
        };
        let (conn, answer) = match answer {
            Some(done) => done,
            None => {
                let credentials = server_credentials(config, None, &auth_user);
                let mut conn = ServerConn::connect(&source.target, &credentials, timeout, 0)
                    .await
                    .map_err(fail)?;
                let answer = query(&mut conn, &source, user, timeout)
                    .await
                    .map_err(fail)?;
                (conn, answer)
            }
        };
        let secret = match answer {
            Some((Some(name), Some(secret))) if name == user => Secret::parse(&secret).ok(),
            _ => None,
        };
        {
            let mut idle = lock(&self.idle);
            let kept = idle.entry(source.label.clone()).or_default();
            if kept.len() < IDLE_LOOKUP_CONNECTIONS {
                kept.push(conn);
            }
        }
        if !ttl.is_zero() {
            let mut cache = lock(&self.cache);
            if cache.len() >= CACHE_LIMIT / 2 {
                cache.retain(|_, (_, at)| at.elapsed() < ttl);
            }
            if cache.len() < CACHE_LIMIT {
                cache.insert(key, (secret.clone(), Instant::now()));
            }
        }
        Ok(secret)
    }

    /// A kept lookup connection of `label` that still looks open.
    fn idle_connection(&self, label: &str) -> Option<ServerConn> {
        let mut idle = lock(&self.idle);
        let kept = idle.get_mut(label)?;
        while let Some(mut conn) = kept.pop() {
            if conn.looks_alive() {
                return Some(conn);
            }
        }
        None
    }

    /// Forgets the secret found for `user`, after a failed login: the password may have
    /// changed. "No such user" is kept for its time: forgetting it would let made-up names
    /// make a query each.
    pub fn forget(&self, user: &str) {
        lock(&self.cache).retain(|(_, u), (secret, _)| u != user || secret.is_none());
    }
}

/// Runs the source's query for `user`, within `timeout`.
async fn query(
    conn: &mut ServerConn,
    source: &Source,
    user: &str,
    timeout: Duration,
) -> Result<Option<(Option<String>, Option<String>)>, ServerError> {
    tokio::time::timeout(timeout, conn.query_pair(&source.query, user))
        .await
        .unwrap_or(Err(ServerError::Timeout(source.target.host.clone())))
}

/// Whether users of `database` are looked up: the auth_user, query and database that apply
/// (the database's own, else the global ones), and where that database's servers are. A
/// database made from the `*` fallback is looked up only in auth_dbname (or the fallback's
/// own dbname): never in a database a client that has not logged in chose, which would tell
/// it whether that database exists.
fn source(config: &Config, database: &str) -> Option<(Source, String)> {
    if crate::config::CONSOLE_DATABASES.contains(&database) {
        return None;
    }
    let client_db = config.database(database);
    let g = &config.general;
    let auth_user = client_db
        .and_then(|d| d.auth_user.clone())
        .or_else(|| g.auth_user.clone())?;
    let query = client_db
        .and_then(|d| d.auth_query.clone())
        .unwrap_or_else(|| match g.auth_query.as_str() {
            "" => DEFAULT_AUTH_QUERY.to_owned(),
            q => q.to_owned(),
        });
    let auth_dbname = client_db
        .and_then(|d| d.auth_dbname.clone())
        .or_else(|| g.auth_dbname.clone());
    let (name, db) = match auth_dbname {
        Some(name) => {
            let db = config.databases.get(&name)?;
            (name, db)
        }
        None if config.is_auto_database(database) => {
            let fallback = client_db?;
            (fallback.dbname.clone()?, fallback)
        }
        None => (database.to_owned(), client_db?),
    };
    let target = server_target(config, &name, db, &auth_user);
    let label = format!(
        "{}:{}/{} as {}\n{query}",
        target.host, target.port, target.dbname, target.user
    );
    Some((
        Source {
            target,
            query,
            label,
        },
        auth_user,
    ))
}
