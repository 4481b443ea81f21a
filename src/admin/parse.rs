//! The console's grammar, as PgBouncer's: case-insensitive `WORD [ARG]`, `SELECT x` as an
//! alias of `SHOW x`, `SET key = value`, an optional trailing semicolon.

/// A parsed console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(String),
    /// A control command (PAUSE, RESUME, RELOAD, ...) with its argument, upper-cased name.
    Control {
        name: String,
        arg: Option<String>,
    },
    Set {
        key: String,
        value: String,
    },
}

/// Control commands PgBouncer's console has, and pgmux's UPGRADE; the console knows every one
/// by name.
pub const CONTROL_COMMANDS: [&str; 13] = [
    "PAUSE",
    "RESUME",
    "DISABLE",
    "ENABLE",
    "RECONNECT",
    "KILL",
    "KILL_CLIENT",
    "SUSPEND",
    "WAIT_CLOSE",
    "RELOAD",
    "SHUTDOWN",
    "SET",
    // pgmux's own: start a new process that takes this one's place (online upgrade).
    "UPGRADE",
];

fn unquote(word: &str) -> String {
    word.strip_prefix('"')
        .and_then(|w| w.strip_suffix('"'))
        .or_else(|| word.strip_prefix('\'').and_then(|w| w.strip_suffix('\'')))
        .unwrap_or(word)
        .to_owned()
}

/// Parses one console statement; Err carries what to tell the user.
pub fn parse(sql: &str) -> Result<Command, String> {
    let text = sql.trim().trim_end_matches(';').trim();
    let mut words = text.split_whitespace();
    let Some(first) = words.next() else {
        return Err("empty command".into());
    };
    let verb = first.to_ascii_uppercase();
    match verb.as_str() {
        "SHOW" | "SELECT" => {
            let what = words
                .next()
                .ok_or("SHOW needs an argument, e.g. SHOW POOLS")?;
            if words.next().is_some() {
                return Err(format!("unexpected words after {verb} {what}"));
            }
            Ok(Command::Show(what.to_ascii_uppercase()))
        }
        "SET" => {
            let rest = text[first.len()..].trim();
            let (key, value) = rest
                .split_once('=')
                .or_else(|| {
                    let lower = rest.to_ascii_lowercase();
                    lower.find(" to ").map(|i| (&rest[..i], &rest[i + 4..]))
                })
                .ok_or("SET needs key = value")?;
            let key = key.trim();
            if key.is_empty() {
                return Err("SET needs key = value".into());
            }
            Ok(Command::Set {
                key: key.to_ascii_lowercase(),
                value: unquote(value.trim()),
            })
        }
        name if CONTROL_COMMANDS.contains(&name) => {
            let arg = words.next().map(unquote);
            let extra = if name == "SHUTDOWN" {
                None
            } else {
                words.next()
            };
            if let Some(extra) = extra {
                return Err(format!("unexpected argument {extra} for {name}"));
            }
            Ok(Command::Control {
                name: name.to_owned(),
                arg,
            })
        }
        _ => Err(format!("invalid command '{text}', use SHOW HELP;")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_and_select_alias_case_insensitive() {
        assert_eq!(parse("show pools;"), Ok(Command::Show("POOLS".into())));
        assert_eq!(parse("  SELECT stats "), Ok(Command::Show("STATS".into())));
        assert!(parse("SHOW").is_err());
        assert!(parse("SHOW POOLS extra").is_err());
    }

    #[test]
    fn control_and_set() {
        assert_eq!(
            parse("pause app;"),
            Ok(Command::Control {
                name: "PAUSE".into(),
                arg: Some("app".into())
            })
        );
        assert_eq!(
            parse("RELOAD"),
            Ok(Command::Control {
                name: "RELOAD".into(),
                arg: None
            })
        );
        assert_eq!(
            parse("SET default_pool_size = 30"),
            Ok(Command::Set {
                key: "default_pool_size".into(),
                value: "30".into()
            })
        );
        assert_eq!(
            parse("set server_reset_query to 'DISCARD ALL'"),
            Ok(Command::Set {
                key: "server_reset_query".into(),
                value: "DISCARD ALL".into()
            })
        );
    }

    #[test]
    fn unknown_commands_point_to_help() {
        let err = parse("FROB the pool").unwrap_err();
        assert!(err.contains("SHOW HELP"), "{err}");
        assert!(parse("").is_err());
    }
}
