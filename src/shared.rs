//! The state every task shares, one `Arc<Shared>` passed down (there are no statics): the
//! config in force and its reload, the pools, the client registry, cancels, and the statistics
//! task that turns the pools' counters into SHOW STATS' averages.

use crate::auth::scram::ScramKeys;
use crate::config::{self, Config};
use crate::{
    auth_query, cancel, control, handover, peers, pool, prepared, registry, shutdown, stats,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// State every task shares.
pub struct Shared {
    /// Replaced whole by a reload; read through [`Shared::config`].
    config: std::sync::RwLock<Arc<Config>>,
    pub pools: pool::Pools,
    pub cancels: cancel::Cancels,
    /// Cancels forwarded to other processes of the fleet.
    pub peer_pools: peers::PeerPools,
    /// Client connections open now (for max_client_conn).
    pub clients: AtomicUsize,
    /// Makes mock SCRAM salts for unknown users stable per user, and unguessable.
    pub mock_salt_key: [u8; 32],
    /// Secrets auth_query found, and its connections.
    pub auth_lookups: auth_query::AuthLookups,
    /// SCRAM keys derived from plaintext passwords, by user (derivation is deliberately slow).
    pub derived_keys: Mutex<HashMap<String, (String, ScramKeys)>>,
    /// Per-database averages over the last stats_period.
    averages: Mutex<BTreeMap<String, stats::Averages>>,
    pub shutdown: shutdown::ShutdownState,
    pub control: control::Control,
    pub registry: registry::Registry,
    /// Every distinct named prepared statement some client holds, by its exact bytes.
    pub statements: prepared::Registry,
    /// What a takeover (online upgrade) shares with the rest of the process.
    pub handover: handover::Handover,
    /// The file RELOAD and SIGHUP read.
    config_path: Mutex<Option<std::path::PathBuf>>,
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        Shared {
            config: std::sync::RwLock::new(Arc::new(config)),
            pools: Default::default(),
            cancels: Default::default(),
            peer_pools: Default::default(),
            clients: AtomicUsize::new(0),
            mock_salt_key: rand::random(),
            auth_lookups: Default::default(),
            derived_keys: Mutex::new(HashMap::new()),
            averages: Mutex::new(BTreeMap::new()),
            shutdown: Default::default(),
            control: Default::default(),
            registry: Default::default(),
            statements: Default::default(),
            handover: Default::default(),
            config_path: Mutex::new(None),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        crate::sync::read(&self.config).clone()
    }

    /// Starts (or hastens) a shutdown. Under a draining mode every client is told to stop
    /// once between transactions.
    pub fn begin_shutdown(&self, mode: shutdown::ShutdownMode) {
        match self.handover.taking_over() {
            // Not the service yet: the service manager must not hear that it stops.
            true => self.shutdown.begin_quietly(mode),
            false => self.shutdown.begin(mode),
        }
        // A process shutting down is not taken over; in a fleet its sockets must close when
        // its accept loops let go of them.
        self.handover.forget_listeners();
        if shutdown::draining(self.shutdown.mode()) {
            self.registry.drain_all();
        }
    }

    /// The file RELOAD and SIGHUP read, if pgmux was started from one.
    pub fn config_path(&self) -> Option<std::path::PathBuf> {
        crate::sync::lock(&self.config_path).clone()
    }

    pub fn set_config_path(&self, path: std::path::PathBuf) {
        *crate::sync::lock(&self.config_path) = Some(path);
    }

    /// Re-reads the config file and applies it; a file that does not validate is refused whole
    /// and the config in force stays. Returns every problem, one per line, on refusal.
    pub fn reload_from_file(&self) -> Result<(), String> {
        let Some(path) = self.config_path() else {
            return Err("pgmux was started without a config file to reload".into());
        };
        match Config::load(&path) {
            Ok(config) => {
                self.reload(config);
                Ok(())
            }
            Err(e) => {
                tracing::error!("reload refused, the config in force stays: {e}");
                Err(e.to_string())
            }
        }
    }

    /// Applies a new config without dropping a client or a transaction in flight: new
    /// databases, users, secrets, pool sizes, limits and timeouts take effect (timeouts for
    /// sessions that start afterwards); settings that need a restart are kept and logged.
    pub fn reload(&self, mut new: Config) {
        let old = self.config();
        let wanted = config::general_settings(&new.general);
        let (g, o) = (&mut new.general, &old.general);
        g.listen_addr = o.listen_addr.clone();
        g.listen_port = o.listen_port;
        g.so_reuseport = o.so_reuseport;
        g.peer_id = o.peer_id;
        g.unix_socket_dir = o.unix_socket_dir.clone();
        g.unix_socket_mode = o.unix_socket_mode.clone();
        g.unix_socket_group = o.unix_socket_group.clone();
        g.metrics_addr = o.metrics_addr.clone();
        g.stats_period = o.stats_period;
        g.log_format = o.log_format;
        g.workers = o.workers;
        let kept = config::general_settings(g);
        for key in config::RESTART_ONLY {
            if wanted.get(key) != kept.get(key) {
                tracing::warn!(
                    setting = key,
                    "changing this setting needs a restart; kept as it was"
                );
            }
        }
        let new = Arc::new(new);
        *crate::sync::write(&self.config) = new.clone();
        self.pools.reload(&new);
        tracing::info!("config reloaded");
    }

    /// Counters per configured database, summed over its pools.
    pub fn totals_by_database(&self) -> BTreeMap<String, stats::Totals> {
        let mut by_db: BTreeMap<String, stats::Totals> = self
            .config()
            .databases
            .keys()
            .filter(|name| *name != config::FALLBACK_DATABASE)
            .map(|name| (name.clone(), Default::default()))
            .collect();
        for pool in self.pools.all() {
            by_db
                .entry(pool.database.clone())
                .or_default()
                .add(&pool.stats.totals());
        }
        by_db
    }

    /// Per-database averages over the last full stats_period (zero before the first one).
    pub fn stats_averages(&self) -> BTreeMap<String, stats::Averages> {
        crate::sync::lock(&self.averages).clone()
    }
}

/// What the Prometheus endpoint reads.
impl crate::metrics::Source for Shared {
    fn pools(&self) -> Vec<Arc<pool::Pool>> {
        self.pools.all()
    }

    fn clients(&self) -> usize {
        self.clients.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn shutdown(&self) -> Option<shutdown::ShutdownMode> {
        self.shutdown.mode()
    }

    fn config(&self) -> Arc<Config> {
        Shared::config(self)
    }
}

/// Every stats_period: recompute the averages SHOW STATS reports and, with log_stats, log them.
pub(crate) async fn stats_task(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let period = std::time::Duration::from_secs_f64(shared.config().general.stats_period);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut previous = shared.totals_by_database();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let now = shared.totals_by_database();
        let averages: BTreeMap<_, _> = now
            .iter()
            .map(|(db, t)| {
                let before = previous.get(db).copied().unwrap_or_default();
                (db.clone(), t.averages_since(&before, period.as_secs_f64()))
            })
            .collect();
        if shared.config().general.log_stats {
            for (db, a) in &averages {
                tracing::info!(
                    database = %db,
                    "stats: {} xacts/s, {} queries/s, in {} B/s, out {} B/s, xact {} us, query {} us, wait {} us",
                    a.xact_count, a.query_count, a.bytes_received, a.bytes_sent,
                    a.xact_time_us, a.query_time_us, a.wait_time_us
                );
            }
        }
        *crate::sync::lock(&shared.averages) = averages;
        previous = now;
    }
}
