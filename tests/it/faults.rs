//! Faults: clients vanishing mid-transaction and mid-result, backends terminated, PostgreSQL
//! restarted. Nobody hangs, nothing half-done is pooled, and later work succeeds.

use crate::harness::raw::{self, tags, Raw};
use crate::harness::{eventually, own_role, shared_cluster, sqlstate, Cluster, PgmuxConfig};
use crate::transaction_mode::first_value;
use std::time::Duration;

/// Stops PostgreSQL, keeps it down for `outage`, and starts it again.
async fn down_for(mut pg: Cluster, outage: Duration) -> Cluster {
    tokio::task::spawn_blocking(move || {
        pg.stop();
        std::thread::sleep(outage);
        pg.restart();
        pg
    })
    .await
    .unwrap()
}

async fn count(admin: &tokio_postgres::Client, sql: &str) -> i64 {
    admin.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_vanishing_mid_transaction_or_mid_result_leave_nothing_behind() {
    let pg = shared_cluster();
    let admin = pg.admin().await;
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS vanish (who text); GRANT ALL ON vanish TO PUBLIC;",
        )
        .await
        .unwrap();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "trust";
    cfg.pool_size = 2;
    own_role(pg, "vanisher").await;
    cfg.database_extra = "user = \"vanisher\"\npassword = \"vanisher\"".into();
    cfg.general = "server_reset_query = \"\"".into();
    let pgmux = cfg.start().await;

    for round in 0..4 {
        // Mid-transaction: BEGIN and an insert, then the socket closes.
        let mut c = Raw::login(pgmux.port, "app", "app").await;
        c.send(&raw::query(&format!(
            "BEGIN; INSERT INTO vanish VALUES ('ghost{round}')"
        )))
        .await;
        assert_eq!(tags(&c.read_until(b'Z').await), "CCZ");
        drop(c);
        // Mid-result: a big result, read a little, then gone.
        let mut c = Raw::login(pgmux.port, "app", "app").await;
        c.send(&raw::query(
            "SELECT g, repeat('x', 200) FROM generate_series(1, 2000000) g",
        ))
        .await;
        let _ = c.read().await;
        drop(c);
        // Mid-message: half a Query.
        let mut c = Raw::login(pgmux.port, "app", "app").await;
        let q = raw::query("SELECT 'never finished'");
        c.send(&q[..q.len() - 4]).await;
        drop(c);
    }
    eventually(Duration::from_secs(10), "no idle-in-transaction backends", || async {
        let n = count(
            &admin,
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'vanisher' AND state LIKE 'idle in transaction%'",
        )
        .await;
        (n == 0).then_some(())
    })
    .await;
    // The next clients get their own, clean results.
    for _ in 0..4 {
        let c = pgmux.connect("vanisher", "unused-with-trust").await;
        let rows = c
            .simple_query("SELECT count(*) FROM vanish WHERE who LIKE 'ghost%'")
            .await
            .unwrap();
        assert_eq!(
            first_value(&rows),
            "0",
            "uncommitted inserts were rolled back"
        );
        let rows = c.simple_query("SELECT 'mine'").await.unwrap();
        assert_eq!(first_value(&rows), "mine");
    }
    let pools = pgmux.pools();
    assert!(pools[0].servers <= 2, "{pools:?}");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_backend_mid_transaction_errors_that_client_only() {
    let pg = shared_cluster();
    let admin = pg.admin().await;
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 2;
    // A role of this test's own, so terminating its backends touches no other test.
    cfg.userlist = own_role(pg, "faulty").await;
    let pgmux = cfg.start().await;
    let victim = pgmux.connect("faulty", "faulty").await;
    let bystander = pgmux.connect("faulty", "faulty").await;
    victim.batch_execute("BEGIN").await.unwrap();
    let pid = first_value(
        &victim
            .simple_query("SELECT pg_backend_pid()")
            .await
            .unwrap(),
    );
    admin
        .simple_query(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    let err = victim.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.is_closed() || matches!(sqlstate(&err).as_deref(), Some("57P01" | "08006")),
        "{err:?}"
    );
    assert_eq!(
        first_value(&bystander.simple_query("SELECT 'fine'").await.unwrap()),
        "fine"
    );
    // Idle pooled servers killed behind pgmux's back are noticed at checkout.
    admin
        .simple_query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'faulty'",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..3 {
        assert_eq!(
            first_value(&bystander.simple_query("SELECT 'again'").await.unwrap()),
            "again"
        );
    }
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_fails_in_flight_work_then_recovers_without_leaks() {
    let mut pg = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let mut cfg = PgmuxConfig::new(&pg);
    cfg.pool_size = 3;
    let pgmux = cfg.start().await;
    for round in 0..2 {
        let clients: Vec<_> =
            futures_util::future::join_all((0..6).map(|_| pgmux.connect("app", "app"))).await;
        for c in &clients {
            assert_eq!(first_value(&c.simple_query("SELECT 1").await.unwrap()), "1");
        }
        clients[0].batch_execute("BEGIN").await.unwrap();
        pg = tokio::task::spawn_blocking(move || {
            pg.restart();
            pg
        })
        .await
        .unwrap();
        // In the transaction at the restart: an error, not a hang.
        let in_tx =
            tokio::time::timeout(Duration::from_secs(10), clients[0].simple_query("SELECT 1"))
                .await
                .expect("no hang");
        assert!(
            in_tx.is_err(),
            "round {round}: the open transaction cannot survive a restart"
        );
        // Idle clients carry on with new server connections.
        for c in &clients[1..] {
            let rows = c.simple_query("SELECT 'after restart'").await.unwrap();
            assert_eq!(first_value(&rows), "after restart");
        }
        let pools = pgmux.pools();
        assert!(pools[0].servers <= 3, "round {round}: {pools:?}");
    }
    let admin = pg.admin().await;
    let backends = count(
        &admin,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
    )
    .await;
    assert!(backends <= 3, "{backends} app backends for a pool of 3");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_under_load_from_repeated_postgres_stops() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    let mut pg = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let mut cfg = PgmuxConfig::new(&pg);
    cfg.pool_size = 4;
    cfg.general = "server_login_retry = 1\nquery_wait_timeout = 20".into();
    let pgmux = cfg.start().await;
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let last_success_ms = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..12 {
        let url = pgmux.url("app", "app", "app");
        let (stop, last, failed) = (stop.clone(), last_success_ms.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut client = None;
            while !stop.load(Ordering::Relaxed) {
                if client.is_none() {
                    match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                        Ok((c, conn)) => {
                            tokio::spawn(conn);
                            client = Some(c);
                        }
                        Err(_) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                let c = client.as_ref().unwrap();
                match c.simple_query("BEGIN; SELECT 1; COMMIT").await {
                    Ok(_) => last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        client = None;
                    }
                }
            }
        }));
    }
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let failed_before = failed.load(Ordering::Relaxed);
        pg = down_for(pg, Duration::from_secs(2)).await;
        let back_ms = epoch.elapsed().as_millis() as u64;
        // server_login_retry (1 s) plus one second, with slack for a loaded machine.
        eventually(
            Duration::from_secs(4),
            "transactions succeed again",
            || async { (last_success_ms.load(Ordering::Relaxed) > back_ms).then_some(()) },
        )
        .await;
        // Only transactions in flight at the stop failed: at most one per server connection.
        // The other clients waited for PostgreSQL to come back.
        let failures = failed.load(Ordering::Relaxed) - failed_before;
        assert!(
            failures <= 4,
            "round {round}: {failures} failed transactions, pool of 4"
        );
        let pools = pgmux.pools();
        assert!(pools[0].servers <= 4, "round {round}: {pools:?}");
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(15), w)
            .await
            .expect("no client hangs")
            .unwrap();
    }
    let admin = pg.admin().await;
    let n = count(
        &admin,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
    )
    .await;
    assert!(n <= 4, "{n} server connections left for a pool of 4");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_keeps_running_across_a_postgres_stop() {
    let mut pg = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    crate::harness::pgbench_init(pg.port).await;
    let mut cfg = PgmuxConfig::new(&pg);
    cfg.pool_size = 4;
    cfg.general = "server_login_retry = 1".into();
    let pgmux = cfg.start().await;
    let pgmux_port = pgmux.port;
    let logs = crate::harness::TempDir::new("pgbench-log");
    let prefix = format!("--log-prefix={}/tx", logs.path().display());
    let bench = tokio::spawn(async move {
        let args = ["-S", "-c", "8", "-j", "8", "-T", "9", "--log", &prefix];
        crate::harness::pgbench_as_app(pgmux_port, &args, &[]).await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg = down_for(pg, Duration::from_secs(2)).await;
    let back = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (_, out) = bench.await.unwrap();
    let aborted = out
        .lines()
        .filter(|l| l.contains("aborted in command"))
        .count();
    assert!(
        aborted <= 4,
        "only clients in flight at the stop fail (pool of 4):\n{out}"
    );
    // pgbench's per-transaction log: the fifth field is the second each transaction ended.
    let mut after_restart = 0;
    for entry in std::fs::read_dir(logs.path()).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        after_restart += text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4)?.parse::<u64>().ok())
            .filter(|&t| t > back)
            .count();
    }
    assert!(
        after_restart > 0,
        "no transactions after the restart:\n{out}"
    );
    drop(pg);
    pgmux.stop().await;
}
