//! The admin console: PgBouncer's SHOW columns in PgBouncer's order, access by role, errors,
//! and figures that move with traffic.

use crate::harness::pg::tool;
use crate::harness::{eventually, run_tool, shared_cluster, sqlstate, Pgmux, PgmuxConfig};
use std::time::Duration;
use tokio_postgres::SimpleQueryMessage;

async fn console_pgmux(general: &str) -> Pgmux {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.userlist
        .push_str("\"admin\" \"adminpw\"\n\"monitor\" \"monitorpw\"\n");
    cfg.general = format!("admin_users = [\"admin\"]\nstats_users = [\"monitor\"]\n{general}");
    cfg.start().await
}

async fn columns_and_rows(
    c: &tokio_postgres::Client,
    sql: &str,
) -> (Vec<String>, Vec<Vec<String>>) {
    let messages = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in messages {
        match m {
            SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_owned()).collect();
            }
            SimpleQueryMessage::Row(r) => rows.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_owned())
                    .collect(),
            ),
            _ => {}
        }
    }
    (columns, rows)
}

fn value<'a>(columns: &[String], row: &'a [String], name: &str) -> &'a str {
    let i = columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    &row[i]
}

/// SHOW CLIENTS and SHOW SERVERS share PgBouncer's 21 socket columns, then pgmux's `pinned`.
const SOCKETS: &[&str] = &[
    "type",
    "user",
    "database",
    "replication",
    "state",
    "addr",
    "port",
    "local_addr",
    "local_port",
    "connect_time",
    "request_time",
    "wait",
    "wait_us",
    "close_needed",
    "ptr",
    "link",
    "remote_pid",
    "tls",
    "application_name",
    "prepared_statements",
    "id",
    "pinned",
];

/// PgBouncer's columns, in the order its code sends them.
const EXPECTED: &[(&str, &[&str])] = &[
    (
        "POOLS",
        &[
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "cl_active_cancel_req",
            "cl_waiting_cancel_req",
            "sv_active",
            "sv_active_cancel",
            "sv_being_canceled",
            "sv_idle",
            "sv_used",
            "sv_tested",
            "sv_login",
            "maxwait",
            "maxwait_us",
            "pool_mode",
            "load_balance_hosts",
        ],
    ),
    (
        "STATS",
        &[
            "database",
            "total_server_assignment_count",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "total_client_parse_count",
            "total_server_parse_count",
            "total_bind_count",
            "total_client_login_count",
            "avg_server_assignment_count",
            "avg_xact_count",
            "avg_query_count",
            "avg_recv",
            "avg_sent",
            "avg_xact_time",
            "avg_query_time",
            "avg_wait_time",
            "avg_client_parse_count",
            "avg_server_parse_count",
            "avg_bind_count",
            "avg_client_login_count",
            // pgmux's own, after PgBouncer's.
            "total_prepared_hits",
            "total_prepared_misses",
            "total_prepared_evictions",
            "avg_prepared_hits",
            "avg_prepared_misses",
            "avg_prepared_evictions",
        ],
    ),
    (
        "STATS_TOTALS",
        &[
            "database",
            "server_assignment_count",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "query_time",
            "wait_time",
            "client_parse_count",
            "server_parse_count",
            "bind_count",
            "client_login_count",
        ],
    ),
    (
        "STATS_AVERAGES",
        &[
            "database",
            "server_assignment_count",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "xact_time",
            "query_time",
            "wait_time",
            "avg_client_parse_count",
            "avg_server_parse_count",
            "avg_bind_count",
            "avg_client_login_count",
        ],
    ),
    ("TOTALS", &["name", "value"]),
    (
        "DATABASES",
        &[
            "name",
            "host",
            "port",
            "database",
            "force_user",
            "pool_size",
            "min_pool_size",
            "reserve_pool_size",
            "server_lifetime",
            "pool_mode",
            "load_balance_hosts",
            "max_connections",
            "current_connections",
            "max_client_connections",
            "current_client_connections",
            "paused",
            "disabled",
        ],
    ),
    (
        "USERS",
        &[
            "name",
            "pool_size",
            "reserve_pool_size",
            "pool_mode",
            "max_user_connections",
            "current_connections",
            "max_user_client_connections",
            "current_client_connections",
        ],
    ),
    ("CONFIG", &["key", "value", "default", "changeable"]),
    ("LISTS", &["list", "items"]),
    ("STATE", &["key", "value"]),
    ("VERSION", &["version"]),
    ("MEM", &["name", "size", "used", "free", "memtotal"]),
    ("CLIENTS", SOCKETS),
    ("SERVERS", SOCKETS),
];

/// psql on the console as user admin (password adminpw), as an operator types it.
async fn psql_as_admin(port: u16, database: &str, sql: &str) -> (bool, String) {
    let port = port.to_string();
    let args = [
        "-X",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-U",
        "admin",
        database,
        "-c",
        sql,
    ];
    run_tool(&tool("psql"), &args, "adminpw", Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_show_has_pgbouncers_columns_in_order() {
    let pgmux = console_pgmux("").await;
    let app = pgmux.connect("app", "app").await;
    app.simple_query("SELECT 1").await.unwrap();
    for console_db in ["pgmux", "pgbouncer"] {
        let admin = pgmux
            .try_connect("admin", "adminpw", console_db)
            .await
            .unwrap();
        for (show, expected) in EXPECTED {
            for sql in [
                format!("SHOW {show}"),
                format!("select {};", show.to_lowercase()),
            ] {
                let (columns, _) = columns_and_rows(&admin, &sql).await;
                assert_eq!(columns, *expected, "{sql} on {console_db}");
            }
        }
    }
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_and_stats_move_with_traffic() {
    let pgmux = console_pgmux("stats_period = 1").await;
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgmux")
        .await
        .unwrap();
    let app = pgmux.connect("app", "app").await;
    for _ in 0..20 {
        app.simple_query("SELECT 1").await.unwrap();
    }
    let (cols, rows) = columns_and_rows(&admin, "SHOW POOLS").await;
    let row = rows
        .iter()
        .find(|r| r[0] == "app" && r[1] == "app")
        .expect("a pool for (app, app)");
    assert_eq!(value(&cols, row, "cl_active"), "1");
    assert_eq!(value(&cols, row, "cl_waiting"), "0");
    assert_eq!(value(&cols, row, "pool_mode"), "transaction");
    let (cols, rows) = columns_and_rows(&admin, "SHOW STATS_TOTALS").await;
    let row = rows.iter().find(|r| r[0] == "app").unwrap();
    let xacts: u64 = value(&cols, row, "xact_count").parse().unwrap();
    assert!(xacts >= 20, "{xacts}");
    assert!(value(&cols, row, "bytes_sent").parse::<u64>().unwrap() > 0);
    assert!(
        value(&cols, row, "client_login_count")
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // Averages over stats_period follow.
    let load = tokio::spawn(async move {
        for _ in 0..300 {
            app.simple_query("SELECT 1").await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    eventually(
        Duration::from_secs(5),
        "avg_xact_count above zero",
        || async {
            let (cols, rows) = columns_and_rows(&admin, "SHOW STATS").await;
            let row = rows.iter().find(|r| r[0] == "app")?;
            (value(&cols, row, "avg_xact_count").parse::<u64>().ok()? > 0).then_some(())
        },
    )
    .await;
    load.abort();
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_errors_and_psql() {
    let pgmux = console_pgmux("").await;
    let monitor = pgmux
        .try_connect("monitor", "monitorpw", "pgbouncer")
        .await
        .unwrap();
    let (_, rows) = columns_and_rows(&monitor, "SHOW STATE").await;
    assert_eq!(rows[0], ["active", "yes"]);
    let err = monitor.simple_query("PAUSE").await.unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("42501"),
        "stats users cannot PAUSE"
    );
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgmux")
        .await
        .unwrap();
    let err = admin.simple_query("FROBNICATE").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42601"));
    let message = err.as_db_error().unwrap().message();
    assert!(
        message.contains("SHOW HELP") && message.contains("POOLS"),
        "{err:?}"
    );
    // Not in admin_users or stats_users: refused after authenticating.
    let err = pgmux.try_connect("app", "app", "pgmux").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"));
    let err = pgmux
        .try_connect("admin", "wrong", "pgmux")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("28P01"));
    // psql, as an operator types it.
    let (ok, out) = psql_as_admin(pgmux.port, "pgmux", "SHOW POOLS").await;
    assert!(
        ok && out.contains("cl_active") && out.contains("sv_idle"),
        "{out}"
    );
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_lets_transactions_finish_and_holds_new_ones_until_resume() {
    let pgmux = console_pgmux("").await;
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgmux")
        .await
        .unwrap();
    let in_flight = pgmux.connect("app", "app").await;
    let newcomer = pgmux.connect("app", "app").await;
    in_flight.batch_execute("BEGIN").await.unwrap();
    let pause = tokio::spawn(async move {
        admin.simple_query("PAUSE app").await.unwrap();
        admin
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !pause.is_finished(),
        "PAUSE waits for the transaction in flight"
    );
    // The transaction in flight carries on and finishes.
    let rows = in_flight.simple_query("SELECT 'in flight'").await.unwrap();
    assert_eq!(crate::transaction_mode::first_value(&rows), "in flight");
    in_flight.batch_execute("COMMIT").await.unwrap();
    let admin = tokio::time::timeout(Duration::from_secs(5), pause)
        .await
        .expect("PAUSE returns once the server is back")
        .unwrap();
    let (cols, rows) = columns_and_rows(&admin, "SHOW DATABASES").await;
    let row = rows.iter().find(|r| r[0] == "app").unwrap();
    assert_eq!(value(&cols, row, "paused"), "1");
    // A new transaction waits, without an error, until RESUME.
    let held = tokio::spawn(async move { newcomer.simple_query("SELECT 'after resume'").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "new transactions wait while paused");
    admin.simple_query("RESUME app").await.unwrap();
    let rows = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("served after RESUME")
        .unwrap()
        .expect("no error for the held client");
    assert_eq!(crate::transaction_mode::first_value(&rows), "after resume");
    let err = admin.simple_query("RESUME app").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("55000"), "not paused");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_enable_reconnect_and_wait_close() {
    let pgmux = console_pgmux("").await;
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgmux")
        .await
        .unwrap();
    let client = pgmux.connect("app", "app").await;
    let pid = || async {
        crate::transaction_mode::first_value(
            &client
                .simple_query("SELECT pg_backend_pid()")
                .await
                .unwrap(),
        )
    };
    let before = pid().await;
    admin.simple_query("DISABLE app").await.unwrap();
    let err = pgmux.try_connect("app", "app", "app").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("57P03"));
    assert_eq!(pid().await, before, "connected clients carry on");
    admin.simple_query("ENABLE app").await.unwrap();
    pgmux.try_connect("app", "app", "app").await.unwrap();
    admin.simple_query("RECONNECT app").await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), admin.simple_query("WAIT_CLOSE app"))
        .await
        .expect("old servers close")
        .unwrap();
    assert_ne!(pid().await, before, "a new server after RECONNECT");
    let err = admin.simple_query("PAUSE nosuchdb").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("55000"));
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_answers_the_extended_protocol() {
    let pgmux = console_pgmux("").await;
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgmux")
        .await
        .unwrap();
    let app = pgmux.connect("app", "app").await;
    app.simple_query("SELECT 1").await.unwrap();
    // tokio-postgres prepares a named statement, describes it, binds and executes, asking for
    // binary results: the way drivers such as Npgsql talk by default.
    let rows = admin.query("SHOW POOLS", &[]).await.unwrap();
    let names: Vec<&str> = rows[0].columns().iter().map(|c| c.name()).collect();
    assert_eq!(names[..3], ["database", "user", "cl_active"]);
    let active: i32 = rows[0].get("cl_active");
    assert_eq!(active, 1);
    let rows = admin.query("SHOW VERSION", &[]).await.unwrap();
    let version: &str = rows[0].get(0);
    assert!(version.starts_with("PgBouncer "), "{version}");
    let stmt = admin.prepare("SHOW STATE").await.unwrap();
    assert_eq!(stmt.columns().len(), 2);
    let rows = admin.query(&stmt, &[]).await.unwrap();
    assert_eq!(rows.len(), 3);
    // Errors arrive as errors, and the session carries on after Sync.
    let err = admin.query("SHOW NOTHING", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42601"));
    let err = admin.execute("PAUSE nosuchdb", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("55000"));
    let rows = admin.query("SHOW STATE", &[]).await.unwrap();
    assert_eq!(rows.len(), 3);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_clients_and_servers_and_kill_them() {
    let pgmux = console_pgmux("").await;
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgmux")
        .await
        .unwrap();
    let busy = pgmux.connect("app", "app").await;
    let idle = pgmux.connect("app", "app").await;
    idle.simple_query("SELECT 1").await.unwrap();
    busy.batch_execute("BEGIN").await.unwrap();
    let backend_pid = crate::transaction_mode::first_value(
        &busy.simple_query("SELECT pg_backend_pid()").await.unwrap(),
    );
    let (cols, rows) = columns_and_rows(&admin, "SHOW CLIENTS").await;
    assert_eq!(cols.len(), 22);
    // The asking console session is listed too, apart from the pool's clients.
    let (consoles, rows): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|r| value(&cols, r, "database") == "pgbouncer");
    assert_eq!(consoles.len(), 1, "{consoles:?}");
    let states: Vec<&str> = rows.iter().map(|r| value(&cols, r, "state")).collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        states.contains(&"active") && states.contains(&"idle"),
        "{states:?}"
    );
    let active = rows
        .iter()
        .find(|r| value(&cols, r, "state") == "active")
        .unwrap();
    let (scols, srows) = columns_and_rows(&admin, "SHOW SERVERS").await;
    let server = srows
        .iter()
        .find(|r| value(&scols, r, "state") == "active")
        .expect("the busy client's server");
    assert_eq!(value(&scols, server, "remote_pid"), backend_pid);
    assert_eq!(value(&scols, server, "link"), value(&cols, active, "ptr"));
    // KILL_CLIENT ends exactly that client, mid-transaction; the other one carries on.
    let id = value(&cols, active, "id").to_owned();
    admin
        .simple_query(&format!("KILL_CLIENT {id}"))
        .await
        .unwrap();
    let err = busy.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.is_closed() || sqlstate(&err).as_deref() == Some("57P01"),
        "{err:?}"
    );
    idle.simple_query("SELECT 1").await.unwrap();
    // KILL drops the database's clients and pauses it until RESUME.
    admin.simple_query("KILL app").await.unwrap();
    let err = idle.simple_query("SELECT 1").await.unwrap_err();
    assert!(
        err.is_closed() || sqlstate(&err).as_deref() == Some("57P01"),
        "{err:?}"
    );
    let (_, rows) = columns_and_rows(&admin, "SHOW DATABASES").await;
    let paused = rows.iter().find(|r| r[0] == "app").map(|r| r[15].clone());
    assert_eq!(paused.as_deref(), Some("1"));
    admin.simple_query("RESUME app").await.unwrap();
    let fresh = pgmux.connect("app", "app").await;
    fresh.simple_query("SELECT 1").await.unwrap();
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_changes_settings_at_run_time() {
    let pgmux = console_pgmux("").await;
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgmux")
        .await
        .unwrap();
    admin
        .simple_query("SET default_pool_size = 3")
        .await
        .unwrap();
    admin
        .simple_query("set server_reset_query to 'DISCARD PLANS'")
        .await
        .unwrap();
    let (cols, rows) = columns_and_rows(&admin, "SHOW CONFIG").await;
    let setting = |name: &str| {
        let row = rows.iter().find(|r| r[0] == name).unwrap();
        (
            value(&cols, row, "value").to_owned(),
            value(&cols, row, "changeable").to_owned(),
        )
    };
    assert_eq!(setting("default_pool_size"), ("3".into(), "yes".into()));
    assert_eq!(setting("server_reset_query").0, "DISCARD PLANS");
    assert_eq!(setting("listen_port").1, "no");
    let err = admin.simple_query("SET listen_port = 1").await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("55P02"));
    let err = admin
        .simple_query("SET default_pool_size = 0")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22023"));
    let monitor = pgmux
        .try_connect("monitor", "monitorpw", "pgmux")
        .await
        .unwrap();
    let err = monitor
        .simple_query("SET default_pool_size = 4")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    pgmux.stop().await;
}

/// The `items` of each SHOW LISTS row, by list name.
async fn lists(c: &tokio_postgres::Client) -> std::collections::HashMap<String, u64> {
    let (_, rows) = columns_and_rows(c, "SHOW LISTS").await;
    rows.into_iter()
        .map(|r| (r[0].clone(), r[1].parse().unwrap()))
        .collect()
}

fn is_killed(err: &tokio_postgres::Error) -> bool {
    err.is_closed() || sqlstate(err).as_deref() == Some("57P01")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sessions_are_clients_that_pools_do_not_count() {
    let pgmux = console_pgmux("").await;
    // One console session through each name of the console database.
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgbouncer")
        .await
        .unwrap();
    let monitor = pgmux
        .try_connect("monitor", "monitorpw", "pgmux")
        .await
        .unwrap();
    let app = pgmux.connect("app", "app").await;
    app.simple_query("SELECT 1").await.unwrap();
    let (cols, rows) = columns_and_rows(&admin, "SHOW CLIENTS").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    let of = |user: &str| {
        rows.iter()
            .find(|r| value(&cols, r, "user") == user)
            .unwrap_or_else(|| panic!("no client {user}: {rows:?}"))
    };
    // Both console sessions are shown in PgBouncer's console database, whichever name they
    // used, and `active` as PgBouncer shows its console clients.
    for user in ["admin", "monitor"] {
        let row = of(user);
        assert_eq!(value(&cols, row, "type"), "C");
        assert_eq!(value(&cols, row, "database"), "pgbouncer", "{user}");
        assert_eq!(value(&cols, row, "state"), "active", "{user}");
        assert_eq!(value(&cols, row, "addr"), "127.0.0.1");
        assert!(value(&cols, row, "port").parse::<u16>().unwrap() > 0);
        assert_eq!(value(&cols, row, "local_port"), pgmux.port.to_string());
        assert!(value(&cols, row, "connect_time").ends_with(" UTC"));
        assert_eq!(value(&cols, row, "link"), "");
        assert_eq!(value(&cols, row, "tls"), "");
    }
    assert_eq!(value(&cols, of("app"), "database"), "app");
    let ids: Vec<u64> = rows
        .iter()
        .map(|r| value(&cols, r, "id").parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id: {ids:?}");
    // No console pool, and the app pool counts its one client.
    let (pcols, pools) = columns_and_rows(&admin, "SHOW POOLS").await;
    assert_eq!(pools.len(), 1, "{pools:?}");
    assert_eq!(value(&pcols, &pools[0], "cl_active"), "1");
    let (_, servers) = columns_and_rows(&admin, "SHOW SERVERS").await;
    assert!(servers.iter().all(|r| r[2] == "app"), "{servers:?}");

    // KILL drops the pools' clients, not the console's.
    admin.simple_query("KILL").await.unwrap();
    assert!(is_killed(&app.simple_query("SELECT 1").await.unwrap_err()));
    monitor.simple_query("SHOW STATE").await.unwrap();
    admin.simple_query("RESUME").await.unwrap();

    // KILL_CLIENT ends another console session, as in PgBouncer, and returns once it is gone.
    let monitor_id = value(&cols, of("monitor"), "id").to_owned();
    let err = monitor
        .simple_query(&format!("KILL_CLIENT {monitor_id}"))
        .await
        .unwrap_err();
    assert_eq!(
        sqlstate(&err).as_deref(),
        Some("42501"),
        "stats users may not"
    );
    admin
        .simple_query(&format!("KILL_CLIENT {monitor_id}"))
        .await
        .unwrap();
    assert!(is_killed(
        &monitor.simple_query("SHOW STATE").await.unwrap_err()
    ));
    let (cols, rows) = columns_and_rows(&admin, "SHOW CLIENTS").await;
    assert_eq!(rows.len(), 1, "only the asking session is left: {rows:?}");
    assert_eq!(value(&cols, &rows[0], "user"), "admin");

    // A session that leaves is forgotten.
    let brief = pgmux
        .try_connect("monitor", "monitorpw", "pgbouncer")
        .await
        .unwrap();
    brief.simple_query("SHOW STATE").await.unwrap();
    assert_eq!(columns_and_rows(&admin, "SHOW CLIENTS").await.1.len(), 2);
    drop(brief);
    eventually(Duration::from_secs(5), "the session unlisted", || async {
        (columns_and_rows(&admin, "SHOW CLIENTS").await.1.len() == 1).then_some(())
    })
    .await;

    // KILL_CLIENT of one's own session ends it, as pg_terminate_backend of one's own pid.
    let own_id = value(&cols, &rows[0], "id").to_owned();
    let err = admin
        .simple_query(&format!("KILL_CLIENT {own_id}"))
        .await
        .unwrap_err();
    assert!(is_killed(&err), "{err:?}");
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgmux")
        .await
        .unwrap();
    let (cols, rows) = columns_and_rows(&admin, "SHOW CLIENTS").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_ne!(value(&cols, &rows[0], "id"), own_id, "ids are not reused");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_lists_counts_as_pgbouncer_does() {
    let pgmux = console_pgmux("").await;
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgbouncer")
        .await
        .unwrap();
    let first = pgmux.connect("app", "app").await;
    let second = pgmux.connect("app", "app").await;
    first.batch_execute("BEGIN").await.unwrap();
    second.simple_query("SELECT 1").await.unwrap();
    let l = lists(&admin).await;
    let (_, rows) = columns_and_rows(&admin, "SHOW LISTS").await;
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        names,
        [
            "databases",
            "users",
            "peers",
            "pools",
            "peer_pools",
            "free_clients",
            "used_clients",
            "login_clients",
            "free_servers",
            "used_servers",
            "dns_names",
            "dns_zones",
            "dns_queries",
            "dns_pending"
        ]
    );
    // Two pool clients and the console session asking.
    assert_eq!(l["used_clients"], 3, "{l:?}");
    assert_eq!(l["login_clients"], 0, "{l:?}");
    assert_eq!(l["free_clients"], 0);
    assert_eq!(l["free_servers"], 0);
    // Every server open, the one in a transaction and the idle ones alike.
    let (_, servers) = columns_and_rows(&admin, "SHOW SERVERS").await;
    assert!(!servers.is_empty());
    assert_eq!(l["used_servers"], servers.len() as u64, "{l:?} {servers:?}");
    // As many as SHOW DATABASES, SHOW USERS and SHOW POOLS list.
    assert_eq!(l["databases"], 1);
    let (_, users) = columns_and_rows(&admin, "SHOW USERS").await;
    assert_eq!(l["users"], users.len() as u64);
    assert_eq!(l["pools"], 1);
    assert_eq!(
        l["peers"] + l["peer_pools"] + l["dns_names"] + l["dns_pending"],
        0
    );
    // A connection that has not logged in yet is a login client, and a used one.
    let half_open = tokio::net::TcpStream::connect(("127.0.0.1", pgmux.port))
        .await
        .unwrap();
    let l = eventually(Duration::from_secs(5), "a login client", || async {
        let l = lists(&admin).await;
        (l["login_clients"] == 1).then_some(l)
    })
    .await;
    assert_eq!(l["used_clients"], 4, "{l:?}");
    drop(half_open);
    drop(second);
    eventually(Duration::from_secs(5), "both gone", || async {
        let l = lists(&admin).await;
        (l["login_clients"] == 0 && l["used_clients"] == 2).then_some(())
    })
    .await;
    first.batch_execute("COMMIT").await.unwrap();
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_config_prints_values_as_pgbouncer() {
    let pg = shared_cluster();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 20;
    cfg.userlist.push_str("\"admin\" \"adminpw\"\n");
    cfg.general = "admin_users = [\"admin\", \"ops\"]\nreserve_pool_timeout = 2.5\n".into();
    let pgmux = cfg.start().await;
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgbouncer")
        .await
        .unwrap();
    let (cols, rows) = columns_and_rows(&admin, "SHOW CONFIG").await;
    assert_eq!(cols, ["key", "value", "default", "changeable"]);
    let keys: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted by key");
    let setting = |name: &str| {
        let row = rows
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no {name}"));
        (
            value(&cols, row, "value").to_owned(),
            value(&cols, row, "default").to_owned(),
            value(&cols, row, "changeable").to_owned(),
        )
    };
    let v = |value: &str, default: &str, changeable: &str| {
        (value.to_owned(), default.to_owned(), changeable.to_owned())
    };
    // What PgBouncer shows for the same settings.
    assert_eq!(setting("default_pool_size"), v("20", "20", "yes"));
    assert_eq!(setting("query_wait_timeout"), v("120", "120", "yes"));
    assert_eq!(setting("server_check_delay"), v("30", "30", "yes"));
    assert_eq!(setting("server_lifetime"), v("3600", "3600", "yes"));
    assert_eq!(setting("reserve_pool_timeout"), v("2.5", "5", "yes"));
    assert_eq!(setting("log_stats"), v("1", "1", "yes"));
    assert_eq!(setting("server_reset_query_always"), v("0", "0", "yes"));
    assert_eq!(setting("admin_users"), v("admin, ops", "", "yes"));
    assert_eq!(setting("max_client_conn"), v("2000", "100", "yes"));
    assert_eq!(setting("listen_port").2, "no");
    // Unset settings are listed, empty.
    assert_eq!(setting("auth_user"), v("", "", "yes"));
    // SET shows what it set, in the same format.
    admin
        .simple_query("SET server_check_delay = 0.5")
        .await
        .unwrap();
    admin.simple_query("SET log_stats = false").await.unwrap();
    let (cols, rows) = columns_and_rows(&admin, "SHOW CONFIG").await;
    let shown = |name: &str| {
        let row = rows.iter().find(|r| r[0] == name).unwrap();
        value(&cols, row, "value").to_owned()
    };
    assert_eq!(shown("server_check_delay"), "0.5");
    assert_eq!(shown("log_stats"), "0");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_help_read_as_pgbouncers() {
    let pgmux = console_pgmux("").await;
    let admin = pgmux
        .try_connect("admin", "adminpw", "pgbouncer")
        .await
        .unwrap();
    let (cols, rows) = columns_and_rows(&admin, "SHOW VERSION").await;
    assert_eq!(cols, ["version"]);
    assert_eq!(rows.len(), 1);
    let version = &rows[0][0];
    // What exporters read: the first x.y.z is the PgBouncer version whose console pgmux's
    // matches; pgmux's own version follows.
    let first = version
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .find(|w| {
            let parts: Vec<&str> = w.split('.').collect();
            parts.len() == 3 && parts.iter().all(|p| !p.is_empty())
        });
    assert_eq!(first, Some("1.26.0"), "{version}");
    assert!(version.starts_with("PgBouncer 1.26.0"), "{version}");
    assert!(
        version.ends_with(&format!("pgmux {}", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    // HELP as psql shows it: a NOTICE with every command, SET among them.
    let (ok, out) = psql_as_admin(pgmux.port, "pgbouncer", "SHOW HELP").await;
    assert!(ok, "{out}");
    assert!(out.contains("NOTICE:  Console usage"), "{out}");
    for command in [
        "SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION",
        "SHOW LISTS|MEM|STATE|PEERS|PEER_POOLS",
        "SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS",
        "SET key = arg",
        "RELOAD",
        "PAUSE [<db>]",
        "RESUME [<db>]",
        "KILL_CLIENT <client_id>",
        "SHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS",
        "WAIT_CLOSE [<db>]",
    ] {
        assert!(out.contains(&format!("\t{command}\n")), "{command}: {out}");
    }
    pgmux.stop().await;
}
