//! The startup phase: TLS and GSS requests refused with 'N', protocol versions, limits, bad input.

use crate::harness::raw::{self, error_code, tags, Raw};
use crate::harness::{shared_cluster, PgmuxConfig};

async fn trust_pgmux(general: &'static str) -> crate::harness::Pgmux {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "trust";
    cfg.general = general.into();
    cfg.database_extra = "user = \"app\"\npassword = \"app\"".into();
    cfg.start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_and_gssenc_requests_are_answered_n_then_startup_proceeds() {
    let pgmux = trust_pgmux("").await;
    let mut c = Raw::connect(pgmux.port).await;
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await; // GSSENCRequest
    assert_eq!(c.read_byte().await, b'N');
    c.send(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await; // SSLRequest
    assert_eq!(c.read_byte().await, b'N');
    c.send(&raw::startup_packet(
        196_608,
        &[("user", "app"), ("database", "app")],
    ))
    .await;
    let welcome = c.read_until(b'Z').await;
    let t = tags(&welcome);
    assert!(t.starts_with('R') && t.ends_with("KZ"), "{t}");
    assert!(t.contains('S'));
    c.send(&raw::query("SELECT 1")).await;
    assert_eq!(tags(&c.read_until(b'Z').await), "TDCZ");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_minor_version_is_negotiated_down() {
    let pgmux = trust_pgmux("").await;
    let mut c = Raw::connect(pgmux.port).await;
    let packet = raw::startup_packet(
        (3 << 16) | 2,
        &[("user", "app"), ("database", "app"), ("_pq_.future", "x")],
    );
    c.send(&packet).await;
    let welcome = c.read_until(b'Z').await;
    let (tag, body) = &welcome[0];
    assert_eq!(*tag, b'v');
    assert_eq!(&body[..8], &[0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&body[8..], b"_pq_.future\0");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_major_versions_and_garbage_get_protocol_violation() {
    let pgmux = trust_pgmux("").await;
    let mut c = Raw::connect(pgmux.port).await;
    c.send(&raw::startup_packet(2 << 16, &[("user", "app")]))
        .await;
    let (tag, body) = c.read().await.expect("an error");
    assert_eq!(tag, b'E');
    assert_eq!(error_code(&body), "08P01");
    assert!(c.read().await.is_none(), "connection closed");

    let mut c = Raw::connect(pgmux.port).await;
    c.send(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4]).await;
    let (tag, body) = c.read().await.expect("an error");
    assert_eq!((tag, error_code(&body).as_str()), (b'E', "08P01"));

    // A logged-in client sending a bad length is cut off; others carry on.
    let mut bad = Raw::login(pgmux.port, "app", "app").await;
    let mut good = Raw::login(pgmux.port, "app", "app").await;
    bad.send(&[b'Q', 0, 0, 0, 2]).await;
    let (tag, body) = bad.read().await.expect("an error");
    assert_eq!((tag, error_code(&body).as_str()), (b'E', "08P01"));
    good.send(&raw::query("SELECT 2")).await;
    assert_eq!(tags(&good.read_until(b'Z').await), "TDCZ");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_startup_parameters_are_refused_unless_ignored() {
    let pgmux = trust_pgmux("ignore_startup_parameters = [\"search_path\"]").await;
    let mut c = Raw::connect(pgmux.port).await;
    let params = [("user", "app"), ("database", "app"), ("geqo", "off")];
    c.send(&raw::startup_packet(196_608, &params)).await;
    let (tag, body) = c.read().await.expect("an error");
    assert_eq!((tag, error_code(&body).as_str()), (b'E', "08P01"));
    let mut c = Raw::connect(pgmux.port).await;
    let params = [
        ("user", "app"),
        ("database", "app"),
        ("search_path", "x"),
        ("extra_float_digits", "3"),
    ];
    c.send(&raw::startup_packet(196_608, &params)).await;
    assert!(tags(&c.read_until(b'Z').await).ends_with("KZ"));
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_with_53300_and_frees_on_disconnect() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "trust";
    cfg.database_extra = "user = \"app\"\npassword = \"app\"".into();
    let dir = crate::harness::TempDir::new("maxconn");
    let text = cfg
        .render(dir.path())
        .replace("max_client_conn = 2000", "max_client_conn = 2");
    let config = pgmux::config::Config::parse(&text, dir.path()).unwrap();
    let running = pgmux::Server::bind(config).await.unwrap();
    let port = running.local_addr.port();
    let a = Raw::login(port, "app", "app").await;
    let _b = Raw::login(port, "app", "app").await;
    let mut c = Raw::connect(port).await;
    c.send(&raw::startup_packet(
        196_608,
        &[("user", "app"), ("database", "app")],
    ))
    .await;
    let (tag, body) = c.read().await.expect("an error");
    assert_eq!((tag, error_code(&body).as_str()), (b'E', "53300"));
    drop(a);
    crate::harness::eventually(
        std::time::Duration::from_secs(5),
        "a free client slot",
        || async {
            let mut c = Raw::connect(port).await;
            c.send(&raw::startup_packet(
                196_608,
                &[("user", "app"), ("database", "app")],
            ))
            .await;
            let first = c.read().await?;
            (first.0 == b'R').then_some(())
        },
    )
    .await;
    running.shutdown().await;
}
