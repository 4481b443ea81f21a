//! RELOAD and SIGHUP: new pool sizes, databases, users and secrets take effect without
//! dropping a client or a transaction; a broken file is refused whole and the old config stays.

use crate::harness::{eventually, own_role, shared_cluster, sqlstate, PgmuxConfig};
use std::time::Duration;

async fn backends(role: &str) -> i64 {
    shared_cluster()
        .admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_grows_the_pool_under_pgbench_without_failures() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "grower").await;
    cfg.userlist.push_str("\"admin\" \"adminpw\"\n");
    cfg.general = "admin_users = [\"admin\"]".into();
    cfg.pool_size = 2;
    let pgmux = cfg.start().await;
    let script = crate::harness::TempDir::new("reload-script");
    let script_file = script.path().join("sleep.sql");
    std::fs::write(&script_file, "SELECT pg_sleep(0.02);\n").unwrap();
    let port = pgmux.port;
    let script_arg = script_file.to_str().unwrap().to_owned();
    let bench = tokio::spawn(async move {
        let args = ["-n", "-f", &script_arg, "-c", "16", "-j", "4", "-T", "5"];
        crate::harness::pgbench_as(("grower", "grower"), port, &args, &[]).await
    });
    eventually(Duration::from_secs(5), "two servers busy", || async {
        (backends("grower").await == 2).then_some(())
    })
    .await;
    let path = pgmux.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("default_pool_size = 2", "default_pool_size = 8"),
    )
    .unwrap();
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgmux")
        .await
        .unwrap();
    admin.simple_query("RELOAD").await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the pool grows to eight servers",
        || async { (backends("grower").await == 8).then_some(()) },
    )
    .await;
    let (ok, out) = bench.await.unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("number of failed transactions: 0 "), "{out}");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_users_databases_and_secrets_and_refuses_a_broken_file() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist.push_str("\"admin\" \"adminpw\"\n");
    cfg.general = "admin_users = [\"admin\"]".into();
    let pgmux = cfg.start().await;
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgmux")
        .await
        .unwrap();
    let app = pgmux.connect("app", "app").await;
    app.batch_execute("BEGIN").await.unwrap();
    let err = pgmux.try_connect("app", "app", "app2").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"));

    // A broken file: refused whole, with every problem; the running config stays.
    let path = pgmux.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{good}\n[databases.app2]\nport = \"nope\"\nhots = \"h\"\n"),
    )
    .unwrap();
    let err = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("F0000"), "{err:?}");
    let message = err.as_db_error().unwrap().message().to_owned();
    assert!(
        message.contains("databases.app2.port") && message.contains("databases.app2.hots"),
        "{message}"
    );
    assert!(pgmux.try_connect("app", "app", "app2").await.is_err());

    // A good one: a new database name, a new user, a changed auth_file; the open
    // transaction is untouched.
    let userlist = path.parent().unwrap().join("userlist.txt");
    let users = std::fs::read_to_string(&userlist).unwrap();
    std::fs::write(
        &userlist,
        users.replace(
            "\"app\" \"app\"",
            "\"app\" \"app\"\n\"md5user\" \"md5pass\"",
        ),
    )
    .unwrap();
    std::fs::write(
        &path,
        format!(
            "{good}\n[databases.app2]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"app\"\n",
            pg.port
        ),
    )
    .unwrap();
    admin.simple_query("RELOAD").await.unwrap();
    let rows = app
        .simple_query("SELECT 'still in my transaction'")
        .await
        .unwrap();
    assert_eq!(
        crate::transaction_mode::first_value(&rows),
        "still in my transaction"
    );
    app.batch_execute("COMMIT").await.unwrap();
    let c = pgmux.try_connect("app", "app", "app2").await.unwrap();
    let rows = c.simple_query("SELECT current_database()").await.unwrap();
    assert_eq!(crate::transaction_mode::first_value(&rows), "app");
    pgmux
        .try_connect("md5user", "md5pass", "app")
        .await
        .unwrap();
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_shrinks_the_pool_as_transactions_end() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "shrinker").await;
    cfg.pool_size = 3;
    let pgmux = cfg.start().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let c = pgmux.connect("shrinker", "shrinker").await;
        c.batch_execute("BEGIN").await.unwrap();
        clients.push(c);
    }
    assert_eq!(backends("shrinker").await, 3);
    let path = pgmux.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("default_pool_size = 3", "default_pool_size = 1"),
    )
    .unwrap();
    pgmux.shared().reload_from_file().unwrap();
    // Transactions in flight finish on their servers; then the pool closes down to one.
    for c in &clients {
        let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        c.batch_execute("COMMIT").await.unwrap();
    }
    eventually(Duration::from_secs(5), "one server left", || async {
        (backends("shrinker").await == 1).then_some(())
    })
    .await;
    // Everyone is still served, one at a time.
    for c in &clients {
        c.simple_query("SELECT 2").await.unwrap();
    }
    assert_eq!(pgmux.pools()[0].servers, 1);
    pgmux.stop().await;
}
