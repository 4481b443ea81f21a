//! Real client libraries that use named server-side prepared statements, each with 50
//! concurrent clients on a pool of 4 in transaction mode, each client checking its own answers:
//! psycopg 3, asyncpg, node-postgres and PostgreSQL JDBC. `tests/clients/setup` installs them
//! (`.ci/run` does, and sets PGMUX_REQUIRE_CLIENTS=1 so that a missing one fails there); elsewhere
//! a missing toolchain skips its client with the reason printed.

use crate::harness::{shared_cluster, Pgmux, PgmuxConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CLIENTS: usize = 50;
const ROUNDS: usize = 10;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where tests/clients/setup installs the libraries.
fn installed() -> PathBuf {
    repo().join("target/clients")
}

/// Returns the path if it exists; otherwise skips the test (None) or, in CI, fails it.
fn require(path: PathBuf, what: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{what} not found at {}: run tests/clients/setup",
        path.display()
    );
    if std::env::var("PGMUX_REQUIRE_CLIENTS").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

fn uri(pgmux: &Pgmux) -> String {
    format!("postgresql://app:app@127.0.0.1:{}/app", pgmux.port)
}

async fn pgmux_with_four_servers() -> Pgmux {
    let mut cfg = PgmuxConfig::new(shared_cluster());
    cfg.pool_size = 4;
    cfg.start().await
}

/// Runs one client program against pgmux and checks that every client's checks passed, on at
/// most four servers, through pgmux's prepared-statement path.
async fn drive(
    pgmux: Pgmux,
    program: &Path,
    args: &[String],
    env: &[(&str, PathBuf)],
    checks: usize,
) {
    run_program(program, args, env, checks).await;
    let pool = &pgmux.shared().pools.all()[0];
    assert!(pgmux.pools()[0].servers <= 4, "{:?}", pgmux.pools());
    let totals = pool.stats.totals();
    assert!(
        totals.client_parse_count >= CLIENTS as u64
            && totals.bind_count >= (CLIENTS * ROUNDS) as u64,
        "named statements went through pgmux's rewriting: {totals:?}"
    );
    pgmux.stop().await;
}

/// Runs a client program to its end, within a bound, and checks that it passed `checks` checks.
async fn run_program(program: &Path, args: &[String], env: &[(&str, PathBuf)], checks: usize) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(240), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} timed out", program.display()))
        .expect("start client program");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} failed:\n{text}",
        program.display()
    );
    assert!(
        text.contains(&format!(": {checks} checks passed")),
        "expected {checks} checks:\n{text}"
    );
    eprintln!("{}", text.trim());
}

/// executemany of 50,000 rows, pipelined by the driver, commits exactly those rows.
async fn executemany(library: &str, conninfo: impl FnOnce(&Pgmux) -> String) {
    let Some(python) = require(installed().join("venv/bin/python"), "python virtualenv") else {
        return;
    };
    let pgmux = pgmux_with_four_servers().await;
    let script = repo().join("tests/clients/executemany_check.py");
    let args = [
        script.display().to_string(),
        library.to_owned(),
        conninfo(&pgmux),
        "50000".to_owned(),
    ];
    run_program(&python, &args, &[], 1).await;
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_pipeline_executemany_of_50000_rows() {
    executemany("psycopg", |pgmux| {
        format!(
            "host=127.0.0.1 port={} user=app password=app dbname=app",
            pgmux.port
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_executemany_of_50000_rows() {
    executemany("asyncpg", uri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_with_prepare_threshold_zero() {
    let Some(python) = require(installed().join("venv/bin/python"), "psycopg virtualenv") else {
        return;
    };
    let pgmux = pgmux_with_four_servers().await;
    let conninfo = format!(
        "host=127.0.0.1 port={} user=app password=app dbname=app",
        pgmux.port
    );
    let script = repo().join("tests/clients/psycopg_check.py");
    let args = [
        script.display().to_string(),
        conninfo,
        CLIENTS.to_string(),
        ROUNDS.to_string(),
    ];
    drive(pgmux, &python, &args, &[], CLIENTS * ROUNDS * 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_with_its_statement_cache() {
    let Some(python) = require(installed().join("venv/bin/python"), "asyncpg virtualenv") else {
        return;
    };
    let pgmux = pgmux_with_four_servers().await;
    let dsn = uri(&pgmux);
    let script = repo().join("tests/clients/asyncpg_check.py");
    let args = [
        script.display().to_string(),
        dsn,
        CLIENTS.to_string(),
        ROUNDS.to_string(),
    ];
    drive(pgmux, &python, &args, &[], CLIENTS * ROUNDS * 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_named_queries() {
    let Some(modules) = require(installed().join("node_modules/pg"), "node-postgres") else {
        return;
    };
    let Some(node) = require(on_path("node").unwrap_or_default(), "node") else {
        return;
    };
    let pgmux = pgmux_with_four_servers().await;
    let url = uri(&pgmux);
    let script = repo().join("tests/clients/node_check.js");
    let args = [
        script.display().to_string(),
        url,
        CLIENTS.to_string(),
        ROUNDS.to_string(),
    ];
    let node_path = modules.parent().map(Path::to_path_buf).unwrap_or_default();
    drive(
        pgmux,
        &node,
        &args,
        &[("NODE_PATH", node_path)],
        CLIENTS * ROUNDS * 3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_with_prepare_threshold_one() {
    let Some(jar) = require(
        PathBuf::from("/usr/share/java/postgresql.jar"),
        "PostgreSQL JDBC",
    ) else {
        return;
    };
    let Some(java) = require(on_path("java").unwrap_or_default(), "java") else {
        return;
    };
    let pgmux = pgmux_with_four_servers().await;
    let url = format!(
        "jdbc:postgresql://127.0.0.1:{}/app?prepareThreshold=1",
        pgmux.port
    );
    let source = repo().join("tests/clients/JdbcCheck.java");
    let args = [
        "-cp".to_string(),
        jar.display().to_string(),
        source.display().to_string(),
        url,
        "app".into(),
        "app".into(),
        CLIENTS.to_string(),
        ROUNDS.to_string(),
    ];
    drive(pgmux, &java, &args, &[], CLIENTS * ROUNDS * 3).await;
}
