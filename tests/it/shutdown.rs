//! Shutdown by signal, as PgBouncer does it: SIGINT lets transactions in flight finish, SIGTERM
//! waits for clients to leave, new clients are refused with 57P01, and pgmux exits 0.

use crate::harness::process::Process;
use crate::harness::raw::{self, error_code, Raw};
use crate::harness::{eventually, own_role, shared_cluster, sqlstate, PgmuxConfig, TempDir};
use std::process::{Command, Stdio};
use std::time::Duration;

async fn refused_with_57p01(port: u16) {
    let mut c = Raw::connect(port).await;
    c.send(&raw::startup_packet(
        196_608,
        &[("user", "app"), ("database", "app")],
    ))
    .await;
    let (tag, body) = c.read().await.expect("an answer");
    assert_eq!((tag as char, error_code(&body).as_str()), ('E', "57P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_lets_every_started_transaction_commit_then_exits_0() {
    let pg = shared_cluster();
    let admin = pg.admin().await;
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS drained (who int); GRANT ALL ON drained TO PUBLIC;",
        )
        .await
        .unwrap();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "drainer").await;
    cfg.pool_size = 8;
    let mut pgmux = Process::start(cfg).await;
    // Every client logs in first, so that the six transactions overlap however slow the logins.
    let mut connected = Vec::new();
    for _ in 0..6 {
        let (client, conn) = tokio_postgres::connect(&pgmux.url("drainer"), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        connected.push(client);
    }
    let mut clients = Vec::new();
    for (id, client) in (0..6i32).zip(connected) {
        clients.push(tokio::spawn(async move {
            client.batch_execute("BEGIN").await.unwrap();
            client
                .execute("INSERT INTO drained VALUES ($1)", &[&id])
                .await
                .unwrap();
            client.batch_execute("SELECT pg_sleep(0.8)").await.unwrap();
            client.batch_execute("COMMIT").await.unwrap();
            // The next transaction is not allowed to start.
            let err = client.batch_execute("SELECT 1").await.unwrap_err();
            assert!(
                err.is_closed() || sqlstate(&err).as_deref() == Some("57P01"),
                "{err:?}"
            );
        }));
    }
    eventually(Duration::from_secs(5), "all six transactions open", || async {
        let n: i64 = admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE usename = 'drainer' AND xact_start IS NOT NULL", &[])
            .await
            .unwrap()
            .get(0);
        (n == 6).then_some(())
    })
    .await;
    pgmux.signal(libc::SIGINT);
    tokio::time::sleep(Duration::from_millis(100)).await;
    refused_with_57p01(pgmux.port).await;
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(pgmux.exit_code(Duration::from_secs(10)).await, Some(0));
    let committed: i64 = admin
        .query_one("SELECT count(*) FROM drained", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(committed, 6, "every started transaction committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_clients_and_a_second_signal_exits_at_once() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "lingerer").await;
    let mut pgmux = Process::start(cfg).await;
    let (client, conn) = tokio_postgres::connect(&pgmux.url("lingerer"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    pgmux.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    refused_with_57p01(pgmux.port).await;
    // The connected client carries on while pgmux waits for it.
    for _ in 0..3 {
        client.simple_query("SELECT 1").await.unwrap();
    }
    assert!(
        pgmux.child.try_wait().unwrap().is_none(),
        "still waiting for its client"
    );
    drop(client);
    assert_eq!(pgmux.exit_code(Duration::from_secs(10)).await, Some(0));

    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "lingerer").await;
    let mut pgmux = Process::start(cfg).await;
    let (client, conn) = tokio_postgres::connect(&pgmux.url("lingerer"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    pgmux.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    pgmux.signal(libc::SIGTERM);
    assert_eq!(pgmux.exit_code(Duration::from_secs(10)).await, Some(0));
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config_file() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist.push_str("\"admin\" \"adminpw\"\n");
    cfg.general = "admin_users = [\"admin\"]".into();
    let pgmux = Process::start(cfg).await;
    let path = pgmux.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("default_pool_size = 5", "default_pool_size = 9"),
    )
    .unwrap();
    pgmux.signal(libc::SIGHUP);
    let url = format!(
        "host=127.0.0.1 port={} user=admin password=adminpw dbname=pgmux",
        pgmux.port
    );
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    eventually(
        Duration::from_secs(5),
        "default_pool_size reloaded",
        || async {
            let rows = admin.simple_query("SHOW CONFIG").await.unwrap();
            rows.iter()
                .any(|m| {
                    matches!(m, tokio_postgres::SimpleQueryMessage::Row(r)
                if r.get(0) == Some("default_pool_size") && r.get(1) == Some("9"))
                })
                .then_some(())
        },
    )
    .await;
}

/// systemd socket activation: pgmux serves on the listening sockets it is handed from fd 3 on
/// with LISTEN_PID and LISTEN_FDS (here TCP and Unix), not on its configured port and socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_a_socket_passed_by_systemd() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "activated").await;
    let dir = TempDir::new("activation");
    let path = dir.path().join("pgmux.toml");
    std::fs::write(&path, cfg.render(dir.path())).unwrap();
    let passed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = passed.local_addr().unwrap().port();
    let fd = passed.as_raw_fd();
    let socket_dir = TempDir::new("activation-socket");
    let passed_unix =
        std::os::unix::net::UnixListener::bind(socket_dir.path().join(format!(".s.PGSQL.{port}")))
            .unwrap();
    let unix_fd = passed_unix.as_raw_fd();
    // The shell's pid is pgmux's after exec, as systemd's LISTEN_PID names the service's.
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            "LISTEN_PID=$$ LISTEN_FDS=2 exec \"$0\" --config \"$1\"",
        ])
        .arg(env!("CARGO_BIN_EXE_pgmux"))
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("pgmux.log")).unwrap());
    // SAFETY: dup2 is async-signal-safe, the only call between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // The Unix socket goes to 4 first, in case it sits at 3 now.
            let unix_copy = libc::dup(unix_fd);
            if unix_copy == -1 || libc::dup2(fd, 3) == -1 || libc::dup2(unix_copy, 4) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    drop((passed, passed_unix));
    let client = eventually(
        Duration::from_secs(10),
        "served on the passed socket",
        || {
            let url =
                format!("host=127.0.0.1 port={port} user=activated password=activated dbname=app");
            async move {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(conn);
                Some(client)
            }
        },
    )
    .await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let (over_unix, conn) = tokio_postgres::Config::new()
        .host_path(socket_dir.path())
        .port(port)
        .user("activated")
        .password("activated")
        .dbname("app")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("served on the passed Unix socket");
    tokio::spawn(conn);
    let two: i32 = over_unix.query_one("SELECT 2", &[]).await.unwrap().get(0);
    assert_eq!(two, 2);
    let _ = child.kill();
    let _ = child.wait();
}

/// log_connections and log_disconnections, as in PgBouncer: on by default, and off they keep
/// every client's login and disconnect out of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_logged_unless_turned_off() {
    for (settings, logged) in [
        ("", true),
        ("log_connections = false\nlog_disconnections = false", false),
    ] {
        let mut cfg = PgmuxConfig::new(shared_cluster());
        cfg.general = settings.into();
        let mut pgmux = Process::start(cfg).await;
        let (client, conn) = tokio_postgres::connect(&pgmux.url("app"), tokio_postgres::NoTls)
            .await
            .unwrap();
        let connection = tokio::spawn(conn);
        client.simple_query("SELECT 1").await.unwrap();
        drop(client);
        let _ = connection.await;
        // Stopping the process makes sure every line it wrote is in the file.
        pgmux.signal(libc::SIGTERM);
        assert_eq!(pgmux.exit_code(Duration::from_secs(10)).await, Some(0));
        let log = pgmux.log();
        for line in ["client connected", "client disconnected"] {
            assert_eq!(log.contains(line), logged, "{settings:?}: {line}\n{log}");
        }
        assert!(log.contains("shutting down"), "the log was written: {log}");
    }
}
