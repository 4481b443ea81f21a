//! `pgmux import`: turns a PgBouncer ini file into pgmux's TOML. Every `[pgbouncer]` setting
//! pgmux has keeps its name and units; `[databases]` connection strings and `[users]` lines
//! become tables; `%include` is followed. Whatever pgmux does not support is reported by name
//! and line and left out, never dropped silently. Pure text in, text out, apart from reading
//! included files.

use crate::config::General;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// Keys a `[databases]` entry may carry that pgmux understands.
const DATABASE_KEYS: [&str; 8] = [
    "host",
    "port",
    "dbname",
    "user",
    "password",
    "pool_size",
    "pool_mode",
    "max_db_connections",
];
const USER_KEYS: [&str; 3] = ["pool_mode", "pool_size", "max_user_connections"];
/// Settings whose value is a comma-separated list in PgBouncer and an array in pgmux.
const LIST_KEYS: [&str; 3] = ["admin_users", "stats_users", "ignore_startup_parameters"];

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

/// Settings without a default (file paths, addresses), which the defaults do not list.
const OPTIONAL_SETTINGS: [&str; 8] = [
    "auth_file",
    "metrics_addr",
    "client_tls_key_file",
    "client_tls_cert_file",
    "client_tls_ca_file",
    "server_tls_ca_file",
    "server_tls_key_file",
    "server_tls_cert_file",
];

/// Converts `ini` (PgBouncer's config); `userlist` overrides its auth_file.
pub fn import(ini: &Path, userlist: Option<&Path>) -> Result<Imported, String> {
    let mut lines = Vec::new();
    read_lines(ini, 0, &mut String::new(), &mut lines)?;
    let defaults = match Value::try_from(General::default()) {
        Ok(Value::Table(t)) => t,
        _ => Table::new(),
    };
    let mut general = Table::new();
    let mut databases: BTreeMap<String, Table> = BTreeMap::new();
    let mut users: BTreeMap<String, Table> = BTreeMap::new();
    let mut skipped = Vec::new();
    for line in &lines {
        let at = format!("{}:{}", line.file.display(), line.number);
        let mut skip = |why: &str| skipped.push(format!("{at}: {}: {why}", line.key));
        match line.section.as_str() {
            "pgbouncer" => {
                let key = line.key.as_str();
                // Option settings have no default to take a type from: they are text.
                let known = defaults.contains_key(key) || OPTIONAL_SETTINGS.contains(&key);
                if !known {
                    skip("not supported by pgmux");
                    continue;
                }
                match typed(key, &line.value, defaults.get(key)) {
                    Ok(v) => {
                        general.insert(key.to_owned(), v);
                    }
                    Err(e) => skip(&e),
                }
            }
            "databases" => {
                if line.key == "*" {
                    skip("the fallback database is not supported by pgmux");
                    continue;
                }
                let mut table = Table::new();
                let pairs = match connection_string(&line.value) {
                    Ok(p) => p,
                    Err(e) => {
                        skip(&e);
                        continue;
                    }
                };
                for (k, v) in pairs {
                    if !DATABASE_KEYS.contains(&k.as_str()) {
                        skipped.push(format!(
                            "{at}: {}: connection parameter {k} is not supported by pgmux",
                            line.key
                        ));
                        continue;
                    }
                    let like = ["port", "pool_size", "max_db_connections"]
                        .contains(&k.as_str())
                        .then_some(&Value::Integer(0));
                    match typed(&k, &v, like) {
                        Ok(value) => {
                            table.insert(k, value);
                        }
                        Err(e) => skipped.push(format!("{at}: {}: {k}: {e}", line.key)),
                    }
                }
                table
                    .entry("host")
                    .or_insert_with(|| Value::String("localhost".into()));
                databases.insert(line.key.trim_matches('"').to_owned(), table);
            }
            "users" => {
                let mut table = Table::new();
                match connection_string(&line.value) {
                    Ok(pairs) => {
                        for (k, v) in pairs {
                            if !USER_KEYS.contains(&k.as_str()) {
                                skipped.push(format!(
                                    "{at}: {}: user setting {k} is not supported by pgmux",
                                    line.key
                                ));
                                continue;
                            }
                            let like = (k != "pool_mode").then_some(&Value::Integer(0));
                            match typed(&k, &v, like) {
                                Ok(value) => {
                                    table.insert(k, value);
                                }
                                Err(e) => skipped.push(format!("{at}: {}: {k}: {e}", line.key)),
                            }
                        }
                    }
                    Err(e) => skip(&e),
                }
                users.insert(line.key.trim_matches('"').to_owned(), table);
            }
            "" => skip("outside any section"),
            other => skip(&format!("section [{other}] is not supported by pgmux")),
        }
    }
    if let Some(path) = userlist {
        general.insert(
            "auth_file".into(),
            Value::String(path.display().to_string()),
        );
    }
    drop_invalid(&mut general, &mut databases, &mut users, &mut skipped);
    let mut root = Table::new();
    root.insert("pgmux".into(), Value::Table(general));
    let to_tables = |m: BTreeMap<String, Table>| {
        Value::Table(m.into_iter().map(|(k, v)| (k, Value::Table(v))).collect())
    };
    if !databases.is_empty() {
        root.insert("databases".into(), to_tables(databases));
    }
    if !users.is_empty() {
        root.insert("users".into(), to_tables(users));
    }
    let body = toml::to_string_pretty(&Value::Table(root)).map_err(|e| e.to_string())?;
    let toml = format!(
        "# Converted from {} by `pgmux import`; see `pgmux check` and config/pgmux.toml.\n{body}",
        ini.display()
    );
    Ok(Imported { toml, skipped })
}

/// Leaves out values pgmux would refuse (an auth_type it lacks, a pool size of 0, ...), each
/// reported with pgmux's own message, so that the output passes `pgmux check`.
fn drop_invalid(
    general: &mut Table,
    databases: &mut BTreeMap<String, Table>,
    users: &mut BTreeMap<String, Table>,
    skipped: &mut Vec<String>,
) {
    // Each round removes at least one key, so this ends.
    loop {
        let mut root = Table::new();
        root.insert("pgmux".into(), Value::Table(general.clone()));
        let tables = |m: &BTreeMap<String, Table>| {
            Value::Table(
                m.iter()
                    .map(|(k, v)| (k.clone(), Value::Table(v.clone())))
                    .collect(),
            )
        };
        root.insert("databases".into(), tables(databases));
        root.insert("users".into(), tables(users));
        let text = toml::to_string(&Value::Table(root)).unwrap_or_default();
        let Err(problems) = crate::config::Config::parse(&text, Path::new(".")) else {
            return;
        };
        let mut removed = false;
        for p in problems {
            let parts: Vec<&str> = p.key.splitn(3, '.').collect();
            let gone = match parts.as_slice() {
                // An unreadable auth_file is for `pgmux check` to report, not to drop.
                ["pgmux", "auth_file"] => false,
                ["pgmux", key] => general.remove(*key).is_some(),
                ["databases", db, key] => databases
                    .get_mut(*db)
                    .is_some_and(|t| t.remove(*key).is_some()),
                ["users", user, key] => users
                    .get_mut(*user)
                    .is_some_and(|t| t.remove(*key).is_some()),
                _ => false,
            };
            if gone {
                skipped.push(format!("{}: {}", p.key, p.message));
                removed = true;
            }
        }
        if !removed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
