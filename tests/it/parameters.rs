//! Session parameters that follow each client in transaction mode: those set in the startup
//! packet, in `options` (PGOPTIONS), and with SET, for every parameter PostgreSQL reports.

use crate::harness::raw::{self, Raw};
use crate::harness::{pg, shared_cluster, sqlstate, PgmuxConfig};
use std::time::Duration;

async fn show(client: &tokio_postgres::Client, name: &str) -> String {
    let rows = client.simple_query(&format!("SHOW {name}")).await.unwrap();
    crate::transaction_mode::first_value(&rows)
}

/// A client through pgmux with `options` in its startup packet.
async fn with_options(
    port: u16,
    options: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    crate::harness::connect_with(app_login(port).options(options)).await
}

/// The harness' app login to pgmux on `port`, to add to.
fn app_login(port: u16) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("app")
        .password("app")
        .dbname("app");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgoptions_settings_follow_their_client_on_a_shared_server() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    // One server for everyone: any leak between clients would show.
    cfg.pool_size = 1;
    let pgmux = cfg.start().await;

    // psql with PGOPTIONS, as PostgreSQL's own test runner sends it.
    let port = pgmux.port.to_string();
    let mut psql = tokio::process::Command::new(pg::tool("psql"));
    psql.args([
        "-X",
        "-At",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "app",
        "-d",
        "app",
    ])
    .args(["-c", "SHOW intervalstyle", "-c", "SELECT interval '1 day'"])
    .env("PGPASSWORD", "app")
    .env("PGOPTIONS", "-c intervalstyle=postgres_verbose");
    let out = tokio::time::timeout(Duration::from_secs(30), psql.output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.trim(), "postgres_verbose\n@ 1 day");

    let verbose = with_options(
        pgmux.port,
        "-c intervalstyle=postgres_verbose --default-transaction-read-only=on",
    )
    .await
    .unwrap();
    let plain = pgmux.connect("app", "app").await;
    for _ in 0..5 {
        assert_eq!(show(&verbose, "intervalstyle").await, "postgres_verbose");
        assert_eq!(show(&verbose, "default_transaction_read_only").await, "on");
        assert_eq!(show(&plain, "intervalstyle").await, "postgres");
        assert_eq!(show(&plain, "default_transaction_read_only").await, "off");
    }
    // A SET of a reported parameter follows its client too.
    plain
        .batch_execute("SET default_transaction_read_only = on")
        .await
        .unwrap();
    assert_eq!(show(&verbose, "default_transaction_read_only").await, "on");
    verbose
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    assert_eq!(show(&plain, "default_transaction_read_only").await, "on");
    assert_eq!(show(&verbose, "default_transaction_read_only").await, "off");
    pgmux.stop().await;
}

/// A client on a one-server pool that sets `options`, and one that sets nothing, in turns:
/// what the first set must never reach the second, and what the first set must stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_backslashes_and_unreported_settings_stay_with_their_client() {
    let pg = shared_cluster();
    pg.admin()
        .await
        .batch_execute("CREATE SCHEMA IF NOT EXISTS param_a AUTHORIZATION app")
        .await
        .unwrap();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 1;
    let pgmux = cfg.start().await;
    // search_path is not reported before PostgreSQL 18; a list keeps its items; a value
    // ending in a backslash stays whole even with standard_conforming_strings off.
    let own = crate::harness::connect_with(
        app_login(pgmux.port)
            .application_name("tail\\")
            .options("-c search_path=param_a,public -c standard_conforming_strings=off"),
    )
    .await
    .unwrap();
    let plain = pgmux.connect("app", "app").await;
    let plain_path = show(&plain, "search_path").await;
    for _ in 0..5 {
        assert_eq!(
            crate::transaction_mode::first_value(
                &own.simple_query("SELECT current_schemas(false)::text")
                    .await
                    .unwrap()
            ),
            "{param_a,public}"
        );
        assert_eq!(show(&own, "application_name").await, "tail\\");
        assert_eq!(show(&own, "standard_conforming_strings").await, "off");
        assert_eq!(show(&plain, "search_path").await, plain_path);
        assert_eq!(show(&plain, "standard_conforming_strings").await, "on");
    }
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_postgresql_refuses_refuses_the_login_as_postgresql_does() {
    let pg = shared_cluster();
    let pgmux = PgmuxConfig::new(pg).start().await;
    for options in ["-c DateStyle=bogus", "-c TimeZone=Nowhere/Else"] {
        let err = with_options(pgmux.port, options)
            .await
            .expect_err("refused");
        assert_eq!(sqlstate(&err).as_deref(), Some("22023"), "{options}: {err}");
    }
    // A wrong password is told first: parameters are read after authentication.
    let err = crate::harness::connect_with(app_login(pgmux.port).password("wrong").options("junk"))
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"));
    // Every other client carries on.
    let client = pgmux.connect("app", "app").await;
    assert_eq!(show(&client, "DateStyle").await, "ISO, MDY");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_get_postgresqls_errors_and_nothing_hangs() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.general = "ignore_startup_parameters = [\"statement_timeout\"]".into();
    let pgmux = cfg.start().await;
    for (options, code) in [
        ("-c foo", "42601"),
        ("-c=", "42704"),
        ("-c =x", "42704"),
        ("junk", "42601"),
        ("-B 100", "08P01"),
        // A setting pgmux cannot carry to every server is refused, not dropped silently.
        ("-c work_mem=64MB", "08P01"),
    ] {
        let err = tokio::time::timeout(Duration::from_secs(10), with_options(pgmux.port, options))
            .await
            .unwrap_or_else(|_| panic!("{options}: no answer"))
            .err()
            .unwrap_or_else(|| panic!("{options} should be refused"));
        assert_eq!(sqlstate(&err).as_deref(), Some(code), "{options}: {err}");
    }
    // One that ignore_startup_parameters names is dropped, as a startup parameter would be.
    let client = with_options(pgmux.port, "-c statement_timeout=1s -c TimeZone=UTC")
        .await
        .unwrap();
    assert_eq!(show(&client, "TimeZone").await, "UTC");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_reports_the_clients_own_values() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "trust";
    cfg.database_extra = "user = \"app\"\npassword = \"app\"".into();
    let pgmux = cfg.start().await;
    let mut c = Raw::connect(pgmux.port).await;
    let params = [
        ("user", "app"),
        ("database", "app"),
        ("options", "-c default_transaction_read_only=on"),
        ("application_name", "welcome-check"),
    ];
    c.send(&raw::startup_packet(196_608, &params)).await;
    let reported: std::collections::HashMap<String, String> = c
        .read_until(b'Z')
        .await
        .into_iter()
        .filter(|(tag, _)| *tag == b'S')
        .map(|(_, body)| {
            let mut parts = body
                .split(|b| *b == 0)
                .map(|p| String::from_utf8_lossy(p).into_owned());
            (parts.next().unwrap(), parts.next().unwrap())
        })
        .collect();
    assert_eq!(
        reported
            .get("default_transaction_read_only")
            .map(String::as_str),
        Some("on")
    );
    assert_eq!(
        reported.get("application_name").map(String::as_str),
        Some("welcome-check")
    );
    // What the server reports and no client sets is passed on as it is.
    assert!(reported.contains_key("is_superuser"), "{reported:?}");
    c.send(&raw::query("SHOW default_transaction_read_only"))
        .await;
    let reply = c.read_until(b'Z').await;
    let row = reply.iter().find(|(t, _)| *t == b'D').expect("a row");
    assert!(row.1.ends_with(b"on"), "{reply:?}");
    pgmux.stop().await;
}
