//! The relay under long and large inputs, as real drivers send them: pipelines of 100,000+
//! messages written while the replies are read (a relay that reads only one side at a time
//! deadlocks once the socket buffers fill), and single messages of tens to hundreds of MB that
//! must stream through rather than be held. Transaction and session mode, plain TCP and TLS on
//! both sides. Every reply is checked, in order; large values are checked by the server's own
//! length and md5 of what it received.

use crate::harness::certs::Certs;
use crate::harness::raw::{self, startup_packet};
use crate::harness::{shared_cluster, Cluster, ClusterInfo, Pgmux, PgmuxConfig};
use bytes::{Buf, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one pipeline may take before the test calls it a hang.
const PIPELINE_LIMIT: Duration = Duration::from_secs(240);

/// Which sockets use TLS.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wire {
    Plain,
    /// TLS from the client to pgmux and from pgmux to PostgreSQL.
    Tls,
}

/// pgmux with trust auth for clients, logging in to PostgreSQL as app.
struct Setup {
    pgmux: Pgmux,
    certs: Option<Certs>,
    _cluster: Option<Cluster>,
}

async fn setup(mode: &'static str, wire: Wire, pool_size: usize) -> Setup {
    match wire {
        Wire::Plain => Setup {
            pgmux: start(shared_cluster(), mode, pool_size, String::new()).await,
            certs: None,
            _cluster: None,
        },
        Wire::Tls => {
            let certs = Certs::new();
            let mut cluster = Cluster::start();
            let (cert, key) = certs.ca.issue("postgres");
            cluster.require_ssl(&cert, &key);
            let (cert, key) = certs.issue("pgmux", "pgmux");
            let general = format!(
                "client_tls_sslmode = \"require\"\nclient_tls_cert_file = \"{}\"\n\
                 client_tls_key_file = \"{}\"\nserver_tls_sslmode = \"verify-full\"\n\
                 server_tls_ca_file = \"{}\"\n",
                cert.display(),
                key.display(),
                certs.path("ca.pem").display()
            );
            let pgmux = start(&cluster, mode, pool_size, general).await;
            Setup {
                pgmux,
                certs: Some(certs),
                _cluster: Some(cluster),
            }
        }
    }
}

async fn start(
    cluster: &ClusterInfo,
    mode: &'static str,
    pool_size: usize,
    general: String,
) -> Pgmux {
    let mut cfg = PgmuxConfig::new(cluster);
    cfg.auth_type = "trust";
    cfg.pool_mode = mode;
    cfg.pool_size = pool_size;
    cfg.general = general;
    cfg.database_extra = "user = \"app\"\npassword = \"app\"".into();
    cfg.start().await
}

trait Wired: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Wired for T {}

impl Setup {
    /// A raw connection to pgmux, logged in as app (over TLS where the setup says so).
    async fn raw(&self) -> Box<dyn Wired> {
        let mut tcp = TcpStream::connect(("127.0.0.1", self.pgmux.port))
            .await
            .expect("connect to pgmux");
        tcp.set_nodelay(true).unwrap();
        let mut stream: Box<dyn Wired> = match &self.certs {
            None => Box::new(tcp),
            Some(certs) => {
                tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
                    .await
                    .unwrap();
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).await.unwrap();
                assert_eq!(answer[0], b'S', "pgmux accepts TLS");
                let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(certs)));
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                Box::new(connector.connect(name, tcp).await.expect("TLS to pgmux"))
            }
        };
        let startup = startup_packet(196_608, &[("user", "app"), ("database", "app")]);
        stream.write_all(&startup).await.unwrap();
        let mut replies = Replies::default();
        loop {
            let (tag, _) = replies.next(&mut stream).await.expect("login reply");
            assert_ne!(tag, b'E', "login refused");
            if tag == b'Z' {
                return stream;
            }
        }
    }

    /// A tokio-postgres client through pgmux (over TLS where the setup says so).
    async fn client(&self) -> tokio_postgres::Client {
        let url = format!(
            "host=localhost port={} user=app password=app dbname=app connect_timeout=10",
            self.pgmux.port
        );
        match &self.certs {
            None => self.pgmux.connect("app", "app").await,
            Some(certs) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(certs));
                let url = format!("{url} sslmode=require");
                let (client, conn) = tokio_postgres::connect(&url, tls).await.expect("connect");
                tokio::spawn(conn);
                client
            }
        }
    }
}

fn client_tls(certs: &Certs) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(certs.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Whole messages read off a stream.
#[derive(Default)]
struct Replies {
    buf: BytesMut,
}

impl Replies {
    async fn next<S: AsyncRead + Unpin + ?Sized>(
        &mut self,
        stream: &mut S,
    ) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let tag = self.buf[0];
                    let body = self.buf[5..total].to_vec();
                    self.buf.advance(total);
                    return Some((tag, body));
                }
            }
            let read =
                tokio::time::timeout(Duration::from_secs(30), stream.read_buf(&mut self.buf));
            let n = read
                .await
                .expect("no reply for 30 s: the relay is stuck")
                .expect("read");
            if n == 0 {
                return None;
            }
        }
    }
}

/// Writes `requests` on its own task while this one reads the replies, as pipelining drivers
/// do; each DataRow must be `expected_row(i)` for the i-th row, in order, and no error may
/// come. Returns the number of rows once `rounds` ReadyForQuery have arrived.
async fn pipeline(
    stream: Box<dyn Wired>,
    requests: Vec<u8>,
    rounds: usize,
    expected_row: impl Fn(usize) -> Vec<u8>,
) -> usize {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writing = tokio::spawn(async move {
        for chunk in requests.chunks(64 * 1024) {
            writer.write_all(chunk).await.expect("write the pipeline");
        }
        writer.flush().await.unwrap();
        writer
    });
    let reading = async {
        let mut replies = Replies::default();
        let (mut rows, mut ready) = (0, 0);
        while ready < rounds {
            let (tag, body) = replies.next(&mut reader).await.expect("EOF mid-pipeline");
            match tag {
                b'D' => {
                    assert!(body == expected_row(rows), "row {rows} is not its own");
                    rows += 1;
                }
                b'E' => panic!("error in the pipeline: {}", raw::error_code(&body)),
                b'Z' => ready += 1,
                _ => {}
            }
        }
        rows
    };
    let rows = tokio::time::timeout(PIPELINE_LIMIT, reading)
        .await
        .expect("the pipeline did not finish: relay deadlocked");
    writing.await.expect("writer task");
    rows
}

/// A DataRow of one text column.
fn text_row(value: &str) -> Vec<u8> {
    let mut row = vec![0, 1];
    row.extend_from_slice(&(value.len() as u32).to_be_bytes());
    row.extend_from_slice(value.as_bytes());
    row
}

/// 300,000 simple Queries of 200-byte results, each naming its own number.
async fn simple_pipeline(setup: &Setup) {
    const N: usize = 300_000;
    let mut requests = Vec::new();
    for i in 0..N {
        requests.extend(raw::query(&format!("SELECT '{i:07}' || repeat('x', 193)")));
    }
    let rows = pipeline(setup.raw().await, requests, N, |i| {
        text_row(&format!("{i:07}{}", "x".repeat(193)))
    })
    .await;
    assert_eq!(rows, N);
}

/// 100,000 Parse/Bind/Execute/Sync rounds of 1 KB results.
async fn extended_pipeline(setup: &Setup) {
    const N: usize = 100_000;
    let mut requests = Vec::new();
    for i in 0..N {
        requests.extend(raw::parse(
            "",
            &format!("SELECT '{i:07}' || repeat('y', 1017)"),
        ));
        requests.extend(raw::bind("", ""));
        requests.extend(raw::execute(""));
        requests.extend(raw::sync());
    }
    let rows = pipeline(setup.raw().await, requests, N, |i| {
        text_row(&format!("{i:07}{}", "y".repeat(1017)))
    })
    .await;
    assert_eq!(rows, N);
}

/// tokio-postgres with 300,000 queries of 1 KB results in flight at once.
async fn tokio_postgres_in_flight(setup: &Setup) {
    const N: i32 = 300_000;
    let client = setup.client().await;
    let statement = client
        .prepare("SELECT $1::int, repeat('z', 1000)")
        .await
        .unwrap();
    let queries = (0..N).map(|i| {
        let (client, statement) = (&client, &statement);
        async move { client.query_one(statement, &[&i]).await.unwrap() }
    });
    let rows = tokio::time::timeout(PIPELINE_LIMIT, futures_util::future::join_all(queries))
        .await
        .expect("300,000 queries in flight did not finish: relay deadlocked");
    assert_eq!(rows.len(), N as usize);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.get::<_, i32>(0), i as i32, "answer {i} is not its own");
        assert_eq!(row.get::<_, &str>(1).len(), 1000);
    }
}

async fn long_pipelines(mode: &'static str, wire: Wire) {
    let setup = setup(mode, wire, 2).await;
    simple_pipeline(&setup).await;
    extended_pipeline(&setup).await;
    tokio_postgres_in_flight(&setup).await;
    setup.pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_pipelines_in_transaction_mode() {
    long_pipelines("transaction", Wire::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_pipelines_in_session_mode() {
    long_pipelines("session", Wire::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_pipelines_over_tls_both_sides() {
    long_pipelines("transaction", Wire::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_pipelines_over_tls_in_session_mode() {
    long_pipelines("session", Wire::Tls).await;
}

/// md5 of `bytes`, as PostgreSQL's md5() prints it.
fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A value of `len` bytes that is not all one byte, so that a lost or repeated piece shows.
fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b'a' + (i % 23) as u8 + (i / 4099 % 3) as u8)
        .collect()
}

/// Another client on the same pool gets its own answers while a large message streams.
async fn served_meanwhile(setup: &Setup, stop: &tokio::sync::watch::Receiver<bool>) -> usize {
    let client = setup.client().await;
    let mut rounds = 0;
    while !*stop.borrow() {
        let row = client
            .query_one("SELECT $1::int + 1", &[&rounds])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), rounds + 1);
        rounds += 1;
    }
    rounds as usize
}

async fn large_messages(mode: &'static str, wire: Wire) {
    // One server each for the large messages and one for the client served meanwhile.
    let setup = setup(mode, wire, 2).await;
    let (done, stop) = tokio::sync::watch::channel(false);
    let other = served_meanwhile(&setup, &stop);
    let large = async {
        let client = setup.client().await;
        // A 200 MB Query: PostgreSQL's own length and md5 of the literal it received.
        let text = String::from_utf8(payload(200 << 20)).unwrap();
        let sql = format!("SELECT length(t), md5(t) FROM (SELECT '{text}'::text AS t) v");
        let got = client.simple_query(&sql).await.expect("200 MB Query");
        let row = got
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .expect("a row");
        assert_eq!(row.get(0), Some((200 << 20).to_string().as_str()));
        assert_eq!(row.get(1), Some(md5_hex(text.as_bytes()).as_str()));
        drop((sql, text));

        // A 100 MB bytea Bind parameter of a named statement.
        let value = payload(100 << 20);
        let row = client
            .query_one("SELECT length($1::bytea), md5($1::bytea)", &[&value])
            .await
            .expect("100 MB Bind");
        assert_eq!(row.get::<_, i32>(0), 100 << 20);
        assert_eq!(row.get::<_, &str>(1), md5_hex(&value));
        drop(value);

        // A 60 MB Parse of a named statement, and its Binds, in one transaction: pgmux does not
        // keep a text that large, so only the server it was prepared on has it.
        let text = String::from_utf8(payload(60 << 20)).unwrap();
        let mut client = client;
        let transaction = client.transaction().await.unwrap();
        let sql = format!("SELECT length(t), md5(t), $1::int FROM (SELECT '{text}'::text t) v");
        let statement = transaction.prepare(&sql).await.expect("60 MB Parse");
        for k in 0..2 {
            let row = transaction
                .query_one(&statement, &[&k])
                .await
                .expect("Bind of it");
            assert_eq!(row.get::<_, i32>(0), 60 << 20);
            assert_eq!(row.get::<_, &str>(1), md5_hex(text.as_bytes()));
            assert_eq!(row.get::<_, i32>(2), k);
        }
        transaction.commit().await.unwrap();
        done.send(true).unwrap();
    };
    let (served, ()) = tokio::join!(other, large);
    assert!(served > 0, "the other client was served meanwhile");
    setup.pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_in_transaction_mode() {
    large_messages("transaction", Wire::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_in_session_mode_over_tls() {
    large_messages("session", Wire::Tls).await;
}
