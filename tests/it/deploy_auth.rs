//! Authentication as PgBouncer deployments use it: auth_query for users missing from
//! auth_file, and auth_type = hba with an auth_hba_file.

use crate::harness::{pg, raw, run_tool, shared_cluster, sqlstate, PgmuxConfig, TempDir};
use std::time::Duration;

async fn current_user(client: &tokio_postgres::Client) -> String {
    let rows = client.simple_query("SELECT current_user").await.unwrap();
    crate::transaction_mode::first_value(&rows)
}

async fn login_code(pgmux: &crate::harness::Pgmux, user: &str, password: &str) -> String {
    // Built field by field, so that any user name goes through as it is.
    let login = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(pgmux.port)
        .user(user)
        .password(password)
        .dbname("app")
        .connect(tokio_postgres::NoTls)
        .await;
    match login {
        Ok(_) => panic!("{user} should not log in"),
        Err(e) => sqlstate(&e).unwrap_or_else(|| format!("no SQLSTATE: {e}")),
    }
}

/// The server's message of a failed login.
fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

/// Creates the auth_query test roles once: one with a SCRAM secret, one with an md5 secret,
/// neither in any auth_file.
async fn lookup_roles(pg: &crate::harness::ClusterInfo) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let admin = pg.admin().await;
        admin
            .batch_execute(
                "DROP ROLE IF EXISTS aq_scram; DROP ROLE IF EXISTS aq_md5; DROP ROLE IF EXISTS aq_fallback;
                 SET password_encryption = 'scram-sha-256';
                 CREATE ROLE aq_scram LOGIN PASSWORD 'scram-secret';
                 CREATE ROLE aq_fallback LOGIN PASSWORD 'fallback-secret';
                 SET password_encryption = 'md5';
                 CREATE ROLE aq_md5 LOGIN PASSWORD 'md5-secret';
                 GRANT ALL ON DATABASE app TO aq_scram, aq_md5, aq_fallback;",
            )
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_logs_in_users_missing_from_auth_file_and_follows_password_changes() {
    let pg = shared_cluster();
    lookup_roles(pg).await;
    let mut cfg = PgmuxConfig::new(pg);
    // md5 asks a user whose secret is SCRAM for SCRAM, as PostgreSQL does.
    cfg.auth_type = "md5";
    cfg.general = "auth_user = \"postgres\"\nauth_query_cache_ttl = 600".into();
    let pgmux = cfg.start().await;

    // The SCRAM user logs in to PostgreSQL with the keys its client proved; the md5 user with
    // the md5 secret found.
    let scram = pgmux.connect("aq_scram", "scram-secret").await;
    assert_eq!(current_user(&scram).await, "aq_scram");
    let md5 = pgmux.connect("aq_md5", "md5-secret").await;
    assert_eq!(current_user(&md5).await, "aq_md5");
    drop((scram, md5));
    assert_eq!(login_code(&pgmux, "aq_scram", "wrong").await, "28P01");
    assert_eq!(login_code(&pgmux, "aq_nobody", "x").await, "28P01");
    // A name with quotes is looked up as it is, and finds nobody.
    assert_eq!(login_code(&pgmux, "x' OR 'a'='a", "x").await, "28P01");

    // A login caches the secret found again (the failed ones above forgot it).
    drop(pgmux.connect("aq_scram", "scram-secret").await);
    let admin = pg.admin().await;
    admin
        .batch_execute("ALTER ROLE aq_scram PASSWORD 'changed-secret'")
        .await
        .unwrap();
    // The cached secret is the old one: the first try fails and forgets it, the next works.
    assert_eq!(
        login_code(&pgmux, "aq_scram", "changed-secret").await,
        "28P01"
    );
    let changed = pgmux.connect("aq_scram", "changed-secret").await;
    assert_eq!(current_user(&changed).await, "aq_scram");
    assert_eq!(
        login_code(&pgmux, "aq_scram", "scram-secret").await,
        "28P01"
    );
    admin
        .batch_execute("ALTER ROLE aq_scram PASSWORD 'scram-secret'")
        .await
        .unwrap();
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_user_that_cannot_log_in_is_a_connection_failure() {
    let pg = shared_cluster();
    lookup_roles(pg).await;
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "md5";
    // auth_user's password in auth_file is wrong.
    cfg.userlist = "\"postgres\" \"not-the-password\"\n".into();
    cfg.general = "auth_user = \"postgres\"".into();
    let pgmux = cfg.start().await;
    assert_eq!(login_code(&pgmux, "aq_md5", "md5-secret").await, "08006");
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_dbname_and_a_custom_query_through_a_security_definer_function() {
    let pg = shared_cluster();
    lookup_roles(pg).await;
    let admin = pg.admin().await;
    admin
        .batch_execute(
            "CREATE OR REPLACE FUNCTION public.pgmux_lookup(name text, OUT usename text, OUT passwd text)
             RETURNS record LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog AS
             $$ SELECT rolname::text, rolpassword::text FROM pg_authid WHERE rolname = name AND rolcanlogin $$;
             DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'aq_lookup') THEN
                 CREATE ROLE aq_lookup LOGIN PASSWORD 'lookup';
               END IF;
             END $$;
             REVOKE ALL ON FUNCTION public.pgmux_lookup(text) FROM public;
             GRANT EXECUTE ON FUNCTION public.pgmux_lookup(text) TO aq_lookup;",
        )
        .await
        .unwrap();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "scram-sha-256";
    cfg.userlist = "\"aq_lookup\" \"lookup\"\n".into();
    cfg.general = "auth_user = \"aq_lookup\"\nauth_dbname = \"app\"\n\
                   auth_query = \"SELECT usename, passwd FROM public.pgmux_lookup($1)\""
        .into();
    cfg.extra = format!(
        "[databases.other]\nhost = \"127.0.0.1\"\nport = {}\ndbname = \"app\"\n",
        pg.port
    );
    let pgmux = cfg.start().await;
    let client = pgmux
        .try_connect("aq_fallback", "fallback-secret", "other")
        .await
        .unwrap();
    assert_eq!(current_user(&client).await, "aq_fallback");
    pgmux.stop().await;
}

/// Reads the authentication request pgmux sends `user` over TCP: 3 = clear text, 5 = md5,
/// 10 = SASL; or the SQLSTATE of the error it sends instead.
async fn first_auth_request(port: u16, user: &str) -> Result<u32, String> {
    let mut conn = raw::Raw::connect(port).await;
    conn.send(&raw::startup_packet(
        196_608,
        &[("user", user), ("database", "app")],
    ))
    .await;
    match conn.read().await {
        Some((b'R', body)) => Ok(u32::from_be_bytes(body[..4].try_into().unwrap())),
        Some((b'E', body)) => Err(raw::error_code(&body)),
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hba_file_rejects_one_user_allows_another_by_address_and_asks_a_third_for_md5() {
    let pg = shared_cluster();
    let dir = TempDir::new("hba");
    let hba = dir.path().join("pgmux_hba.conf");
    let os_user = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let os_user = String::from_utf8(os_user.stdout).unwrap().trim().to_owned();
    let other = if os_user == "postgres" {
        "app"
    } else {
        "postgres"
    };
    let write_hba = |app_rule: &str| {
        std::fs::write(
            &hba,
            format!(
                "# pgmux's own pg_hba\n\
                 local   all  {os_user}               peer\n\
                 local   all  {other}                 peer\n\
                 local   all  all                     trust\n\
                 host    all  md5user  127.0.0.1/32   reject\n\
                 host    all  app      127.0.0.1/32   {app_rule}\n\
                 host    all  postgres 10.0.0.0/8     trust\n\
                 host    all  all      127.0.0.1 255.255.255.255 md5\n"
            ),
        )
        .unwrap()
    };
    write_hba("scram-sha-256");
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "hba";
    cfg.userlist.push_str("\"hbauser\" \"app\"\n");
    cfg.userlist
        .push_str(&format!("\"{os_user}\" \"unused\"\n"));
    cfg.general = format!("auth_hba_file = \"{}\"", hba.display());
    cfg.database_extra = "user = \"app\"".into();
    let pgmux = cfg.start().await;

    // app by address, with SCRAM.
    assert_eq!(first_auth_request(pgmux.port, "app").await, Ok(10));
    assert_eq!(
        current_user(&pgmux.connect("app", "app").await).await,
        "app"
    );
    // md5user is rejected by its line, as PostgreSQL words it.
    let err = pgmux
        .try_connect("md5user", "md5pass", "app")
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"));
    assert!(
        message(&err).contains("pg_hba.conf rejects connection for host \"127.0.0.1\""),
        "{err}"
    );
    // Anyone else from 127.0.0.1 is asked for md5 (hbauser logs in to PostgreSQL as app).
    assert_eq!(first_auth_request(pgmux.port, "hbauser").await, Ok(5));
    assert_eq!(
        current_user(&pgmux.connect("hbauser", "app").await).await,
        "app"
    );

    // Over the Unix socket: trust for most; peer for this process's OS user (who logs in) and
    // for another user (who does not).
    let psql = |user: String| {
        let dir = pgmux.socket_dir().to_owned();
        let port = pgmux.port.to_string();
        async move {
            let args = [
                "-X",
                "-At",
                "-h",
                dir.to_str().unwrap(),
                "-p",
                &port,
                "-U",
                &user,
                "-d",
                "app",
                "-c",
                "SELECT current_user",
            ];
            run_tool(&pg::tool("psql"), &args, "", Duration::from_secs(30)).await
        }
    };
    let (ok, out) = psql("hbauser".into()).await;
    assert!(ok && out.trim() == "app", "{out}");
    let (ok, out) = psql(os_user.clone()).await;
    assert!(ok && out.trim() == "app", "peer as {os_user}: {out}");
    let (ok, out) = psql(other.into()).await;
    let expected = format!("Peer authentication failed for user \"{other}\"");
    assert!(!ok && out.contains(&expected), "{out}");

    // RELOAD re-reads the file: app's line now says reject.
    write_hba("reject");
    pgmux.shared().reload_from_file().unwrap();
    let err = pgmux.try_connect("app", "app", "app").await.err().unwrap();
    assert_eq!(sqlstate(&err).as_deref(), Some("28000"), "{err}");
    assert!(
        message(&err).starts_with("pg_hba.conf rejects connection"),
        "{err}"
    );
    // A bad line is refused with its line number, and the file in force stays.
    std::fs::write(
        &hba,
        "host all all 127.0.0.1/32 trust\nhost all all nowhere md5\n",
    )
    .unwrap();
    let refused = pgmux.shared().reload_from_file().unwrap_err();
    assert!(refused.contains("pgmux_hba.conf:2:"), "{refused}");
    assert_eq!(first_auth_request(pgmux.port, "hbauser").await, Ok(5));
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_hba_line_is_postgresqls_28000() {
    let pg = shared_cluster();
    let dir = TempDir::new("hba-none");
    let hba = dir.path().join("hba.conf");
    std::fs::write(&hba, "host all app 10.0.0.0/8 trust\n").unwrap();
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "hba";
    cfg.general = format!("auth_hba_file = \"{}\"", hba.display());
    let pgmux = cfg.start().await;
    assert_eq!(
        first_auth_request(pgmux.port, "app").await,
        Err("28000".into())
    );
    let err = pgmux.try_connect("app", "app", "app").await.err().unwrap();
    assert!(
        message(&err).contains(
            "no pg_hba.conf entry for host \"127.0.0.1\", user \"app\", database \"app\", no encryption"
        ),
        "{err}"
    );
    pgmux.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_fallback_users_are_looked_up_only_in_a_fixed_database() {
    let pg = shared_cluster();
    lookup_roles(pg).await;
    let admin = pg.admin().await;
    let exists = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = 'lookup_fallback'",
            &[],
        )
        .await
        .unwrap()
        .is_some();
    if !exists {
        admin
            .batch_execute("CREATE DATABASE lookup_fallback")
            .await
            .unwrap();
    }
    let star = format!(
        "[databases.\"*\"]\nhost = \"127.0.0.1\"\nport = {}\n",
        pg.port
    );
    let code = |pgmux: &crate::harness::Pgmux, db: &'static str| {
        let url = pgmux.url("aq_fallback", "fallback-secret", db);
        async move {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok(_) => "ok".to_owned(),
                Err(e) => sqlstate(&e).unwrap_or_default(),
            }
        }
    };

    // Without auth_dbname, a name a client chose is never where a lookup runs: a database
    // that exists and one that does not answer alike, before login.
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "md5";
    cfg.general = "auth_user = \"postgres\"".into();
    cfg.extra = star.clone();
    let pgmux = cfg.start().await;
    assert_eq!(code(&pgmux, "lookup_fallback").await, "28P01");
    assert_eq!(code(&pgmux, "no_such_lookup_db").await, "28P01");
    pgmux.stop().await;

    // With auth_dbname, users of every fallback database are found there.
    let mut cfg = PgmuxConfig::new(pg);
    cfg.auth_type = "md5";
    cfg.general = "auth_user = \"postgres\"\nauth_dbname = \"app\"".into();
    cfg.extra = star;
    let pgmux = cfg.start().await;
    assert_eq!(code(&pgmux, "lookup_fallback").await, "ok");
    assert_eq!(code(&pgmux, "no_such_lookup_db").await, "3D000");
    pgmux.stop().await;
}
