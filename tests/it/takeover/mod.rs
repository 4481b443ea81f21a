//! Online upgrade: `pgmux --takeover` takes the running process's sockets and clients while
//! they work. Every client keeps its connection, its answers, its prepared statements, its
//! settings and its cancel key; the old process exits 0 (`moving.rs`). A takeover that fails
//! at any step leaves the old process serving every client it had (`failures.rs`).

mod failures;
mod moving;

use crate::harness::process::Process;
use crate::harness::{own_role, sqlstate, PgmuxConfig};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

pub(super) fn socket_path(dir: &Path, port: u16) -> std::path::PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

pub(super) async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

pub(super) fn unix_url(process: &Process) -> String {
    format!(
        "host={} port={} user=mover password=mover dbname=app",
        process.dir().display(),
        process.port
    )
}

/// A new client of `process` is served (within 5 s: a process that stopped accepting fails).
pub(super) async fn accepts(process: &Process) {
    let fresh = tokio::time::timeout(Duration::from_secs(5), connect(&process.url("mover")))
        .await
        .expect("the process accepts new clients");
    fresh.batch_execute("SELECT 1").await.unwrap();
}

pub(super) async fn start(pg: &crate::harness::ClusterInfo) -> Process {
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "mover").await;
    cfg.pool_size = 10;
    cfg.general = "admin_users = [\"mover\"]".into();
    Process::start(cfg).await
}

/// A process started by the test, ended when dropped.
pub(super) struct Child(pub std::process::Child);

impl Child {
    /// Its exit code, once it has exited within `within`; fails the test otherwise.
    pub(super) async fn exit_code(&mut self, within: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(started.elapsed() < within, "the new process did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `err` is how a client closed by a shutdown sees it: 57P01, or the connection gone.
pub(super) fn closed_as_by_a_shutdown(err: &tokio_postgres::Error) -> bool {
    err.is_closed() || sqlstate(err).as_deref() == Some("57P01")
}

/// The one value `sql` returns, over the raw protocol.
pub(super) async fn answer(client: &mut crate::harness::raw::Raw, sql: &str) -> String {
    client.send(&crate::harness::raw::query(sql)).await;
    let messages = client.read_until(b'Z').await;
    let row = messages
        .iter()
        .find(|(tag, _)| *tag == b'D')
        .unwrap_or_else(|| panic!("no row for {sql}: {messages:?}"));
    // One column: its count, its length, its text.
    String::from_utf8_lossy(&row.1[6..]).into_owned()
}
