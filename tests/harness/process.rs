//! pgmux as a separate process of the built binary, so it can be signalled, replaced by a
//! takeover, and its exit status read.

use super::{eventually, PgmuxConfig, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Process {
    pub child: Child,
    pub port: u16,
    dir: TempDir,
}

impl Process {
    /// Starts pgmux on a free port with `cfg`; its log goes to `pgmux.log` in its directory.
    pub async fn start(cfg: PgmuxConfig<'_>) -> Process {
        let dir = TempDir::new("process");
        let port = super::free_port();
        let text = cfg
            .render(dir.path())
            .replace("listen_port = 0", &format!("listen_port = {port}"));
        let path = dir.path().join("pgmux.toml");
        std::fs::write(&path, text).unwrap();
        let child = spawn(&path, &[], &dir.path().join("pgmux.log"));
        eventually(Duration::from_secs(10), "pgmux listening", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Process { child, port, dir }
    }

    /// Its directory: config, log, userlist and Unix socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("pgmux.toml")
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgmux.log")).unwrap_or_default()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill with the pid of a child we started.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Its exit code, once it has exited within `within`; fails the test otherwise.
    pub async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "pgmux did not exit; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, user: &str) -> String {
        self.url_of(user, "app")
    }

    /// The admin console's connection string, for `user` (whose password is its name).
    pub fn console_url(&self, user: &str) -> String {
        self.url_of(user, "pgbouncer")
    }

    fn url_of(&self, user: &str, database: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={user} dbname={database}",
            self.port
        )
    }
}

/// Runs the binary with `--config config` and `args`, its standard error into `log`.
pub fn spawn(config: &Path, args: &[&str], log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_pgmux"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
