use super::*;
use serde::Deserialize;

/// A directory of its own for one test's files, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pgmux-import-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An ini converted: the TOML parsed back, what was left out, and the directory it is in.
struct Outcome {
    toml: Table,
    text: String,
    skipped: Vec<String>,
    dir: Scratch,
}

impl Outcome {
    fn general(&self, key: &str) -> Option<&Value> {
        self.toml["pgmux"].get(key)
    }

    fn database(&self, name: &str) -> &Table {
        self.toml["databases"][name].as_table().unwrap()
    }

    /// The one report about `key`, or a failure listing them all.
    fn reported(&self, key: &str) -> &str {
        let found: Vec<&String> = self
            .skipped
            .iter()
            .filter(|l| {
                l.split(|c: char| !(c.is_alphanumeric() || "_.*".contains(c)))
                    .any(|word| word == key)
            })
            .collect();
        assert_eq!(found.len(), 1, "{key} in {:#?}", self.skipped);
        found[0]
    }

    /// Validates the output as `pgmux check` would, with the ini's directory as its own.
    fn validate(&self) -> crate::config::Config {
        crate::config::Config::parse(&self.text, &self.dir.0)
            .unwrap_or_else(|e| panic!("{e:#?}\n{}", self.text))
    }
}

fn convert_in(dir: Scratch, ini: &str) -> Outcome {
    let path = dir.write("pgbouncer.ini", ini);
    let imported = import(&path, None).unwrap();
    Outcome {
        toml: imported.toml.parse().unwrap(),
        text: imported.toml,
        skipped: imported.skipped,
        dir,
    }
}

fn convert(ini: &str) -> Outcome {
    convert_in(Scratch::new(), ini)
}

#[test]
fn connection_strings_split_with_quotes() {
    let pairs = connection_string("host=db1 port=5433 password='a b' dbname=x").unwrap();
    assert_eq!(pairs[2], ("password".to_owned(), "a b".to_owned()));
    assert_eq!(pairs.len(), 4);
    assert!(connection_string("host").is_err());
    assert!(connection_string("password='open").is_err());
}

#[test]
fn values_take_the_type_of_pgmux_settings() {
    assert_eq!(
        typed("admin_users", "a, b", None).unwrap(),
        Value::Array(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        typed("x", "15", Some(&Value::Float(0.0))).unwrap(),
        Value::Float(15.0)
    );
    assert_eq!(
        typed("x", "1", Some(&Value::Boolean(false))).unwrap(),
        Value::Boolean(true)
    );
    assert!(typed("x", "lots", Some(&Value::Integer(0))).is_err());
}

#[test]
fn the_fallback_database_becomes_a_star_table() {
    let out = convert("[databases]\n* = host=127.0.0.1 port=5433\n");
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    assert!(out.text.contains("[databases.\"*\"]"), "{}", out.text);
    let star = out.database("*");
    assert_eq!(star["host"].as_str(), Some("127.0.0.1"));
    assert_eq!(star["port"].as_integer(), Some(5433));
    let config = out.validate();
    assert!(config.is_auto_database("anything"));
}

#[test]
fn a_database_without_host_keeps_none_for_the_unix_socket() {
    let out = convert("[databases]\nlocal = dbname=app port=5433\n");
    let local = out.database("local");
    assert!(!local.contains_key("host"), "{local:?}");
    assert_eq!(local["dbname"].as_str(), Some("app"));
    let config = out.validate();
    assert_eq!(config.server_host(&config.databases["local"]), "/tmp");
}

#[test]
fn per_database_auth_lookups_convert() {
    let out = convert(
        "[databases]\n\
         auth = host=db dbname=postgres\n\
         app = host=db auth_user=lookup auth_dbname=auth \
         auth_query='SELECT usename, passwd FROM pg_shadow WHERE usename=$1'\n",
    );
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    let app = out.database("app");
    assert_eq!(app["auth_user"].as_str(), Some("lookup"));
    assert_eq!(app["auth_dbname"].as_str(), Some("auth"));
    assert_eq!(
        app["auth_query"].as_str(),
        Some("SELECT usename, passwd FROM pg_shadow WHERE usename=$1")
    );
    out.validate();
}

#[test]
fn unix_socket_settings_convert_with_the_mode_as_text() {
    let out = convert(
        "[pgbouncer]\nunix_socket_dir = /var/run/postgresql\nunix_socket_mode = 0770\n\
         unix_socket_group = postgres\n",
    );
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    assert_eq!(
        out.general("unix_socket_dir").and_then(Value::as_str),
        Some("/var/run/postgresql")
    );
    assert_eq!(
        out.general("unix_socket_mode").and_then(Value::as_str),
        Some("0770")
    );
    assert_eq!(
        out.general("unix_socket_group").and_then(Value::as_str),
        Some("postgres")
    );
    out.validate();
}

#[test]
fn an_unset_unix_socket_dir_is_written_as_pgbouncers_default() {
    let out = convert("[pgbouncer]\nlisten_port = 6000\n");
    assert_eq!(
        out.general("unix_socket_dir").and_then(Value::as_str),
        Some("/tmp")
    );
    let off = convert("[pgbouncer]\nunix_socket_dir =\n");
    assert_eq!(
        off.general("unix_socket_dir").and_then(Value::as_str),
        Some("")
    );
}

#[test]
fn auth_settings_convert_and_file_paths_stay_as_written() {
    let dir = Scratch::new();
    dir.write("users.txt", "\"app\" \"secret\"\n");
    dir.write("hba.conf", "host all all 127.0.0.1/32 scram-sha-256\n");
    let out = convert_in(
        dir,
        "[pgbouncer]\nauth_type = hba\nauth_file = users.txt\nauth_hba_file = hba.conf\n\
         auth_user = lookup\nauth_dbname = app\n\
         auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename=$1\n\
         autodb_idle_timeout = 120\n\
         [databases]\napp = host=127.0.0.1\n",
    );
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    for (key, value) in [
        ("auth_type", "hba"),
        ("auth_file", "users.txt"),
        ("auth_hba_file", "hba.conf"),
        ("auth_user", "lookup"),
        ("auth_dbname", "app"),
        (
            "auth_query",
            "SELECT usename, passwd FROM pg_shadow WHERE usename=$1",
        ),
    ] {
        assert_eq!(
            out.general(key).and_then(Value::as_str),
            Some(value),
            "{key}"
        );
    }
    assert_eq!(
        out.general("autodb_idle_timeout").and_then(Value::as_float),
        Some(120.0)
    );
    let config = out.validate();
    assert!(config.hba.is_some(), "auth_hba_file read beside the ini");
}

#[test]
fn hba_without_a_file_falls_back_with_a_report() {
    let out = convert("[pgbouncer]\nauth_type = hba\n");
    assert_eq!(out.general("auth_type"), None);
    assert!(
        out.skipped
            .contains(&"pgmux.auth_type: hba needs auth_hba_file, which is not set".to_owned()),
        "{:?}",
        out.skipped
    );
    out.validate();
}

#[test]
fn an_unreadable_hba_file_is_kept_for_pgmux_check_to_report() {
    let out = convert("[pgbouncer]\nauth_type = hba\nauth_hba_file = missing.conf\n");
    assert_eq!(
        out.general("auth_hba_file").and_then(Value::as_str),
        Some("missing.conf")
    );
    assert_eq!(
        out.general("auth_type").and_then(Value::as_str),
        Some("hba")
    );
}

#[test]
fn a_database_with_nowhere_to_connect_is_left_out() {
    let out = convert(
        "[pgbouncer]\nunix_socket_dir = \"\"\n[databases]\nlocal = dbname=app\n\
         remote = host=db\n",
    );
    assert!(!out.toml["databases"]
        .as_table()
        .unwrap()
        .contains_key("local"));
    let report = out.reported("databases.local.host");
    assert!(report.ends_with("the database is left out"), "{report}");
    out.validate();
}

#[test]
fn settings_pgbouncer_has_and_pgmux_lacks_are_not_supported() {
    let out = convert("[pgbouncer]\nlogfile = /var/log/pgbouncer.log\n");
    let report = out.reported("logfile");
    assert!(
        report.ends_with("pgbouncer.ini:2: logfile: not supported by pgmux"),
        "{report}"
    );
}

#[test]
fn keys_pgbouncer_lacks_too_are_typos_with_the_closest_name() {
    let out = convert(
        "[pgbouncer]\ndefault_pool_sise = 10\nsyslog_idnet = pgb\nworker = 2\n\
         completely_made_up = 1\n",
    );
    for (key, why) in [
        (
            "default_pool_sise",
            "unknown setting (did you mean default_pool_size?)",
        ),
        // A PgBouncer name pgmux lacks is still the right spelling to suggest.
        (
            "syslog_idnet",
            "unknown setting (did you mean syslog_ident?)",
        ),
        // So is one only pgmux has.
        ("worker", "unknown setting (did you mean workers?)"),
        ("completely_made_up", "unknown setting"),
    ] {
        let report = out.reported(key);
        assert!(report.ends_with(&format!(": {key}: {why}")), "{report}");
    }
    assert_eq!(out.general("default_pool_size"), None);
}

#[test]
fn database_and_user_keys_tell_typos_from_keys_pgmux_lacks() {
    let out = convert(
        "[databases]\napp = host=db prot=5433 connect_query='SELECT 1' colour=blue\n\
         [users]\nalice = pool_sise=3 query_timeout=5\n",
    );
    for (key, why) in [
        (
            "prot",
            "app: unknown connection parameter prot (did you mean port?)",
        ),
        (
            "connect_query",
            "app: connection parameter connect_query is not supported by pgmux",
        ),
        ("colour", "app: unknown connection parameter colour"),
        (
            "pool_sise",
            "alice: unknown user setting pool_sise (did you mean pool_size?)",
        ),
        (
            "query_timeout",
            "alice: user setting query_timeout is not supported by pgmux",
        ),
    ] {
        let report = out.reported(key);
        assert!(report.ends_with(why), "{report}");
    }
    assert_eq!(out.database("app")["host"].as_str(), Some("db"));
}

#[test]
fn peers_become_tables_and_a_misspelt_section_is_a_typo() {
    let out = convert(
        "[pgbouncer]\npeer_id = 2\nso_reuseport = 1\n[peers]\n1 = host=/run/pgb1 port=6432\n\
         2 = host=10.0.0.2 pool_size=4\n[database]\napp = host=b\n",
    );
    let peers = out.toml["peers"].as_table().unwrap();
    assert_eq!(peers["1"]["host"].as_str(), Some("/run/pgb1"));
    assert_eq!(peers["2"]["pool_size"].as_integer(), Some(4));
    assert_eq!(out.toml["pgmux"]["peer_id"].as_integer(), Some(2));
    assert_eq!(out.toml["pgmux"]["so_reuseport"].as_bool(), Some(true));
    assert_eq!(out.skipped.len(), 1, "{:?}", out.skipped);
    assert!(out.skipped[0].ends_with("app: unknown section [database] (did you mean [databases]?)"));
}

#[test]
fn every_setting_pgmux_has_is_known_to_the_import() {
    // deny_unknown_fields lists every field in its refusal of an unknown one.
    let mut probe = Table::new();
    probe.insert("-".into(), Value::Integer(0));
    let refusal = General::deserialize(Value::Table(probe))
        .unwrap_err()
        .to_string();
    let (_, fields) = refusal.split_once("expected one of").unwrap();
    let fields: Vec<&str> = fields
        .split(',')
        .map(|f| f.trim().trim_matches('`'))
        .collect();
    let defaults = match Value::try_from(General::default()) {
        Ok(Value::Table(t)) => t,
        _ => unreachable!(),
    };
    for field in &fields {
        assert!(
            defaults.contains_key(*field) || OPTIONAL_SETTINGS.contains(field),
            "{field} has no default: list it in OPTIONAL_SETTINGS"
        );
    }
    for optional in OPTIONAL_SETTINGS {
        assert!(fields.contains(&optional), "{optional} is no setting");
    }
}

#[test]
fn pgbouncer_name_lists_hold_what_pgmux_converts() {
    for line in [&DATABASE_LINE, &USER_LINE] {
        for key in line.pgmux.iter().chain(line.numbers) {
            assert!(line.pgbouncer.contains(key), "{key}");
        }
    }
    let mut names = pgbouncer_keys::SETTINGS.to_vec();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), pgbouncer_keys::SETTINGS.len(), "no name twice");
}
