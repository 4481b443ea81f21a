//! pgbench through pgmux: many clients, a smaller pool, every transaction succeeds.

use crate::harness::pg::tool;
use crate::harness::{run_tool, shared_cluster, PgmuxConfig};
use std::time::Duration;

fn processed(output: &str) -> u64 {
    output
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|rest| rest.split(['/', ' ']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in pgbench output:\n{output}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple_and_extended_64_clients_on_16_servers() {
    let pg = shared_cluster();
    crate::harness::pgbench_init(pg.port).await;
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 16;
    let pgmux = cfg.start().await;
    for mode in ["simple", "extended"] {
        let args = ["-M", mode, "-c", "64", "-j", "4", "-T", "4"];
        let (ok, out) = crate::harness::pgbench_as_app(pgmux.port, &args, &[]).await;
        assert!(ok, "pgbench -M {mode} failed:\n{out}");
        assert!(processed(&out) > 0, "{out}");
        assert!(
            out.contains("number of failed transactions: 0 "),
            "pgbench -M {mode} had failures:\n{out}"
        );
        let pools = pgmux.pools();
        assert!(pools[0].servers <= 16, "{pools:?}");
    }
    // Every transaction pgbench counted is in the history table.
    let admin = pg.admin().await;
    let history: i64 = admin
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0);
    assert!(history > 0);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_a_multi_statement_script() {
    let pg = shared_cluster();
    let pgmux = PgmuxConfig::new(pg).start().await;
    let port = pgmux.port.to_string();
    let (ok, out) = run_tool(
        &tool("psql"),
        &[
            "-X", "-At", "-h", "127.0.0.1", "-p", &port, "-U", "app", "-d", "app", "-c",
            "BEGIN; CREATE TEMP TABLE tt(x int); INSERT INTO tt SELECT generate_series(1,10); SELECT sum(x) FROM tt; COMMIT;",
        ],
        "app",
        Duration::from_secs(30),
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.lines().any(|l| l == "55"), "{out}");
    pgmux.stop().await;
}
