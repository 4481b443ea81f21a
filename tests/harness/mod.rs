//! Test harness: a real PostgreSQL (initdb in a temp dir, a free port, its own pg_hba; run as the
//! `postgres` OS user when we are root), pgmux in-process on port 0, psql/pgbench runners with
//! timeouts, and `eventually` instead of sleeps.
#![allow(dead_code)]

pub mod certs;
pub mod pg;
pub mod process;
pub mod raw;

use pgmux::config::Config;
use pgmux::Running;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use pg::{free_port, shared_cluster, Cluster, ClusterInfo};

/// Retries `check` until it returns Some or `deadline` passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pgmux-it-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// pgmux running in-process, with the files its config refers to.
pub struct Pgmux {
    pub running: Option<Running>,
    pub port: u16,
    _dir: TempDir,
}

/// Builds a pgmux config for `cluster`: `general` is extra `[pgmux]` lines, `userlist` the
/// auth_file's content, `extra` more tables.
pub struct PgmuxConfig<'a> {
    pub cluster: &'a ClusterInfo,
    pub pool_mode: &'a str,
    pub pool_size: usize,
    pub auth_type: &'a str,
    pub general: String,
    pub userlist: String,
    pub database_extra: String,
    pub extra: String,
}

impl<'a> PgmuxConfig<'a> {
    pub fn new(cluster: &'a ClusterInfo) -> PgmuxConfig<'a> {
        PgmuxConfig {
            cluster,
            pool_mode: "transaction",
            pool_size: 5,
            auth_type: "scram-sha-256",
            general: String::new(),
            userlist: "\"app\" \"app\"\n\"md5user\" \"md5pass\"\n\"postgres\" \"postgres\"\n"
                .into(),
            database_extra: String::new(),
            extra: String::new(),
        }
    }

    pub fn render(&self, dir: &Path) -> String {
        let userlist = dir.join("userlist.txt");
        std::fs::write(&userlist, &self.userlist).expect("write userlist");
        // Each pgmux's Unix socket in its own directory, unless the test chooses.
        let socket_dir = match self.general.contains("unix_socket_dir") {
            true => String::new(),
            false => format!("unix_socket_dir = \"{}\"\n", dir.display()),
        };
        format!(
            "[pgmux]\nlisten_addr = \"127.0.0.1\"\nlisten_port = 0\npool_mode = \"{}\"\n\
             default_pool_size = {}\nmax_client_conn = 2000\nauth_type = \"{}\"\n\
             auth_file = \"{}\"\n{socket_dir}{}\n\
             [databases.app]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"app\"\n{}\n{}\n",
            self.pool_mode,
            self.pool_size,
            self.auth_type,
            userlist.display(),
            self.general,
            self.cluster.port,
            self.database_extra,
            self.extra
        )
    }

    pub async fn start(self) -> Pgmux {
        let dir = TempDir::new("pgmux");
        let text = self.render(dir.path());
        let config = Config::parse(&text, dir.path())
            .unwrap_or_else(|p| panic!("test config invalid: {p:?}\n{text}"));
        let running = pgmux::Server::bind(config).await.expect("bind pgmux");
        // Saved so that RELOAD tests can edit it.
        let path = dir.path().join("pgmux.toml");
        std::fs::write(&path, &text).expect("write config");
        running.shared.set_config_path(path);
        Pgmux {
            port: running.local_addr.port(),
            running: Some(running),
            _dir: dir,
        }
    }
}

impl Pgmux {
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} connect_timeout=10",
            self.port
        )
    }

    /// A tokio-postgres client through pgmux.
    pub async fn connect(&self, user: &str, password: &str) -> tokio_postgres::Client {
        self.try_connect(user, password, "app")
            .await
            .unwrap_or_else(|e| panic!("connect through pgmux as {user}: {e}"))
    }

    pub async fn try_connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.url(user, password, db), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The directory of pgmux's Unix socket (when the test left unix_socket_dir to the harness).
    pub fn socket_dir(&self) -> &Path {
        self._dir.path()
    }

    /// The config file RELOAD reads.
    pub fn config_path(&self) -> std::path::PathBuf {
        self._dir.path().join("pgmux.toml")
    }

    /// pgmux's shared state: pools and their statistics, reload.
    pub fn shared(&self) -> &pgmux::Shared {
        &self.running.as_ref().expect("running").shared
    }

    /// Where /metrics is served (the config must set metrics_addr).
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let running = self.running.as_ref().expect("running");
        running.metrics_addr.expect("metrics_addr set")
    }

    pub fn pools(&self) -> Vec<pgmux::pool::PoolSnapshot> {
        self.running.as_ref().expect("running").pools()
    }

    /// The first pool's counters. A step is counted before its reply is relayed, so what a
    /// client has seen answered is in them.
    pub fn totals(&self) -> pgmux::stats::Totals {
        self.shared().pools.all()[0].stats.totals()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// A tokio-postgres client made from `config`, its connection driven in the background.
pub async fn connect_with(
    config: &tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Runs a client binary (psql, pgbench) with a timeout; returns (success, stdout + stderr).
pub async fn run_tool(
    program: &Path,
    args: &[&str],
    password: &str,
    timeout: Duration,
) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} {:?} timed out", program.display(), args))
        .expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// pgbench as the app role against 127.0.0.1:`port` (pgmux or PostgreSQL) with `args` and
/// extra environment; returns (success, stdout + stderr).
pub async fn pgbench_as_app(port: u16, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    pgbench_as(("app", "app"), port, args, env).await
}

/// pgbench as `user` (name and password) on its own database `app`, against
/// 127.0.0.1:`port`, with `args` and extra environment; returns (success, stdout + stderr).
pub async fn pgbench_as(
    (user, password): (&str, &str),
    port: u16,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String) {
    let port = port.to_string();
    let mut cmd = tokio::process::Command::new(pg::tool("pgbench"));
    cmd.args(args)
        .args(["-h", "127.0.0.1", "-p", &port, "-U", user, "app"])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("pgbench {args:?} timed out"))
        .expect("run pgbench");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `pgbench -i -s 1` directly on PostgreSQL, as the app role; once per cluster, since tests
/// running pgbench side by side would otherwise drop each other's tables.
pub async fn pgbench_init(pg_port: u16) {
    static DONE: tokio::sync::Mutex<Vec<u16>> = tokio::sync::Mutex::const_new(Vec::new());
    let mut done = DONE.lock().await;
    if done.contains(&pg_port) {
        return;
    }
    let port = pg_port.to_string();
    let (ok, out) = run_tool(
        &pg::tool("pgbench"),
        &[
            "-i",
            "-q",
            "-s",
            "1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "app",
            "app",
        ],
        "app",
        Duration::from_secs(120),
    )
    .await;
    assert!(ok, "pgbench -i failed:\n{out}");
    done.push(pg_port);
}

/// The SQLSTATE of a tokio-postgres error, if the server (or pgmux) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_owned())
}

/// Creates (once) a login role of a test's own, password = name, so that what the test counts
/// or terminates in pg_stat_activity is its alone. Returns the userlist line for it.
pub async fn own_role(pg: &ClusterInfo, name: &str) -> String {
    // Concurrent GRANTs on one schema fail with "tuple concurrently updated": one at a time.
    static ROLES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = ROLES.lock().await;
    let admin = pg.admin().await;
    let sql = format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN \
         CREATE ROLE {name} LOGIN PASSWORD '{name}'; END IF; END $$; \
         GRANT ALL ON SCHEMA public TO {name};"
    );
    admin.batch_execute(&sql).await.expect("create test role");
    format!("\"{name}\" \"{name}\"\n")
}
