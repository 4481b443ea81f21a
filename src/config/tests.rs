use super::*;
use crate::config::SslMode;

fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    Config::parse(text, Path::new("."))
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn defaults_follow_pgbouncer() {
    let c = parse("[pgmux]\n").unwrap();
    let g = &c.general;
    assert_eq!(g.listen_port, 6432);
    assert_eq!(g.pool_mode, PoolMode::Session);
    assert_eq!(g.default_pool_size, 20);
    assert_eq!(g.max_client_conn, 100);
    assert_eq!(g.auth_type, AuthType::Md5);
    assert_eq!(g.server_reset_query, "DISCARD ALL");
    assert_eq!(g.server_connect_timeout, 15.0);
    assert_eq!(g.client_login_timeout, 60.0);
}

#[test]
fn every_unknown_or_mistyped_key_is_named() {
    let err = parse(
        "[pgmux]\nlisten_prot = 1\ndefault_pool_size = \"big\"\npool_mode = \"sometimes\"\n\
         [databases.app]\nhost = \"h\"\nhots = \"x\"\n[users.u]\npasword = \"p\"\n[extra]\n",
    )
    .unwrap_err();
    let k = keys(&err);
    for expected in [
        "pgmux.listen_prot",
        "pgmux.default_pool_size",
        "pgmux.pool_mode",
        "databases.app.hots",
        "users.u.pasword",
        "extra",
    ] {
        assert!(k.contains(&expected), "{expected} missing from {k:?}");
    }
    assert_eq!(err.len(), 6, "{err:?}");
}

#[test]
fn database_needs_a_host_or_the_unix_socket_and_sane_values() {
    let c = parse("[databases.app]\nport = 5433\n").unwrap();
    assert_eq!(
        c.server_host(&c.databases["app"]),
        "/tmp",
        "PgBouncer's default"
    );
    let err = parse("[pgmux]\nunix_socket_dir = \"\"\n[databases.app]\nport = 5432\n").unwrap_err();
    assert_eq!(keys(&err), ["databases.app.host"]);
    let err = parse("[databases.pgbouncer]\nhost = \"h\"\n").unwrap_err();
    assert_eq!(keys(&err), ["databases.pgbouncer"]);
    let err = parse("[pgmux]\ndefault_pool_size = 0\nserver_connect_timeout = -1\n").unwrap_err();
    assert_eq!(
        keys(&err),
        ["pgmux.default_pool_size", "pgmux.server_connect_timeout"]
    );
}

#[test]
fn overrides_resolve_user_then_database_then_global() {
    let c = parse(
        "[pgmux]\npool_mode = \"transaction\"\ndefault_pool_size = 7\n\
         [databases.a]\nhost = \"h\"\npool_mode = \"session\"\npool_size = 3\n\
         [databases.b]\nhost = \"h\"\n\
         [users.s]\npool_mode = \"statement\"\npassword = \"pw\"\npool_size = 2\n",
    )
    .unwrap();
    assert_eq!(c.pool_mode("a", "x"), PoolMode::Session);
    assert_eq!(c.pool_mode("b", "x"), PoolMode::Transaction);
    assert_eq!(c.pool_mode("a", "s"), PoolMode::Statement);
    assert_eq!(c.pool_size("a", "s"), 2);
    assert_eq!(c.pool_size("a", "x"), 3);
    assert_eq!(c.pool_size("b", "x"), 7);
    assert_eq!(c.secret_for("s"), Some(Secret::Plain("pw".into())));
    assert_eq!(c.secret_for("nobody"), None);
    assert_eq!(c.databases["b"].port, 5432);
    assert_eq!(c.max_db_connections("a"), 0);
    assert_eq!(c.max_user_connections("s"), 0);
}

#[test]
fn bench_template_is_accepted_unchanged() {
    let dir = std::env::temp_dir().join(format!("pgmux-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let userlist = dir.join("userlist.txt");
    std::fs::write(&userlist, "\"bench\" \"SCRAM-SHA-256$4096:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n").unwrap();
    // The benchmark harness's template lives beside the project, not in it.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/bench/pgmux.toml.tmpl");
    let Ok(template) = std::fs::read_to_string(&path) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} missing in CI",
            path.display()
        );
        eprintln!("skipped: {} not found", path.display());
        return;
    };
    let text = template
        .replace("{listen_port}", "6432")
        .replace("{pg_port}", "5432")
        .replace("{pool_size}", "16")
        .replace("{pool_mode}", "transaction")
        .replace("{auth_file}", userlist.to_str().unwrap());
    let c = parse(&text).unwrap();
    assert_eq!(c.general.auth_type, AuthType::ScramSha256);
    assert!(matches!(c.userlist["bench"], Secret::Scram(_)));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unreadable_or_bad_auth_file_is_a_problem() {
    let err = parse("[pgmux]\nauth_file = \"/nonexistent/userlist.txt\"\n").unwrap_err();
    assert_eq!(keys(&err), ["pgmux.auth_file"]);
}

#[test]
fn general_settings_list_every_key_with_its_value() {
    let c = parse("[pgmux]\nadmin_users = [\"a\", \"b\"]\ndefault_pool_size = 7\n").unwrap();
    let s = general_settings(&c.general);
    assert_eq!(s["default_pool_size"], "7");
    assert_eq!(s["admin_users"], "a,b");
    assert_eq!(s["pool_mode"], "session");
    assert_eq!(s["server_reset_query"], "DISCARD ALL");
    assert!(!s.contains_key("auth_file"), "unset settings are absent");
    let defaults = general_settings(&General::default());
    assert_eq!(defaults["default_pool_size"], "20");
}

#[test]
fn one_setting_changes_and_is_checked() {
    let c = parse("[pgmux]\ndefault_pool_size = 7\n").unwrap();
    let changed = c.with_setting("default_pool_size", "30").unwrap();
    assert_eq!(changed.general.default_pool_size, 30);
    let changed = c
        .with_setting("server_reset_query", "DISCARD ALL; SELECT 1")
        .unwrap();
    assert_eq!(changed.general.server_reset_query, "DISCARD ALL; SELECT 1");
    assert_eq!(
        keys(&c.with_setting("default_pool_size", "0").unwrap_err()),
        ["pgmux.default_pool_size"]
    );
    assert_eq!(
        keys(&c.with_setting("no_such_thing", "1").unwrap_err()),
        ["pgmux.no_such_thing"]
    );
    assert_eq!(
        keys(&c.with_setting("default_pool_size", "many").unwrap_err()),
        ["pgmux.default_pool_size"]
    );
}

#[test]
fn syntax_errors_are_reported() {
    let err = parse("[pgmux\n").unwrap_err();
    assert_eq!(keys(&err), ["(syntax)"]);
}

#[test]
fn tls_settings_default_like_pgbouncer_and_name_what_is_missing() {
    let c = parse("[pgmux]\n").unwrap();
    assert_eq!(c.general.client_tls_sslmode, SslMode::Disable);
    assert_eq!(c.general.server_tls_sslmode, SslMode::Prefer);
    assert_eq!(c.general.client_tls_protocols, "secure");
    assert!(c.tls.client.is_none() && c.tls.server.is_some());
    let err = parse("[pgmux]\nclient_tls_sslmode = \"verify-full\"\n").unwrap_err();
    let k = keys(&err);
    for key in [
        "pgmux.client_tls_key_file",
        "pgmux.client_tls_cert_file",
        "pgmux.client_tls_ca_file",
    ] {
        assert!(k.contains(&key), "{key} in {err:?}");
    }
    let err = parse("[pgmux]\nserver_tls_sslmode = \"verify-ca\"\n").unwrap_err();
    assert_eq!(keys(&err), ["pgmux.server_tls_ca_file"]);
    let err = parse("[pgmux]\nauth_type = \"cert\"\n").unwrap_err();
    assert_eq!(keys(&err), ["pgmux.auth_type"]);
    let err = parse("[pgmux]\nclient_tls_protocols = \"tlsv1.0\"\n").unwrap_err();
    assert_eq!(keys(&err), ["pgmux.client_tls_protocols"]);
    let err = parse("[pgmux]\nserver_tls_sslmode = \"sometimes\"\n").unwrap_err();
    assert_eq!(keys(&err), ["pgmux.server_tls_sslmode"]);
}

#[test]
fn unreadable_tls_files_are_named_with_their_setting() {
    let err = parse(
        "[pgmux]\nclient_tls_sslmode = \"require\"\nclient_tls_cert_file = \"/nonexistent/c.pem\"\n\
         client_tls_key_file = \"/nonexistent/k.pem\"\n",
    )
    .unwrap_err();
    assert_eq!(keys(&err), ["pgmux.client_tls_cert_file"]);
    assert!(err[0].message.contains("/nonexistent/c.pem"), "{err:?}");
}

#[test]
fn times_too_long_for_a_clock_are_refused() {
    let err = parse("[pgmux]\nautodb_idle_timeout = 1e20\nquery_timeout = 1e9\n").unwrap_err();
    assert_eq!(keys(&err), ["pgmux.autodb_idle_timeout"]);
}

#[test]
fn the_fallback_database_serves_names_not_listed() {
    let c = parse(
        "[databases.app]\nhost = \"h\"\npool_size = 3\n\
         [databases.\"*\"]\nhost = \"/run/postgresql\"\npool_size = 4\n",
    )
    .unwrap();
    assert!(!c.is_auto_database("app"));
    assert!(c.is_auto_database("other"));
    assert_eq!(c.pool_size("app", "u"), 3);
    assert_eq!(c.pool_size("other", "u"), 4);
    assert_eq!(
        c.server_host(c.database("other").unwrap()),
        "/run/postgresql"
    );
    let without = parse("[databases.app]\nhost = \"h\"\n").unwrap();
    assert!(without.database("other").is_none());
    assert!(!without.is_auto_database("other"));
}

#[test]
fn auth_and_socket_settings_are_checked() {
    let err = parse(
        "[pgmux]\nunix_socket_mode = \"rw\"\nauth_dbname = \"nowhere\"\nauth_type = \"hba\"\n\
         autodb_idle_timeout = -1\n[databases.app]\nhost = \"h\"\nauth_dbname = \"*\"\n",
    )
    .unwrap_err();
    assert_eq!(
        keys(&err),
        [
            "pgmux.unix_socket_mode",
            "pgmux.autodb_idle_timeout",
            "databases.app.auth_dbname",
            "pgmux.auth_dbname",
            "pgmux.auth_hba_file",
        ],
        "{err:?}"
    );
    let c = parse("[pgmux]\nauth_user = \"pgmux_auth\"\n").unwrap();
    assert_eq!(c.general.auth_query, crate::config::DEFAULT_AUTH_QUERY);
    assert_eq!(c.general.auth_query_cache_ttl, 10.0);
}

/// (key, line, message) of each problem, for comparing whole reports.
fn placed(problems: &[Problem]) -> Vec<(&str, Option<usize>, &str)> {
    problems
        .iter()
        .map(|p| (p.key.as_str(), p.line, p.message.as_str()))
        .collect()
}

#[test]
fn problems_carry_the_line_of_their_key_in_operators_words() {
    let err = parse(
        "# pgmux\n[pgmux]\ndefault_pool_sise = 10\nlisten_addr = \"*\"\nlisten_port = \"6432\"\n\
         pool_mode = \"sometimes\"\nserver_lifetime = \"1h\"\nlog_connections = \"yes\"\n\
         admin_users = \"admin\"\nunix_socket_group = 7\n",
    )
    .unwrap_err();
    let mut problems = placed(&err);
    problems.sort_by_key(|&(_, line, _)| line);
    assert_eq!(
        problems,
        [
            (
                "pgmux.default_pool_sise",
                Some(3),
                "unknown setting (did you mean default_pool_size?)"
            ),
            (
                "pgmux.listen_port",
                Some(5),
                "must be a whole number between 0 and 65535"
            ),
            (
                "pgmux.pool_mode",
                Some(6),
                "must be one of: session, transaction, statement"
            ),
            (
                "pgmux.server_lifetime",
                Some(7),
                "must be a number of seconds, 0 or more"
            ),
            ("pgmux.log_connections", Some(8), "must be true or false"),
            (
                "pgmux.admin_users",
                Some(9),
                "must be a list of names in brackets, e.g. [\"a\", \"b\"]"
            ),
            (
                "pgmux.unix_socket_group",
                Some(10),
                "must be text in double quotes"
            ),
        ]
    );
}

#[test]
fn databases_users_and_tables_are_placed_and_suggested_too() {
    let err = parse(
        "[databases.app]\nhost = \"h\"\nhots = \"x\"\npool_mode = 1\n\
         [databases.pgbouncer]\nhost = \"h\"\n[users.u]\npool_size = \"many\"\nmax_user_conections = 2\n\
         [databse]\n",
    )
    .unwrap_err();
    let problems = placed(&err);
    for expected in [
        (
            "databases.app.hots",
            Some(3),
            "unknown setting (did you mean host?)",
        ),
        (
            "databases.app.pool_mode",
            Some(4),
            "must be one of: session, transaction, statement",
        ),
        (
            "databases.pgbouncer",
            Some(5),
            "is reserved for the admin console",
        ),
        (
            "users.u.pool_size",
            Some(8),
            "must be a whole number between 1 and 4294967295",
        ),
        (
            "users.u.max_user_conections",
            Some(9),
            "unknown setting (did you mean max_user_connections?)",
        ),
        (
            "databse",
            Some(10),
            "unknown table (did you mean databases?)",
        ),
    ] {
        assert!(
            problems.contains(&expected),
            "{expected:?} not in {problems:?}"
        );
    }
    assert_eq!(problems.len(), 6, "{problems:?}");
}

#[test]
fn rules_are_placed_on_their_key_and_missing_keys_on_none() {
    let err = parse("[pgmux]\nauth_type = \"hba\"\n\ndefault_pool_size = 0\n").unwrap_err();
    assert_eq!(
        placed(&err),
        [
            ("pgmux.default_pool_size", Some(4), "must be at least 1"),
            (
                "pgmux.auth_hba_file",
                None,
                "is required when auth_type is hba"
            ),
        ]
    );
}

#[test]
fn syntax_errors_name_their_line_and_column() {
    let err = parse("[pgmux]\nlisten_port = 6432\n[databases.app\nhost = \"h\"\n").unwrap_err();
    assert_eq!(keys(&err), ["(syntax)"]);
    assert_eq!((err[0].line, err[0].column), (Some(3), Some(15)));
    assert!(!err[0].message.contains('\n'), "{:?}", err[0].message);
    assert!(
        err[0].message.starts_with("invalid table header"),
        "{err:?}"
    );
    let err = parse("[pgmux]\nverbose = 1\nverbose = 2\n").unwrap_err();
    assert_eq!((err[0].line, err[0].column), (Some(3), Some(1)));
    assert!(err[0].message.contains("duplicate key"), "{err:?}");
}

#[test]
fn console_settings_get_the_same_words_without_a_line() {
    let c = parse("[pgmux]\n").unwrap();
    let err = c.with_setting("listen_port", "\"x\"").unwrap_err();
    assert_eq!(
        placed(&err),
        [(
            "pgmux.listen_port",
            None,
            "must be a whole number between 0 and 65535"
        )]
    );
    let err = c.with_setting("defalt_pool_size", "3").unwrap_err();
    assert_eq!(
        err[0].message,
        "unknown setting (did you mean default_pool_size?)"
    );
}

#[test]
fn the_ranges_messages_state_are_the_ones_the_rules_enforce() {
    let refused = |setting: &str, value: u64| {
        let text = format!("[pgmux]\n{setting} = {value}\n");
        let text = match parse(&text) {
            Err(e) if e[0].message.starts_with("unknown setting") => {
                format!("[databases.app]\nhost = \"h\"\n{setting} = {value}\n")
            }
            _ => text,
        };
        let err = parse(&text).err().unwrap_or_default();
        err.iter().any(|p| p.key.ends_with(&format!(".{setting}")))
    };
    for (setting, lowest) in crate::config::messages::LOWEST {
        assert!(refused(setting, lowest - 1), "{setting} = {}", lowest - 1);
        assert!(!refused(setting, lowest), "{setting} = {lowest}");
    }
    for (setting, highest) in crate::config::messages::HIGHEST {
        assert!(refused(setting, highest + 1), "{setting} = {}", highest + 1);
        assert!(!refused(setting, highest), "{setting} = {highest}");
    }
}

#[test]
fn the_report_lists_file_line_key_and_message_in_file_order() {
    let error = ConfigError {
        file: "pgmux.toml".into(),
        problems: parse(
            "[pgmux]\ndefault_pool_size = 0\nauth_type = \"hba\"\nlisten_addr = \"everywhere\"\n",
        )
        .unwrap_err(),
    };
    assert_eq!(
        error.to_string(),
        "pgmux.toml: 3 problem(s)\n\
         pgmux.toml:2: pgmux.default_pool_size: must be at least 1\n\
         pgmux.toml:4: pgmux.listen_addr: must be an IP address, \"*\" or \"localhost\"\n\
         pgmux.toml: pgmux.auth_hba_file: is required when auth_type is hba"
    );
    let error = ConfigError {
        file: "pgmux.toml".into(),
        problems: parse("[pgmux]\n\nlisten_prot = 1\ndefault_pool_size = \"x\"\n").unwrap_err(),
    };
    assert_eq!(
        error.to_string(),
        "pgmux.toml: 2 problem(s)\n\
         pgmux.toml:3: pgmux.listen_prot: unknown setting (did you mean listen_port?)\n\
         pgmux.toml:4: pgmux.default_pool_size: must be a whole number between 1 and 4294967295"
    );
    let error = ConfigError {
        file: "pgmux.toml".into(),
        problems: parse("[pgmux\n").unwrap_err(),
    };
    assert_eq!(
        error.to_string(),
        "pgmux.toml: 1 problem(s)\n\
         pgmux.toml:1:7: (syntax): invalid table header; expected `.`, `]`"
    );
}
