//! pgmux: a PostgreSQL connection pooler. `Server::bind(config)` starts one in-process and
//! returns a handle; there are no statics: shared state is one `Arc<Shared>` passed down.

pub mod address;
pub mod admin;
pub mod auth;
pub mod cancel;
pub mod client;
pub mod config;
pub mod control;
pub mod import;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod peers;
pub mod pool;
pub mod prepared;
pub mod protocol;
pub mod registry;
pub mod relay;
pub mod server;
pub mod session_state;
pub mod shutdown;
pub mod signal;
pub mod stats;
pub mod stream;
pub mod takeover;
pub mod tls;

use auth::scram::ScramKeys;
use config::Config;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
    pub auth_lookups: client::AuthLookups,
    /// SCRAM keys derived from plaintext passwords, by user (derivation is deliberately slow).
    pub derived_keys: Mutex<HashMap<String, (String, ScramKeys)>>,
    /// Per-database averages over the last stats_period.
    averages: Mutex<BTreeMap<String, stats::Averages>>,
    pub shutdown: shutdown::ShutdownState,
    pub control: control::Control,
    pub registry: registry::Registry,
    /// Every distinct named prepared statement some client holds, by its exact bytes.
    pub statements: prepared::Registry,
    pub metrics: metrics::Metrics,
    /// What a takeover (online upgrade) shares with the rest of the process.
    pub handover: takeover::Handover,
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
            metrics: Default::default(),
            handover: Default::default(),
            config_path: Mutex::new(None),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        self.config_path
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_config_path(&self, path: std::path::PathBuf) {
        *self.config_path.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
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
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = new.clone();
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
        self.averages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Every stats_period: recompute the averages SHOW STATS reports and, with log_stats, log them.
async fn stats_task(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
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
        *shared.averages.lock().unwrap_or_else(|e| e.into_inner()) = averages;
        previous = now;
    }
}

/// Entry point for starting pgmux.
pub struct Server;

impl Server {
    /// Binds the listen address and the Unix socket, and starts accepting clients.
    pub async fn bind(config: Config) -> std::io::Result<Running> {
        let bound = listener::bind(&config.general)?;
        let metrics = match &config.general.metrics_addr {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr.as_str()).await?),
            None => None,
        };
        Server::start(config, bound, metrics, |_| {})
    }

    /// Takes the place of the running pgmux that `taken` came from: serves on its sockets,
    /// then takes each of its clients as it comes.
    pub async fn take_over(config: Config, taken: takeover::Taken) -> std::io::Result<Running> {
        let mut taken = taken;
        let sockets = std::mem::take(&mut taken.listeners);
        let (bound, metrics) = listener::taken(sockets, config.general.listen_port)?;
        let configured = listener::listen_address(&config.general);
        if bound.local_addr.is_some_and(|taken| taken != configured) {
            tracing::warn!(
                taken = ?bound.local_addr,
                %configured,
                "serving on the sockets taken over; listen_addr and listen_port apply at a restart"
            );
        }
        let metrics = match (metrics, &config.general.metrics_addr) {
            (Some(socket), Some(_)) => Some(tokio::net::TcpListener::from_std(socket)?),
            // The old process served metrics and this one is told not to: the socket closes.
            (Some(_), None) => None,
            (None, Some(addr)) => Some(tokio::net::TcpListener::bind(addr.as_str()).await?),
            (None, None) => None,
        };
        // Marked as taking over before it accepts: cancels for the old process's clients
        // and a concurrent takeover of this one are handled from the first client on.
        let mut cancels = None;
        let running = Server::start(config, bound, metrics, |shared| {
            cancels = Some(shared.handover.begin_taking_over());
        })?;
        tracing::info!(
            old_pid = taken.old_pid,
            "took the running pgmux's sockets over; taking its clients"
        );
        let shared = running.shared.clone();
        if let Some(cancels) = cancels {
            tokio::spawn(takeover::receive(taken, shared, client::adopt, cancels));
        }
        Ok(running)
    }

    /// Starts serving on `bound`; `prepare` sees the shared state before the first accept.
    fn start(
        config: Config,
        bound: listener::Bound,
        metrics: Option<tokio::net::TcpListener>,
        prepare: impl FnOnce(&Shared),
    ) -> std::io::Result<Running> {
        let listener::Bound {
            listeners,
            local_addr,
            socket_file,
        } = bound;
        let shared = Arc::new(Shared::new(config));
        let own_file = socket_file.as_ref().map(|f| f.path.as_path());
        for socket in &listeners {
            shared
                .handover
                .keep_listener(socket.kind(own_file), socket.as_fd())?;
        }
        // Pools whose server login is fixed by config start now, so min_pool_size servers are
        // open before the first client arrives.
        let config = shared.config();
        for (name, db) in &config.databases {
            if let (Some(user), false) = (&db.user, name == config::FALLBACK_DATABASE) {
                client::pool_for(&shared, &config, name, user);
            }
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(stats_task(shared.clone(), stop_rx.clone()));
        let sweeper = shared.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let config = || sweeper.config();
            pool::drop_unused_pools(&sweeper.pools, config, stop).await
        });
        let metrics_addr = match metrics {
            Some(listener) => {
                use std::os::fd::AsFd;
                let bound = listener.local_addr()?;
                shared
                    .handover
                    .keep_listener(takeover::ListenerKind::Metrics, listener.as_fd())?;
                tracing::info!(%bound, "serving Prometheus metrics on /metrics");
                tokio::spawn(metrics::serve(listener, shared.clone(), stop_rx.clone()));
                Some(bound)
            }
            None => None,
        };
        prepare(&shared);
        let tasks = listeners
            .into_iter()
            .map(|l| tokio::spawn(listener::accept_loop(l, shared.clone(), stop_rx.clone())))
            .collect();
        if let Some(addr) = local_addr {
            tracing::info!(%addr, "listening");
        }
        Ok(Running {
            local_addr: local_addr.unwrap_or_else(|| listener::listen_address(&config.general)),
            unix_socket: socket_file,
            metrics_addr,
            shared,
            stop: stop_tx,
            tasks,
        })
    }
}

/// A running pgmux.
pub struct Running {
    /// The TCP address clients connect to.
    pub local_addr: SocketAddr,
    /// The Unix socket file clients connect to, unless unix_socket_dir is "".
    pub unix_socket: Option<listener::SocketFile>,
    /// Where /metrics is served, when metrics_addr is set.
    pub metrics_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Pool figures, sorted by database and user.
    pub fn pools(&self) -> Vec<pool::PoolSnapshot> {
        self.shared
            .pools
            .all()
            .iter()
            .map(|p| p.snapshot())
            .collect()
    }

    /// Starts a graceful shutdown (or hastens one under way).
    pub fn begin_shutdown(&self, mode: shutdown::ShutdownMode) {
        tracing::info!(?mode, "shutdown requested");
        self.shared.begin_shutdown(mode);
    }

    /// Resolves once a shutdown has been requested (by a signal or the console's SHUTDOWN) and
    /// its mode is satisfied: at once for Immediate, else when no client is left in a pool.
    pub async fn shutdown_complete(&self) {
        let mut state = self.shared.shutdown.watch();
        loop {
            let mode = *state.borrow_and_update();
            let clients: usize = self
                .shared
                .pools
                .all()
                .iter()
                .map(|p| p.clients.load(std::sync::atomic::Ordering::Relaxed))
                .sum();
            match mode {
                Some(shutdown::ShutdownMode::Immediate) => return,
                Some(_) if clients == 0 => return,
                _ => {}
            }
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(100), state.changed()).await;
        }
    }

    /// Stops accepting, ends client sessions and closes idle servers.
    pub async fn shutdown(mut self) {
        if let Some(file) = self.unix_socket.as_mut() {
            // A takeover may have given the file to another process, or not yet to this one.
            match self.shared.handover.socket_file_ours() {
                true => file.claim(),
                false => file.give_away(),
            }
        }
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        for pool in self.shared.pools.all() {
            pool.close_idle();
        }
    }
}
