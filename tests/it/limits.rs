//! Connection caps under load: pool sizes, max_db_connections and max_user_connections are
//! never exceeded, idle servers of other pools are closed to make room, every client finishes.

use crate::harness::{own_role, shared_cluster, PgmuxConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DATABASES: [&str; 3] = ["lim1", "lim2", "lim3"];
const USERS: [&str; 3] = ["lu1", "lu2", "lu3"];

async fn create_databases() {
    static CREATED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    tokio::task::block_in_place(|| {
        CREATED.get_or_init(|| {
            for db in DATABASES {
                shared_cluster().psql_local(&format!("CREATE DATABASE {db}"));
            }
        })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_never_exceed_any_cap() {
    let pg = shared_cluster();
    create_databases().await;
    let mut userlist = String::new();
    for u in USERS {
        userlist.push_str(&own_role(pg, u).await);
    }
    let mut cfg = PgmuxConfig::new(pg);
    // md5 keeps a thousand logins cheap for the test's own (unoptimized) client side.
    cfg.auth_type = "md5";
    cfg.pool_size = 4;
    cfg.userlist = userlist;
    cfg.general = "max_db_connections = 5\nmax_user_connections = 5".into();
    cfg.extra = DATABASES
        .iter()
        .map(|db| {
            format!(
                "[databases.{db}]\nhost = \"127.0.0.1\"\nport = {}\n",
                pg.port
            )
        })
        .collect();
    let pgmux = cfg.start().await;

    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let done = done.clone();
        async move {
            let admin = shared_cluster().admin().await;
            let mut samples = 0;
            while !done.load(Ordering::Relaxed) {
                let rows = admin
                    .query(
                        "SELECT datname, usename FROM pg_stat_activity \
                         WHERE usename IN ('lu1', 'lu2', 'lu3')",
                        &[],
                    )
                    .await
                    .unwrap();
                let count =
                    |f: &dyn Fn(&tokio_postgres::Row) -> bool| rows.iter().filter(|r| f(r)).count();
                for db in DATABASES {
                    let n = count(&|r| r.get::<_, &str>(0) == db);
                    assert!(
                        n <= 5,
                        "{n} server connections to {db} (max_db_connections = 5)"
                    );
                }
                for u in USERS {
                    let n = count(&|r| r.get::<_, &str>(1) == u);
                    assert!(
                        n <= 5,
                        "{n} server connections of {u} (max_user_connections = 5)"
                    );
                    for db in DATABASES {
                        let n = count(&|r| r.get::<_, &str>(0) == db && r.get::<_, &str>(1) == u);
                        assert!(
                            n <= 4,
                            "{n} server connections in pool ({db}, {u}) of size 4"
                        );
                    }
                }
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        }
    });

    let mut clients = Vec::new();
    for i in 0..1000usize {
        let url = pgmux.url(USERS[i % 3], USERS[i % 3], DATABASES[(i / 3) % 3]);
        clients.push(tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("client {i}: {e}"));
            tokio::spawn(conn);
            for round in 0..2 {
                let rows = client
                    .simple_query(&format!("SELECT pg_sleep(0.005), '{i}-{round}'"))
                    .await
                    .unwrap_or_else(|e| panic!("client {i}: {e}"));
                let mine = rows.iter().any(|m| {
                    matches!(m, tokio_postgres::SimpleQueryMessage::Row(r)
                        if r.get(1) == Some(format!("{i}-{round}").as_str()))
                });
                assert!(mine, "client {i} got someone else's answer");
            }
        }));
    }
    for c in clients {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("every client finishes")
            .unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    assert!(samples > 0);
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_of_another_pool_is_closed_to_make_room() {
    let pg = shared_cluster();
    create_databases().await;
    let userlist = own_role(pg, "evictor").await;
    let mut cfg = PgmuxConfig::new(pg);
    cfg.pool_size = 2;
    cfg.userlist = userlist;
    cfg.general = "max_user_connections = 2".into();
    cfg.extra = DATABASES[..2]
        .iter()
        .map(|db| {
            format!(
                "[databases.{db}]\nhost = \"127.0.0.1\"\nport = {}\n",
                pg.port
            )
        })
        .collect();
    let pgmux = cfg.start().await;
    let a = pgmux
        .try_connect("evictor", "evictor", "lim1")
        .await
        .unwrap();
    let b = pgmux
        .try_connect("evictor", "evictor", "lim1")
        .await
        .unwrap();
    // Two servers in lim1's pool, both idle afterwards: the user's cap is reached.
    let (ra, rb) = tokio::join!(
        a.simple_query("SELECT pg_sleep(0.2)"),
        b.simple_query("SELECT pg_sleep(0.2)")
    );
    ra.unwrap();
    rb.unwrap();
    let c = pgmux
        .try_connect("evictor", "evictor", "lim2")
        .await
        .unwrap();
    let rows = tokio::time::timeout(
        Duration::from_secs(5),
        c.simple_query("SELECT current_database()"),
    )
    .await
    .expect("served by evicting an idle lim1 server, not left waiting")
    .unwrap();
    assert_eq!(crate::transaction_mode::first_value(&rows), "lim2");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_caps_per_database_and_per_user_refuse_with_53300_and_free_on_leaving() {
    let pg = shared_cluster();
    create_databases().await;
    let mut userlist = String::new();
    for u in ["ccap1", "ccap2"] {
        userlist.push_str(&own_role(pg, u).await);
    }
    userlist.push_str("\"admin\" \"admin\"\n");
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "md5";
    cfg.userlist = userlist;
    cfg.general = "max_db_client_connections = 2\nadmin_users = [\"admin\"]".into();
    cfg.extra = format!(
        "[databases.lim1]\nhost = \"127.0.0.1\"\nport = {0}\nmax_db_client_connections = 3\n\
         [databases.lim2]\nhost = \"127.0.0.1\"\nport = {0}\n\
         [users.ccap2]\nmax_user_client_connections = 1\n",
        pg.port
    );
    let pgmux = cfg.start().await;
    let code = |user: &'static str, db: &'static str| {
        let url = pgmux.url(user, user, db);
        async move {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    Ok(client)
                }
                Err(e) => Err((crate::harness::sqlstate(&e), e.to_string())),
            }
        }
    };
    // The global cap of 2 on app; lim1's own 3.
    let a1 = code("ccap1", "app").await.unwrap();
    let _a2 = code("ccap1", "app").await.unwrap();
    let (state, _) = code("ccap1", "app").await.unwrap_err();
    assert_eq!(state.as_deref(), Some("53300"));
    let l: Vec<_> = [code("ccap1", "lim1").await, code("ccap1", "lim1").await]
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // ccap2 may hold one connection in all.
    let c2 = code("ccap2", "lim1").await.unwrap();
    let (state, message) = code("ccap2", "lim2").await.unwrap_err();
    assert_eq!(state.as_deref(), Some("53300"), "{message}");

    let console = code("admin", "pgmux").await.unwrap();
    let rows = console.simple_query("SHOW DATABASES").await.unwrap();
    let row = |name: &str| {
        rows.iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) if r.get("name") == Some(name) => {
                    Some((
                        r.get("max_client_connections").unwrap().to_owned(),
                        r.get("current_client_connections").unwrap().to_owned(),
                    ))
                }
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(row("app"), ("2".into(), "2".into()));
    assert_eq!(row("lim1"), ("3".into(), "3".into()));

    // Leaving frees the place.
    drop(a1);
    drop(c2);
    crate::harness::eventually(Duration::from_secs(5), "places freed", || async {
        (code("ccap1", "app").await.is_ok() && code("ccap2", "lim2").await.is_ok()).then_some(())
    })
    .await;
    drop(l);
    pgmux.stop().await;
}
