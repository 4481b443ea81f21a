//! Takeovers that fail at each step: the old process serves on with every client it had, and
//! a new process that gave up or was left alone behaves.

use super::*;
use crate::harness::process::spawn;
use crate::harness::{eventually, shared_cluster};
use pgmux::handover::channel::Channel;
use pgmux::handover::wire::{ListenerKind, Message, FORMAT, MAX_MESSAGE};

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
    let code = new.exit_code(Duration::from_secs(10)).await;
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
    let code = new.exit_code(Duration::from_secs(10)).await;
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
fn moved_client(n: u32) -> pgmux::handover::MovedClient {
    pgmux::handover::MovedClient {
        user: "mover".into(),
        database: "app".into(),
        cancel_key: (n, n),
        ..Default::default()
    }
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
