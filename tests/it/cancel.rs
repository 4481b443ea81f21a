//! Cancel requests reach the query of the client that sent them, and nothing else.

use crate::harness::{shared_cluster, sqlstate, PgmuxConfig};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_clients_own_query() {
    let pg = shared_cluster();
    let pgmux = PgmuxConfig::new(pg).start().await;
    let client = pgmux.connect("app", "app").await;
    let token = client.cancel_token();
    let started = Instant::now();
    let sleeper =
        tokio::spawn(async move { client.simple_query("SELECT pg_sleep(10)").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), sleeper)
        .await
        .expect("canceled query returned")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "the sleep was cut short"
    );
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_from_an_idle_client_never_hits_another_clients_query() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 1;
    let pgmux = cfg.start().await;
    let idle = pgmux.connect("app", "app").await;
    let busy = pgmux.connect("app", "app").await;
    // Warm the single server with the idle client first, so both have used it.
    idle.simple_query("SELECT 1").await.unwrap();
    let worker =
        tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(1.5), 'done'").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        idle.cancel_token()
            .cancel_query(tokio_postgres::NoTls)
            .await
            .unwrap();
    }
    let rows = worker
        .await
        .unwrap()
        .expect("the busy client's query was not canceled");
    assert!(rows.iter().any(
        |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(1) == Some("done"))
    ));
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_under_load_only_reach_their_own_clients() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 4;
    let pgmux = cfg.start().await;
    let mut tasks = Vec::new();
    for id in 0..12 {
        let url = pgmux.url("app", "app", "app");
        tasks.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let cancels = id % 2 == 0;
            for _ in 0..3 {
                let token = client.cancel_token();
                let canceller = tokio::spawn(async move {
                    if cancels {
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        let _ = token.cancel_query(tokio_postgres::NoTls).await;
                    }
                });
                let result = client.simple_query("SELECT pg_sleep(0.4)").await;
                canceller.await.unwrap();
                match (cancels, result) {
                    (false, Ok(_)) => {}
                    (false, Err(e)) => panic!("client {id} was canceled by someone else: {e}"),
                    // A cancel may land while the query waits for a server; then it is dropped.
                    (true, Ok(_)) => {}
                    (true, Err(e)) => assert_eq!(sqlstate(&e).as_deref(), Some("57014")),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    pgmux.stop().await;
}
