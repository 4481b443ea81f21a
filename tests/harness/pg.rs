//! A throwaway PostgreSQL for tests: initdb into a temp dir, a free port, pg_hba that wants
//! passwords over TCP, roles for every auth method. The shared cluster lives for the whole test
//! binary; fault tests start a private one they may stop and restart.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SETUP_SQL: &str = "
ALTER ROLE postgres PASSWORD 'postgres';
CREATE ROLE app LOGIN PASSWORD 'app';
CREATE DATABASE app OWNER app;
CREATE ROLE md5user LOGIN PASSWORD 'md57541d4e65fae11bd07f18dc6fe2b02bc';
GRANT ALL ON DATABASE app TO md5user;
";

/// Where PostgreSQL's server binaries are: the newest /usr/lib/postgresql/N/bin, or pg_config's.
pub fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if bin.join("initdb").exists() {
            return bin;
        }
    }
    panic!(
        "PostgreSQL server binaries not found: install them (Debian/Ubuntu: apt-get install -y postgresql)"
    );
}

pub fn tool(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    if p.exists() {
        p
    } else {
        PathBuf::from(name)
    }
}

/// The uid/gid to run PostgreSQL as: `postgres` when we are root (it refuses to run as root).
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("running as root needs the `postgres` OS user (apt-get install -y postgresql creates it)")
    };
    Some((id("-u"), id("-g")))
}

fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: prctl is async-signal-safe; it makes PostgreSQL stop when its parent thread ends,
    // so no cluster outlives the test binary.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd
}

/// A TCP port on 127.0.0.1 nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

pub struct Cluster {
    info: ClusterInfo,
    postmaster: Option<Child>,
}

impl std::ops::Deref for Cluster {
    type Target = ClusterInfo;
    fn deref(&self) -> &ClusterInfo {
        &self.info
    }
}

impl Cluster {
    /// initdb, start, and create the test roles and database.
    pub fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "pgmux-it-pg-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        if let Some((uid, gid)) = run_as() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown cluster dir");
        }
        let data = dir.join("data");
        let out = command(&bin_dir().join("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
            ])
            .arg("--no-sync")
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 md5\n",
        )
        .expect("write pg_hba");
        let mut cluster = Cluster {
            info: ClusterInfo {
                port: free_port(),
                dir,
            },
            postmaster: None,
        };
        cluster.spawn();
        for statement in SETUP_SQL
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            cluster.psql_local(statement);
        }
        cluster
    }

    fn spawn(&mut self) {
        let data = self.dir.join("data");
        let log = std::fs::File::create(self.dir.join("postgres.log")).expect("log file");
        if let Some((uid, gid)) = run_as() {
            let _ = std::os::unix::fs::chown(self.dir.join("postgres.log"), Some(uid), Some(gid));
        }
        let child = command(&bin_dir().join("postgres"))
            .args(["-D", data.to_str().unwrap(), "-p", &self.port.to_string()])
            .args(["-k", self.dir.to_str().unwrap()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.postmaster = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new(tool("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: see {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fast shutdown (as an operator's restart does).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.postmaster.take() {
            // SAFETY: kill with a pid we own; SIGINT is PostgreSQL's fast shutdown.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Turns TLS on with this certificate and key (PEM), and from then on accepts TCP
    /// logins only over TLS (`hostssl`), so a plaintext connection cannot pass unnoticed.
    pub fn require_ssl(&mut self, cert_pem: &str, key_pem: &str) {
        let data = self.dir.join("data");
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, text).expect("write server TLS file");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod server TLS file");
            if let Some((uid, gid)) = run_as() {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).expect("chown TLS file");
            }
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 md5\n",
        )
        .expect("write pg_hba");
        self.psql_local("ALTER SYSTEM SET ssl = on");
        self.psql_local("SELECT pg_reload_conf()");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cluster most tests share. It is started by a thread that lives as long as the test
/// binary, so PostgreSQL (bound to that thread by PR_SET_PDEATHSIG) stops when the binary ends.
pub fn shared_cluster() -> &'static ClusterInfo {
    static SHARED: OnceLock<ClusterInfo> = OnceLock::new();
    SHARED.get_or_init(|| {
        remove_stale_cluster_dirs();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let cluster = Cluster::start();
            tx.send(ClusterInfo {
                port: cluster.port,
                dir: cluster.dir.clone(),
            })
            .expect("send cluster info");
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("shared cluster started")
    })
}

/// The shared cluster's directory cannot be removed by the binary that made it (its thread
/// never ends); the next run removes those whose test binary is gone.
fn remove_stale_cluster_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("pgmux-it-pg-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Where a cluster is, and the superuser's ways in.
pub struct ClusterInfo {
    pub port: u16,
    pub dir: PathBuf,
}

impl ClusterInfo {
    /// Runs SQL as the superuser over the Unix socket.
    pub fn psql_local(&self, sql: &str) -> String {
        let out = command(&tool("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-h",
                self.dir.to_str().unwrap(),
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A superuser connection straight to PostgreSQL (for pg_stat_activity and friends).
    pub async fn admin(&self) -> tokio_postgres::Client {
        let url = format!(
            "host=127.0.0.1 port={} user=postgres password=postgres dbname=app",
            self.port
        );
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect to postgres directly");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }
}
