//! Named prepared statements in transaction mode: the wire-level semantics are PostgreSQL's own
//! (checked against a pass-through pgmux, which is PostgreSQL as the client sees it), and real
//! drivers that prepare statements get their own answers through a small pool.

use crate::harness::raw::{self, error_code, Raw};
use crate::harness::{eventually, shared_cluster, Pgmux, PgmuxConfig};
use std::time::Duration;

async fn trust_pgmux(mode: &str, pool_size: usize, general: &str) -> Pgmux {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "trust";
    cfg.pool_mode = mode;
    cfg.pool_size = pool_size;
    cfg.general = general.into();
    cfg.database_extra = "user = \"app\"\npassword = \"app\"".into();
    cfg.start().await
}

fn bind_text(portal: &str, stmt: &str, params: &[&str]) -> Vec<u8> {
    let mut body = format!("{portal}\0{stmt}\0").into_bytes();
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        body.extend_from_slice(&(p.len() as u32).to_be_bytes());
        body.extend_from_slice(p.as_bytes());
    }
    body.extend_from_slice(&0u16.to_be_bytes());
    raw::msg(b'B', &body)
}

fn close_statement(name: &str) -> Vec<u8> {
    raw::msg(b'C', format!("S{name}\0").as_bytes())
}

/// A reply as the client sees it, without what legitimately differs between servers
/// (error texts' file and line, backend pids): tag, then the SQLSTATE, row or description.
fn essence(msgs: &[(u8, Vec<u8>)]) -> Vec<String> {
    msgs.iter()
        .map(|(tag, body)| match tag {
            b'E' => format!("E {}", error_code(body)),
            b'S' | b'N' => String::new(),
            _ => format!("{} {:?}", *tag as char, body),
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// The steps of the differential test: each a batch and how many ReadyForQuery end its reply.
fn script() -> Vec<(Vec<u8>, usize)> {
    let cat = |parts: Vec<Vec<u8>>| parts.concat();
    vec![
        // Prepare and describe: the same ParameterDescription and RowDescription as direct.
        (
            cat(vec![
                raw::parse("a", "SELECT $1::int + 1 AS next"),
                raw::describe_statement("a"),
                raw::sync(),
            ]),
            1,
        ),
        (
            cat(vec![
                bind_text("", "a", &["41"]),
                raw::execute(""),
                raw::sync(),
            ]),
            1,
        ),
        // A name in use: 42P05, and the rest of the batch skipped.
        (
            cat(vec![
                raw::parse("a", "SELECT 2"),
                bind_text("", "a", &["1"]),
                raw::execute(""),
                raw::sync(),
            ]),
            1,
        ),
        // A Parse that fails leaves no name behind: the same name then works.
        (cat(vec![raw::parse("b", "SELEC 1"), raw::sync()]), 1),
        (
            cat(vec![
                raw::parse("b", "SELECT $1::text || '!'"),
                raw::describe_statement("b"),
                bind_text("", "b", &["hi"]),
                raw::execute(""),
                raw::sync(),
            ]),
            1,
        ),
        // Close, then use: does not exist.
        (cat(vec![close_statement("a"), raw::sync()]), 1),
        (cat(vec![bind_text("", "a", &["1"]), raw::sync()]), 1),
        // DEALLOCATE by SQL, quoted and not.
        (cat(vec![raw::parse("Mixed", "SELECT 3"), raw::sync()]), 1),
        (raw::query("DEALLOCATE \"Mixed\""), 1),
        (cat(vec![raw::describe_statement("Mixed"), raw::sync()]), 1),
        (raw::query("deallocate b;"), 1),
        (cat(vec![bind_text("", "b", &["x"]), raw::sync()]), 1),
        (raw::query("DEALLOCATE nonexistent"), 1),
        // DEALLOCATE ALL and DISCARD ALL forget everything.
        (
            cat(vec![
                raw::parse("c", "SELECT 4"),
                raw::parse("d", "SELECT 5"),
                raw::sync(),
            ]),
            1,
        ),
        (raw::query("DEALLOCATE ALL"), 1),
        (cat(vec![raw::describe_statement("c"), raw::sync()]), 1),
        (cat(vec![raw::parse("c", "SELECT 6"), raw::sync()]), 1),
        (raw::query("DISCARD ALL"), 1),
        (cat(vec![raw::describe_statement("c"), raw::sync()]), 1),
        // A pipeline of several Syncs, an error in the middle skipping a Parse.
        (
            cat(vec![
                raw::parse("e", "SELECT $1::int * 10"),
                bind_text("", "e", &["7"]),
                raw::execute(""),
                raw::sync(),
                bind_text("", "nope", &[]),
                raw::parse("f", "SELECT 'f'"),
                raw::sync(),
                raw::parse("", "SELECT 'unnamed'"),
                bind_text("", "", &[]),
                raw::execute(""),
                bind_text("", "e", &["8"]),
                raw::execute(""),
                raw::sync(),
                raw::describe_statement("f"),
                raw::sync(),
            ]),
            4,
        ),
        // Inside a transaction that fails, DEALLOCATE is refused like any command.
        (raw::query("BEGIN"), 1),
        (raw::query("SELECT 1/0"), 1),
        (raw::query("DEALLOCATE e"), 1),
        (raw::query("ROLLBACK"), 1),
        (
            cat(vec![
                bind_text("", "e", &["9"]),
                raw::execute(""),
                raw::sync(),
            ]),
            1,
        ),
        // Flush-terminated exchange, as asyncpg does it.
        (
            cat(vec![
                raw::parse("g", "SELECT $1::int AS g"),
                raw::describe_statement("g"),
                raw::flush(),
            ]),
            0,
        ),
        (
            cat(vec![
                bind_text("", "g", &["5"]),
                raw::execute(""),
                raw::sync(),
            ]),
            1,
        ),
    ]
}

/// Runs the script; between steps `disturb` may use the same servers with its own statements.
async fn run_script(port: u16, disturb: bool, steps: Vec<(Vec<u8>, usize)>) -> Vec<Vec<String>> {
    let mut c = Raw::login(port, "app", "app").await;
    let mut other = match disturb {
        true => Some(Raw::login(port, "app", "app").await),
        false => None,
    };
    let mut replies = Vec::new();
    for (i, (batch, readies)) in steps.into_iter().enumerate() {
        c.send(&batch).await;
        let mut reply = Vec::new();
        if readies == 0 {
            // Flush: the reply ends with the RowDescription.
            reply.extend(c.read_until(b'T').await);
        }
        for _ in 0..readies {
            reply.extend(c.read_until(b'Z').await);
        }
        // The other client can have the server only between transactions.
        let idle = reply
            .last()
            .is_some_and(|(tag, body)| *tag == b'Z' && body == b"I");
        replies.push(essence(&reply));
        if let (Some(o), true) = (other.as_mut(), idle) {
            // Three statements of its own: with room for two per server, ours get evicted.
            let mut batch = Vec::new();
            for k in 0..3 {
                let name = format!("x{i}_{k}");
                batch.extend(raw::parse(&name, &format!("SELECT {k} + {i}")));
                batch.extend(bind_text("", &name, &[]));
                batch.extend(raw::execute(""));
            }
            batch.extend(raw::sync());
            o.send(&batch).await;
            let got = o.read_until(b'Z').await;
            assert_eq!(raw::tags(&got), "12DC12DC12DCZ", "disturber at step {i}");
        }
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_semantics_match_postgres_with_servers_shared_and_statements_evicted() {
    // Session mode with the feature off is PostgreSQL as the client sees it.
    let direct = trust_pgmux("session", 2, "max_prepared_statements = 0").await;
    let expected = run_script(direct.port, false, script()).await;
    direct.stop().await;
    // One server for two clients, room for two statements on it.
    let pooled = trust_pgmux("transaction", 1, "max_prepared_statements = 2").await;
    let got = run_script(pooled.port, true, script()).await;
    for (i, (want, got)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(got, want, "step {i}: {:?}", &script()[i].0);
    }
    // Make sure the script exercised what it claims.
    let flat: Vec<&String> = expected.iter().flatten().collect();
    for code in ["E 42P05", "E 42601", "E 26000", "E 25P02"] {
        assert!(
            flat.iter().any(|s| s.as_str() == code),
            "{code} in {flat:?}"
        );
    }
    let totals = pooled.totals();
    assert!(totals.prepared_eviction_count > 0, "{totals:?}");
    assert!(totals.server_parse_count > totals.client_parse_count / 2);
    pooled.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_survive_the_janitor_closing_their_server() {
    let pgmux = trust_pgmux(
        "transaction",
        1,
        "server_idle_timeout = 0.3\nmin_pool_size = 0",
    )
    .await;
    let mut c = Raw::login(pgmux.port, "app", "app").await;
    let mut batch = raw::parse("kept", "SELECT $1::int * 3");
    batch.extend(raw::sync());
    c.send(&batch).await;
    assert_eq!(raw::tags(&c.read_until(b'Z').await), "1Z");
    eventually(Duration::from_secs(10), "idle server closed", || async {
        (pgmux.pools()[0].servers == 0).then_some(())
    })
    .await;
    let mut batch = bind_text("", "kept", &["14"]);
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    c.send(&batch).await;
    let got = c.read_until(b'Z').await;
    assert_eq!(
        raw::tags(&got),
        "2DCZ",
        "prepared again on the new server, unseen"
    );
    assert_eq!(got[1].1, b"\0\x01\0\0\0\x0242");
    pgmux.stop().await;
}

/// tokio-postgres prepares every statement under a name (s0, s1, ...) and closes it on drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tokio_postgres_clients_on_four_servers_get_their_own_answers() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 4;
    let pgmux = cfg.start().await;
    let mut tasks = Vec::new();
    for client_no in 0..50i32 {
        let mut client = pgmux.connect("app", "app").await;
        tasks.push(tokio::spawn(async move {
            // Half the clients share a statement text, half have one of their own.
            let shared = client
                .prepare("SELECT $1::int * 1000 + $2::int")
                .await
                .unwrap();
            let own_sql = format!("SELECT $1::int + {client_no} * 0, {client_no}::int AS who");
            let own = client.prepare(&own_sql).await.unwrap();
            for i in 0..20i32 {
                let row = client.query_one(&shared, &[&client_no, &i]).await.unwrap();
                assert_eq!(row.get::<_, i32>(0), client_no * 1000 + i);
                let row = client.query_one(&own, &[&i]).await.unwrap();
                assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (i, client_no));
                if i % 5 == 0 {
                    // Statements used inside an explicit transaction, too.
                    let tx = client.transaction().await.unwrap();
                    let a: i32 = tx.query_one(&own, &[&(i + 1)]).await.unwrap().get(0);
                    let b: i32 = tx.query_one(&shared, &[&1, &i]).await.unwrap().get(0);
                    tx.commit().await.unwrap();
                    assert_eq!((a, b), (i + 1, 1000 + i));
                }
            }
            // query() with a string prepares, uses and closes an unnamed-to-us statement each time.
            let row = client
                .query_one("SELECT $1::text", &[&format!("c{client_no}")])
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), format!("c{client_no}"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let pools = pgmux.pools();
    assert!(pools[0].servers <= 4, "{pools:?}");
    let totals = pgmux.totals();
    assert!(totals.prepared_hit_count > 0 && totals.bind_count >= 50 * 48);
    pgmux.stop().await;
}

/// Select-only: pgbench prepares with a blocking call, so a script with explicit transactions
/// deadlocks pgbench itself whenever it has more clients per thread than the pool has servers
/// (the same happens in front of PgBouncer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared_mode_fifty_clients_on_four_servers() {
    let pg = shared_cluster();
    crate::harness::pgbench_init(pg.port).await;
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 4;
    let pgmux = cfg.start().await;
    // -n: no vacuum and no truncation of pgbench_history, which other tests count.
    let args = [
        "-n", "-M", "prepared", "-S", "-c", "50", "-j", "2", "-t", "40",
    ];
    let (ok, out) = crate::harness::pgbench_as_app(pgmux.port, &args, &[]).await;
    assert!(ok, "pgbench -M prepared failed:\n{out}");
    assert!(
        out.contains("number of transactions actually processed: 2000/2000"),
        "{out}"
    );
    assert!(out.contains("number of failed transactions: 0 "), "{out}");
    assert!(pgmux.pools()[0].servers <= 4);
    let totals = pgmux.totals();
    // Each client prepares the statement once; each server only the first time it sees it.
    assert!(totals.client_parse_count >= 50, "{totals:?}");
    assert!(totals.server_parse_count <= 4, "{totals:?}");
    assert!(totals.bind_count >= 2000, "{totals:?}");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_then_execute_in_the_next_transaction() {
    // pgbench -M prepared: Parse and Sync, then Bind, Describe portal, Execute, Sync.
    // Two clients take turns on one server, each preparing right before first use, as pgbench
    // does: the statement is already on the server for the second client.
    let pgmux = trust_pgmux("transaction", 1, "").await;
    let mut clients = [
        Raw::login(pgmux.port, "app", "app").await,
        Raw::login(pgmux.port, "app", "app").await,
    ];
    for round in 0..2 {
        for c in clients.iter_mut() {
            for (name, sql, want) in [
                ("P_0", "BEGIN;", "2nCZ"),
                ("P_1", "SELECT 1;", "2TDCZ"),
                ("P_2", "END;", "2nCZ"),
            ] {
                if round == 0 {
                    let mut batch = raw::parse(name, sql);
                    batch.extend(raw::sync());
                    c.send(&batch).await;
                    assert_eq!(raw::tags(&c.read_until(b'Z').await), "1Z", "{name}");
                }
                let mut batch = bind_text("", name, &[]);
                batch.extend(raw::msg(b'D', b"P\0"));
                batch.extend(raw::execute(""));
                batch.extend(raw::sync());
                c.send(&batch).await;
                assert_eq!(raw::tags(&c.read_until(b'Z').await), want, "{name}");
            }
        }
    }
    pgmux.stop().await;
}

/// Rows of a console SHOW as column -> value maps.
async fn show(
    admin: &tokio_postgres::Client,
    what: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in admin.simple_query(&format!("SHOW {what}")).await.unwrap() {
        match m {
            tokio_postgres::SimpleQueryMessage::RowDescription(c) => {
                columns = c.iter().map(|c| c.name().to_owned()).collect();
            }
            tokio_postgres::SimpleQueryMessage::Row(r) => rows.push(
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.clone(), r.get(i).unwrap_or("").to_owned()))
                    .collect(),
            ),
            _ => {}
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_misses_and_evictions_show_in_the_console_and_metrics() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 1;
    cfg.userlist.push_str("\"admin\" \"adminpw\"\n");
    cfg.general = "admin_users = [\"admin\"]\nmax_prepared_statements = 1\n\
                   metrics_addr = \"127.0.0.1:0\""
        .into();
    let pgmux = cfg.start().await;
    let client = pgmux.connect("app", "app").await;
    let a = client.prepare("SELECT 1 + $1::int").await.unwrap();
    let b = client.prepare("SELECT 2 + $1::int").await.unwrap();
    for i in 0..5i32 {
        // Room for one statement on the server: each switch evicts the other.
        let x: i32 = client.query_one(&a, &[&i]).await.unwrap().get(0);
        let y: i32 = client.query_one(&b, &[&i]).await.unwrap().get(0);
        let z: i32 = client.query_one(&b, &[&i]).await.unwrap().get(0);
        assert_eq!((x, y, z), (1 + i, 2 + i, 2 + i));
    }
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgmux")
        .await
        .unwrap();
    let stats = show(&admin, "STATS").await;
    let app = stats
        .iter()
        .find(|r| r["database"] == "app")
        .expect("app row");
    let n = |k: &str| app[k].parse::<u64>().unwrap();
    assert_eq!(n("total_client_parse_count"), 2, "{app:?}");
    assert_eq!(n("total_bind_count"), 15, "{app:?}");
    // prepare() is Parse (a miss), then Describe (a hit); then each round misses on a, misses
    // on b, and hits on b again. Every miss but the first evicts the other statement.
    assert_eq!(n("total_prepared_hits"), 2 + 5, "{app:?}");
    assert_eq!(n("total_prepared_misses"), 2 + 2 * 5, "{app:?}");
    assert_eq!(n("total_prepared_evictions"), 1 + 2 * 5, "{app:?}");
    assert_eq!(n("total_server_parse_count"), n("total_prepared_misses"));
    let clients = show(&admin, "CLIENTS").await;
    let mine = clients
        .iter()
        .find(|r| r["user"] == "app")
        .expect("app client");
    assert_eq!(mine["prepared_statements"], "2", "{mine:?}");
    let servers = show(&admin, "SERVERS").await;
    assert_eq!(servers[0]["prepared_statements"], "1", "{servers:?}");
    let addr = pgmux.metrics_addr();
    let (_, body) = crate::metrics::scrape(addr, "/metrics").await;
    let samples = crate::metrics::samples(&body);
    let labels = "{database=\"app\",user=\"app\"}";
    let metric = |name: &str| samples[&format!("{name}{labels}")];
    assert_eq!(metric("pgmux_prepared_cache_hits_total"), 7.0);
    assert_eq!(metric("pgmux_prepared_cache_misses_total"), 12.0);
    assert_eq!(metric("pgmux_prepared_cache_evictions_total"), 11.0);
    assert_eq!(metric("pgmux_binds_total"), 15.0);
    // DEALLOCATE ALL, learned from the server's reply, empties the client's count too. The
    // reply reaches the client a moment before its session counts again: eventually.
    client.batch_execute("DEALLOCATE ALL").await.unwrap();
    eventually(Duration::from_secs(5), "the count emptied", || async {
        let clients = show(&admin, "CLIENTS").await;
        let mine = clients.iter().find(|r| r["user"] == "app")?;
        (mine["prepared_statements"] == "0").then_some(())
    })
    .await;
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_leaves_statements_as_the_client_named_them() {
    // There a client may EXECUTE by SQL what it prepared through the protocol.
    let pgmux = trust_pgmux("session", 1, "").await;
    let mut c = Raw::login(pgmux.port, "app", "app").await;
    let mut batch = raw::parse("mine", "SELECT 42");
    batch.extend(raw::sync());
    c.send(&batch).await;
    assert_eq!(raw::tags(&c.read_until(b'Z').await), "1Z");
    c.send(&raw::query("EXECUTE mine")).await;
    let got = c.read_until(b'Z').await;
    assert_eq!(raw::tags(&got), "TDCZ");
    assert_eq!(got[1].1, b"\0\x01\0\0\0\x0242");
    pgmux.stop().await;
}

/// A random script of named-statement operations: extended batches of a few Parse, Bind and
/// Execute, Describe and Close messages on a handful of names (some queries invalid) ended by
/// one Sync, and simple queries that deallocate, discard, open and end transactions or fail.
/// Each step draws one ReadyForQuery.
fn random_script(seed: u64, steps: usize) -> Vec<(Vec<u8>, usize)> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    const NAMES: [&str; 4] = ["a", "b", "c", ""];
    // One parameter each: in a failed transaction pgmux's own Parse for an evicted statement
    // fails (25P02) before PostgreSQL would have checked a Bind's parameter count (08P01).
    const QUERIES: [&str; 4] = [
        "SELECT $1::int + 1",
        "SELECT $1::int * 0 + 2",
        "SELEC $1",
        "SELECT $1::text || 'x'",
    ];
    const SIMPLE: [&str; 7] = [
        "DEALLOCATE a",
        "DEALLOCATE \"b\"",
        "DEALLOCATE ALL",
        "DISCARD ALL",
        "BEGIN",
        "COMMIT",
        "SELECT 1/0",
    ];
    (0..steps)
        .map(|_| {
            if rng.gen_bool(0.25) {
                return (raw::query(SIMPLE[rng.gen_range(0..SIMPLE.len())]), 1);
            }
            let mut batch = Vec::new();
            // The unnamed statement is used only in the batch that parsed it: in transaction
            // mode another client's may be left on the server, as with any transaction pooler.
            let mut unnamed_parsed = false;
            for _ in 0..rng.gen_range(1..=4) {
                let mut name = NAMES[rng.gen_range(0..NAMES.len())];
                let op = rng.gen_range(0..4);
                if name.is_empty() && op != 0 && !unnamed_parsed {
                    name = "a";
                }
                match op {
                    0 => {
                        unnamed_parsed |= name.is_empty();
                        batch.extend(raw::parse(name, QUERIES[rng.gen_range(0..QUERIES.len())]));
                    }
                    1 => {
                        batch.extend(bind_text("", name, &["7"]));
                        batch.extend(raw::execute(""));
                    }
                    // Not the unnamed statement: pgmux answers `DEALLOCATE name` itself, so
                    // the server does not drop its unnamed statement as a simple query would.
                    2 if !name.is_empty() => batch.extend(raw::describe_statement(name)),
                    2 => batch.extend(raw::describe_statement("a")),
                    _ => batch.extend(close_statement(name)),
                }
            }
            batch.extend(raw::sync());
            (batch, 1)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_scripts_match_postgres_too() {
    let direct = trust_pgmux("session", 2, "max_prepared_statements = 0").await;
    let pooled = trust_pgmux("transaction", 1, "max_prepared_statements = 2").await;
    for seed in 0..100u64 {
        let expected = run_script(direct.port, false, random_script(seed, 40)).await;
        let got = run_script(pooled.port, true, random_script(seed, 40)).await;
        for (i, (want, got)) in expected.iter().zip(&got).enumerate() {
            assert_eq!(got, want, "seed {seed}, step {i}");
        }
    }
    direct.stop().await;
    pooled.stop().await;
}
