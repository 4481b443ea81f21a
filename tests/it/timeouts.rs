//! Client timeouts: each ends with an ErrorResponse naming it, and only when it is set.

use crate::harness::raw::{self, error_code, tags, Raw};
use crate::harness::{eventually, own_role, shared_cluster, Pgmux, PgmuxConfig};
use std::time::Duration;

async fn pgmux_with(general: &'static str, role: &str, pool_size: usize) -> Pgmux {
    let pg = shared_cluster();
    own_role(pg, role).await;
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "trust";
    cfg.pool_size = pool_size;
    cfg.general = general.into();
    cfg.database_extra = format!("user = \"{role}\"\npassword = \"{role}\"");
    cfg.start().await
}

/// The next message is an ErrorResponse with `code`, and then the connection closes.
async fn expect_fatal(c: &mut Raw, code: &str) {
    let (tag, body) = c.read().await.expect("an error before EOF");
    assert_eq!(
        (tag as char, error_code(&body)),
        ('E', code.to_owned()),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        c.read().await.is_none(),
        "connection closed after the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_closes_idle_clients_only_when_set() {
    let on = pgmux_with("client_idle_timeout = 0.5", "idler", 2).await;
    let off = pgmux_with("", "idler", 2).await;
    let mut a = Raw::login(on.port, "idler", "app").await;
    let mut b = Raw::login(off.port, "idler", "app").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    expect_fatal(&mut a, "57P05").await;
    b.send(&raw::query("SELECT 1")).await;
    assert_eq!(tags(&b.read_until(b'Z').await), "TDCZ");
    on.stop().await;
    off.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_ends_idle_transactions_not_idle_clients() {
    let pgmux = pgmux_with("idle_transaction_timeout = 0.5", "idletx", 2).await;
    let mut in_tx = Raw::login(pgmux.port, "idletx", "app").await;
    let mut idle = Raw::login(pgmux.port, "idletx", "app").await;
    in_tx.send(&raw::query("BEGIN")).await;
    assert_eq!(tags(&in_tx.read_until(b'Z').await), "CZ");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    expect_fatal(&mut in_tx, "25P03").await;
    idle.send(&raw::query("SELECT 1")).await;
    assert_eq!(tags(&idle.read_until(b'Z').await), "TDCZ");
    // The server left in the transaction was closed, not pooled.
    let admin = shared_cluster().admin().await;
    eventually(Duration::from_secs(5), "no idle-in-transaction server", || async {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'idletx' AND state LIKE 'idle in%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    })
    .await;
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_disconnects_and_stops_the_query() {
    let pgmux = pgmux_with("query_timeout = 0.5", "slowpoke", 2).await;
    let mut c = Raw::login(pgmux.port, "slowpoke", "app").await;
    c.send(&raw::query("SELECT pg_sleep(5)")).await;
    expect_fatal(&mut c, "57014").await;
    let admin = shared_cluster().admin().await;
    eventually(Duration::from_secs(4), "the sleeping query is gone", || async {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'slowpoke' AND query LIKE '%pg_sleep(5)%' AND state = 'active'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (n == 0).then_some(())
    })
    .await;
    // Short queries are untouched.
    let mut d = Raw::login(pgmux.port, "slowpoke", "app").await;
    d.send(&raw::query("SELECT pg_sleep(0.1)")).await;
    assert_eq!(tags(&d.read_until(b'Z').await), "TDCZ");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_fails_a_client_that_waits_too_long() {
    let pgmux = pgmux_with("query_wait_timeout = 0.5", "waiter", 1).await;
    let mut holder = Raw::login(pgmux.port, "waiter", "app").await;
    holder.send(&raw::query("BEGIN")).await;
    assert_eq!(tags(&holder.read_until(b'Z').await), "CZ");
    let mut queued = Raw::login(pgmux.port, "waiter", "app").await;
    queued.send(&raw::query("SELECT 1")).await;
    expect_fatal(&mut queued, "57014").await;
    // The holder is unaffected and, once done, the server serves others again.
    holder.send(&raw::query("COMMIT")).await;
    assert_eq!(tags(&holder.read_until(b'Z').await), "CZ");
    let mut next = Raw::login(pgmux.port, "waiter", "app").await;
    next.send(&raw::query("SELECT 1")).await;
    assert_eq!(tags(&next.read_until(b'Z').await), "TDCZ");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_login_timeout_drops_a_silent_client() {
    let pgmux = pgmux_with("client_login_timeout = 0.5", "silent", 1).await;
    let mut c = Raw::connect(pgmux.port).await;
    // Half a startup packet, then nothing.
    c.send(&[0, 0, 0, 40, 0, 3]).await;
    let (tag, body) = c.read().await.expect("an error");
    assert_eq!((tag as char, error_code(&body).as_str()), ('E', "08P01"));
    assert!(String::from_utf8_lossy(&body).contains("client_login_timeout"));
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_bounds_a_whole_transaction_busy_or_idle() {
    // Each statement is short and the client never idles long: only the whole is too long.
    let pgmux = pgmux_with("transaction_timeout = 1.5", "wholetx", 2).await;
    let mut busy = Raw::login(pgmux.port, "wholetx", "app").await;
    busy.send(&raw::query("BEGIN")).await;
    assert_eq!(tags(&busy.read_until(b'Z').await), "CZ");
    let started = std::time::Instant::now();
    let ended = loop {
        busy.send(&raw::query("SELECT pg_sleep(0.2)")).await;
        let (tag, body) = busy.read().await.expect("a reply");
        if tag == b'E' {
            break error_code(&body);
        }
        busy.read_until(b'Z').await;
        assert!(started.elapsed() < Duration::from_secs(10), "never ended");
    };
    assert_eq!(ended, "25P04");
    // Autocommit statements, each a transaction of its own, are not cut.
    let mut autocommit = Raw::login(pgmux.port, "wholetx", "app").await;
    for _ in 0..12 {
        autocommit.send(&raw::query("SELECT pg_sleep(0.2)")).await;
        assert_eq!(tags(&autocommit.read_until(b'Z').await), "TDCZ");
    }
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_and_per_database_timeouts_override_the_global_ones() {
    let pg = shared_cluster();
    own_role(pg, "strictuser").await;
    own_role(pg, "laxuser").await;
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "trust";
    cfg.userlist = "\"strictuser\" \"strictuser\"\n\"laxuser\" \"laxuser\"\n".into();
    // No global timeout: the database's 0.3 s applies to strictuser, and laxuser's own 20 s
    // wins over it.
    cfg.database_extra = "idle_transaction_timeout = 0.3".into();
    cfg.extra = "[users.laxuser]\nidle_transaction_timeout = 20\n".into();
    let pgmux = cfg.start().await;
    for (role, after_ms, ended) in [("strictuser", 800, true), ("laxuser", 800, false)] {
        let mut c = Raw::login(pgmux.port, role, "app").await;
        c.send(&raw::query("BEGIN")).await;
        assert_eq!(tags(&c.read_until(b'Z').await), "CZ");
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        if ended {
            expect_fatal(&mut c, "25P03").await;
        } else {
            c.send(&raw::query("COMMIT")).await;
            assert_eq!(tags(&c.read_until(b'Z').await), "CZ", "{role}");
        }
    }
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_queued_longer_than_query_wait_notify_is_told_so_and_then_served() {
    let pgmux = pgmux_with("query_wait_notify = 0.3", "queued", 1).await;
    let mut holder = Raw::login(pgmux.port, "queued", "app").await;
    holder.send(&raw::query("BEGIN")).await;
    assert_eq!(tags(&holder.read_until(b'Z').await), "CZ");
    let mut queued = Raw::login(pgmux.port, "queued", "app").await;
    queued.send(&raw::query("SELECT 42")).await;
    let (tag, body) = queued.read().await.expect("a notice");
    assert_eq!((tag, error_code(&body).as_str()), (b'N', "00000"));
    assert!(
        String::from_utf8_lossy(&body).contains("query_wait_notify"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    holder.send(&raw::query("COMMIT")).await;
    assert_eq!(tags(&holder.read_until(b'Z').await), "CZ");
    // Told once, then served in its turn.
    assert_eq!(tags(&queued.read_until(b'Z').await), "TDCZ");
    pgmux.stop().await;
}
