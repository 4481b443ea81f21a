//! The registry of pools: one per (client database, server user), made on first use with its
//! shared caps and its janitor, and reconfigured on reload.

use super::caps::{Cap, CapKind};
use super::{janitor, lock, Pool, PoolSettings};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

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

    pub fn all(&self) -> Vec<Arc<Pool>> {
        let mut pools: Vec<_> = lock(&self.map).values().cloned().collect();
        pools.sort_by(|a, b| (&a.database, &a.user).cmp(&(&b.database, &b.user)));
        pools
    }
}
