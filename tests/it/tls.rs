//! TLS on both sides, with certificates made by the test: psql, pgbench and tokio-postgres over
//! TLS to pgmux (require and verify-full, channel binding, certificate logins, direct TLS),
//! pgmux over TLS to a PostgreSQL that accepts nothing else, bad handshakes dropped, and
//! certificates replaced by a reload.

use crate::harness::certs::{rustls_client, Certs};
use crate::harness::pg::tool;
use crate::harness::raw::{self, Raw};
use crate::harness::{run_tool, shared_cluster, Cluster, Pgmux, PgmuxConfig};
use rustls::pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// pgmux in front of the shared cluster, with TLS for clients in `mode`.
async fn tls_pgmux(certs: &Certs, mode: &str, extra: &str) -> Pgmux {
    tls_pgmux_with(certs, mode, extra, |_| {}).await
}

async fn tls_pgmux_with(
    certs: &Certs,
    mode: &str,
    extra: &str,
    adjust: impl FnOnce(&mut PgmuxConfig),
) -> Pgmux {
    let (cert, key) = certs.issue("pgmux", "pgmux");
    let mut cfg = PgmuxConfig::new(shared_cluster());
    adjust(&mut cfg);
    cfg.general = format!(
        "client_tls_sslmode = \"{mode}\"\nclient_tls_cert_file = \"{}\"\n\
         client_tls_key_file = \"{}\"\nclient_tls_ca_file = \"{}\"\n{extra}",
        cert.display(),
        key.display(),
        certs.path("ca.pem").display()
    );
    cfg.start().await
}

async fn psql(conninfo: &str, sql: &str) -> (bool, String) {
    run_tool(
        &tool("psql"),
        &["-X", "-At", "-d", conninfo, "-c", sql],
        "app",
        Duration::from_secs(30),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_over_tls_require_and_verify_full_and_plaintext_refused() {
    let certs = Certs::new();
    let pgmux = tls_pgmux(&certs, "require", "").await;
    let base = format!("host=127.0.0.1 port={} user=app dbname=app", pgmux.port);
    let ca = certs.path("ca.pem");
    for mode in [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-full sslrootcert={}", ca.display()),
    ] {
        let (ok, out) = psql(&format!("{base} {mode}"), "SELECT 'through ' || 'tls'").await;
        assert!(ok && out.trim() == "through tls", "{mode}: {out}");
    }
    // The name checked by verify-full must be in pgmux's certificate: localhost is, too.
    let (ok, out) = psql(
        &format!(
            "host=localhost port={} user=app dbname=app sslmode=verify-full sslrootcert={}",
            pgmux.port,
            ca.display()
        ),
        "SELECT 1",
    )
    .await;
    assert!(ok, "{out}");
    // A CA that did not sign pgmux's certificate fails verify-full.
    let (ok, out) = psql(
        &format!(
            "{base} sslmode=verify-full sslrootcert={}",
            certs.path("other-ca.pem").display()
        ),
        "SELECT 1",
    )
    .await;
    assert!(!ok && out.contains("certificate verify failed"), "{out}");
    // Plaintext is refused with a clear error.
    let (ok, out) = psql(&format!("{base} sslmode=disable"), "SELECT 1").await;
    assert!(!ok && out.contains("TLS required"), "{out}");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_with_libpq_and_tokio_postgres() {
    let certs = Certs::new();
    let pgmux = tls_pgmux(&certs, "prefer", "").await;
    let conninfo = format!(
        "host=127.0.0.1 port={} user=app dbname=app sslmode=require channel_binding=require",
        pgmux.port
    );
    let (ok, out) = psql(&conninfo, "SELECT 'bound'").await;
    assert!(ok && out.trim() == "bound", "{out}");
    // Without TLS there is nothing to bind to, and libpq refuses to go on.
    let plain = format!(
        "host=127.0.0.1 port={} user=app dbname=app sslmode=disable channel_binding=require",
        pgmux.port
    );
    let (ok, out) = psql(&plain, "SELECT 1").await;
    assert!(!ok && out.contains("channel binding"), "{out}");
    // prefer still serves plaintext clients.
    let (ok, _) = psql(&plain.replace("channel_binding=require", ""), "SELECT 1").await;
    assert!(ok);
    // tokio-postgres with a rustls connector. (tokio-postgres-rustls 0.13 cannot compute
    // channel-binding data, so it logs in with plain SCRAM-SHA-256 over TLS.)
    let tls =
        tokio_postgres_rustls::MakeRustlsConnect::new(rustls_client(&certs.path("ca.pem"), false));
    let url = format!(
        "host=localhost port={} user=app password=app dbname=app sslmode=require",
        pgmux.port
    );
    let (client, conn) = tokio_postgres::connect(&url, tls)
        .await
        .expect("tokio-postgres over TLS");
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    let client = Arc::new(client);
    for i in 0..10i32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let v: i32 = client
                .query_one("SELECT $1::int * 3", &[&i])
                .await
                .unwrap()
                .get(0);
            assert_eq!(v, i * 3);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_logins_by_common_name() {
    let certs = Certs::new();
    let pgmux = tls_pgmux_with(&certs, "verify-full", "", |cfg| cfg.auth_type = "cert").await;
    let (app_cert, app_key) = certs.issue("client-app", "app");
    let conninfo = |user: &str, cert: &Path, key: &Path| {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=app sslmode=verify-full sslrootcert={} \
             sslcert={} sslkey={}",
            pgmux.port,
            certs.path("ca.pem").display(),
            cert.display(),
            key.display()
        )
    };
    let (ok, out) = psql(&conninfo("app", &app_cert, &app_key), "SELECT current_user").await;
    assert!(ok && out.trim() == "app", "{out}");
    // The certificate names app, not md5user.
    let (ok, out) = psql(&conninfo("md5user", &app_cert, &app_key), "SELECT 1").await;
    assert!(
        !ok && out.contains("certificate authentication failed"),
        "{out}"
    );
    // No client certificate: the handshake itself fails.
    let (ok, out) = psql(
        &format!(
            "host=127.0.0.1 port={} user=app dbname=app sslmode=require",
            pgmux.port
        ),
        "SELECT 1",
    )
    .await;
    assert!(!ok, "{out}");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn_as_postgres_17_clients_do() {
    let certs = Certs::new();
    let mut pgmux_cfg = PgmuxConfig::new(shared_cluster());
    let (cert, key) = certs.issue("pgmux", "pgmux");
    pgmux_cfg.auth_type = "trust";
    pgmux_cfg.database_extra = "user = \"app\"\npassword = \"app\"".into();
    pgmux_cfg.general = format!(
        "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"{}\"\nclient_tls_key_file = \"{}\"",
        cert.display(),
        key.display()
    );
    let pgmux = pgmux_cfg.start().await;
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(rustls_client(&certs.path("ca.pem"), true)));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", pgmux.port))
        .await
        .unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("direct TLS handshake");
    tls.write_all(&raw::startup_packet(
        196_608,
        &[("user", "app"), ("database", "app")],
    ))
    .await
    .unwrap();
    tls.write_all(&raw::query("SELECT 'direct'")).await.unwrap();
    tls.flush().await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains("direct") {
        assert!(Instant::now() < deadline, "no answer: {got:?}");
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    // Without ALPN, direct TLS is refused, as PostgreSQL refuses it.
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(rustls_client(&certs.path("ca.pem"), false)));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", pgmux.port))
        .await
        .unwrap();
    if let Ok(mut tls) = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        let mut buf = [0u8; 16];
        let _ = tls
            .write_all(&raw::startup_packet(
                196_608,
                &[("user", "app"), ("database", "app")],
            ))
            .await;
        let _ = tls.flush().await;
        let read = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_a_stalled_handshake_is_dropped_and_others_carry_on() {
    let certs = Certs::new();
    let pgmux = tls_pgmux(&certs, "require", "client_login_timeout = 1").await;
    let ssl_request = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    // Garbage where the ClientHello belongs.
    let mut garbage = Raw::connect(pgmux.port).await;
    garbage.send(&ssl_request).await;
    assert_eq!(garbage.read_byte().await, b'S');
    garbage
        .send(b"this is not a TLS ClientHello at all\r\n")
        .await;
    // A handshake that never comes.
    let mut stalled = Raw::connect(pgmux.port).await;
    stalled.send(&ssl_request).await;
    assert_eq!(stalled.read_byte().await, b'S');
    // Data sent with the SSLRequest, before the handshake, is refused (CVE-2021-23214).
    let mut eager = Raw::connect(pgmux.port).await;
    let mut both = ssl_request.to_vec();
    both.extend(raw::query("SELECT 1"));
    eager.send(&both).await;
    // Meanwhile a real client works.
    let (ok, out) = psql(
        &format!(
            "host=127.0.0.1 port={} user=app dbname=app sslmode=require",
            pgmux.port
        ),
        "SELECT 'fine'",
    )
    .await;
    assert!(ok && out.trim() == "fine", "{out}");
    let started = Instant::now();
    assert!(garbage.read().await.is_none(), "garbage: closed");
    assert!(
        stalled.read().await.is_none(),
        "stalled: closed by client_login_timeout"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // Refused at once, in plaintext, before any 'S': nothing of the handshake is attempted.
    let refused = eager.read().await;
    assert!(
        refused
            .as_ref()
            .is_some_and(|(tag, body)| *tag == b'E' && raw::error_code(body) == "08P01"),
        "{refused:?}"
    );
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_new_certificates_without_dropping_anyone() {
    let certs = Certs::new();
    let pgmux = tls_pgmux(&certs, "require", "").await;
    let config = || rustls_client(&certs.path("ca.pem"), false);
    let url = format!(
        "host=localhost port={} user=app password=app dbname=app sslmode=require",
        pgmux.port
    );
    let (old, conn) = tokio_postgres::connect(
        &url,
        tokio_postgres_rustls::MakeRustlsConnect::new(config()),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let presented = |port: u16| async move {
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config()));
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .unwrap();
        let mut s = [0u8; 1];
        tcp.read_exact(&mut s).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        pgmux::tls::common_name(&cert).unwrap()
    };
    assert_eq!(presented(pgmux.port).await, "pgmux");
    // New files in place, then RELOAD.
    let (cert, key) = certs.ca.issue("pgmux renewed");
    certs.write("pgmux.pem", &cert);
    certs.write("pgmux.key", &key);
    pgmux.shared().reload_from_file().unwrap();
    assert_eq!(presented(pgmux.port).await, "pgmux renewed");
    let v: i32 = old.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7, "the connection made before the reload carries on");
    // A reload with a broken key file is refused whole; the certificates in force stay.
    certs.write("pgmux.key", "not a key");
    assert!(pgmux.shared().reload_from_file().is_err());
    assert_eq!(presented(pgmux.port).await, "pgmux renewed");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_over_tls_without_failures() {
    let certs = Certs::new();
    let pg = shared_cluster();
    crate::harness::pgbench_init(pg.port).await;
    let pgmux = tls_pgmux(&certs, "require", "").await;
    let args = ["-n", "-c", "8", "-j", "2", "-T", "3"];
    let (ok, text) =
        crate::harness::pgbench_as_app(pgmux.port, &args, &[("PGSSLMODE", "require")]).await;
    assert!(ok, "{text}");
    assert!(text.contains("number of failed transactions: 0 "), "{text}");
    pgmux.stop().await;
}

/// A PostgreSQL of the test's own that accepts TCP logins only over TLS.
fn ssl_only_cluster(certs: &Certs) -> Cluster {
    let mut cluster = Cluster::start();
    let (cert, key) = certs.ca.issue("postgres");
    cluster.require_ssl(&cert, &key);
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_postgres_with_verify_full_and_a_clear_error_for_the_wrong_ca() {
    let certs = Certs::new();
    let cluster = ssl_only_cluster(&certs);
    let start = |ca: &'static str, mode: &'static str| {
        let mut cfg = PgmuxConfig::new(&cluster);
        cfg.general = format!(
            "server_tls_sslmode = \"{mode}\"\nserver_tls_ca_file = \"{}\"",
            certs.path(ca).display()
        );
        cfg.start()
    };
    let pgmux = start("ca.pem", "verify-full").await;
    let client = pgmux.connect("app", "app").await;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "pgmux's server connection uses TLS");
    drop(client);
    pgmux.stop().await;

    let pgmux = start("other-ca.pem", "verify-full").await;
    let err = pgmux
        .try_connect("app", "app", "app")
        .await
        .expect_err("no login through an unverifiable server");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "08006");
    assert!(db.message().contains("TLS"), "{}", db.message());
    pgmux.stop().await;

    // Without TLS towards it, this PostgreSQL refuses pgmux (hostssl only): disable fails,
    // and require works without checking the certificate.
    let pgmux = start("other-ca.pem", "require").await;
    let client = pgmux.connect("app", "app").await;
    client.simple_query("SELECT 1").await.unwrap();
    pgmux.stop().await;
    let pgmux = start("ca.pem", "disable").await;
    assert!(pgmux.try_connect("app", "app", "app").await.is_err());
    pgmux.stop().await;
}
