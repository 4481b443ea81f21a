//! Pooling modes under concurrency: each client gets its own answers.

use crate::harness::{own_role, shared_cluster, PgmuxConfig};
use std::collections::HashSet;
use tokio_postgres::SimpleQueryMessage;

/// First column of the first row of a simple query's result.
pub fn first_value(messages: &[SimpleQueryMessage]) -> String {
    messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .expect("a row")
}

async fn show(client: &tokio_postgres::Client, name: &str) -> String {
    first_value(&client.simple_query(&format!("SHOW {name}")).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_on_five_servers_see_only_their_own_rows() {
    let pg = shared_cluster();
    let admin = pg.admin().await;
    admin
        .batch_execute("CREATE TABLE IF NOT EXISTS tagged (client int, seq int, note text); GRANT ALL ON tagged TO PUBLIC;")
        .await
        .unwrap();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "tagger").await;
    let pgmux = cfg.start().await;
    let mut tasks = Vec::new();
    for id in 0..200i32 {
        let url = pgmux.url("tagger", "tagger", "app");
        tasks.push(tokio::spawn(async move {
            let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            for round in 0..5i32 {
                let tx = client.transaction().await.unwrap();
                for seq in 0..3i32 {
                    tx.execute(
                        "INSERT INTO tagged VALUES ($1, $2, $3)",
                        &[&id, &(round * 3 + seq), &format!("client {id}")],
                    )
                    .await
                    .unwrap();
                }
                // Inside the transaction: exactly our own rows so far, nobody else's.
                let rows = tx
                    .query(
                        "SELECT DISTINCT client FROM tagged WHERE note = $1",
                        &[&format!("client {id}")],
                    )
                    .await
                    .unwrap();
                assert_eq!(rows.len(), 1);
                assert_eq!(rows[0].get::<_, i32>(0), id);
                let count: i64 = tx
                    .query_one("SELECT count(*) FROM tagged WHERE client = $1", &[&id])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(count, i64::from(round * 3 + 3), "client {id} round {round}");
                // The backend must be in a transaction of ours: txid stays stable within it.
                let a: i64 = tx
                    .query_one("SELECT txid_current()", &[])
                    .await
                    .unwrap()
                    .get(0);
                let b: i64 = tx
                    .query_one("SELECT txid_current()", &[])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(a, b, "statements of one transaction ran on one server");
                if round == 4 {
                    tx.rollback().await.unwrap();
                } else {
                    tx.commit().await.unwrap();
                }
            }
            // The rolled-back round left nothing behind (simple protocol: no named statements
            // outside a transaction).
            let rows = client
                .simple_query(&format!("SELECT count(*) FROM tagged WHERE client = {id}"))
                .await
                .unwrap();
            assert_eq!(first_value(&rows), "12");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let pools = pgmux.pools();
    assert_eq!(pools.len(), 1);
    assert!(pools[0].servers <= 5, "{pools:?}");
    let backends: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tagger'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        backends <= 5,
        "{backends} server connections for a pool of 5"
    );
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_parameters_follow_each_client_across_servers() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 1;
    let pgmux = cfg.start().await;
    let tokyo = pgmux.connect("app", "app").await;
    let plain = pgmux.connect("app", "app").await;
    let default_tz = show(&plain, "TimeZone").await;
    assert_ne!(default_tz, "Asia/Tokyo");
    tokyo
        .batch_execute("SET TimeZone = 'Asia/Tokyo'; SET application_name = 'tokyo-app'")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(show(&tokyo, "TimeZone").await, "Asia/Tokyo");
        assert_eq!(show(&tokyo, "application_name").await, "tokyo-app");
        // Same single server, yet the other client keeps its own values.
        assert_eq!(show(&plain, "TimeZone").await, default_tz);
        assert_ne!(show(&plain, "application_name").await, "tokyo-app");
    }
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_keeps_the_server_and_resets_it_on_release() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_mode = "session";
    cfg.pool_size = 1;
    let pgmux = cfg.start().await;
    let first = pgmux.connect("app", "app").await;
    first
        .batch_execute("SET work_mem = '1234kB'; PREPARE p AS SELECT 41 + 1")
        .await
        .unwrap();
    let pid: i32 = first
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let answer: i32 = first.query_one("EXECUTE p", &[]).await.unwrap().get(0);
    assert_eq!(answer, 42);
    drop(first);
    let second = pgmux.connect("app", "app").await;
    let pid2: i32 = second
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pid, pid2, "one server in the pool, reused");
    let work_mem: String = second.query_one("SHOW work_mem", &[]).await.unwrap().get(0);
    assert_eq!(work_mem, "4MB", "DISCARD ALL reset the previous session");
    assert!(
        second.query_one("EXECUTE p", &[]).await.is_err(),
        "prepared statement discarded"
    );
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_mode_refuses_transaction_blocks() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_mode = "statement";
    let pgmux = cfg.start().await;
    let client = pgmux.connect("app", "app").await;
    assert_eq!(
        first_value(&client.simple_query("SELECT 7").await.unwrap()),
        "7"
    );
    let err = client.batch_execute("BEGIN").await.unwrap_err();
    assert_eq!(
        crate::harness::sqlstate(&err).as_deref(),
        Some("0A000"),
        "{err}"
    );
    // The server that was left inside BEGIN is not reused.
    let other = pgmux.connect("app", "app").await;
    let rows = other
        .simple_query("SELECT CASE WHEN now() = statement_timestamp() THEN 'no' ELSE 'yes' END")
        .await
        .unwrap();
    assert_eq!(first_value(&rows), "no");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_reports_the_servers_real_parameters() {
    let pg = shared_cluster();
    let pgmux = PgmuxConfig::new(pg).start().await;
    let mut seen = HashSet::new();
    for _ in 0..3 {
        let c = pgmux.connect("app", "app").await;
        let version = show(&c, "server_version").await;
        assert!(
            version.starts_with(|ch: char| ch.is_ascii_digit()),
            "{version}"
        );
        seen.insert(version);
    }
    assert_eq!(seen.len(), 1);
    pgmux.stop().await;
}
