//! Clients moving to a new process while they work, and those that cannot move.

use super::*;
use crate::harness::process::spawn;
use crate::harness::{eventually, shared_cluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A long query of `client`'s, running until it is cancelled.
type Sleeping = tokio::task::JoinHandle<(Result<(), tokio_postgres::Error>, Client)>;

fn sleep_in_background(client: Client) -> Sleeping {
    tokio::spawn(async move {
        let result = client.batch_execute("SELECT pg_sleep(30)").await;
        (result, client)
    })
}

/// Cancels the query with `token`: it must end with 57014 within 2 s. Returns its client.
async fn cancel_lands(token: &tokio_postgres::CancelToken, sleeping: Sleeping) -> Client {
    let sent = Instant::now();
    token.cancel_query(NoTls).await.unwrap();
    let (result, client) = tokio::time::timeout(Duration::from_secs(2), sleeping)
        .await
        .expect("the cancel lands within 2 s")
        .unwrap();
    let err = result.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"), "{err:?}");
    eprintln!("cancel landed in {:?}", sent.elapsed());
    client
}

/// Transactions each client completes once the new process serves it alone.
const ROUNDS_AFTER: usize = 15;

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
    let sleeper = sleep_in_background(canceller);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let canceller = cancel_lands(&token, sleeper).await;
    canceller.batch_execute("SELECT 1").await.unwrap();

    // SHOW CLIENTS on the new process lists every client that moved.
    let console = connect(&old.console_url("mover")).await;
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
    let sleeping = sleep_in_background(sleeper);
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
    let sleeper = cancel_lands(&token, sleeping).await;

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
    let console = connect(&old.console_url("mover")).await;
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
