//! Server health and lifecycle: check queries, lifetimes, idle timeouts, login retry, the
//! minimum and reserve pools. Each test fails if its setting is ignored.

use crate::harness::raw::{self, error_code, tags, Raw};
use crate::harness::{eventually, own_role, shared_cluster, Pgmux, PgmuxConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn pgmux_for(role: &str, pool_size: usize, general: String) -> Pgmux {
    let pg = shared_cluster();
    own_role(pg, role).await;
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "trust";
    cfg.pool_size = pool_size;
    cfg.general = general;
    cfg.database_extra = format!("user = \"{role}\"\npassword = \"{role}\"");
    cfg.start().await
}

async fn backends(role: &str) -> i64 {
    let admin = shared_cluster().admin().await;
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0)
}

async fn scalar(c: &mut Raw, sql: &str) -> String {
    c.send(&raw::query(sql)).await;
    let msgs = c.read_until(b'Z').await;
    assert_eq!(tags(&msgs), "TDCZ", "{sql}");
    String::from_utf8_lossy(&msgs[1].1[6..]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_check_query_runs_before_reusing_an_idle_server() {
    let admin = shared_cluster().admin().await;
    admin
        .batch_execute(
            "CREATE SEQUENCE IF NOT EXISTS health_checks; GRANT ALL ON health_checks TO PUBLIC;",
        )
        .await
        .unwrap();
    let last = || async {
        let v: i64 = admin
            .query_one("SELECT last_value FROM health_checks", &[])
            .await
            .unwrap()
            .get(0);
        v
    };
    let check = "server_check_delay = 0\nserver_check_query = \"SELECT nextval('health_checks')\"";
    for (general, expect_checks) in [(check.to_owned(), true), (String::new(), false)] {
        let pgmux = pgmux_for("checked", 1, general).await;
        let mut c = Raw::login(pgmux.port, "checked", "app").await;
        let before = last().await;
        for _ in 0..5 {
            scalar(&mut c, "SELECT 1").await;
        }
        let ran = last().await - before;
        if expect_checks {
            assert!(
                ran >= 4,
                "check query ran {ran} times for 5 checkouts of an idle server"
            );
        } else {
            assert_eq!(ran, 0, "no check configured");
        }
        pgmux.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_lifetime_replaces_old_servers() {
    let pgmux = pgmux_for("aging", 1, "server_lifetime = 0.3".into()).await;
    let mut c = Raw::login(pgmux.port, "aging", "app").await;
    let first = scalar(&mut c, "SELECT pg_backend_pid()").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = scalar(&mut c, "SELECT pg_backend_pid()").await;
    assert_ne!(first, second, "a server past its lifetime was replaced");
    pgmux.stop().await;

    let pgmux = pgmux_for("aging", 1, String::new()).await;
    let mut c = Raw::login(pgmux.port, "aging", "app").await;
    let first = scalar(&mut c, "SELECT pg_backend_pid()").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        first,
        scalar(&mut c, "SELECT pg_backend_pid()").await,
        "default lifetime is an hour"
    );
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_idle_timeout_closes_idle_servers_down_to_min_pool_size() {
    let pgmux = pgmux_for(
        "sleepy",
        3,
        "server_idle_timeout = 0.3\nmin_pool_size = 1".into(),
    )
    .await;
    let clients: Vec<_> =
        futures_util::future::join_all((0..3).map(|_| Raw::login(pgmux.port, "sleepy", "app")))
            .await;
    let mut clients = clients;
    for c in clients.iter_mut() {
        c.send(&raw::query("BEGIN")).await;
        c.read_until(b'Z').await;
    }
    assert_eq!(backends("sleepy").await, 3);
    for c in clients.iter_mut() {
        c.send(&raw::query("COMMIT")).await;
        c.read_until(b'Z').await;
    }
    eventually(
        Duration::from_secs(5),
        "idle servers closed down to min_pool_size",
        || async { (backends("sleepy").await == 1).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(backends("sleepy").await, 1, "min_pool_size is kept");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_pool_size_servers_exist_before_the_first_client() {
    let _pgmux = pgmux_for("eager", 5, "min_pool_size = 3".into()).await;
    eventually(
        Duration::from_secs(5),
        "three servers opened ahead",
        || async { (backends("eager").await == 3).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_pool_opens_only_after_reserve_pool_timeout() {
    let pgmux = pgmux_for(
        "reserved",
        1,
        "reserve_pool_size = 1\nreserve_pool_timeout = 1.0".into(),
    )
    .await;
    let mut holder = Raw::login(pgmux.port, "reserved", "app").await;
    holder.send(&raw::query("BEGIN")).await;
    holder.read_until(b'Z').await;
    let mut waiter = Raw::login(pgmux.port, "reserved", "app").await;
    waiter.send(&raw::query("SELECT 'served'")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backends("reserved").await,
        1,
        "no reserve server before the timeout"
    );
    let msgs = waiter.read_until(b'Z').await;
    assert_eq!(tags(&msgs), "TDCZ");
    assert_eq!(
        backends("reserved").await,
        2,
        "the reserve server served the waiter"
    );
    pgmux.stop().await;
}

/// A stand-in for a PostgreSQL that is down or refusing logins: counts connections, reads the
/// startup packet, then either closes or answers with a FATAL error of `code`.
async fn fake_server(code: Option<&'static str>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            if let Some(code) = code {
                let body =
                    format!("SFATAL\0VFATAL\0C{code}\0Mthe database system is starting up\0\0");
                let mut msg = vec![b'E'];
                msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
                msg.extend_from_slice(body.as_bytes());
                let _ = s.write_all(&msg).await;
            }
        }
    });
    (port, accepted)
}

async fn pgmux_in_front_of(port: u16, general: &'static str) -> Pgmux {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "trust";
    cfg.general = general.into();
    cfg.extra = format!(
        "[databases.down]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"app\"\npassword = \"app\"\n"
    );
    cfg.start().await
}

async fn login_error(port: u16) -> String {
    let mut c = Raw::connect(port).await;
    c.send(&raw::startup_packet(
        196_608,
        &[("user", "app"), ("database", "down")],
    ))
    .await;
    loop {
        match c.read().await {
            Some((b'E', body)) => return error_code(&body),
            Some(_) => continue,
            None => panic!("closed without an error"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_login_retry_fails_clients_fast_without_hammering() {
    let (down, attempts) = fake_server(None).await;
    let pgmux = pgmux_in_front_of(down, "server_login_retry = 30").await;
    for _ in 0..5 {
        assert_eq!(login_error(pgmux.port).await, "08006");
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "one attempt per server_login_retry"
    );
    pgmux.stop().await;

    let (down, attempts) = fake_server(None).await;
    let pgmux = pgmux_in_front_of(down, "server_login_retry = 0").await;
    for _ in 0..5 {
        assert_eq!(login_error(pgmux.port).await, "08006");
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 5);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_logins_reach_clients_with_the_servers_own_code() {
    let (starting, _) = fake_server(Some("57P03")).await;
    let pgmux = pgmux_in_front_of(starting, "server_login_retry = 30").await;
    assert_eq!(login_error(pgmux.port).await, "57P03");
    assert_eq!(
        login_error(pgmux.port).await,
        "57P03",
        "the cached error is the server's own"
    );
    pgmux.stop().await;
}
