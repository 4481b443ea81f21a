//! Turns config text into a [`Config`], collecting every problem instead of stopping at the first:
//! each key is first checked on its own (so every unknown or mistyped key is named), then the
//! whole file, then the rules that span keys. Problems are placed on the lines of their keys
//! last, so that every check names keys alike and none needs to know where they are.

use super::messages;
use super::schema::{Database, General, Peer, User};
use super::{userlist, Config, Problem};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;
use toml::{Table, Value};

/// The largest peer_id: 14 bits, as PgBouncer's cancel keys carry it.
pub const MAX_PEER_ID: u16 = 16383;

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem::new(key, message)
}

/// A table holding `key` alone, with `required` filled in for the others.
fn single_key(required: &[(&str, Value)], key: &str, value: Value) -> Table {
    let mut single = Table::new();
    for (name, filler) in required {
        single.insert((*name).into(), filler.clone());
    }
    single.insert(key.to_owned(), value);
    single
}

/// Checks each key of `table` alone against `T`, with `required` filled in for the others.
fn check_keys<T: DeserializeOwned>(
    path: &str,
    table: &Table,
    required: &[(&str, Value)],
    problems: &mut Vec<Problem>,
) {
    for (key, value) in table {
        let single = single_key(required, key, value.clone());
        if let Err(e) = T::deserialize(Value::Table(single)) {
            let serde_message = e.message().trim();
            let message = if messages::is_unknown_field(serde_message) {
                messages::unknown_setting(key, serde_message)
            } else {
                messages::value_message(key, serde_message, value, || {
                    variants_of::<T>(required, key)
                })
            };
            problems.push(problem(format!("{path}.{key}"), message));
        }
    }
}

/// The names enum setting `key` of `T` accepts: serde lists them when given a name that is
/// none of them, and no variant is named "".
fn variants_of<T: DeserializeOwned>(required: &[(&str, Value)], key: &str) -> Option<Vec<String>> {
    let probe = single_key(required, key, Value::String(String::new()));
    let e = T::deserialize(Value::Table(probe)).err()?;
    messages::variants(e.message().trim())
}

fn sub_tables<'a>(
    root: &'a Table,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Vec<(&'a String, &'a Table)> {
    match root.get(name) {
        None => Vec::new(),
        Some(Value::Table(t)) => t
            .iter()
            .filter_map(|(k, v)| match v {
                Value::Table(inner) => Some((k, inner)),
                _ => {
                    problems.push(problem(format!("{name}.{k}"), "must be a table"));
                    None
                }
            })
            .collect(),
        Some(_) => {
            problems.push(problem(name, "must be a table"));
            Vec::new()
        }
    }
}

pub(super) fn parse_and_validate(text: &str, base: &Path) -> Result<Config, Vec<Problem>> {
    let root: Table = text
        .parse()
        .map_err(|e: toml::de::Error| vec![syntax_problem(text, &e)])?;
    validate(root, base).map_err(|mut problems| {
        place_on_lines(text, &mut problems);
        problems
    })
}

fn syntax_problem(text: &str, e: &toml::de::Error) -> Problem {
    let mut p = problem("(syntax)", messages::one_line(e.message()));
    if let Some(span) = e.span() {
        let (line, column) = line_and_column(text, span.start);
        p.line = Some(line);
        p.column = Some(column);
    }
    p
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// Gives each problem whose key is written in `text` the line it is written on.
fn place_on_lines(text: &str, problems: &mut [Problem]) {
    let lines = key_lines(text);
    for p in problems {
        if p.line.is_none() {
            p.line = lines.get(&p.key).copied();
        }
    }
}

/// The line of every key in `text`, by its dotted path as problems name it
/// (`databases.app.port`); a table's is the line of its header.
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    fn walk(
        text: &str,
        prefix: &str,
        table: &dyn toml_edit::TableLike,
        lines: &mut BTreeMap<String, usize>,
    ) {
        for (name, _) in table.iter() {
            let Some((key, item)) = table.get_key_value(name) else {
                continue;
            };
            let path = match prefix {
                "" => name.to_owned(),
                _ => format!("{prefix}.{name}"),
            };
            if let Some(span) = key.span().or_else(|| item.span()) {
                lines.insert(path.clone(), line_and_column(text, span.start).0);
            }
            if let Some(inner) = item.as_table_like() {
                walk(text, &path, inner, lines);
            }
        }
    }
    let mut lines = BTreeMap::new();
    // The text parsed as TOML already; were this parser to disagree, problems keep no line.
    if let Ok(document) = toml_edit::ImDocument::parse(text) {
        walk(text, "", document.as_table(), &mut lines);
    }
    lines
}

fn validate(root: Table, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut problems = Vec::new();
    for key in root.keys() {
        if !["pgmux", "databases", "users", "peers"].contains(&key.as_str()) {
            problems.push(problem(key, messages::unknown_table(key)));
        }
    }
    let empty = Table::new();
    let general_table = match root.get("pgmux") {
        Some(Value::Table(t)) => t,
        Some(_) => {
            problems.push(problem("pgmux", "must be a table"));
            &empty
        }
        None => &empty,
    };
    check_keys::<General>("pgmux", general_table, &[], &mut problems);
    let dbs = sub_tables(&root, "databases", &mut problems);
    for (name, t) in &dbs {
        check_keys::<Database>(&format!("databases.{name}"), t, &[], &mut problems);
        if super::CONSOLE_DATABASES.contains(&name.as_str()) {
            problems.push(problem(
                format!("databases.{name}"),
                "is reserved for the admin console",
            ));
        }
    }
    let users = sub_tables(&root, "users", &mut problems);
    for (name, t) in &users {
        check_keys::<User>(&format!("users.{name}"), t, &[], &mut problems);
    }
    let peers = sub_tables(&root, "peers", &mut problems);
    for (id, t) in &peers {
        let host = [("host", Value::String("h".into()))];
        check_keys::<Peer>(&format!("peers.{id}"), t, &host, &mut problems);
        match t.get("host").and_then(Value::as_str) {
            None => problems.push(problem(format!("peers.{id}.host"), "is required")),
            Some("") => problems.push(problem(format!("peers.{id}.host"), "must not be empty")),
            Some(_) => {}
        }
        if t.get("port").and_then(Value::as_integer) == Some(0) {
            problems.push(problem(
                format!("peers.{id}.port"),
                "must be from 1 to 65535",
            ));
        }
        // Written as the number itself: "01" and "+1" would both be peer 1.
        let number = id.parse::<u16>().ok().filter(|n| n.to_string() == **id);
        if !number.is_some_and(|n| (1..=MAX_PEER_ID).contains(&n)) {
            problems.push(problem(
                format!("peers.{id}"),
                format!("must be named by a peer_id from 1 to {MAX_PEER_ID}"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }

    let whole = |e: toml::de::Error| vec![problem("(file)", e.message().trim().to_owned())];
    let general = General::deserialize_table(general_table).map_err(whole)?;
    let mut config = Config {
        general,
        databases: Default::default(),
        users: Default::default(),
        userlist: Default::default(),
        tls: Default::default(),
        hba: None,
        peers: Default::default(),
    };
    for (name, t) in dbs {
        let db = Database::deserialize_table(t).map_err(whole)?;
        config.databases.insert(name.clone(), db);
    }
    for (name, t) in users {
        let user = User::deserialize_table(t).map_err(whole)?;
        config.users.insert(name.clone(), user);
    }
    for (id, t) in peers {
        let peer = Peer::deserialize_table(t).map_err(whole)?;
        // The names were checked above.
        if let Ok(id) = id.parse() {
            config.peers.insert(id, peer);
        }
    }
    check_rules(&mut config, base, &mut problems);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

trait FromTable: Sized {
    fn deserialize_table(t: &Table) -> Result<Self, toml::de::Error>;
}

impl<T: DeserializeOwned> FromTable for T {
    fn deserialize_table(t: &Table) -> Result<Self, toml::de::Error> {
        T::deserialize(Value::Table(t.clone()))
    }
}

/// The longest time any setting may give (about 31 years): longer ones are surely a mistake,
/// and would overflow the clocks they set.
const MAX_SECONDS: f64 = 1e9;

fn check_seconds(key: &str, value: f64, problems: &mut Vec<Problem>) {
    if !value.is_finite() || value < 0.0 {
        problems.push(problem(key, "must be a number of seconds, 0 or more"));
    } else if value > MAX_SECONDS {
        problems.push(problem(key, "must be at most 1000000000 seconds"));
    }
}

/// A copy of `config` with one `[pgmux]` setting changed, checked like a file would be.
/// `value` is a TOML literal (`30`, `true`, `"text"`); anything else is taken as text.
pub(super) fn with_setting(
    config: &Config,
    key: &str,
    value: &str,
) -> Result<Config, Vec<Problem>> {
    let literal = format!("v = {value}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(value.to_owned()));
    let mut table = match Value::try_from(&config.general) {
        Ok(Value::Table(t)) => t,
        _ => {
            return Err(vec![problem(
                "pgmux",
                "cannot represent the settings in force",
            )])
        }
    };
    let mut problems = Vec::new();
    let mut single = Table::new();
    single.insert(key.to_owned(), literal.clone());
    check_keys::<General>("pgmux", &single, &[], &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    table.insert(key.to_owned(), literal);
    let general = General::deserialize_table(&table).map_err(|e| {
        vec![problem(
            format!("pgmux.{key}"),
            e.message().trim().to_owned(),
        )]
    })?;
    let mut new = config.clone();
    new.general = general;
    // auth_file is already an absolute path in a loaded config.
    check_rules(&mut new, Path::new("."), &mut problems);
    if problems.is_empty() {
        Ok(new)
    } else {
        Err(problems)
    }
}

fn check_rules(config: &mut Config, base: &Path, problems: &mut Vec<Problem>) {
    let g = &config.general;
    if g.listen_addr.parse::<std::net::IpAddr>().is_err()
        && !["*", "localhost"].contains(&g.listen_addr.as_str())
    {
        problems.push(problem(
            "pgmux.listen_addr",
            "must be an IP address, \"*\" or \"localhost\"",
        ));
    }
    if g.default_pool_size == 0 {
        problems.push(problem("pgmux.default_pool_size", "must be at least 1"));
    }
    if g.max_client_conn == 0 {
        problems.push(problem("pgmux.max_client_conn", "must be at least 1"));
    }
    if let Some(addr) = &g.metrics_addr {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            problems.push(problem(
                "pgmux.metrics_addr",
                "must be an address with a port, e.g. \"127.0.0.1:9127\"",
            ));
        }
    }
    if g.stats_period < 1.0 {
        problems.push(problem("pgmux.stats_period", "must be at least 1 second"));
    }
    if !g.unix_socket_mode.is_empty() && u32::from_str_radix(&g.unix_socket_mode, 8).is_err() {
        problems.push(problem(
            "pgmux.unix_socket_mode",
            "must be permissions in octal, e.g. \"0777\" or \"0770\"",
        ));
    }
    if g.peer_id > MAX_PEER_ID {
        problems.push(problem(
            "pgmux.peer_id",
            format!("must be from 1 to {MAX_PEER_ID}, or 0 for no peering"),
        ));
    }
    if g.verbose > 2 {
        problems.push(problem("pgmux.verbose", "must be 0, 1 or 2"));
    }
    if g.max_pinned_servers < -1 {
        let why = "must be -1 (the pool's size less one) or a number of servers";
        problems.push(problem("pgmux.max_pinned_servers", why));
    }
    for (key, value) in [
        ("server_connect_timeout", g.server_connect_timeout),
        ("client_login_timeout", g.client_login_timeout),
        ("reserve_pool_timeout", g.reserve_pool_timeout),
        ("server_check_delay", g.server_check_delay),
        ("server_lifetime", g.server_lifetime),
        ("server_idle_timeout", g.server_idle_timeout),
        ("server_login_retry", g.server_login_retry),
        ("client_idle_timeout", g.client_idle_timeout),
        ("idle_transaction_timeout", g.idle_transaction_timeout),
        ("query_timeout", g.query_timeout),
        ("query_wait_timeout", g.query_wait_timeout),
        ("stats_period", g.stats_period),
        ("autodb_idle_timeout", g.autodb_idle_timeout),
        ("transaction_timeout", g.transaction_timeout),
        ("query_wait_notify", g.query_wait_notify),
        ("pool_idle_timeout", g.pool_idle_timeout),
        ("auth_query_cache_ttl", g.auth_query_cache_ttl),
    ] {
        check_seconds(&format!("pgmux.{key}"), value, problems);
    }
    for (name, db) in &config.databases {
        match db.host.as_deref().map(str::trim) {
            Some("") => problems.push(problem(
                format!("databases.{name}.host"),
                "must not be empty",
            )),
            None if g.unix_socket_dir.is_empty() => problems.push(problem(
                format!("databases.{name}.host"),
                "is required while unix_socket_dir is \"\" (without either, there is nowhere to connect)",
            )),
            _ => {}
        }
        for (key, value) in [
            ("query_wait_timeout", db.query_wait_timeout),
            ("idle_transaction_timeout", db.idle_transaction_timeout),
            ("transaction_timeout", db.transaction_timeout),
        ] {
            if let Some(v) = value {
                check_seconds(&format!("databases.{name}.{key}"), v, problems);
            }
        }
        let key = format!("databases.{name}.auth_dbname");
        check_auth_dbname(config, &key, &db.auth_dbname, problems);
        if db.pool_size == Some(0) {
            problems.push(problem(
                format!("databases.{name}.pool_size"),
                "must be at least 1",
            ));
        }
    }
    for (name, user) in &config.users {
        if user.pool_size == Some(0) {
            problems.push(problem(
                format!("users.{name}.pool_size"),
                "must be at least 1",
            ));
        }
        for (key, value) in [
            ("query_timeout", user.query_timeout),
            ("query_wait_timeout", user.query_wait_timeout),
            ("idle_transaction_timeout", user.idle_transaction_timeout),
            ("transaction_timeout", user.transaction_timeout),
            ("client_idle_timeout", user.client_idle_timeout),
        ] {
            if let Some(v) = value {
                check_seconds(&format!("users.{name}.{key}"), v, problems);
            }
        }
        if let Some(Err(e)) = user.password.as_deref().map(crate::auth::Secret::parse) {
            problems.push(problem(format!("users.{name}.password"), e.to_string()));
        }
    }
    check_auth_dbname(
        config,
        "pgmux.auth_dbname",
        &config.general.auth_dbname,
        problems,
    );
    check_tls(&mut config.general, base, problems);
    check_hba(config, base, problems);
    if let Some(file) = config.general.auth_file.clone() {
        let path = base.join(&file);
        match std::fs::read_to_string(&path) {
            Ok(text) => match userlist::parse_userlist(&text) {
                Ok(users) => config.userlist = users,
                Err(errors) => problems.extend(
                    errors
                        .into_iter()
                        .map(|e| problem("pgmux.auth_file", format!("{}: {e}", path.display()))),
                ),
            },
            Err(e) => problems.push(problem(
                "pgmux.auth_file",
                format!("cannot read {}: {e}", path.display()),
            )),
        }
        config.general.auth_file = Some(path);
    }
    if problems.is_empty() {
        let g = &config.general;
        let clients = crate::tls::Side {
            mode: g.client_tls_sslmode,
            key_file: g.client_tls_key_file.as_deref(),
            cert_file: g.client_tls_cert_file.as_deref(),
            ca_file: g.client_tls_ca_file.as_deref(),
            protocols: &g.client_tls_protocols,
        };
        let servers = crate::tls::Side {
            mode: g.server_tls_sslmode,
            key_file: g.server_tls_key_file.as_deref(),
            cert_file: g.server_tls_cert_file.as_deref(),
            ca_file: g.server_tls_ca_file.as_deref(),
            protocols: &g.server_tls_protocols,
        };
        match crate::tls::build(&clients, &servers) {
            Ok(tls) => config.tls = tls,
            Err(e) => problems.push(problem(format!("pgmux.{}", e.key()), e.to_string())),
        }
    }
}

/// auth_dbname names the `[databases]` table auth_query runs in: it must be listed.
fn check_auth_dbname(
    config: &Config,
    key: &str,
    auth_dbname: &Option<String>,
    problems: &mut Vec<Problem>,
) {
    if let Some(name) = auth_dbname {
        if name == super::FALLBACK_DATABASE || !config.databases.contains_key(name) {
            problems.push(problem(
                key,
                format!("names no database listed in [databases]: {name:?}"),
            ));
        }
    }
}

/// Under auth_type = "hba", reads auth_hba_file; every bad line is a problem of its own.
fn check_hba(config: &mut Config, base: &Path, problems: &mut Vec<Problem>) {
    use super::schema::AuthType;
    if let Some(file) = config.general.auth_hba_file.as_mut() {
        *file = base.join(&*file);
    }
    if config.general.auth_type != AuthType::Hba {
        return;
    }
    let Some(path) = config.general.auth_hba_file.clone() else {
        problems.push(problem(
            "pgmux.auth_hba_file",
            "is required when auth_type is hba",
        ));
        return;
    };
    match super::hba::HbaRules::load(&path) {
        Ok(rules) => config.hba = Some(std::sync::Arc::new(rules)),
        Err(errors) => problems.extend(
            errors
                .into_iter()
                .map(|e| problem("pgmux.auth_hba_file", e)),
        ),
    }
}

/// Resolves the TLS files against `base` and checks that each mode has what it needs. The
/// files themselves are read when pgmux builds its TLS configuration (at start, reload, check).
fn check_tls(g: &mut General, base: &Path, problems: &mut Vec<Problem>) {
    use super::schema::{AuthType, SslMode};
    for file in [
        &mut g.client_tls_key_file,
        &mut g.client_tls_cert_file,
        &mut g.client_tls_ca_file,
        &mut g.server_tls_ca_file,
        &mut g.server_tls_key_file,
        &mut g.server_tls_cert_file,
    ] {
        if let Some(path) = file.as_mut() {
            *path = base.join(&*path);
        }
    }
    let mut require = |key: &str, present: bool, why: String| {
        if !present {
            problems.push(problem(
                format!("pgmux.{key}"),
                format!("is required {why}"),
            ));
        }
    };
    let client = g.client_tls_sslmode;
    if client != SslMode::Disable {
        let why = format!("when client_tls_sslmode is {}", mode_name(client));
        require(
            "client_tls_key_file",
            g.client_tls_key_file.is_some(),
            why.clone(),
        );
        require(
            "client_tls_cert_file",
            g.client_tls_cert_file.is_some(),
            why,
        );
    }
    if client.verifies() {
        let why = format!("when client_tls_sslmode is {}", mode_name(client));
        require("client_tls_ca_file", g.client_tls_ca_file.is_some(), why);
    }
    if g.server_tls_sslmode.verifies() {
        let why = format!(
            "when server_tls_sslmode is {}",
            mode_name(g.server_tls_sslmode)
        );
        require("server_tls_ca_file", g.server_tls_ca_file.is_some(), why);
    }
    if g.server_tls_key_file.is_some() != g.server_tls_cert_file.is_some() {
        problems.push(problem(
            "pgmux.server_tls_cert_file",
            "server_tls_key_file and server_tls_cert_file go together",
        ));
    }
    if g.auth_type == AuthType::Cert && !client.verifies() {
        problems.push(problem(
            "pgmux.auth_type",
            "cert needs client_tls_sslmode verify-ca or verify-full",
        ));
    }
    for key in ["client_tls_protocols", "server_tls_protocols"] {
        let value = match key {
            "client_tls_protocols" => &g.client_tls_protocols,
            _ => &g.server_tls_protocols,
        };
        if let Err(e) = crate::tls::parse_versions(value) {
            problems.push(problem(format!("pgmux.{key}"), e));
        }
    }
}

fn mode_name(mode: super::schema::SslMode) -> String {
    toml::Value::try_from(mode)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
