//! `pgmux import`: turns a PgBouncer ini file into pgmux's TOML. Every `[pgbouncer]` setting
//! pgmux has keeps its name and units; `[databases]` connection strings (the `*` fallback
//! included) and `[users]` lines become tables; `%include` is followed. Whatever pgmux does not
//! support is reported by name and line and left out, never dropped silently; a key PgBouncer
//! does not know either is reported as a typo, with the closest name. Pure text in, text out,
//! apart from reading included files and checking the result as `pgmux check` would.

mod pgbouncer_keys;
#[cfg(test)]
mod tests;

use crate::config::suggest::closest;
use crate::config::General;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Settings whose value is a comma-separated list in PgBouncer and an array in pgmux.
const LIST_KEYS: [&str; 3] = ["admin_users", "stats_users", "ignore_startup_parameters"];

/// Settings without a default (file paths, addresses, role names): the defaults leave them
/// out, so there is no value to take their type from. All are text.
const OPTIONAL_SETTINGS: [&str; 12] = [
    "unix_socket_group",
    "auth_file",
    "auth_hba_file",
    "auth_user",
    "auth_dbname",
    "metrics_addr",
    "client_tls_key_file",
    "client_tls_cert_file",
    "client_tls_ca_file",
    "server_tls_ca_file",
    "server_tls_key_file",
    "server_tls_cert_file",
];

/// PgBouncer's unix_socket_dir when the ini sets none. The converted file states it, so that
/// where the socket is (also PostgreSQL's, for databases without a host) does not hang on a
/// default that is pgmux's rather than the ini's.
const PGBOUNCER_UNIX_SOCKET_DIR: &str = "/tmp";

/// What pgmux takes from one kind of `key=value ...` line (`[databases]` or `[users]`).
struct LineKeys {
    /// How a message names one key: "connection parameter", "user setting".
    noun: &'static str,
    /// The keys pgmux understands.
    pgmux: &'static [&'static str],
    /// Those of them that are whole numbers; the others are text.
    numbers: &'static [&'static str],
    /// Every key PgBouncer accepts on such a line.
    pgbouncer: &'static [&'static str],
}

const DATABASE_LINE: LineKeys = LineKeys {
    noun: "connection parameter",
    pgmux: &[
        "host",
        "port",
        "dbname",
        "user",
        "password",
        "pool_size",
        "pool_mode",
        "max_db_connections",
        "auth_user",
        "auth_query",
        "auth_dbname",
    ],
    numbers: &["port", "pool_size", "max_db_connections"],
    pgbouncer: &pgbouncer_keys::DATABASE_KEYS,
};

const USER_LINE: LineKeys = LineKeys {
    noun: "user setting",
    pgmux: &["pool_mode", "pool_size", "max_user_connections"],
    numbers: &["pool_size", "max_user_connections"],
    pgbouncer: &pgbouncer_keys::USER_KEYS,
};

/// PgBouncer's `[peers]` keys (`1 = host=... port=... pool_size=...`), all of which pgmux has.
const PEER_LINE: LineKeys = LineKeys {
    noun: "peer setting",
    pgmux: &["host", "port", "pool_size"],
    numbers: &["port", "pool_size"],
    pgbouncer: &["host", "port", "pool_size"],
};

/// The converted config and what was left out, one line each (`file:line: key: why`).
pub struct Imported {
    pub toml: String,
    pub skipped: Vec<String>,
}

struct Line {
    file: PathBuf,
    number: usize,
    section: String,
    key: String,
    value: String,
}

impl Line {
    /// `file:line`, how every report about this line starts.
    fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.number)
    }

    /// The database or user name, without the double quotes PgBouncer allows around it.
    fn name(&self) -> &str {
        self.key.trim_matches('"')
    }
}

/// Reads `path` (and its `%include`s) into key/value lines with their section.
fn read_lines(
    path: &Path,
    depth: usize,
    section: &mut String,
    out: &mut Vec<Line>,
) -> Result<(), String> {
    if depth > 10 {
        return Err(format!("{}: %include nested too deeply", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(include) = line.strip_prefix("%include") {
            let target = PathBuf::from(include.trim());
            let target = if target.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(target)
            } else {
                target
            };
            read_lines(&target, depth + 1, section, out)?;
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            *section = name.trim().to_ascii_lowercase();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "{}:{}: expected key = value",
                path.display(),
                i + 1
            ));
        };
        out.push(Line {
            file: path.to_owned(),
            number: i + 1,
            section: section.clone(),
            key: key.trim().to_owned(),
            value: value.trim().to_owned(),
        });
    }
    Ok(())
}

/// Splits a libpq-style `key=value key='quoted value'` string.
fn connection_string(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("bad connection string near '{rest}'"))?;
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('\'') {
            let end = quoted
                .find('\'')
                .ok_or("unterminated quote in connection string")?;
            (quoted[..end].to_owned(), &quoted[end + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        out.push((key.trim().to_owned(), value));
        rest = remaining.trim_start();
    }
    Ok(out)
}

/// A value typed like pgmux's own setting `key` (number, boolean, list or text).
fn typed(key: &str, value: &str, like: Option<&Value>) -> Result<Value, String> {
    let unquoted = value.trim_matches('"').trim_matches('\'');
    if LIST_KEYS.contains(&key) {
        let items = unquoted
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_owned()))
            .collect();
        return Ok(Value::Array(items));
    }
    match like {
        Some(Value::Integer(_)) => unquoted
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("'{value}' is not a whole number")),
        Some(Value::Float(_)) => unquoted
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|_| format!("'{value}' is not a number of seconds")),
        Some(Value::Boolean(_)) => match unquoted.to_ascii_lowercase().as_str() {
            "1" | "yes" | "on" | "true" => Ok(Value::Boolean(true)),
            "0" | "no" | "off" | "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("'{value}' is not a boolean")),
        },
        _ => Ok(Value::String(unquoted.to_owned())),
    }
}

/// For a key pgmux lacks: None when PgBouncer has it (a feature pgmux lacks); otherwise it is
/// most likely a typo, and this is what to append to "unknown ...": the closest name either
/// knows, or nothing when none is close.
fn typo_hint<'a>(
    key: &str,
    pgbouncer: &[&'a str],
    pgmux: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    if pgbouncer.contains(&key) {
        return None;
    }
    let near = closest(key, pgbouncer.iter().copied().chain(pgmux));
    Some(near.map_or_else(String::new, |name| format!(" (did you mean {name}?)")))
}

/// The tables being built, and what was left out so far.
#[derive(Default)]
struct Converted {
    general: Table,
    databases: BTreeMap<String, Table>,
    users: BTreeMap<String, Table>,
    peers: BTreeMap<String, Table>,
    skipped: Vec<String>,
}

impl Converted {
    fn skip(&mut self, line: &Line, why: &str) {
        self.skipped
            .push(format!("{}: {}: {why}", line.at(), line.key));
    }

    /// A `[pgbouncer]` line; `defaults` are pgmux's settings at their defaults.
    fn setting(&mut self, line: &Line, defaults: &Table) {
        let key = line.key.as_str();
        if !defaults.contains_key(key) && !OPTIONAL_SETTINGS.contains(&key) {
            let pgmux = defaults.keys().map(String::as_str).chain(OPTIONAL_SETTINGS);
            let why = match typo_hint(key, &pgbouncer_keys::SETTINGS, pgmux) {
                None => "not supported by pgmux".to_owned(),
                Some(hint) => format!("unknown setting{hint}"),
            };
            return self.skip(line, &why);
        }
        match typed(key, &line.value, defaults.get(key)) {
            Ok(value) => {
                self.general.insert(key.to_owned(), value);
            }
            Err(e) => self.skip(line, &e),
        }
    }

    /// A `[databases]` line. `*` is the fallback, as in PgBouncer; a line without `host` keeps
    /// none, which means the Unix socket in unix_socket_dir to pgmux as to PgBouncer.
    fn database(&mut self, line: &Line) {
        if let Some(table) = self.key_values(line, &DATABASE_LINE) {
            self.databases.insert(line.name().to_owned(), table);
        }
    }

    fn user(&mut self, line: &Line) {
        if let Some(table) = self.key_values(line, &USER_LINE) {
            self.users.insert(line.name().to_owned(), table);
        }
    }

    /// A `[peers]` line: `peer_id = host=... port=...`, a `[peers.N]` table in pgmux.
    fn peer(&mut self, line: &Line) {
        if let Some(table) = self.key_values(line, &PEER_LINE) {
            self.peers.insert(line.name().to_owned(), table);
        }
    }

    /// The `key=value` pairs of `line` that pgmux understands; None if the line does not parse.
    fn key_values(&mut self, line: &Line, keys: &LineKeys) -> Option<Table> {
        let pairs = match connection_string(&line.value) {
            Ok(pairs) => pairs,
            Err(e) => {
                self.skip(line, &e);
                return None;
            }
        };
        let mut table = Table::new();
        for (key, value) in pairs {
            let noun = keys.noun;
            if !keys.pgmux.contains(&key.as_str()) {
                let why = match typo_hint(&key, keys.pgbouncer, keys.pgmux.iter().copied()) {
                    None => format!("{noun} {key} is not supported by pgmux"),
                    Some(hint) => format!("unknown {noun} {key}{hint}"),
                };
                self.skip(line, &why);
                continue;
            }
            let like = keys
                .numbers
                .contains(&key.as_str())
                .then_some(&Value::Integer(0));
            match typed(&key, &value, like) {
                Ok(value) => {
                    table.insert(key, value);
                }
                Err(e) => self.skip(line, &format!("{key}: {e}")),
            }
        }
        Some(table)
    }

    /// Lines in a section pgmux has no use for, or one PgBouncer does not have either.
    fn other_section(&mut self, line: &Line) {
        let section = line.section.as_str();
        let why = if pgbouncer_keys::SECTIONS.contains(&section) {
            format!("section [{section}] is not supported by pgmux")
        } else {
            let near = closest(section, pgbouncer_keys::SECTIONS);
            let hint = near.map_or_else(String::new, |name| format!(" (did you mean [{name}]?)"));
            format!("unknown section [{section}]{hint}")
        };
        self.skip(line, &why);
    }

    /// The config text as it stands: `[pgmux]`, then `[databases]` and `[users]` if any.
    fn to_toml(&self, pretty: bool) -> Result<String, String> {
        let mut root = Table::new();
        root.insert("pgmux".into(), Value::Table(self.general.clone()));
        let tables = |m: &BTreeMap<String, Table>| {
            Value::Table(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::Table(v.clone())))
                    .collect(),
            )
        };
        if !self.databases.is_empty() {
            root.insert("databases".into(), tables(&self.databases));
        }
        if !self.users.is_empty() {
            root.insert("users".into(), tables(&self.users));
        }
        if !self.peers.is_empty() {
            root.insert("peers".into(), tables(&self.peers));
        }
        let root = Value::Table(root);
        let text = if pretty {
            toml::to_string_pretty(&root)
        } else {
            toml::to_string(&root)
        };
        text.map_err(|e| e.to_string())
    }

    /// Leaves out values pgmux would refuse (an auth_type it lacks, a pool size of 0, ...),
    /// each reported with pgmux's own message, so that the output passes `pgmux check`.
    /// `base` is where relative paths resolve: the ini's directory, beside which the converted
    /// file usually goes.
    fn drop_invalid(&mut self, base: &Path) {
        // Each round removes at least one key or table, so this ends.
        loop {
            let text = self.to_toml(false).unwrap_or_default();
            let Err(problems) = crate::config::Config::parse(&text, base) else {
                return;
            };
            let mut removed = false;
            for p in problems {
                if let Some(report) = self.drop_for(&p.key, &p.message) {
                    self.skipped.push(report);
                    removed = true;
                }
            }
            if !removed {
                return;
            }
        }
    }

    /// Removes what problem `key: message` is about; the report, or None if nothing went.
    fn drop_for(&mut self, key: &str, message: &str) -> Option<String> {
        let dropped = format!("{key}: {message}");
        let parts: Vec<&str> = key.splitn(3, '.').collect();
        match parts.as_slice() {
            // A file that cannot be read or parsed is for `pgmux check` to report, not to drop:
            // the setting is right, the file is missing here or needs fixing.
            ["pgmux", "auth_file"] => None,
            ["pgmux", "auth_hba_file"] if self.general.contains_key("auth_hba_file") => None,
            // auth_type = "hba" with no auth_hba_file: the file cannot be made up.
            ["pgmux", "auth_hba_file"] => self
                .general
                .remove("auth_type")
                .map(|_| "pgmux.auth_type: hba needs auth_hba_file, which is not set".to_owned()),
            ["pgmux", key] => self.general.remove(*key).map(|_| dropped),
            // A name pgmux reserves.
            ["databases", name] => self.databases.remove(*name).map(|_| dropped),
            ["databases", name, key] => {
                let table = self.databases.get_mut(*name)?;
                if table.remove(*key).is_some() {
                    return Some(dropped);
                }
                // What the database lacks (a host, with unix_socket_dir "") cannot be made up:
                // the database goes.
                self.databases
                    .remove(*name)
                    .map(|_| format!("{dropped}; the database is left out"))
            }
            ["peers", id] => self.peers.remove(*id).map(|_| dropped),
            ["peers", id, key] => self
                .peers
                .get_mut(*id)
                .and_then(|t| t.remove(*key))
                .map(|_| dropped),
            ["users", name, key] => self
                .users
                .get_mut(*name)
                .and_then(|t| t.remove(*key))
                .map(|_| dropped),
            _ => None,
        }
    }
}

/// Converts `ini` (PgBouncer's config); `userlist` overrides its auth_file.
pub fn import(ini: &Path, userlist: Option<&Path>) -> Result<Imported, String> {
    let mut lines = Vec::new();
    read_lines(ini, 0, &mut String::new(), &mut lines)?;
    let defaults = match Value::try_from(General::default()) {
        Ok(Value::Table(t)) => t,
        _ => Table::new(),
    };
    let mut converted = Converted::default();
    for line in &lines {
        match line.section.as_str() {
            "pgbouncer" => converted.setting(line, &defaults),
            "databases" => converted.database(line),
            "users" => converted.user(line),
            "peers" => converted.peer(line),
            "" => converted.skip(line, "outside any section"),
            _ => converted.other_section(line),
        }
    }
    if let Some(path) = userlist {
        converted.general.insert(
            "auth_file".into(),
            Value::String(path.display().to_string()),
        );
    }
    converted
        .general
        .entry("unix_socket_dir")
        .or_insert_with(|| Value::String(PGBOUNCER_UNIX_SOCKET_DIR.into()));
    converted.drop_invalid(ini.parent().unwrap_or(Path::new(".")));
    let body = converted.to_toml(true)?;
    let toml = format!(
        "# Converted from {} by `pgmux import`; see `pgmux check` and config/pgmux.toml.\n{body}",
        ini.display()
    );
    Ok(Imported {
        toml,
        skipped: converted.skipped,
    })
}
