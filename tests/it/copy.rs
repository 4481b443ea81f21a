//! COPY in and out of 100,000 rows through pgmux, checked by checksum on both sides.

use crate::harness::{shared_cluster, PgmuxConfig};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use md5::{Digest, Md5};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_of_100k_rows_keeps_every_byte() {
    let pg = shared_cluster();
    let admin = pg.admin().await;
    admin
        .batch_execute("DROP TABLE IF EXISTS copied; CREATE TABLE copied (id int, payload text); GRANT ALL ON copied TO app;")
        .await
        .unwrap();
    let pgmux = PgmuxConfig::new(pg).start().await;
    let mut client = pgmux.connect("app", "app").await;

    let mut data = String::new();
    for i in 0..100_000 {
        data.push_str(&format!("{i}\trow number {i} {}\n", "x".repeat(i % 50)));
    }
    let sent_md5 = Md5::digest(data.as_bytes());
    let tx = client.transaction().await.unwrap();
    let sink = tx.copy_in("COPY copied FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    for chunk in data.as_bytes().chunks(100_000) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let rows = sink.finish().await.unwrap();
    assert_eq!(rows, 100_000);
    tx.commit().await.unwrap();

    let tx = client.transaction().await.unwrap();
    let stream = tx
        .copy_out("COPY (SELECT * FROM copied ORDER BY id) TO STDOUT")
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut received = Vec::new();
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    tx.commit().await.unwrap();
    assert_eq!(received.len(), data.len());
    assert_eq!(
        Md5::digest(&received),
        sent_md5,
        "COPY OUT returned the bytes COPY IN sent"
    );

    // PostgreSQL agrees on what it stored.
    let stored: String = admin
        .query_one(
            "SELECT md5(string_agg(id || E'\\t' || payload || E'\\n', '' ORDER BY id)) FROM copied",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, format!("{:x}", sent_md5));
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_copy_leaves_the_server_usable() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 1;
    let pgmux = cfg.start().await;
    let client = pgmux.connect("app", "app").await;
    let err = client
        .simple_query("COPY nosuchtable FROM STDIN")
        .await
        .unwrap_err();
    assert_eq!(
        crate::harness::sqlstate(&err).as_deref(),
        Some("42P01"),
        "{err:?}"
    );
    let rows = client.simple_query("SELECT 5").await.unwrap();
    assert_eq!(crate::transaction_mode::first_value(&rows), "5");
    pgmux.stop().await;
}
