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

/// How often pools are checked for being unused (autodb_idle_timeout, pool_idle_timeout).
const UNUSED_POOL_SWEEP: Duration = Duration::from_secs(1);

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
        self.get_or_create_locked(&mut map, database, server_user, settings)
    }

    /// As [`Pools::get_or_create`], counting a client in the pool at once, under the lock that
    /// dropping an unused pool takes: a client logging in can never be left on a dropped pool.
    pub fn join(
        &self,
        database: &str,
        server_user: &str,
        settings: impl FnOnce() -> PoolSettings,
    ) -> PoolClient {
        let mut map = lock(&self.map);
        let pool = self.get_or_create_locked(&mut map, database, server_user, settings);
        pool.clients.fetch_add(1, Ordering::Relaxed);
        PoolClient { pool }
    }

    fn get_or_create_locked(
        &self,
        map: &mut HashMap<(String, String), Arc<Pool>>,
        database: &str,
        server_user: &str,
        settings: impl FnOnce() -> PoolSettings,
    ) -> Arc<Pool> {
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
    /// it was dropped. For pools that come and go: databases made from the `*` fallback, and
    /// pool_idle_timeout.
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

    /// Forgets the caps no pool holds any more (those of dropped pools), so that names that
    /// come and go leave nothing behind.
    fn prune_caps(&self) {
        lock(&self.caps).retain(|_, cap| Arc::strong_count(cap) > 1);
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut pools: Vec<_> = lock(&self.map).values().cloned().collect();
        pools.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
        pools
    }
}

/// A client counted in its pool from its login's pool lookup until it leaves (see
/// [`Pools::join`]); dropping it uncounts the client.
pub struct PoolClient {
    pool: Arc<Pool>,
}

impl std::ops::Deref for PoolClient {
    type Target = Arc<Pool>;

    fn deref(&self) -> &Arc<Pool> {
        &self.pool
    }
}

impl Drop for PoolClient {
    fn drop(&mut self) {
        *lock(&self.pool.last_client_left) = Instant::now();
        self.pool.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Drops pools that have had no client for long enough: those of databases made from the `*`
/// fallback after autodb_idle_timeout (closing their idle servers, as PgBouncer frees such
/// databases), and any pool with no server left after pool_idle_timeout.
pub async fn drop_unused_pools(
    pools: &Pools,
    config: impl Fn() -> Arc<Config>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(UNUSED_POOL_SWEEP);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let config = config();
        let g = &config.general;
        for pool in pools.all() {
            let auto = config.is_auto_database(&pool.database);
            let limit = match (auto, g.pool_idle_timeout) {
                (true, _) => g.autodb_idle_timeout,
                (false, t) if t > 0.0 => t,
                _ => continue,
            };
            if pool.unused_for().as_secs_f64() < limit {
                continue;
            }
            if auto {
                pool.close_idle();
            }
            if pools.remove_if_unused(&pool) {
                tracing::info!(database = %pool.database, user = %pool.user, auto, "dropped an unused pool");
            }
        }
        pools.prune_caps();
    }
}
