//! A fleet: several pgmux processes on one port (so_reuseport), each with its peer_id, and
//! cancels that reach the wrong process forwarded to the right one.

use crate::harness::{free_port, own_role, shared_cluster, sqlstate, PgmuxConfig, TempDir};
use std::time::{Duration, Instant};

const PROCESSES: u16 = 3;

/// Starts one process per directory on `port` with so_reuseport, peer_id 1, 2, ... and
/// `extra` tables, its Unix socket in its directory.
async fn start_fleet(
    pg: &crate::harness::ClusterInfo,
    port: u16,
    dirs: &[TempDir],
    pool_size: usize,
    extra: &str,
) -> Vec<pgmux::Running> {
    let mut fleet = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut cfg = PgmuxConfig::new(pg);
        cfg.auth_type = "trust";
        cfg.pool_size = pool_size;
        cfg.database_extra = "user = \"fleet\"\npassword = \"fleet\"".into();
        cfg.general = "admin_users = [\"fleet\"]".into();
        cfg.extra = extra.into();
        let text = cfg.render(dir.path()).replace(
            "listen_port = 0\n",
            &format!(
                "listen_port = {port}\nso_reuseport = true\npeer_id = {}\n",
                i + 1
            ),
        );
        let config = pgmux::config::Config::parse(&text, dir.path()).unwrap();
        let running = pgmux::Server::bind(config).await;
        fleet.push(running.expect("a process of the fleet"));
    }
    fleet
}

/// A client of the fleet on 127.0.0.1:`port`, whichever process the kernel gives it to.
async fn connect(port: u16) -> tokio_postgres::Client {
    let url = format!("host=127.0.0.1 port={port} user=fleet dbname=app connect_timeout=10");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the fleet");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_cancels_each_land_on_their_own_query_whichever_process_takes_them() {
    let pg = shared_cluster();
    own_role(pg, "fleet").await;
    let port = free_port();
    let dirs: Vec<TempDir> = (0..PROCESSES).map(|_| TempDir::new("fleet")).collect();
    // Peers reach each other by their Unix sockets: all share the TCP port.
    let peers: String = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            format!(
                "[peers.{}]\nhost = \"{}\"\nport = {port}\n",
                i + 1,
                d.path().display()
            )
        })
        .collect();
    // Room for every client in any one process, however the kernel spreads them.
    let fleet = start_fleet(pg, port, &dirs, 110, &peers).await;
    // A second process without so_reuseport cannot take the port.
    let mut lone = PgmuxConfig::new(pg);
    lone.general = "unix_socket_dir = \"\"".into();
    let lone_dir = TempDir::new("fleet-lone");
    let text = lone
        .render(lone_dir.path())
        .replace("listen_port = 0\n", &format!("listen_port = {port}\n"));
    let config = pgmux::config::Config::parse(&text, lone_dir.path()).unwrap();
    let refused = pgmux::Server::bind(config).await.err().expect("refused");
    assert_eq!(refused.kind(), std::io::ErrorKind::AddrInUse, "{refused}");

    let mut sleepers = Vec::new();
    for _ in 0..100 {
        sleepers.push(connect(port).await);
    }
    let mut bystanders = Vec::new();
    for _ in 0..10 {
        bystanders.push(connect(port).await);
    }
    let spread: Vec<usize> = fleet
        .iter()
        .map(|r| r.pools().iter().map(|p| p.clients).sum())
        .collect();
    assert!(
        spread.iter().filter(|n| **n > 0).count() >= 2,
        "the kernel spread the clients: {spread:?}"
    );

    let mut cancels = Vec::new();
    // Every query is running on a server before the first cancel: a cancel for a client not
    // linked to a server yet is dropped, as PgBouncer drops it.
    let started = Instant::now();
    let admin = pg.admin().await;
    let running = || async {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' \
                 AND state = 'active'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    // Each client cancels on its own schedule, 20 ms after the one before: PostgreSQL forks a
    // process for every CancelRequest, and a hundred at one instant would test that instead.
    let (go, ready) = tokio::sync::watch::channel(false);
    for (i, client) in sleepers.into_iter().enumerate() {
        let mut ready = ready.clone();
        cancels.push(tokio::spawn(async move {
            let token = client.cancel_token();
            let query =
                tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
            ready
                .wait_for(|go| *go)
                .await
                .expect("the signal to cancel");
            tokio::time::sleep(Duration::from_millis(20 * i as u64)).await;
            let sent = Instant::now();
            token
                .cancel_query(tokio_postgres::NoTls)
                .await
                .expect("cancel sent");
            let result = tokio::time::timeout(Duration::from_secs(10), query)
                .await
                .expect("the query ended")
                .unwrap();
            (result.err().and_then(|e| sqlstate(&e)), sent.elapsed())
        }));
    }
    while running().await < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the queries never all ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bystanders: Vec<_> = bystanders
        .into_iter()
        .map(|c| tokio::spawn(async move { c.simple_query("SELECT pg_sleep(3)").await.map(drop) }))
        .collect();
    go.send(true).unwrap();
    for cancel in cancels {
        let (code, took) = cancel.await.unwrap();
        assert_eq!(code.as_deref(), Some("57014"), "its own query was canceled");
        assert!(took < Duration::from_secs(2), "landed in {took:?}");
    }
    for bystander in bystanders {
        bystander
            .await
            .unwrap()
            .expect("no bystander's query was canceled");
    }
    // The console of each process lists the others as its peers.
    for (i, dir) in dirs.iter().enumerate() {
        let (console, conn) = tokio_postgres::Config::new()
            .host_path(dir.path())
            .port(port)
            .user("fleet")
            .dbname("pgbouncer")
            .connect(tokio_postgres::NoTls)
            .await
            .expect("console over the Unix socket");
        tokio::spawn(conn);
        let rows = console.simple_query("SHOW PEERS").await.unwrap();
        let ids: Vec<String> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get("peer_id").map(str::to_owned),
                _ => None,
            })
            .collect();
        let others: Vec<String> = (1..=PROCESSES)
            .filter(|id| usize::from(*id) != i + 1)
            .map(|id| id.to_string())
            .collect();
        assert_eq!(ids, others);
        // The cancels it forwarded went to the others, and none is in flight any more.
        let rows = console.simple_query("SHOW PEER_POOLS").await.unwrap();
        for row in rows.iter().filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        }) {
            let id = row.get("peer_id").unwrap().to_owned();
            assert!(others.contains(&id), "peer pool {id} of process {}", i + 1);
            assert_eq!(row.get("cl_active_cancel_req"), Some("0"));
            assert_eq!(row.get("cl_waiting_cancel_req"), Some("0"));
        }
    }
    for running in fleet {
        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_shuts_down_leaves_new_clients_to_the_rest_of_the_fleet() {
    let pg = shared_cluster();
    own_role(pg, "fleet").await;
    let port = free_port();
    let dirs: Vec<TempDir> = (0..2).map(|_| TempDir::new("fleet-restart")).collect();
    let fleet = start_fleet(pg, port, &dirs, 5, "").await;
    // Clients on both processes; then the first drains (SIGTERM's WAIT_FOR_CLIENTS).
    let mut before = Vec::new();
    for _ in 0..20 {
        before.push(connect(port).await);
    }
    let on_first: usize = fleet[0].pools().iter().map(|p| p.clients).sum();
    assert!(
        on_first > 0,
        "the kernel gave the first process some clients"
    );
    fleet[0].begin_shutdown(pgmux::shutdown::ShutdownMode::WaitForClients);
    // Its accept loops close the socket as soon as they see the shutdown; a connection the
    // kernel queued there in that instant would be reset (net.ipv4.tcp_migrate_req = 1 moves
    // such connections to the other processes instead; see README).
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Every new client is served, by the process that stays.
    for _ in 0..20 {
        let client = connect(port).await;
        let rows = client.simple_query("SELECT 1").await.expect("served");
        assert_eq!(crate::transaction_mode::first_value(&rows), "1");
    }
    drop(before);
    tokio::time::timeout(Duration::from_secs(20), fleet[0].shutdown_complete())
        .await
        .expect("the draining process finished once its clients left");
    for running in fleet {
        running.shutdown().await;
    }
}
