//! Transaction pooling that keeps each client's session state: settings and SQL prepared
//! statements follow the client from server to server, and state only a server can hold
//! (temporary tables, WITH HOLD cursors, advisory locks) pins the client to it. Every test
//! runs on a pool of 2 with other clients churning beside the client under test, which check
//! that they never see its state: a move between servers, or a leak, is caught on both sides.

use crate::harness::{eventually, own_role, shared_cluster, sqlstate, Pgmux, PgmuxConfig};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::SimpleQueryMessage;

/// Values of the first row of a simple query's last result.
fn row(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .rev()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .expect("a row")
}

async fn one(client: &tokio_postgres::Client, sql: &str) -> String {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    row(&messages).remove(0)
}

/// The server defaults the churners expect to see, and that the client under test changes.
const DEFAULTS: &str = "SELECT current_setting('work_mem'), current_setting('search_path'), \
    current_setting('statement_timeout'), current_setting('enable_seqscan'), \
    coalesce(current_setting('myapp.tenant', true), ''), \
    (SELECT count(*) FROM pg_prepared_statements WHERE from_sql), \
    to_regclass('pgmux_state_tmp') IS NULL, \
    (SELECT count(*) FROM pg_cursors)";

/// Clients beside the one under test, each looping one-statement transactions that check they
/// see none of anyone's session state. They run until stopped and count their transactions.
struct Churn {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Churn {
    async fn start(pgmux: &Pgmux, user: &str, clients: usize) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = pgmux.connect(user, user).await;
            let (stop, done) = (stop.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let seen = row(&client.simple_query(DEFAULTS).await.expect("churn query"));
                    assert_eq!(
                        seen,
                        ["4MB", "\"$user\", public", "0", "on", "", "0", "t", "0"],
                        "a churning client saw another client's session state"
                    );
                    done.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }));
        }
        Churn { stop, done, tasks }
    }

    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("a churning client failed");
        }
        self.done.load(Ordering::Relaxed)
    }
}

async fn pool_of_two(user: &str, general: &str) -> Pgmux {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 2;
    cfg.userlist = own_role(pg, user).await;
    cfg.general = general.to_owned();
    cfg.start().await
}

/// Clients pinned in the one pool, as pgmux_pool_clients_pinned shows it.
fn pinned(pgmux: &Pgmux) -> usize {
    pgmux.pools().iter().map(|p| p.pinned).sum()
}

/// Waits until `count` clients are pinned: pgmux asks the server what a session holds just
/// after the client has its reply.
async fn pinned_becomes(pgmux: &Pgmux, count: usize) {
    let what = format!("{count} clients pinned");
    eventually(Duration::from_secs(10), &what, || async {
        (pinned(pgmux) == count).then_some(())
    })
    .await;
}

/// Holds a server in an open transaction every other round, so that the client under test,
/// which would otherwise get back the server it just let go, is moved to the other one.
struct Mover(tokio_postgres::Client);

impl Mover {
    async fn before(&self, round: usize) {
        if round % 2 == 1 {
            self.0.batch_execute("BEGIN; SELECT 1").await.unwrap();
        }
    }

    async fn after(&self, round: usize) {
        if round % 2 == 1 {
            self.0.batch_execute("COMMIT").await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_follow_their_client_across_servers_and_reset_brings_defaults_back() {
    let pg = shared_cluster();
    let admin = pg.admin().await;
    admin
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS tenant_a; \
             CREATE TABLE IF NOT EXISTS tenant_a.whoami (tenant text); \
             TRUNCATE tenant_a.whoami; INSERT INTO tenant_a.whoami VALUES ('a'); \
             GRANT USAGE ON SCHEMA tenant_a TO PUBLIC; GRANT SELECT ON tenant_a.whoami TO PUBLIC;",
        )
        .await
        .unwrap();
    let pgmux = pool_of_two("state_settings", "").await;
    let churn = Churn::start(&pgmux, "state_settings", 3).await;
    let client = pgmux.connect("state_settings", "state_settings").await;
    client
        .batch_execute(
            "SET search_path = tenant_a, public; SET statement_timeout = '5s'; \
             SET SESSION work_mem = '64MB'",
        )
        .await
        .unwrap();
    // Over the extended protocol too, as drivers send it.
    client
        .execute("SET enable_seqscan = off", &[])
        .await
        .unwrap();
    // Row-level-security setups send the value as a parameter.
    client
        .execute("SELECT set_config('myapp.tenant', $1, false)", &[&"a"])
        .await
        .unwrap();
    let mover = Mover(pgmux.connect("state_settings", "state_settings").await);
    let mut servers = HashSet::new();
    for round in 0..30 {
        mover.before(round).await;
        let seen = row(&client
            .simple_query(
                "SELECT current_setting('work_mem'), current_setting('search_path'), \
                 current_setting('statement_timeout'), current_setting('enable_seqscan'), \
                 current_setting('myapp.tenant'), (SELECT tenant FROM whoami), pg_backend_pid()",
            )
            .await
            .unwrap());
        assert_eq!(
            seen[..6],
            ["64MB", "tenant_a, public", "5s", "off", "a", "a"],
            "round {round}"
        );
        servers.insert(seen[6].clone());
        mover.after(round).await;
    }
    assert!(
        servers.len() >= 2,
        "the client never moved between servers, so nothing was tested"
    );
    pinned_becomes(&pgmux, 0).await;

    // SET LOCAL and a SET in a transaction that rolls back do not stick.
    client
        .batch_execute("BEGIN; SET LOCAL work_mem = '1MB'; COMMIT")
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; SET work_mem = '2MB'; ROLLBACK")
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(one(&client, "SHOW work_mem").await, "64MB");
    }
    client.batch_execute("RESET work_mem").await.unwrap();
    for _ in 0..5 {
        assert_eq!(one(&client, "SHOW work_mem").await, "4MB");
        assert_eq!(one(&client, "SHOW statement_timeout").await, "5s");
    }
    client.batch_execute("RESET ALL").await.unwrap();
    for _ in 0..5 {
        let seen = row(&client
            .simple_query(
                "SELECT current_setting('search_path'), current_setting('statement_timeout'), \
                 current_setting('enable_seqscan'), coalesce(current_setting('myapp.tenant', true), '')",
            )
            .await
            .unwrap());
        assert_eq!(seen, ["\"$user\", public", "0", "on", ""]);
    }
    drop(client);
    assert!(churn.finish().await > 0);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_table_pins_its_client_until_dropped() {
    let pgmux = pool_of_two("state_temp", "log_pinning = true").await;
    let churn = Churn::start(&pgmux, "state_temp", 3).await;
    let client = pgmux.connect("state_temp", "state_temp").await;
    client
        .batch_execute("CREATE TEMP TABLE pgmux_state_tmp (n int)")
        .await
        .unwrap();
    pinned_becomes(&pgmux, 1).await;
    // The mover would take the server the client just let go, were it not pinned.
    let mover = Mover(pgmux.connect("state_temp", "state_temp").await);
    let mut servers = HashSet::new();
    for n in 1..=50 {
        mover.before(n as usize).await;
        client
            .execute("INSERT INTO pgmux_state_tmp VALUES ($1)", &[&n])
            .await
            .unwrap();
        let seen = row(&client
            .simple_query("SELECT count(*), sum(n), pg_backend_pid() FROM pgmux_state_tmp")
            .await
            .unwrap());
        assert_eq!(seen[0], n.to_string());
        assert_eq!(seen[1], (n * (n + 1) / 2).to_string());
        servers.insert(seen[2].clone());
        mover.after(n as usize).await;
    }
    assert_eq!(servers.len(), 1, "a pinned client stays on its server");
    let shown = pgmux.shared().registry.all();
    let pins: Vec<String> = shown.iter().map(|c| c.pins().describe()).collect();
    assert!(pins.contains(&"temp_table".to_string()), "{pins:?}");
    client
        .batch_execute("DROP TABLE pgmux_state_tmp")
        .await
        .unwrap();
    pinned_becomes(&pgmux, 0).await;
    drop(client);
    assert!(churn.finish().await > 0);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepared_statements_follow_their_client() {
    let pgmux = pool_of_two("state_prepare", "").await;
    let churn = Churn::start(&pgmux, "state_prepare", 3).await;
    let client = pgmux.connect("state_prepare", "state_prepare").await;
    client
        .batch_execute("PREPARE doubled (int) AS SELECT $1 * 2, pg_backend_pid()")
        .await
        .unwrap();
    let mover = Mover(pgmux.connect("state_prepare", "state_prepare").await);
    let mut servers = HashSet::new();
    for i in 0..30 {
        mover.before(i).await;
        let seen = row(&client
            .simple_query(&format!("EXECUTE doubled({i})"))
            .await
            .unwrap());
        assert_eq!(seen[0], (i * 2).to_string());
        servers.insert(seen[1].clone());
        mover.after(i).await;
    }
    assert!(servers.len() >= 2, "the client never moved between servers");
    pinned_becomes(&pgmux, 0).await;
    client.batch_execute("DEALLOCATE doubled").await.unwrap();
    for _ in 0..5 {
        let error = client
            .simple_query("EXECUTE doubled(1)")
            .await
            .expect_err("deallocated");
        assert_eq!(sqlstate(&error).as_deref(), Some("26000"));
    }
    drop(client);
    assert!(churn.finish().await > 0);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_with_hold_cursor_is_fetched_across_transactions() {
    let pgmux = pool_of_two("state_cursor", "").await;
    let churn = Churn::start(&pgmux, "state_cursor", 3).await;
    let client = pgmux.connect("state_cursor", "state_cursor").await;
    client
        .batch_execute(
            "BEGIN; DECLARE numbers CURSOR WITH HOLD FOR SELECT generate_series(1, 100); COMMIT",
        )
        .await
        .unwrap();
    let mover = Mover(pgmux.connect("state_cursor", "state_cursor").await);
    let mut fetched = Vec::new();
    for round in 0..10 {
        mover.before(round).await;
        for m in client.simple_query("FETCH 10 FROM numbers").await.unwrap() {
            if let SimpleQueryMessage::Row(r) = m {
                fetched.push(r.get(0).unwrap().parse::<i32>().unwrap());
            }
        }
        mover.after(round).await;
    }
    assert_eq!(fetched, (1..=100).collect::<Vec<_>>());
    pinned_becomes(&pgmux, 1).await;
    client.batch_execute("CLOSE numbers").await.unwrap();
    pinned_becomes(&pgmux, 0).await;
    drop(client);
    assert!(churn.finish().await > 0);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_advisory_lock_stays_held_until_released() {
    // Room for both clients to pin: a try that finds the lock taken must be allowed to run.
    let pgmux = pool_of_two("state_lock", "max_pinned_servers = 2").await;
    let churn = Churn::start(&pgmux, "state_lock", 2).await;
    let holder = pgmux.connect("state_lock", "state_lock").await;
    let other = pgmux.connect("state_lock", "state_lock").await;
    holder
        .batch_execute("SELECT pg_advisory_lock(4242)")
        .await
        .unwrap();
    for _ in 0..10 {
        assert_eq!(one(&holder, "SELECT 1").await, "1");
        assert_eq!(
            one(&other, "SELECT pg_try_advisory_lock(4242)").await,
            "f",
            "the lock moved away from its holder"
        );
    }
    pinned_becomes(&pgmux, 1).await;
    assert_eq!(one(&holder, "SELECT pg_advisory_unlock(4242)").await, "t");
    pinned_becomes(&pgmux, 0).await;
    assert_eq!(one(&other, "SELECT pg_try_advisory_lock(4242)").await, "t");
    assert_eq!(one(&other, "SELECT pg_advisory_unlock(4242)").await, "t");
    drop((holder, other));
    assert!(churn.finish().await > 0);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pin_cap_refuses_with_an_error_and_others_keep_a_server() {
    // A pool of 2 keeps one server unpinned by default.
    let pgmux = pool_of_two("state_cap", "").await;
    let first = pgmux.connect("state_cap", "state_cap").await;
    let second = pgmux.connect("state_cap", "state_cap").await;
    first
        .batch_execute("CREATE TEMP TABLE pgmux_state_tmp (n int)")
        .await
        .unwrap();
    let error = second
        .batch_execute("CREATE TEMP TABLE pgmux_state_tmp (n int)")
        .await
        .expect_err("over the cap");
    assert_eq!(sqlstate(&error).as_deref(), Some("53400"), "{error:?}");
    let message = error.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message
            .as_deref()
            .unwrap_or("")
            .contains("max_pinned_servers"),
        "{error:?}"
    );
    // The refused client carries on, in a transaction block as well.
    assert_eq!(one(&second, "SELECT 2").await, "2");
    second.batch_execute("BEGIN").await.unwrap();
    let error = second
        .simple_query("SELECT pg_advisory_lock(1)")
        .await
        .expect_err("over the cap");
    assert_eq!(sqlstate(&error).as_deref(), Some("53400"));
    second.batch_execute("ROLLBACK").await.unwrap();
    // Clients without state never wait behind the pinned one: they share the other server.
    let churn = Churn::start(&pgmux, "state_cap", 4).await;
    eventually(
        Duration::from_secs(20),
        "churning clients progress",
        || async { (churn.done.load(Ordering::Relaxed) >= 200).then_some(()) },
    )
    .await;
    pinned_becomes(&pgmux, 1).await;
    assert!(churn.finish().await >= 200);
    // Its session over, the pinned client's server is cleaned and goes back to the pool.
    drop(first);
    eventually(
        Duration::from_secs(10),
        "the pin ends with its client",
        || async { (pinned(&pgmux) == 0).then_some(()) },
    )
    .await;
    let churn = Churn::start(&pgmux, "state_cap", 4).await;
    eventually(
        Duration::from_secs(20),
        "both servers serve again",
        || async { (churn.done.load(Ordering::Relaxed) >= 100).then_some(()) },
    )
    .await;
    churn.finish().await;
    drop(second);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_feature_off_transaction_mode_is_pgbouncers() {
    let pgmux = pool_of_two("state_off", "follow_session_state = false").await;
    let client = pgmux.connect("state_off", "state_off").await;
    client
        .batch_execute("BEGIN; CREATE TEMP TABLE pgmux_state_off (n int) ON COMMIT DROP; COMMIT")
        .await
        .unwrap();
    client.batch_execute("SET work_mem = '64MB'").await.unwrap();
    // Nothing follows the client: on the other server it finds the default.
    let mover = Mover(pgmux.connect("state_off", "state_off").await);
    let mut seen = HashSet::new();
    for round in 0..6 {
        mover.before(round).await;
        seen.insert(one(&client, "SHOW work_mem").await);
        mover.after(round).await;
    }
    assert_eq!(seen, HashSet::from(["64MB".to_string(), "4MB".to_string()]));
    client.batch_execute("RESET work_mem").await.unwrap();
    assert_eq!(pinned(&pgmux), 0);
    let shown = pgmux.shared().registry.all();
    assert!(shown.iter().all(|c| c.pins().is_empty()));
    drop(client);
    pgmux.stop().await;
}

/// A real migration tool through transaction pooling: node-pg-migrate sets search_path outside
/// any transaction and holds a session advisory lock across all its statements, which is what
/// makes teams keep such tools on session pooling. Two runs race for the lock while other
/// clients churn; tests/clients/migrate_check.sh checks what the database ends up with and that
/// the lock was released (node-pg-migrate only warns when its unlock reaches another session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_pg_migrate_runs_through_transaction_pooling() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    // Three servers: room for both runs' lock attempts (max_pinned_servers is the pool's size
    // less one) while the churning clients keep one.
    cfg.pool_size = 3;
    // The churning clients are in the same pool: the tool's server goes to them between its
    // statements, and would show them its search_path had it leaked.
    cfg.userlist = own_role(pg, "state_migrate").await;
    let admin = pg.admin().await;
    admin
        .batch_execute("GRANT CREATE ON DATABASE app TO state_migrate")
        .await
        .unwrap();
    let pgmux = cfg.start().await;
    let churn = Churn::start(&pgmux, "state_migrate", 6).await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/migrate_check.sh");
    let url = format!(
        "postgres://state_migrate:state_migrate@127.0.0.1:{}/app",
        pgmux.port
    );
    let run = tokio::process::Command::new(&script)
        .env("DATABASE_URL", &url)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("migrate_check.sh ran past 120 s")
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("MIGRATE_OK applied=3"),
        "migrate_check.sh failed (run tests/clients/setup if node-pg-migrate is missing):\n{stdout}\n{stderr}"
    );
    pinned_becomes(&pgmux, 0).await;
    assert!(churn.finish().await > 0);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_pins_and_notifications_arrive_between_transactions() {
    use futures_util::StreamExt;
    let pgmux = pool_of_two("state_listen", "").await;
    let churn = Churn::start(&pgmux, "state_listen", 2).await;
    let url = pgmux.url("state_listen", "state_listen", "app");
    let (listener, mut connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (heard_tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = message {
                let _ = heard_tx.send(n.payload().to_owned());
            }
        }
    });
    listener
        .batch_execute("LISTEN pgmux_state_channel")
        .await
        .unwrap();
    pinned_becomes(&pgmux, 1).await;
    let notifier = pgmux.connect("state_listen", "state_listen").await;
    for i in 0..5 {
        notifier
            .batch_execute(&format!("NOTIFY pgmux_state_channel, 'n{i}'"))
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), heard.recv())
            .await
            .expect("a notification within 10 s");
        assert_eq!(got.as_deref(), Some(format!("n{i}").as_str()));
        assert_eq!(one(&listener, "SELECT 1").await, "1");
    }
    listener.batch_execute("UNLISTEN *").await.unwrap();
    pinned_becomes(&pgmux, 0).await;
    drop((listener, notifier));
    assert!(churn.finish().await > 0);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_pins_until_reset() {
    let pg = shared_cluster();
    let role_line = own_role(pg, "state_role").await;
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 2;
    cfg.userlist.push_str(&role_line);
    let pgmux = cfg.start().await;
    // Other superuser clients beside it must never find themselves someone else.
    let stop = Arc::new(AtomicBool::new(false));
    let mut others = Vec::new();
    for _ in 0..2 {
        let client = pgmux.connect("postgres", "postgres").await;
        let stop = stop.clone();
        others.push(tokio::spawn(async move {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(one(&client, "SELECT current_user").await, "postgres");
                rounds += 1;
                tokio::task::yield_now().await;
            }
            rounds
        }));
    }
    let client = pgmux.connect("postgres", "postgres").await;
    client.batch_execute("SET ROLE state_role").await.unwrap();
    pinned_becomes(&pgmux, 1).await;
    for _ in 0..10 {
        assert_eq!(one(&client, "SELECT current_user").await, "state_role");
    }
    client.batch_execute("RESET ROLE").await.unwrap();
    pinned_becomes(&pgmux, 0).await;
    assert_eq!(one(&client, "SELECT current_user").await, "postgres");
    stop.store(true, Ordering::Relaxed);
    for other in others {
        assert!(other.await.expect("another client failed") > 0);
    }
    drop(client);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_cannot_be_restored_ends_rather_than_run_elsewhere() {
    let pg = shared_cluster();
    let admin = pg.admin().await;
    admin
        .batch_execute(
            "DROP TEXT SEARCH CONFIGURATION IF EXISTS public.pgmux_state_ts; \
             CREATE TEXT SEARCH CONFIGURATION public.pgmux_state_ts (COPY = simple); \
             CREATE TABLE IF NOT EXISTS pgmux_state_ran (setting text); \
             TRUNCATE pgmux_state_ran; GRANT ALL ON pgmux_state_ran TO PUBLIC;",
        )
        .await
        .unwrap();
    let pgmux = pool_of_two("state_restore", "").await;
    let client = pgmux.connect("state_restore", "state_restore").await;
    client
        .batch_execute("SET default_text_search_config = 'public.pgmux_state_ts'")
        .await
        .unwrap();
    let mover = Mover(pgmux.connect("state_restore", "state_restore").await);
    for round in 0..4 {
        mover.before(round).await;
        let seen = one(&client, "SHOW default_text_search_config").await;
        assert_eq!(seen, "public.pgmux_state_ts");
        mover.after(round).await;
    }
    // Its setting can no longer be given to a server: the client must not run elsewhere
    // with the default instead.
    admin
        .batch_execute("DROP TEXT SEARCH CONFIGURATION public.pgmux_state_ts")
        .await
        .unwrap();
    let mut ended = None;
    for round in 0..6 {
        mover.before(round).await;
        let result = client
            .simple_query(
                "INSERT INTO pgmux_state_ran VALUES (current_setting('default_text_search_config'))",
            )
            .await;
        mover.after(round).await;
        if let Err(e) = result {
            ended = Some(e);
            break;
        }
    }
    let error = ended.expect("the client's session could not be restored, so it ends");
    assert_eq!(sqlstate(&error).as_deref(), Some("08006"), "{error:?}");
    // Its statement never ran with the server's default in place of its own setting.
    let wrong = one(
        &admin,
        "SELECT count(*) FROM pgmux_state_ran WHERE setting <> 'public.pgmux_state_ts'",
    )
    .await;
    assert_eq!(wrong, "0", "the client's statement ran without its setting");
    drop(client);
    pgmux.stop().await;
}
