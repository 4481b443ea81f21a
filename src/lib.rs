//! pgmux: a PostgreSQL connection pooler. `Server::bind(config)` starts one in-process and
//! returns a handle; there are no statics: shared state is one `Arc<Shared>` passed down.
//!
//! # Layers
//!
//! Each module below may use the modules listed above it and none below it, so that each can be
//! read with only what comes before it (`tests/it/layering.rs` reads this list and holds the
//! code to it). Lowest first:
//!
//! - `sync`: locks that stay usable after a panic.
//! - `address`: where a client or server is, TCP or Unix socket.
//! - `protocol`: PostgreSQL's wire protocol v3, framing and messages; pure.
//! - `stream`: a socket, plain or TLS, with the reads and writes the relay needs.
//! - `tls`: TLS configurations built from the settings, and what pgmux reads off certificates.
//! - `auth`: SCRAM, md5 and the secrets they check against; pure.
//! - `config`: the TOML file, validated whole, with PgBouncer's setting names.
//! - `import`: `pgmux import`, a PgBouncer ini turned into pgmux's TOML.
//! - `tracker`: which replies a server still owes, in order, and to whom; pure.
//! - `session_state`: what of a client's session lives on beyond a transaction; pure.
//! - `prepared`: named prepared statements kept per client and per server.
//! - `signal`: the one stop signal each client's task watches.
//! - `registry`: the clients and servers SHOW CLIENTS and SHOW SERVERS list.
//! - `cancel`: the keys clients get, and cancels delivered to the right server.
//! - `server`: a connection to PostgreSQL: connect, log in, reset.
//! - `stats`: counters and time histograms, per pool and per thread.
//! - `pool`: server connections per (database, user), checkout and check-in.
//! - `relay`: moves a transaction's bytes between a client and its server.
//! - `peers`: the other processes of a fleet, and cancels forwarded to them.
//! - `notify`: telling systemd where the process stands.
//! - `shutdown`: the shutdown modes and the one watch of them.
//! - `control`: PAUSE, SUSPEND, DISABLE and the waits they impose.
//! - `auth_query`: client secrets looked up in PostgreSQL.
//! - `handover`: what an online upgrade shares with the rest of the process, and its wire format.
//! - `connection`: a client's socket and buffer, and every error that ends a client.
//! - `metrics`: the Prometheus endpoint and health checks, reading what it is handed.
//! - `shared`: the state every task shares, config reload, the statistics task.
//! - `takeover`: an online upgrade, the old process's side and the new one's.
//! - `admin`: the admin console, SQL over the wire.
//! - `client`: one task per client: login, then the session that borrows servers.
//! - `listener`: the listening sockets and their accept loops.

pub mod address;
pub mod admin;
pub mod auth;
pub mod auth_query;
pub mod cancel;
pub mod client;
pub mod config;
pub mod connection;
pub mod control;
pub mod handover;
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
pub mod shared;
pub mod shutdown;
pub mod signal;
pub mod stats;
pub mod stream;
pub mod sync;
pub mod takeover;
pub mod tls;
pub mod tracker;

pub use shared::Shared;

use config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
        tokio::spawn(shared::stats_task(shared.clone(), stop_rx.clone()));
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
                    .keep_listener(handover::ListenerKind::Metrics, listener.as_fd())?;
                tracing::info!(%bound, "serving Prometheus metrics on /metrics");
                let accepting = shared.handover.accepting();
                let serve = metrics::serve(listener, shared.clone(), accepting, stop_rx.clone());
                tokio::spawn(serve);
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
