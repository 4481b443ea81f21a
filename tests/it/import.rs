//! `pgmux import`: a PgBouncer ini (with %include, connection strings, [users], settings pgmux
//! lacks) becomes a TOML that validates and serves traffic.

use crate::harness::{shared_cluster, TempDir};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgbouncer_ini_imports_validates_and_serves() {
    let pg = shared_cluster();
    let dir = TempDir::new("import");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        dir.path().join("userlist.txt"),
        "\"app\" \"app\"\n\"admin\" \"adminpw\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("databases.ini"),
        format!(
            "[databases]\n\
             app = host=127.0.0.1 port={pg} dbname=app pool_size=4\n\
             reporting = host=127.0.0.1 port={pg} dbname=app pool_mode=session connect_query='SELECT 1'\n\
             * = host=127.0.0.1 port={pg}\n",
            pg = pg.port
        ),
    )
    .unwrap();
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            ";; a typical production pgbouncer.ini\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             auth_type = scram-sha-256\n\
             auth_file = {userlist}\n\
             admin_users = admin, postgres\n\
             stats_users = monitor\n\
             pool_mode = transaction\n\
             max_client_conn = 500\n\
             default_pool_size = 10\n\
             server_reset_query = DISCARD ALL\n\
             server_lifetime = 1800\n\
             ignore_startup_parameters = extra_float_digits, search_path\n\
             logfile = /var/log/pgbouncer/pgbouncer.log\n\
             pidfile = /var/run/pgbouncer/pgbouncer.pid\n\
             unix_socket_dir = /var/run/postgresql\n\
             \n\
             %include {included}\n\
             \n\
             [users]\n\
             admin = pool_mode=session max_user_client_connections=5\n",
            userlist = dir.path().join("userlist.txt").display(),
            included = dir.path().join("databases.ini").display(),
        ),
    )
    .unwrap();
    let out = dir.path().join("pgmux.toml");
    let run = Command::new(env!("CARGO_BIN_EXE_pgmux"))
        .arg("import")
        .arg(&ini)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    // Every setting left out is named with its file and line.
    for (what, line) in [
        ("logfile", "pgbouncer.ini:15"),
        ("pidfile", "pgbouncer.ini:16"),
        ("unix_socket_dir", "pgbouncer.ini:17"),
        ("connect_query", "databases.ini:3"),
        ("*", "databases.ini:4"),
        ("max_user_client_connections", "pgbouncer.ini:22"),
    ] {
        assert!(
            stderr.lines().any(|l| l.contains(what) && l.contains(line)),
            "{what} at {line} not reported:\n{stderr}"
        );
    }
    let check = Command::new(env!("CARGO_BIN_EXE_pgmux"))
        .arg("check")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let config = pgmux::config::Config::load(&out).unwrap();
    assert_eq!(config.general.admin_users, ["admin", "postgres"]);
    assert_eq!(
        config.general.ignore_startup_parameters,
        ["extra_float_digits", "search_path"]
    );
    assert_eq!(config.general.server_lifetime, 1800.0);
    assert_eq!(config.pool_size("app", "app"), 4);
    assert_eq!(
        config.pool_mode("reporting", "app"),
        pgmux::config::PoolMode::Session
    );
    assert_eq!(
        config.pool_mode("app", "admin"),
        pgmux::config::PoolMode::Session
    );

    // Traffic through the converted config.
    let running = pgmux::Server::bind(config).await.unwrap();
    let url = format!("host=127.0.0.1 port={port} user=app password=app dbname=reporting");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client.simple_query("SELECT 'imported'").await.unwrap();
    assert_eq!(crate::transaction_mode::first_value(&rows), "imported");
    running.shutdown().await;
}

#[test]
fn values_pgmux_would_refuse_are_reported_not_written() {
    let dir = TempDir::new("import-bad");
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        "[pgbouncer]\nauth_type = hba\ndefault_pool_size = 0\nquery_timeout = soon\n\
         [databases]\napp = host=127.0.0.1 dbname=app pool_size=0\n[peers]\n1 = host=x\n",
    )
    .unwrap();
    let out = dir.path().join("pgmux.toml");
    let run = Command::new(env!("CARGO_BIN_EXE_pgmux"))
        .arg("import")
        .arg(&ini)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    for what in [
        "pgmux.auth_type",
        "pgmux.default_pool_size",
        "query_timeout",
        "databases.app.pool_size",
        "[peers]",
    ] {
        assert!(stderr.contains(what), "{what} not reported:\n{stderr}");
    }
    let config = pgmux::config::Config::load(&out).unwrap();
    assert_eq!(
        config.general.default_pool_size, 20,
        "left at pgmux's default"
    );
}
