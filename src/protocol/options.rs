//! The `options` startup parameter (libpq's PGOPTIONS): command-line switches for the server
//! process, read as PostgreSQL reads them. Arguments are split at whitespace, a backslash
//! keeps the next character; `-c name=value`, `-cname=value` and `--name=value` set a
//! parameter, with dashes in the name read as underscores. Pure: text in, settings out.

use thiserror::Error;

/// Why an `options` value was refused, with PostgreSQL's words and codes where it has them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OptionsError {
    /// Not a switch at all, or one PostgreSQL does not have.
    #[error("invalid command-line argument for server process: {0}")]
    InvalidArgument(String),
    /// `-c name` or `--name` without `=value`.
    #[error("{0} requires a value")]
    MissingValue(String),
    /// `-c =value`, `-c=`: no name.
    #[error("unrecognized configuration parameter \"\"")]
    EmptyName,
    /// A switch PostgreSQL has (-B, -e, ...) that pgmux cannot carry to every server.
    #[error("unsupported startup option in options: {0}")]
    Unsupported(String),
}

impl OptionsError {
    pub fn sqlstate(&self) -> &'static str {
        use super::sqlstate as code;
        match self {
            OptionsError::InvalidArgument(_) | OptionsError::MissingValue(_) => code::SYNTAX_ERROR,
            OptionsError::EmptyName => code::UNDEFINED_OBJECT,
            OptionsError::Unsupported(_) => code::PROTOCOL_VIOLATION,
        }
    }
}

/// PostgreSQL's single-letter server switches other than `-c`: they are valid in `options`,
/// but set things (buffers, paths, debug output) pgmux cannot carry to every server.
const OTHER_SWITCHES: &[u8] = b"BbCDdEeFfhijklNnOPprSsTtVvW";

/// Splits `options` into arguments as PostgreSQL does.
fn arguments(options: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    current.push(next);
                }
            }
            c if c.is_ascii_whitespace() => {
                if !current.is_empty() {
                    args.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        args.push(current);
    }
    args
}

/// `name=value`, with dashes in the name read as underscores; `shown` names the switch for
/// the error when there is no `=`.
fn setting(text: &str, shown: impl FnOnce() -> String) -> Result<(String, String), OptionsError> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(OptionsError::MissingValue(shown()));
    };
    if name.is_empty() {
        return Err(OptionsError::EmptyName);
    }
    Ok((name.replace('-', "_"), value.to_owned()))
}

/// The (name, value) settings of an `options` value, in order.
pub fn parse(options: &str) -> Result<Vec<(String, String)>, OptionsError> {
    let mut settings = Vec::new();
    let mut args = arguments(options).into_iter();
    while let Some(arg) = args.next() {
        if let Some(long) = arg.strip_prefix("--") {
            settings.push(setting(long, || format!("--{long}"))?);
        } else if arg == "-c" {
            let Some(text) = args.next() else {
                return Err(OptionsError::InvalidArgument(arg));
            };
            settings.push(setting(&text, || format!("-c {text}"))?);
        } else if let Some(text) = arg.strip_prefix("-c") {
            settings.push(setting(text, || format!("-c {text}"))?);
        } else if arg.len() >= 2
            && arg.starts_with('-')
            && OTHER_SWITCHES.contains(&arg.as_bytes()[1])
        {
            return Err(OptionsError::Unsupported(arg));
        } else {
            return Err(OptionsError::InvalidArgument(arg));
        }
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(n: &str, v: &str) -> (String, String) {
        (n.to_owned(), v.to_owned())
    }

    #[test]
    fn every_way_of_setting_a_parameter() {
        assert_eq!(
            parse("-c intervalstyle=postgres_verbose --statement-timeout=5s -cTimeZone=UTC")
                .unwrap(),
            [
                pair("intervalstyle", "postgres_verbose"),
                pair("statement_timeout", "5s"),
                pair("TimeZone", "UTC"),
            ]
        );
        assert_eq!(
            parse("  -c search_path=a\\ b\\\\c  ").unwrap(),
            [pair("search_path", "a b\\c")]
        );
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse("-c x=").unwrap(), [pair("x", "")]);
    }

    #[test]
    fn bad_options_get_postgresqls_errors() {
        for (options, error, code) in [
            (
                "-c foo",
                OptionsError::MissingValue("-c foo".into()),
                "42601",
            ),
            ("--foo", OptionsError::MissingValue("--foo".into()), "42601"),
            ("-c =x", OptionsError::EmptyName, "42704"),
            ("-c=", OptionsError::EmptyName, "42704"),
            ("--=1", OptionsError::EmptyName, "42704"),
            ("-c", OptionsError::InvalidArgument("-c".into()), "42601"),
            (
                "junk",
                OptionsError::InvalidArgument("junk".into()),
                "42601",
            ),
            ("-x", OptionsError::InvalidArgument("-x".into()), "42601"),
            ("-B 100", OptionsError::Unsupported("-B".into()), "08P01"),
        ] {
            let got = parse(options).unwrap_err();
            assert_eq!(got, error, "{options}");
            assert_eq!(got.sqlstate(), code, "{options}");
        }
    }
}
