//! Deploying where PgBouncer is deployed: Unix sockets on both sides, the `*` fallback
//! database, and PostgreSQL's order of telling (authentication before "no such database").

use crate::harness::{
    eventually, free_port, pg, run_tool, shared_cluster, sqlstate, PgmuxConfig, TempDir,
};
use pgmux::config::Config;
use std::time::Duration;

async fn first_value(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.unwrap();
    crate::transaction_mode::first_value(&rows)
}

/// A tokio-postgres client over pgmux's Unix socket.
async fn connect_unix(
    dir: &std::path::Path,
    port: u16,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(dir)
        .port(port)
        .user(user)
        .password(password)
        .dbname("app")
        .connect_timeout(Duration::from_secs(10));
    crate::harness::connect_with(&config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_a_driver_over_the_unix_socket_to_a_postgresql_on_its_socket() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.general = "admin_users = [\"postgres\"]".into();
    // pgmux reaches PostgreSQL through its socket directory only.
    cfg.extra = format!(
        "[databases.viasocket]\nhost = \"{}\"\nport = {}\ndbname = \"app\"\n",
        pg.dir.display(),
        pg.port
    );
    let pgmux = cfg.start().await;
    let dir = pgmux.socket_dir().to_owned();
    let socket = dir.join(format!(".s.PGSQL.{}", pgmux.port));
    assert!(socket.exists(), "{} missing", socket.display());

    let (ok, out) = run_tool(
        &pg::tool("psql"),
        &[
            "-X",
            "-At",
            "-h",
            dir.to_str().unwrap(),
            "-p",
            &pgmux.port.to_string(),
            "-U",
            "app",
            "-d",
            "viasocket",
            "-c",
            "SELECT current_user || ' ' || (client_addr IS NULL) FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        ],
        "app",
        Duration::from_secs(30),
    )
    .await;
    assert!(ok, "psql over the socket: {out}");
    // PostgreSQL sees pgmux's server connection arrive on its Unix socket: no client address.
    assert_eq!(out.trim(), "app true");

    let client = connect_unix(&dir, pgmux.port, "app", "app").await.unwrap();
    assert_eq!(first_value(&client, "SELECT 40 + 2").await, "42");
    // SHOW CLIENTS shows a Unix-socket client as PgBouncer does.
    let console = connect_console(&pgmux).await;
    let rows = console.simple_query("SHOW CLIENTS").await.unwrap();
    let addrs: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get("addr").map(str::to_owned),
            _ => None,
        })
        .collect();
    assert!(addrs.iter().any(|a| a == "unix"), "{addrs:?}");

    // A cancel reaches a query on a server connection that goes through the socket.
    let sock_client = {
        let (client, conn) =
            tokio_postgres::connect(&pgmux.url("app", "app", "viasocket"), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    };
    let token = sock_client.cancel_token();
    let sleeper =
        tokio::spawn(async move { sock_client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the cancel landed")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");

    // RELOAD keeps the socket, even when the file names another directory (that needs a
    // restart); shutdown removes its file.
    let path = pgmux.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let moved = text.replace(
        &format!("unix_socket_dir = \"{}\"", dir.display()),
        "unix_socket_dir = \"/nonexistent\"",
    );
    assert_ne!(text, moved);
    std::fs::write(&path, moved).unwrap();
    pgmux.shared().reload_from_file().unwrap();
    assert_eq!(
        pgmux.shared().config().general.unix_socket_dir,
        dir.display().to_string()
    );
    let again = connect_unix(&dir, pgmux.port, "app", "app").await.unwrap();
    assert_eq!(first_value(&again, "SELECT 1").await, "1");
    drop((client, again, console));
    pgmux.stop().await;
    assert!(!socket.exists(), "shutdown left {}", socket.display());
}

async fn connect_console(pgmux: &crate::harness::Pgmux) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(
        &pgmux.url("postgres", "postgres", "pgmux"),
        tokio_postgres::NoTls,
    )
    .await
    .expect("console login");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_is_replaced_and_a_live_one_is_refused_by_name() {
    let pg = shared_cluster();
    let dir = TempDir::new("sockets");
    let mut cfg = PgmuxConfig::new(pg);
    cfg.general = format!("unix_socket_dir = \"{}\"", dir.path().display());
    cfg.general
        .push_str("\nunix_socket_mode = \"0700\"\nadmin_users = [\"postgres\"]");
    let port = free_port();
    let config = || {
        let mut c = Config::parse(&cfg.render(dir.path()), dir.path()).unwrap();
        c.general.listen_port = port;
        c
    };
    let path = dir.path().join(format!(".s.PGSQL.{port}"));

    // Left behind by a process that died: nobody answers on it.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let running = pgmux::Server::bind(config())
        .await
        .expect("stale file replaced");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "unix_socket_mode applied");
    let client = connect_unix(dir.path(), port, "app", "app").await.unwrap();
    assert_eq!(
        first_value(&client, "SELECT 'over the socket'").await,
        "over the socket"
    );

    // A second pgmux on the same socket is refused, naming the file, and the first serves on.
    let mut second = config();
    second.general.listen_port = free_port();
    second.general.unix_socket_dir = dir.path().display().to_string();
    let same_name = format!(".s.PGSQL.{}", second.general.listen_port);
    let live = std::os::unix::net::UnixListener::bind(dir.path().join(&same_name)).unwrap();
    let err = pgmux::Server::bind(second)
        .await
        .err()
        .expect("a live socket file is refused");
    assert!(err.to_string().contains(&same_name), "{err}");
    drop(live);
    // A file that is not a socket is never removed.
    let mut third = config();
    third.general.listen_port = free_port();
    let not_socket = dir
        .path()
        .join(format!(".s.PGSQL.{}", third.general.listen_port));
    std::fs::write(&not_socket, "keep me").unwrap();
    let err = pgmux::Server::bind(third).await.err().expect("refused");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&not_socket).unwrap(), "keep me");
    assert_eq!(first_value(&client, "SELECT 2").await, "2");
    drop(client);
    running.shutdown().await;
    assert!(!path.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_database_serves_names_not_listed_and_drops_them_when_idle() {
    let pg = shared_cluster();
    let admin = pg.admin().await;
    for db in ["fallback_one", "fallback_two", "fallback_three"] {
        let exists = admin
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
            .await
            .unwrap()
            .is_some();
        if !exists {
            admin
                .batch_execute(&format!("CREATE DATABASE {db} OWNER app"))
                .await
                .unwrap();
        }
    }
    let mut cfg = PgmuxConfig::new(pg);
    cfg.general = "autodb_idle_timeout = 1\nadmin_users = [\"postgres\"]".into();
    cfg.extra = format!(
        "[databases.\"*\"]\nhost = \"127.0.0.1\"\nport = {}\npool_size = 2\n",
        pg.port
    );
    let pgmux = cfg.start().await;

    let mut clients = Vec::new();
    for db in ["fallback_one", "fallback_two", "fallback_three"] {
        let client = pgmux
            .try_connect("app", "app", db)
            .await
            .unwrap_or_else(|e| panic!("{db} through the fallback: {e}"));
        assert_eq!(first_value(&client, "SELECT current_database()").await, db);
        clients.push(client);
    }
    // The listed database is still served by its own table.
    let listed = pgmux.connect("app", "app").await;
    assert_eq!(
        first_value(&listed, "SELECT current_database()").await,
        "app"
    );

    let console = connect_console(&pgmux).await;
    let rows = console.simple_query("SHOW DATABASES").await.unwrap();
    let names: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get("name").map(str::to_owned),
            _ => None,
        })
        .collect();
    for db in ["app", "fallback_one", "fallback_two", "fallback_three"] {
        assert!(names.iter().any(|n| n == db), "{db} not in {names:?}");
    }
    assert!(!names.iter().any(|n| n == "*"), "{names:?}");

    // A name PostgreSQL does not have: its own 3D000, after login, and no pool left over.
    let err = pgmux
        .try_connect("app", "app", "fallback_missing")
        .await
        .expect_err("no such database on the server");
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"), "{err}");
    assert!(!pgmux
        .pools()
        .iter()
        .any(|p| p.database == "fallback_missing"));
    let err = pgmux
        .try_connect("app", "wrong", "fallback_missing")
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"), "{err}");

    // Idle for autodb_idle_timeout: dropped; the listed database's pool stays.
    drop(clients);
    eventually(
        Duration::from_secs(15),
        "fallback pools dropped",
        || async {
            let pools = pgmux.pools();
            (!pools.iter().any(|p| p.database.starts_with("fallback_"))).then_some(())
        },
    )
    .await;
    assert!(pgmux.pools().iter().any(|p| p.database == "app"));
    // And made again on the next use.
    let back = pgmux
        .try_connect("app", "app", "fallback_two")
        .await
        .unwrap();
    assert_eq!(
        first_value(&back, "SELECT current_database()").await,
        "fallback_two"
    );
    drop((back, listed, console));
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_idle_timeout_drops_a_pool_left_without_clients_or_servers() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.general = "pool_idle_timeout = 1\nserver_idle_timeout = 1".into();
    let pgmux = cfg.start().await;
    let client = pgmux.connect("app", "app").await;
    assert_eq!(first_value(&client, "SELECT 7").await, "7");
    // In use: kept, however long.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(pgmux.pools().iter().any(|p| p.database == "app"));
    drop(client);
    eventually(
        Duration::from_secs(15),
        "the unused pool dropped",
        || async { (!pgmux.pools().iter().any(|p| p.database == "app")).then_some(()) },
    )
    .await;
    // And made again on the next login.
    let again = pgmux.connect("app", "app").await;
    assert_eq!(first_value(&again, "SELECT 8").await, "8");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_logged_in_client_learns_whether_a_database_exists() {
    let pg = shared_cluster();
    let pgmux = PgmuxConfig::new(pg).start().await;
    for (user, password, db, code) in [
        ("app", "wrong", "no_such_db", "28P01"),
        ("nobody", "x", "no_such_db", "28P01"),
        ("app", "wrong", "app", "28P01"),
        ("app", "app", "no_such_db", "3D000"),
    ] {
        let err = pgmux
            .try_connect(user, password, db)
            .await
            .err()
            .unwrap_or_else(|| panic!("{user}/{db} should fail"));
        assert_eq!(
            sqlstate(&err).as_deref(),
            Some(code),
            "{user}/{password}/{db}: {err}"
        );
    }
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sasl_initial_response_whose_inner_length_lies_is_a_protocol_violation() {
    use crate::harness::raw;
    let pg = shared_cluster();
    let pgmux = PgmuxConfig::new(pg).start().await;
    for (declared, data) in [(100i32, &b"n,,n=,r=abc"[..]), (2, b"n,,n=,r=abc")] {
        let mut conn = raw::Raw::connect(pgmux.port).await;
        conn.send(&raw::startup_packet(
            196_608,
            &[("user", "app"), ("database", "app")],
        ))
        .await;
        let (tag, body) = conn.read().await.expect("SASL request");
        assert_eq!((tag, &body[..4]), (b'R', &10u32.to_be_bytes()[..]));
        let mut response = b"SCRAM-SHA-256\0".to_vec();
        response.extend_from_slice(&declared.to_be_bytes());
        response.extend_from_slice(data);
        conn.send(&raw::msg(b'p', &response)).await;
        let (tag, body) = conn.read().await.expect("an error");
        assert_eq!(tag, b'E');
        assert_eq!(raw::error_code(&body), "08P01", "declared {declared}");
    }
    // Every other client carries on.
    let client = pgmux.connect("app", "app").await;
    assert_eq!(first_value(&client, "SELECT 'fine'").await, "fine");
    pgmux.stop().await;
}
