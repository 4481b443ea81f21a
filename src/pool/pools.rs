//! The registry of pools: one per (client database, server user), made on first use with its
//! shared caps and its janitor, and reconfigured on reload.

use super::caps::{Cap, CapKind};
use super::{janitor, lock, Pool, PoolSettings};
use crate::config::Config;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often pools of databases made from the `*` fallback are checked for idleness.
const AUTO_DATABASE_SWEEP: Duration = Duration::from_secs(1);

/// The registry of pools, keyed by (client database, server user).
#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<(String, String), Arc<Pool>>>,
    /// Shared caps by kind and database or user name.
    caps: Mutex<HashMap<(CapKind, String), Arc<Cap>>>,
    next_server_id: Arc<AtomicU64>,
}

impl Pools {
    /// The pool of (database, server user), created from `settings` if it does not exist yet.
    pub fn get_or_create(
        &self,
        database: &str,
        server_user: &str,
        settings: impl FnOnce() -> PoolSettings,
    ) -> Arc<Pool> {
        let mut map = lock(&self.map);
        let key = (database.to_owned(), server_user.to_owned());
        if let Some(pool) = map.get(&key) {
            return pool.clone();
        }
        let settings = settings();
        let caps = [
            (CapKind::Database, database, settings.max_db_connections),
            (CapKind::User, server_user, settings.max_user_connections),
        ]
        .into_iter()
        .map(|(kind, name, setting)| {
            lock(&self.caps)
                .entry((kind, name.to_owned()))
                .or_insert_with(|| Arc::new(Cap::new(kind, name, setting)))
                .clone()
        })
        .collect();
        let pool = Arc::new(Pool::new(
            database.to_owned(),
            settings,
            self.next_server_id.clone(),
            caps,
        ));
        for cap in &pool.caps {
            cap.register(&pool);
        }
        tokio::spawn(janitor::run(Arc::downgrade(&pool)));
        map.insert(key, pool.clone());
        pool
    }

    /// Applies a reloaded config to every pool whose database still exists.
    pub fn reload(&self, config: &crate::config::Config) {
        for pool in self.all() {
            if let Some(settings) = PoolSettings::from_config(config, &pool.database, &pool.user) {
                pool.apply(settings);
            }
        }
    }

    /// Drops `pool` from the registry if no client uses it and it holds no server; true if
    /// it was dropped. For databases made from the `*` fallback, which come and go.
    pub fn remove_if_unused(&self, pool: &Arc<Pool>) -> bool {
        let mut map = lock(&self.map);
        let key = (pool.database.clone(), pool.user.clone());
        let unused = pool.clients.load(Ordering::Relaxed) == 0
            && pool.snapshot().servers == 0
            && map.get(&key).is_some_and(|p| Arc::ptr_eq(p, pool));
        if unused {
            map.remove(&key);
        }
        unused
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut pools: Vec<_> = lock(&self.map).values().cloned().collect();
        pools.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
        pools
    }
}

/// Drops the pools of databases made from the `*` fallback once they have had no client for
/// autodb_idle_timeout, closing their idle servers, as PgBouncer frees such databases.
pub async fn drop_idle_auto_databases(
    pools: &Pools,
    config: impl Fn() -> Arc<Config>,
    mut stop: watch::Receiver<bool>,
) {
    let mut unused_since: HashMap<(String, String), Instant> = HashMap::new();
    let mut tick = tokio::time::interval(AUTO_DATABASE_SWEEP);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let config = config();
        let timeout = Duration::from_secs_f64(config.general.autodb_idle_timeout);
        let now = Instant::now();
        let auto: Vec<_> = pools
            .all()
            .into_iter()
            .filter(|p| config.is_auto_database(&p.database))
            .collect();
        unused_since
            .retain(|(db, user), _| auto.iter().any(|p| &p.database == db && &p.user == user));
        for pool in auto {
            let key = (pool.database.clone(), pool.user.clone());
            if pool.clients.load(Ordering::Relaxed) > 0 {
                unused_since.remove(&key);
                continue;
            }
            let since = *unused_since.entry(key).or_insert(now);
            if now.duration_since(since) >= timeout {
                pool.close_idle();
                if pools.remove_if_unused(&pool) {
                    tracing::info!(database = %pool.database, user = %pool.user, "dropped a database made from \"*\" after autodb_idle_timeout");
                }
            }
        }
    }
}
