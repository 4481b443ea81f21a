//! Client authentication by auth_type, and pgmux's own login to PostgreSQL.

use crate::harness::{shared_cluster, sqlstate, PgmuxConfig};

async fn login_error(pgmux: &crate::harness::Pgmux, user: &str, pw: &str, db: &str) -> String {
    match pgmux.try_connect(user, pw, db).await {
        Ok(_) => panic!("login as {user} to {db} should fail"),
        Err(e) => sqlstate(&e).unwrap_or_else(|| format!("no SQLSTATE: {e}")),
    }
}

async fn select_one(client: &tokio_postgres::Client) -> String {
    let rows = client.simple_query("SELECT current_user").await.unwrap();
    crate::transaction_mode::first_value(&rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_logins_succeed_and_wrong_ones_get_postgresqls_codes() {
    let pg = shared_cluster();
    let pgmux = PgmuxConfig::new(pg).start().await;
    assert_eq!(select_one(&pgmux.connect("app", "app").await).await, "app");
    assert_eq!(login_error(&pgmux, "app", "wrong", "app").await, "28P01");
    // Unknown users go through a full exchange and fail the same way.
    assert_eq!(login_error(&pgmux, "nobody", "x", "app").await, "28P01");
    assert_eq!(login_error(&pgmux, "app", "app", "nosuchdb").await, "3D000");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_logins_with_plain_and_md5_secrets() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "md5";
    cfg.userlist = "\"app\" \"app\"\n\"md5user\" \"md57541d4e65fae11bd07f18dc6fe2b02bc\"\n".into();
    let pgmux = cfg.start().await;
    assert_eq!(select_one(&pgmux.connect("app", "app").await).await, "app");
    // The md5 hash alone logs in to pgmux and, through md5, to PostgreSQL.
    assert_eq!(
        select_one(&pgmux.connect("md5user", "md5pass").await).await,
        "md5user"
    );
    assert_eq!(login_error(&pgmux, "md5user", "nope", "app").await, "28P01");
    assert_eq!(login_error(&pgmux, "nobody", "nope", "app").await, "28P01");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_secret_from_pg_authid_logs_in_with_the_clients_proven_key() {
    let pg = shared_cluster();
    let admin = pg.admin().await;
    let secret: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(secret.starts_with("SCRAM-SHA-256$"));
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = format!("\"app\" \"{secret}\"\n");
    let pgmux = cfg.start().await;
    // No plaintext anywhere: pgmux logs in to PostgreSQL with the key the client proved.
    let clients: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| pgmux.connect("app", "app"))).await;
    for c in &clients {
        assert_eq!(select_one(c).await, "app");
    }
    assert_eq!(login_error(&pgmux, "app", "wrong", "app").await, "28P01");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refusing_our_login_is_reported_with_its_code() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "trust";
    cfg.database_extra = "user = \"app\"\npassword = \"not-the-password\"".into();
    let pgmux = cfg.start().await;
    assert_eq!(login_error(&pgmux, "app", "", "app").await, "28P01");
    pgmux.stop().await;
}
