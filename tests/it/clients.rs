//! Real client libraries that use named server-side prepared statements, each with 50
//! concurrent clients on a pool of 4 in transaction mode, each client checking its own answers:
//! psycopg 3, asyncpg, node-postgres and PostgreSQL JDBC. `tests/clients/setup` installs them;
//! the README's test command (`tests/clients/setup && cargo test`, which `.ci/run` runs) runs it
//! first. A library or toolchain that is missing fails its test, saying how to install it: a test
//! that ran nothing never passes.

use crate::harness::{shared_cluster, Pgmux, PgmuxConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

const CLIENTS: usize = 50;
const ROUNDS: usize = 10;

/// What installs everything these tests need.
const SETUP: &str = "tests/clients/setup";
/// The Python libraries, as tests/clients/setup asks pip for them.
const PYTHON_LIBS: &str = "'psycopg[binary]>=3.1,<4' 'asyncpg>=0.29,<1'";
const JDBC_JAR: &str = "/usr/share/java/postgresql.jar";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where tests/clients/setup installs the libraries: target/clients, or $PGMUX_CLIENTS_DIR.
fn installed() -> PathBuf {
    match std::env::var_os("PGMUX_CLIENTS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo().join("target/clients"),
    }
}

/// Returns the path if it exists; otherwise fails the test with the command that installs it.
fn require(path: PathBuf, what: &str, install: &str) -> PathBuf {
    if !path.exists() {
        panic!(
            "{what} not found at {}: run `{SETUP}` (or: {install})",
            path.display()
        );
    }
    path
}

/// The virtualenv's python, once it imports `module`; otherwise fails the test with the
/// command that installs it.
fn python_with(module: &str) -> PathBuf {
    let venv = installed().join("venv");
    let pip = format!("{}/bin/pip install {PYTHON_LIBS}", venv.display());
    let python = require(
        venv.join("bin/python"),
        "python virtualenv",
        &format!("python3 -m venv {} && {pip}", venv.display()),
    );
    let import = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    if !import.status.success() {
        panic!(
            "{module} does not import in {}: run `{SETUP}` (or: {pip})\n{}",
            venv.display(),
            String::from_utf8_lossy(&import.stderr).trim()
        );
    }
    python
}

/// A program on PATH; otherwise fails the test with the Debian package that has it.
fn on_path(program: &str, package: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("{program} not found on PATH: run `{SETUP}` (or: apt-get install -y {package})")
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
    assert!(pgmux.pools()[0].servers <= 4, "{:?}", pgmux.pools());
    let totals = pgmux.totals();
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
    let python = python_with(library);
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
    let python = python_with("psycopg");
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
    let python = python_with("asyncpg");
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
    let node = on_path("node", "nodejs");
    let modules = installed().join("node_modules");
    let install = format!("npm install --prefix {} pg@8", installed().display());
    require(modules.join("pg/package.json"), "node-postgres", &install);
    let pgmux = pgmux_with_four_servers().await;
    let url = uri(&pgmux);
    let script = repo().join("tests/clients/node_check.js");
    let args = [
        script.display().to_string(),
        url,
        CLIENTS.to_string(),
        ROUNDS.to_string(),
    ];
    drive(
        pgmux,
        &node,
        &args,
        &[("NODE_PATH", modules)],
        CLIENTS * ROUNDS * 3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jdbc_with_prepare_threshold_one() {
    let jar = require(
        PathBuf::from(JDBC_JAR),
        "PostgreSQL JDBC",
        "apt-get install -y libpostgresql-jdbc-java",
    );
    let java = on_path("java", "default-jdk-headless");
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
