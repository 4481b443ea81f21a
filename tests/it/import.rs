//! `pgmux import`: a PgBouncer ini (with %include, connection strings, the `*` fallback, [users],
//! settings pgmux lacks, typos) becomes a TOML that validates and serves traffic.

use crate::harness::{shared_cluster, TempDir};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgbouncer_ini_imports_validates_and_serves() {
    let pg = shared_cluster();
    let dir = TempDir::new("import");
    let port = crate::harness::free_port();
    std::fs::write(
        dir.path().join("userlist.txt"),
        "\"app\" \"app\"\n\"admin\" \"adminpw\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("pg_hba.conf"),
        "host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    let lookup = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1";
    std::fs::write(
        dir.path().join("databases.ini"),
        format!(
            "[databases]\n\
             app = host=127.0.0.1 port={pg} dbname=app pool_size=4\n\
             reporting = host=127.0.0.1 port={pg} dbname=app pool_mode=session \
             connect_query='SELECT 1' auth_user=app auth_dbname=app auth_query='{lookup}'\n\
             local = dbname=app\n\
             * = host=127.0.0.1 port={pg}\n",
            pg = pg.port
        ),
    )
    .unwrap();
    let ini = dir.path().join("pgbouncer.ini");
    // unix_socket_dir is left unset, as most inis leave it.
    std::fs::write(
        &ini,
        format!(
            ";; a typical production pgbouncer.ini\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             auth_type = hba\n\
             auth_file = userlist.txt\n\
             auth_hba_file = pg_hba.conf\n\
             auth_user = app\n\
             auth_query = {lookup}\n\
             auth_dbname = app\n\
             admin_users = admin, postgres\n\
             stats_users = monitor\n\
             pool_mode = transaction\n\
             max_client_conn = 500\n\
             default_pool_size = 10\n\
             server_reset_query = DISCARD ALL\n\
             server_lifetime = 1800\n\
             autodb_idle_timeout = 600\n\
             ignore_startup_parameters = extra_float_digits, search_path\n\
             query_wait_timout = 30\n\
             logfile = /var/log/pgbouncer/pgbouncer.log\n\
             pidfile = /var/run/pgbouncer/pgbouncer.pid\n\
             \n\
             %include {included}\n\
             \n\
             [users]\n\
             admin = pool_mode=session max_user_client_connections=5\n",
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
    // Every setting left out is named with its file and line, and why: a typo with the name
    // it was most likely meant to be, or what PgBouncer has and pgmux lacks.
    let reports = [
        (
            "pgbouncer.ini:20",
            "query_wait_timout: unknown setting (did you mean query_wait_timeout?)",
        ),
        ("pgbouncer.ini:21", "logfile: not supported by pgmux"),
        ("pgbouncer.ini:22", "pidfile: not supported by pgmux"),
        (
            "databases.ini:3",
            "reporting: connection parameter connect_query is not supported by pgmux",
        ),
        (
            "pgbouncer.ini:27",
            "admin: user setting max_user_client_connections is not supported by pgmux",
        ),
    ];
    for (line, what) in reports {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&format!("{line}: {what}"))),
            "{what} at {line} not reported:\n{stderr}"
        );
    }
    // ... and nothing else: the fallback, the socket and the auth settings all convert.
    let left_out = stderr.lines().filter(|l| l.contains("left out")).count();
    assert_eq!(left_out, reports.len(), "{stderr}");

    let text = std::fs::read_to_string(&out).unwrap();
    let toml: toml::Table = text.parse().unwrap();
    let general = toml["pgmux"].as_table().unwrap();
    for (key, value) in [
        ("unix_socket_dir", "/tmp"),
        ("auth_type", "hba"),
        // Relative paths stay as the ini has them: beside the converted file they still work.
        ("auth_file", "userlist.txt"),
        ("auth_hba_file", "pg_hba.conf"),
        ("auth_user", "app"),
        ("auth_query", lookup),
        ("auth_dbname", "app"),
    ] {
        assert_eq!(general[key].as_str(), Some(value), "{key}:\n{text}");
    }
    assert_eq!(general["autodb_idle_timeout"].as_float(), Some(600.0));
    assert!(!general.contains_key("query_wait_timout"));
    let databases = toml["databases"].as_table().unwrap();
    assert_eq!(databases["*"]["host"].as_str(), Some("127.0.0.1"));
    assert_eq!(databases["*"]["port"].as_integer(), Some(pg.port.into()));
    assert!(
        !databases["local"].as_table().unwrap().contains_key("host"),
        "no host means the Unix socket:\n{text}"
    );
    let reporting = databases["reporting"].as_table().unwrap();
    assert_eq!(reporting["auth_user"].as_str(), Some("app"));
    assert_eq!(reporting["auth_dbname"].as_str(), Some("app"));
    assert_eq!(reporting["auth_query"].as_str(), Some(lookup));

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
    let config = pgmux::config::Config::parse(&text, dir.path()).unwrap();
    assert!(config.hba.is_some(), "auth_hba_file read");
    assert_eq!(config.general.admin_users, ["admin", "postgres"]);
    assert_eq!(
        config.general.ignore_startup_parameters,
        ["extra_float_digits", "search_path"]
    );
    assert_eq!(config.general.server_lifetime, 1800.0);
    assert_eq!(
        config.general.query_wait_timeout, 120.0,
        "the typo left it at its default"
    );
    assert_eq!(config.server_host(&config.databases["local"]), "/tmp");
    assert!(config.is_auto_database("postgres"));
    assert_eq!(config.pool_size("app", "app"), 4);
    assert_eq!(
        config.pool_mode("reporting", "app"),
        pgmux::config::PoolMode::Session
    );
    assert_eq!(
        config.pool_mode("app", "admin"),
        pgmux::config::PoolMode::Session
    );

    // Traffic through the converted config: a listed database, and one only the fallback serves.
    let running = pgmux::Server::bind(config).await.unwrap();
    for dbname in ["reporting", "postgres"] {
        let url = format!("host=127.0.0.1 port={port} user=app password=app dbname={dbname}");
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("{dbname}: {e}"));
        tokio::spawn(conn);
        let rows = client
            .simple_query("SELECT current_database()")
            .await
            .unwrap();
        let expected = if dbname == "reporting" { "app" } else { dbname };
        assert_eq!(crate::transaction_mode::first_value(&rows), expected);
    }
    running.shutdown().await;
}

#[test]
fn values_pgmux_would_refuse_are_reported_not_written() {
    let dir = TempDir::new("import-bad");
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        "[pgbouncer]\nauth_type = pam\ndefault_pool_size = 0\nquery_timeout = soon\n\
         [databases]\napp = host=127.0.0.1 dbname=app pool_size=0\n[peers]\n1 = host=x port=99999\n",
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
        "peers.1.port",
    ] {
        assert!(stderr.contains(what), "{what} not reported:\n{stderr}");
    }
    let config = pgmux::config::Config::load(&out).unwrap();
    assert_eq!(
        config.general.default_pool_size, 20,
        "left at pgmux's default"
    );
}
