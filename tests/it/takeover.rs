//! Online upgrade: `pgmux --takeover` takes the running process's sockets and clients while
//! they work. Every client keeps its connection, its answers, its prepared statements, its
//! settings and its cancel key; the old process exits 0. A takeover that fails at any step
//! leaves the old process serving every client it had.

use crate::harness::process::{spawn, Process};
use crate::harness::{eventually, own_role, shared_cluster, sqlstate, PgmuxConfig};
use pgmux::takeover::channel::Channel;
use pgmux::takeover::wire::{ListenerKind, Message, FORMAT, MAX_MESSAGE};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// Transactions each client completes once the new process serves it alone.
const ROUNDS_AFTER: usize = 15;

fn socket_path(dir: &Path, port: u16) -> std::path::PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

fn unix_url(process: &Process) -> String {
    format!(
        "host={} port={} user=mover password=mover dbname=app",
        process.dir().display(),
        process.port
    )
}

/// A new client of `process` is served (within 5 s: a process that stopped accepting fails).
async fn accepts(process: &Process) {
    let fresh = tokio::time::timeout(Duration::from_secs(5), connect(&process.url("mover")))
        .await
        .expect("the process accepts new clients");
    fresh.batch_execute("SELECT 1").await.unwrap();
}

async fn start(pg: &crate::harness::ClusterInfo) -> Process {
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "mover").await;
    cfg.pool_size = 10;
    cfg.general = "admin_users = [\"mover\"]".into();
    Process::start(cfg).await
}

/// A process started by the test, ended when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What kind of work a client does in a loop, each checking it gets its own answers.
#[derive(Clone, Copy, Debug)]
enum Work {
    /// BEGIN, a query with its own values, COMMIT.
    Transactions,
    /// One statement prepared before the takeover, executed after it too.
    Prepared,
    /// Transactions that sleep inside, so a takeover meets them mid-transaction.
    Long,
    /// As Transactions, over the Unix socket.
    Unix,
}

/// Returns the transactions done, and the client, still connected.
async fn work(client: Client, id: i32, kind: Work, moved: Arc<AtomicBool>) -> (usize, Client) {
    let prepared = client
        .prepare("SELECT $1::int * 2, $2::text")
        .await
        .unwrap();
    let mut after = 0;
    let mut n = 0i32;
    while after < ROUNDS_AFTER {
        n += 1;
        let tag = format!("client {id} round {n}");
        match kind {
            Work::Transactions | Work::Unix => {
                client.batch_execute("BEGIN").await.unwrap();
                let row = client
                    .query_one("SELECT $1::int + 0, $2::text", &[&id, &tag])
                    .await
                    .unwrap_or_else(|e| panic!("{kind:?} {tag}: {e}"));
                assert_eq!(
                    (row.get::<_, i32>(0), row.get::<_, String>(1)),
                    (id, tag.clone())
                );
                client.batch_execute("COMMIT").await.unwrap();
            }
            Work::Prepared => {
                let row = client
                    .query_one(&prepared, &[&n, &tag])
                    .await
                    .unwrap_or_else(|e| panic!("{kind:?} {tag}: {e}"));
                assert_eq!(
                    (row.get::<_, i32>(0), row.get::<_, String>(1)),
                    (2 * n, tag.clone())
                );
            }
            Work::Long => {
                client.batch_execute("BEGIN").await.unwrap();
                client
                    .execute("INSERT INTO moved_rows VALUES ($1, $2)", &[&id, &n])
                    .await
                    .unwrap_or_else(|e| panic!("{kind:?} {tag}: {e}"));
                client.batch_execute("SELECT pg_sleep(0.3)").await.unwrap();
                client.batch_execute("COMMIT").await.unwrap();
            }
        }
        if moved.load(Ordering::Acquire) {
            after += 1;
        }
    }
    if let Work::Long = kind {
        let row = client
            .query_one(
                "SELECT count(*), max(n) FROM moved_rows WHERE who = $1",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(
            row.get::<_, i64>(0),
            n as i64,
            "client {id}: every row committed once"
        );
        assert_eq!(row.get::<_, Option<i32>>(1), Some(n));
    }
    (n as usize, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_working_clients_move_to_a_new_process_and_the_old_one_exits() {
    let pg = shared_cluster();
    let admin = pg.admin().await;
    admin
        .batch_execute(
            "DROP TABLE IF EXISTS moved_rows; CREATE TABLE moved_rows (who int, n int); \
             GRANT ALL ON moved_rows TO PUBLIC;",
        )
        .await
        .unwrap();
    let mut old = start(pg).await;
    let moved = Arc::new(AtomicBool::new(false));
    let kinds = [
        (Work::Transactions, 20),
        (Work::Prepared, 10),
        (Work::Long, 5),
        (Work::Unix, 5),
    ];
    let mut workers = Vec::new();
    let mut id = 0;
    for (kind, count) in kinds {
        for _ in 0..count {
            id += 1;
            let url = match kind {
                Work::Unix => unix_url(&old),
                _ => old.url("mover"),
            };
            let client = connect(&url).await;
            workers.push(tokio::spawn(work(client, id, kind, moved.clone())));
        }
    }
    // Idle clients with settings of their own, and one that will cancel its own query with
    // the key it was given by the old process.
    let mut idle = Vec::new();
    for i in 0..10 {
        let client = connect(&old.url("mover")).await;
        client
            .batch_execute(&format!("SET work_mem = '{}MB'", 64 + i))
            .await
            .unwrap();
        idle.push(client);
    }
    let canceller = connect(&old.url("mover")).await;
    let token = canceller.cancel_token();
    // Every worker is in its loop before the takeover starts.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let log = old.dir().join("new.log");
    let mut new = Child(spawn(
        &old.config_path(),
        &["--takeover", "--takeover-timeout", "20"],
        &log,
    ));
    let code = old.exit_code(Duration::from_secs(30)).await;
    let new_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        code,
        Some(0),
        "old log:\n{}\nnew log:\n{new_log}",
        old.log()
    );
    assert!(
        new.0.try_wait().unwrap().is_none(),
        "the new process runs on:\n{new_log}"
    );
    assert!(new_log.contains("takeover complete"), "{new_log}");
    eprintln!("takeover took {:?}", started.elapsed());
    moved.store(true, Ordering::Release);

    // The new process listens where the old one did, on TCP and the Unix socket.
    let fresh = connect(&old.url("mover")).await;
    assert_eq!(
        fresh
            .query_one("SELECT 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    assert!(socket_path(old.dir(), old.port).exists());
    let fresh_unix = connect(&unix_url(&old)).await;
    fresh_unix.batch_execute("SELECT 1").await.unwrap();

    let mut done = 0;
    let mut still_connected = Vec::new();
    for w in workers {
        let (n, client) = w.await.expect("every client finishes every transaction");
        done += n;
        still_connected.push(client);
    }
    eprintln!("{done} transactions across the takeover");
    for (i, client) in idle.iter().enumerate() {
        let row = client.query_one("SHOW work_mem", &[]).await.unwrap();
        assert_eq!(
            row.get::<_, String>(0),
            format!("{}MB", 64 + i),
            "idle client {i}"
        );
    }

    // A cancel with the key from before the upgrade stops the query it was sent for.
    let sleeper = tokio::spawn(async move {
        let result = canceller.batch_execute("SELECT pg_sleep(20)").await;
        (result, canceller)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    token.cancel_query(NoTls).await.unwrap();
    let (result, canceller) = tokio::time::timeout(Duration::from_secs(2), sleeper)
        .await
        .expect("the cancel lands within 2 s")
        .unwrap();
    let err = result.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");
    canceller.batch_execute("SELECT 1").await.unwrap();
    eprintln!("cancel landed in {:?}", sent.elapsed());

    // SHOW CLIENTS on the new process lists every client that moved.
    let console = connect(&format!(
        "host=127.0.0.1 port={} user=mover password=mover dbname=pgbouncer",
        old.port
    ))
    .await;
    let rows = console.simple_query("SHOW CLIENTS").await.unwrap();
    let app_clients = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .filter(|r| r.get("database") == Some("app") && r.get("user") == Some("mover"))
        .count();
    // 40 workers, 10 idle, the canceller, and the two fresh clients.
    assert_eq!(app_clients, 53, "SHOW CLIENTS lists every client");
    drop(still_connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_with_a_broken_config_leaves_the_old_process_serving() {
    let pg = shared_cluster();
    let old = start(pg).await;
    let client = connect(&old.url("mover")).await;
    client.batch_execute("SET work_mem = '9MB'").await.unwrap();
    let broken = old.dir().join("broken.toml");
    std::fs::write(&broken, "[pgmux]\nlisten_port = \"six\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmux"))
        .args(["--takeover", "--config"])
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_port"));
    let row = client.query_one("SHOW work_mem", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "9MB");
    accepts(&old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_fails_after_taking_the_sockets_leaves_the_old_one_serving() {
    let pg = shared_cluster();
    let old = start(pg).await;
    let client = connect(&old.url("mover")).await;
    // The new config is valid, but its metrics address is taken: it fails once it holds
    // copies of the old process's sockets.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = std::fs::read_to_string(old.config_path())
        .unwrap()
        .replacen(
            "[pgmux]\n",
            &format!(
                "[pgmux]\nmetrics_addr = \"{}\"\n",
                taken.local_addr().unwrap()
            ),
            1,
        );
    let config = old.dir().join("new.toml");
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgmux"))
        .args(["-R", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use"), "{err}");
    client.batch_execute("SELECT 1").await.unwrap();
    accepts(&old).await;
    // The new process left the old one's socket file where it was.
    assert!(socket_path(old.dir(), old.port).exists());
    connect(&unix_url(&old))
        .await
        .batch_execute("SELECT 1")
        .await
        .unwrap();
    assert!(old.log().contains("takeover refused"), "{}", old.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_whose_takeover_is_abandoned_stops_accepting_and_exits() {
    let pg = shared_cluster();
    let FakeOld {
        dir: _dir,
        tcp,
        port,
        socket_file,
        unix: _unix,
        mut new,
        log,
        mut channel,
    } = fake_old(pg, "abandoned").await;
    let mut first = commit_one(&mut channel, 1).await;
    assert_eq!(answer(&mut first, "SELECT 40 + 2").await, "42");
    // Client 2 is acknowledged, and then the takeover is given up before its commit.
    let (mut second, second_socket) = client_pair().await;
    let second_moved = Message::Client {
        id: 2,
        client: Box::new(moved_client(2)),
    };
    channel
        .send(&second_moved, &[second_socket.as_fd()])
        .await
        .unwrap();
    assert!(matches!(
        channel.recv().await.unwrap().0,
        Message::Ack {
            id: 2,
            refused: None
        }
    ));
    let abandon = Message::Refused {
        reason: "test abandons".into(),
    };
    channel.send(&abandon, &[]).await.unwrap();
    let abandoned = eventually(
        Duration::from_secs(10),
        "the new process gives up",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("takeover abandoned").then_some(text)
        },
    )
    .await;
    // While it lives: new clients come to the old process (the test) again; the committed
    // client is still served; the one never committed was never read from (its query waits
    // here for the old process).
    let _queued = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    tcp.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(tcp.try_clone().unwrap()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), listener.accept())
        .await
        .unwrap_or_else(|_| panic!("the new process still accepts:\n{abandoned}"))
        .unwrap();
    assert!(
        new.0.try_wait().unwrap().is_none(),
        "it serves its client first"
    );
    assert_eq!(
        answer(&mut first, "SELECT 'still ' || 'here'").await,
        "still here"
    );
    second.send(&crate::harness::raw::query("SELECT 1")).await;
    let mut server_side = crate::harness::raw::Raw::over(second_socket.into_tokio());
    let (tag, _) = server_side
        .read()
        .await
        .expect("the query reached the old process");
    assert_eq!(tag, b'Q');
    // Once its client leaves, it exits 0 and leaves the socket file to the old process.
    first.send(&crate::harness::raw::msg(b'X', b"")).await;
    drop(first);
    let started = Instant::now();
    let code = loop {
        if let Some(status) = new.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new process exits"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, Some(0), "{text}");
    assert!(socket_file.exists(), "the old process's socket file stays");
}

/// The test in the old process's place: its own TCP socket and Unix socket file, handed to
/// a real new process up to the point it accepts on them.
struct FakeOld {
    dir: crate::harness::TempDir,
    tcp: std::net::TcpListener,
    port: u16,
    socket_file: std::path::PathBuf,
    unix: tokio::net::UnixListener,
    new: Child,
    log: std::path::PathBuf,
    channel: Channel,
}

async fn fake_old(pg: &crate::harness::ClusterInfo, label: &str) -> FakeOld {
    use std::os::fd::AsFd;
    use tokio::io::AsyncReadExt;
    let dir = crate::harness::TempDir::new(label);
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let socket_file = socket_path(dir.path(), port);
    let unix = tokio::net::UnixListener::bind(&socket_file).unwrap();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "mover").await;
    cfg.general = format!("unix_socket_dir = \"{}\"", dir.path().display());
    let text = cfg
        .render(dir.path())
        .replace("listen_port = 0", &format!("listen_port = {port}"));
    let config = dir.path().join("pgmux.toml");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("new.log");
    let new = Child(spawn(&config, &["--takeover"], &log));
    let (mut stream, _) = tokio::time::timeout(Duration::from_secs(10), unix.accept())
        .await
        .expect("the new process asks")
        .unwrap();
    let mut request = [0u8; 8];
    stream.read_exact(&mut request).await.unwrap();
    let mut channel = Channel::new(stream, Default::default(), MAX_MESSAGE);
    let hello = channel.recv().await.unwrap().0;
    assert!(matches!(hello, Message::Hello { .. }));
    let welcome = Message::Welcome {
        format: FORMAT,
        version: "old".into(),
        pid: std::process::id(),
    };
    channel.send(&welcome, &[]).await.unwrap();
    let kinds = vec![
        ListenerKind::Tcp,
        ListenerKind::Unix {
            path: socket_file.to_string_lossy().into(),
            owned: true,
        },
    ];
    let fds = [tcp.as_fd(), unix.as_fd()];
    let listeners = Message::Listeners(kinds);
    channel.send(&listeners, &fds).await.unwrap();
    let listening = channel.recv().await.unwrap().0;
    assert!(matches!(listening, Message::Listening));
    FakeOld {
        dir,
        tcp,
        port,
        socket_file,
        unix,
        new,
        log,
        channel,
    }
}

/// Sends client `id` to the new process, which acknowledges it, and commits it: the new
/// process serves it from then on. Returns the client's end.
async fn commit_one(channel: &mut Channel, id: u32) -> crate::harness::raw::Raw {
    let (client, socket) = client_pair().await;
    let moved = Message::Client {
        id: u64::from(id),
        client: Box::new(moved_client(id)),
    };
    channel.send(&moved, &[socket.as_fd()]).await.unwrap();
    let ack = channel.recv().await.unwrap().0;
    assert!(matches!(ack, Message::Ack { refused: None, .. }), "{ack:?}");
    channel
        .send(&Message::Commit { id: u64::from(id) }, &[])
        .await
        .unwrap();
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_whose_old_one_dies_mid_takeover_serves_on_alone() {
    let pg = shared_cluster();
    let fake = fake_old(pg, "orphaned").await;
    let FakeOld {
        dir: _dir,
        tcp: _tcp,
        port,
        socket_file,
        unix,
        mut new,
        log,
        mut channel,
    } = fake;
    let mut first = commit_one(&mut channel, 1).await;
    // The old process dies: its end of the takeover closes without a word.
    drop(channel);
    drop(unix);
    eventually(
        Duration::from_secs(10),
        "the new process serves alone",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("this one serves on alone").then_some(())
        },
    )
    .await;
    assert_eq!(
        answer(&mut first, "SELECT 'still ' || 'served'").await,
        "still served"
    );
    // It accepts new clients on the sockets it took, and its socket file is its own now.
    let url = format!("host=127.0.0.1 port={port} user=mover password=mover dbname=app");
    let fresh = tokio::time::timeout(Duration::from_secs(5), connect(&url))
        .await
        .expect("the new process accepts");
    fresh.batch_execute("SELECT 1").await.unwrap();
    drop(fresh);
    first.send(&crate::harness::raw::msg(b'X', b"")).await;
    // SAFETY: kill with the pid of a child we started.
    unsafe { libc::kill(new.0.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let code = loop {
        if let Some(status) = new.0.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new process exits"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(code, Some(0));
    assert!(
        !socket_file.exists(),
        "it removed the socket file it took over"
    );
}

/// A connected TCP pair on 127.0.0.1: the client's end, and the end a pooler serves.
async fn client_pair() -> (crate::harness::raw::Raw, ServerSide) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (
        crate::harness::raw::Raw::over(client),
        ServerSide(server.into_std().unwrap()),
    )
}

/// The pooler's end of a client connection, as a process hands it over.
struct ServerSide(std::net::TcpStream);

impl ServerSide {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.0.as_fd()
    }

    fn into_tokio(self) -> tokio::net::TcpStream {
        tokio::net::TcpStream::from_std(self.0).unwrap()
    }
}

/// A logged-in client of database app as the old process would describe it.
fn moved_client(n: u32) -> pgmux::takeover::MovedClient {
    pgmux::takeover::MovedClient {
        user: "mover".into(),
        database: "app".into(),
        cancel_key: (n, n),
        ..Default::default()
    }
}

/// The one value `sql` returns, over the raw protocol.
async fn answer(client: &mut crate::harness::raw::Raw, sql: &str) -> String {
    client.send(&crate::harness::raw::query(sql)).await;
    let messages = client.read_until(b'Z').await;
    let row = messages
        .iter()
        .find(|(tag, _)| *tag == b'D')
        .unwrap_or_else(|| panic!("no row for {sql}: {messages:?}"));
    // One column: its count, its length, its text.
    String::from_utf8_lossy(&row.1[6..]).into_owned()
}

/// Speaks the takeover protocol by hand as a new process would, up to `Hello`.
async fn ask(process: &Process, format: u32) -> Channel {
    use tokio::io::AsyncWriteExt;
    let path = socket_path(process.dir(), process.port);
    let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
    let mut packet = 8u32.to_be_bytes().to_vec();
    packet.extend_from_slice(&pgmux::protocol::startup::TAKEOVER_REQUEST.to_be_bytes());
    stream.write_all(&packet).await.unwrap();
    let mut channel = Channel::new(stream, Default::default(), MAX_MESSAGE);
    let hello = Message::Hello {
        format,
        version: "test".into(),
        deadline_ms: 10_000,
    };
    channel.send(&hello, &[]).await.unwrap();
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_of_another_format_is_refused_and_nothing_changes() {
    let pg = shared_cluster();
    let old = start(pg).await;
    let client = connect(&old.url("mover")).await;
    let mut channel = ask(&old, FORMAT + 1).await;
    match channel.recv().await.unwrap().0 {
        Message::Refused { reason } => assert!(reason.contains("format"), "{reason}"),
        other => panic!("expected Refused, got {other:?}"),
    }
    client.batch_execute("SELECT 1").await.unwrap();
    accepts(&old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_dies_half_way_leaves_every_client_with_the_old_one() {
    let pg = shared_cluster();
    let old = start(pg).await;
    let client = connect(&old.url("mover")).await;
    client.batch_execute("SET work_mem = '11MB'").await.unwrap();
    let mut channel = ask(&old, FORMAT).await;
    assert!(matches!(
        channel.recv().await.unwrap().0,
        Message::Welcome { .. }
    ));
    let (listeners, fds) = channel.recv().await.unwrap();
    assert!(matches!(listeners, Message::Listeners(_)));
    drop(fds);
    channel.send(&Message::Listening, &[]).await.unwrap();
    // The idle client is offered at once; the "new process" takes it and dies before its Ack.
    let (offered, socket) = channel.recv().await.unwrap();
    let Message::Client { client: moved, .. } = offered else {
        panic!("expected a client, got {offered:?}");
    };
    assert_eq!(
        (moved.user.as_str(), moved.database.as_str()),
        ("mover", "app")
    );
    drop(socket);
    drop(channel);
    // The old process serves it again, settings and all, and accepts new clients again.
    let row = eventually(
        Duration::from_secs(10),
        "the old process serves on",
        || async {
            let attempt = client.query_one("SHOW work_mem", &[]);
            tokio::time::timeout(Duration::from_secs(2), attempt)
                .await
                .ok()?
                .ok()
        },
    )
    .await;
    assert_eq!(row.get::<_, String>(0), "11MB");
    accepts(&old).await;
    assert!(
        old.log().contains("takeover failed, serving on as before"),
        "{}",
        old.log()
    );
}

/// Whether `err` is how a client closed by a shutdown sees it: 57P01, or the connection gone.
fn closed_as_by_a_shutdown(err: &tokio_postgres::Error) -> bool {
    err.is_closed() || sqlstate(err).as_deref() == Some("57P01")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_cannot_move_stay_until_the_deadline_and_cancels_reach_them_meanwhile() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "mover").await;
    // app_gone is not in the new process's config: its client is refused there and stays.
    cfg.extra = format!(
        "[databases.app_session]\nhost = \"127.0.0.1\"\nport = {port}\ndbname = \"app\"\n\
         pool_mode = \"session\"\n\
         [databases.app_gone]\nhost = \"127.0.0.1\"\nport = {port}\ndbname = \"app\"\n",
        port = pg.port
    );
    let mut old = Process::start(cfg).await;
    let text = std::fs::read_to_string(old.config_path()).unwrap();
    let without_gone = &text[..text.find("[databases.app_gone]").unwrap()];
    let new_config = old.dir().join("new.toml");
    std::fs::write(&new_config, without_gone).unwrap();
    let gone_url = old.url("mover").replace("dbname=app", "dbname=app_gone");
    let gone = connect(&gone_url).await;
    gone.batch_execute("SELECT 1").await.unwrap();
    let session_url = old.url("mover").replace("dbname=app", "dbname=app_session");
    let session = connect(&session_url).await;
    session.batch_execute("SELECT 1").await.unwrap();
    let pinned = connect(&old.url("mover")).await;
    pinned
        .batch_execute("CREATE TEMP TABLE mine (x int); INSERT INTO mine VALUES (1)")
        .await
        .unwrap();
    let in_transaction = connect(&old.url("mover")).await;
    in_transaction
        .batch_execute("BEGIN; SELECT 1")
        .await
        .unwrap();
    let mover = connect(&old.url("mover")).await;
    mover.batch_execute("SET work_mem = '13MB'").await.unwrap();
    let sleeper = connect(&old.url("mover")).await;
    let token = sleeper.cancel_token();
    let sleeping = tokio::spawn(async move {
        let result = sleeper.batch_execute("SELECT pg_sleep(30)").await;
        (result, sleeper)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let log = old.dir().join("new.log");
    let _new = Child(spawn(&new_config, &["-R", "--takeover-timeout", "3"], &log));
    eventually(
        Duration::from_secs(10),
        "the new process accepts",
        || async {
            // The old process has stopped accepting: the cancel can only come through the new one.
            old.log().contains("the new process accepts").then_some(())
        },
    )
    .await;
    // The cancel reaches the new process, which passes it to the old one, where the query is.
    let sent = Instant::now();
    token.cancel_query(NoTls).await.unwrap();
    let (result, sleeper) = tokio::time::timeout(Duration::from_secs(2), sleeping)
        .await
        .expect("the cancel lands within 2 s")
        .unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()).as_deref(), Some("57014"));
    eprintln!(
        "cancel passed back to the old process in {:?}",
        sent.elapsed()
    );

    // Until the deadline the clients that cannot move are served where they are.
    let row = pinned.query_one("SELECT x FROM mine", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    session.batch_execute("SELECT 1").await.unwrap();
    assert_eq!(
        old.exit_code(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        old.log()
    );
    let new_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        new_log.contains("a client stays with the old process: database \"app_gone\""),
        "{new_log}"
    );
    for (name, client) in [
        ("a database the new process lacks", &gone),
        ("session mode", &session),
        ("pinned", &pinned),
        ("in a transaction", &in_transaction),
    ] {
        let err = client.batch_execute("SELECT 1").await.unwrap_err();
        assert!(closed_as_by_a_shutdown(&err), "{name}: {err:?}");
    }
    let row = mover.query_one("SHOW work_mem", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "13MB");
    sleeper.batch_execute("SELECT 1").await.unwrap();
}

/// A process the test did not start itself but caused to start (the console's UPGRADE), ended
/// by its pid when dropped.
struct Successor(i32);

impl Drop for Successor {
    fn drop(&mut self) {
        // SAFETY: kill with the pid of the process this test caused to start.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_upgrade_command_starts_the_new_process_itself() {
    let pg = shared_cluster();
    let mut old = start(pg).await;
    let client = connect(&old.url("mover")).await;
    client.batch_execute("SET work_mem = '17MB'").await.unwrap();
    let console = connect(&format!(
        "host=127.0.0.1 port={} user=mover password=mover dbname=pgbouncer",
        old.port
    ))
    .await;
    let err = console.simple_query("UPGRADE soon").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42601"));
    console.simple_query("UPGRADE 5").await.unwrap();
    let pid = eventually(
        Duration::from_secs(10),
        "the new process's pid logged",
        || async {
            let log = old.log();
            let line = log.lines().find(|l| l.contains("started a new pgmux"))?;
            let pid = line.split("pid=").nth(1)?.split_whitespace().next()?;
            pid.parse::<i32>().ok()
        },
    )
    .await;
    let _successor = Successor(pid);
    assert_eq!(
        old.exit_code(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        old.log()
    );
    let row = client.query_one("SHOW work_mem", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "17MB");
    assert!(old.log().contains("takeover complete"), "{}", old.log());
    accepts(&old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_the_takeover_code_is_answered_as_any_unknown_protocol() {
    use crate::harness::raw::{error_code, Raw};
    let pg = shared_cluster();
    let old = start(pg).await;
    let mut answers = Vec::new();
    for code in [pgmux::protocol::startup::TAKEOVER_REQUEST, 2 << 16] {
        let mut c = Raw::connect(old.port).await;
        let mut packet = 8u32.to_be_bytes().to_vec();
        packet.extend_from_slice(&code.to_be_bytes());
        c.send(&packet).await;
        let (tag, body) = c.read().await.expect("an answer");
        answers.push((tag as char, error_code(&body)));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, 'E');
    accepts(&old).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_half_way_through_a_message_moves_with_what_it_had_sent() {
    use crate::harness::raw::{query, Raw};
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "mover").await;
    cfg.auth_type = "trust";
    let mut old = Process::start(cfg).await;
    let mut client = Raw::login(old.port, "mover", "app").await;
    let q = query("SELECT 'moved ' || 'whole'");
    // The old process reads these bytes and waits for the rest of the message.
    client.send(&q[..7]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = old.dir().join("new.log");
    let _new = Child(spawn(&old.config_path(), &["-R"], &log));
    assert_eq!(
        old.exit_code(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        old.log()
    );
    client.send(&q[7..]).await;
    let messages = client.read_until(b'Z').await;
    let row = messages.iter().find(|(tag, _)| *tag == b'D');
    let value = row.map(|(_, body)| String::from_utf8_lossy(&body[6..]).into_owned());
    assert_eq!(value.as_deref(), Some("moved whole"), "{messages:?}");
    assert_eq!(answer(&mut client, "SELECT 'and ' || 'on'").await, "and on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_stays_with_the_old_process_until_the_deadline() {
    use crate::harness::certs::{rustls_client, Certs};
    let pg = shared_cluster();
    let certs = Certs::new();
    let (cert, key) = certs.issue("pgmux", "pgmux");
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist = own_role(pg, "mover").await;
    cfg.general = format!(
        "client_tls_sslmode = \"prefer\"\nclient_tls_cert_file = \"{}\"\n\
         client_tls_key_file = \"{}\"",
        cert.display(),
        key.display()
    );
    let mut old = Process::start(cfg).await;
    let tls =
        tokio_postgres_rustls::MakeRustlsConnect::new(rustls_client(&certs.path("ca.pem"), false));
    let url = format!(
        "host=localhost port={} user=mover password=mover dbname=app sslmode=require",
        old.port
    );
    let (secure, conn) = tokio_postgres::connect(&url, tls).await.unwrap();
    tokio::spawn(conn);
    secure.batch_execute("SET work_mem = '21MB'").await.unwrap();
    let plain = connect(&old.url("mover")).await;
    plain.batch_execute("SET work_mem = '22MB'").await.unwrap();
    let log = old.dir().join("new.log");
    let _new = Child(spawn(
        &old.config_path(),
        &["-R", "--takeover-timeout", "2"],
        &log,
    ));
    eventually(
        Duration::from_secs(10),
        "the new process accepts",
        || async { old.log().contains("the new process accepts").then_some(()) },
    )
    .await;
    // Until the deadline the old process serves it, with its session.
    let row = secure.query_one("SHOW work_mem", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "21MB");
    assert_eq!(
        old.exit_code(Duration::from_secs(20)).await,
        Some(0),
        "{}",
        old.log()
    );
    let err = secure.batch_execute("SELECT 1").await.unwrap_err();
    assert!(closed_as_by_a_shutdown(&err), "{err:?}");
    let row = plain.query_one("SHOW work_mem", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "22MB");
}
