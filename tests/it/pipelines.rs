//! Pipelines and Flush-only exchanges through pgmux, byte for byte as a driver sends them.

use crate::harness::raw::{self, error_code, tags, Raw};
use crate::harness::{shared_cluster, PgmuxConfig};

async fn trust_pgmux(pool_size: usize) -> crate::harness::Pgmux {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "trust";
    cfg.pool_size = pool_size;
    cfg.database_extra = "user = \"app\"\npassword = \"app\"".into();
    cfg.start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_of_three_syncs_with_an_error_in_the_middle() {
    let pgmux = trust_pgmux(2).await;
    let mut c = Raw::login(pgmux.port, "app", "app").await;
    let mut batch = Vec::new();
    for sql in ["SELECT 1", "SELECT 1/0", "SELECT 3"] {
        batch.extend(raw::parse("", sql));
        batch.extend(raw::bind("", ""));
        batch.extend(raw::execute(""));
        batch.extend(raw::sync());
    }
    c.send(&batch).await;
    let first = c.read_until(b'Z').await;
    assert_eq!(tags(&first), "12DCZ");
    assert_eq!(first[2].1, b"\0\x01\0\0\0\x011");
    let second = c.read_until(b'Z').await;
    assert_eq!(
        tags(&second),
        "1EZ",
        "Bind and Execute skipped after the error"
    );
    assert_eq!(error_code(&second[1].1), "22012");
    let third = c.read_until(b'Z').await;
    assert_eq!(tags(&third), "12DCZ");
    assert_eq!(third[2].1, b"\0\x01\0\0\0\x013");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_only_exchange_keeps_the_server_until_sync() {
    // As asyncpg does: Parse, Describe, Flush; read; then Bind, Execute, Sync.
    let pgmux = trust_pgmux(1).await;
    let mut c = Raw::login(pgmux.port, "app", "app").await;
    let mut other = Raw::login(pgmux.port, "app", "app").await;
    let mut batch = raw::parse("stmt1", "SELECT $1::int + 1");
    batch.extend(raw::describe_statement("stmt1"));
    batch.extend(raw::flush());
    c.send(&batch).await;
    let described = c.read_until(b'T').await;
    assert_eq!(tags(&described), "1tT");
    // The only server is still this client's: another client must wait, not take it.
    other.send(&raw::query("SELECT 'other'")).await;
    let mut bind = raw::msg(b'B', b"\0stmt1\0\0\0\0\x01\0\0\0\x0241\0\0");
    bind.extend(raw::execute(""));
    bind.extend(raw::sync());
    c.send(&bind).await;
    let result = c.read_until(b'Z').await;
    assert_eq!(tags(&result), "2DCZ");
    assert_eq!(result[1].1, b"\0\x01\0\0\0\x0242");
    let theirs = other.read_until(b'Z').await;
    assert_eq!(tags(&theirs), "TDCZ");
    assert_eq!(theirs[1].1, b"\0\x01\0\0\0\x05other");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pipelining_clients_get_their_own_replies() {
    let pgmux = trust_pgmux(3).await;
    let mut tasks = Vec::new();
    for id in 0..30u32 {
        let port = pgmux.port;
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::login(port, "app", "app").await;
            for round in 0..10u32 {
                let mut batch = Vec::new();
                for k in 0..4u32 {
                    batch.extend(raw::parse("", &format!("SELECT '{id}-{round}-{k}'")));
                    batch.extend(raw::bind("", ""));
                    batch.extend(raw::execute(""));
                    batch.extend(raw::sync());
                }
                batch.extend(raw::query(&format!("SELECT 'q-{id}-{round}'")));
                c.send(&batch).await;
                for k in 0..4u32 {
                    let got = c.read_until(b'Z').await;
                    let want = format!("{id}-{round}-{k}");
                    assert_eq!(tags(&got), "12DCZ");
                    assert_eq!(&got[2].1[6..], want.as_bytes());
                }
                let got = c.read_until(b'Z').await;
                assert_eq!(&got[1].1[6..], format!("q-{id}-{round}").as_bytes());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_pipelined_queries_in_transactions() {
    let pg = shared_cluster();
    let pgmux = PgmuxConfig::new(pg).start().await;
    let mut tasks = Vec::new();
    for id in 0..20i32 {
        let url = pgmux.url("app", "app", "app");
        tasks.push(tokio::spawn(async move {
            let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            for _ in 0..5 {
                let tx = client.transaction().await.unwrap();
                let stmt = tx.prepare("SELECT $1::int * 10 + $2::int").await.unwrap();
                // Polled together, these queries are pipelined on the wire.
                let futures = (0..8i32).map(|k| {
                    let stmt = stmt.clone();
                    let tx = &tx;
                    async move {
                        tx.query_one(&stmt, &[&id, &k])
                            .await
                            .unwrap()
                            .get::<_, i32>(0)
                    }
                });
                let got = futures_util::future::join_all(futures).await;
                let want: Vec<i32> = (0..8).map(|k| id * 10 + k).collect();
                assert_eq!(got, want);
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_sent_with_terminate_in_one_write_still_runs() {
    // As libpq does for PQsendQuery then PQfinish: the Query and the Terminate in one write.
    let pgmux = trust_pgmux(2).await;
    let admin = shared_cluster().admin().await;
    admin
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS sent_before_terminate (mode text, n int);
             GRANT ALL ON sent_before_terminate TO app;",
        )
        .await
        .unwrap();
    for n in 0..5 {
        let mut c = Raw::login(pgmux.port, "app", "app").await;
        let mut bytes = raw::query(&format!(
            "INSERT INTO sent_before_terminate VALUES ('transaction', {n})"
        ));
        bytes.extend(raw::msg(b'X', b""));
        c.send(&bytes).await;
        assert!(c.read().await.is_none(), "pgmux closes after Terminate");
    }
    let count = crate::harness::eventually(
        std::time::Duration::from_secs(20),
        "every INSERT sent before Terminate to run",
        || async {
            let row = admin
                .query_one(
                    "SELECT count(*) FROM sent_before_terminate WHERE mode = 'transaction'",
                    &[],
                )
                .await
                .unwrap();
            let count: i64 = row.get(0);
            (count == 5).then_some(count)
        },
    )
    .await;
    assert_eq!(count, 5);
    pgmux.stop().await;
}
