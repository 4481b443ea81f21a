//! An operator's words for what serde says about a setting: "must be a whole number between 0
//! and 65535" rather than "expected u16", and "did you mean ...?" for a misspelt name. serde
//! names the type it expected, and the settings or variants it knows, in its messages; this
//! reads them from there, so a setting added to the schema needs nothing here.

use super::suggest::closest;
use toml::Value;

/// What a setting holds, in the terms its messages use.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// An integer type's range; no highest for 64-bit types, whose limit nobody writes.
    Whole {
        lowest: u64,
        highest: Option<u64>,
    },
    /// Every float setting is a time: the README promises "times are seconds".
    Seconds {
        lowest: u64,
    },
    Boolean,
    Text,
    Names,
    OneOf(Vec<String>),
}

/// serde's names for the types it expected ("expected u16") and the kind each one means.
const SERDE_TYPES: [(&str, Kind); 11] = [
    ("u8", whole(Some(u8::MAX as u64))),
    ("u16", whole(Some(u16::MAX as u64))),
    ("u32", whole(Some(u32::MAX as u64))),
    ("u64", whole(None)),
    ("usize", whole(None)),
    ("f64", Kind::Seconds { lowest: 0 }),
    ("f32", Kind::Seconds { lowest: 0 }),
    ("a boolean", Kind::Boolean),
    ("a string", Kind::Text),
    ("path string", Kind::Text),
    ("a sequence", Kind::Names),
];

const fn whole(highest: Option<u64>) -> Kind {
    Kind::Whole { lowest: 0, highest }
}

/// Bounds the rules across keys (validate.rs) enforce within a type's range, by setting name,
/// so that a mistyped value is told the same range as an out-of-range one. A test checks that
/// the rules still refuse what lies outside.
pub(super) const LOWEST: [(&str, u64); 4] = [
    ("default_pool_size", 1),
    ("max_client_conn", 1),
    ("pool_size", 1),
    ("stats_period", 1),
];
pub(super) const HIGHEST: [(&str, u64); 1] = [("verbose", 2)];

impl Kind {
    /// This kind narrowed to what `setting` (a bare name such as "pool_size") accepts.
    fn for_setting(self, setting: &str) -> Kind {
        let bound = |table: &[(&str, u64)]| {
            table
                .iter()
                .find(|(name, _)| *name == setting)
                .map(|(_, bound)| *bound)
        };
        match self {
            Kind::Whole { lowest, highest } => Kind::Whole {
                lowest: bound(&LOWEST).unwrap_or(lowest),
                highest: bound(&HIGHEST).or(highest),
            },
            Kind::Seconds { lowest } => Kind::Seconds {
                lowest: bound(&LOWEST).unwrap_or(lowest),
            },
            other => other,
        }
    }

    fn words(&self) -> String {
        match self {
            Kind::Whole {
                lowest,
                highest: Some(highest),
            } => format!("must be a whole number between {lowest} and {highest}"),
            Kind::Whole {
                lowest,
                highest: None,
            } => format!("must be a whole number, {lowest} or more"),
            Kind::Seconds { lowest } => format!("must be a number of seconds, {lowest} or more"),
            Kind::Boolean => "must be true or false".into(),
            Kind::Text => "must be text in double quotes".into(),
            Kind::Names => "must be a list of names in brackets, e.g. [\"a\", \"b\"]".into(),
            Kind::OneOf(variants) => format!("must be one of: {}", variants.join(", ")),
        }
    }
}

/// The kind serde's `message` says it expected, if it names one this module knows.
fn expected_kind(message: &str) -> Option<Kind> {
    if message.starts_with("unknown variant") {
        return variants(message).map(Kind::OneOf);
    }
    let (_, expected) = message.rsplit_once("expected ")?;
    SERDE_TYPES
        .iter()
        .find(|(name, _)| *name == expected.trim())
        .map(|(_, kind)| kind.clone())
}

/// The names serde lists after "expected" (`a`, `b` or one of `a`, `b`), in its order.
fn expected_names(message: &str) -> Vec<&str> {
    let Some((_, expected)) = message.split_once("expected ") else {
        return Vec::new();
    };
    // Backticked names sit at odd positions once the text is split at the backticks.
    expected.split('`').skip(1).step_by(2).collect()
}

/// The variants an enum accepts, from serde's "unknown variant `x`, expected one of ...".
pub(super) fn variants(message: &str) -> Option<Vec<String>> {
    if !message.starts_with("unknown variant") {
        return None;
    }
    let names: Vec<String> = expected_names(message)
        .into_iter()
        .map(str::to_owned)
        .collect();
    (!names.is_empty()).then_some(names)
}

/// Whether serde's `message` is about a key the table has no setting for.
pub(super) fn is_unknown_field(message: &str) -> bool {
    message.starts_with("unknown field")
}

/// "unknown setting", with the closest of the settings serde listed in its `message` when
/// `key` looks like a typo of one.
pub(super) fn unknown_setting(key: &str, message: &str) -> String {
    match closest(key, expected_names(message)) {
        Some(name) => format!("unknown setting (did you mean {name}?)"),
        None => "unknown setting".into(),
    }
}

/// The tables a config file has, and the names PgBouncer users may bring for them.
const TABLES: [&str; 4] = ["pgmux", "databases", "users", "peers"];
const TABLE_ALIASES: [(&str, &str); 1] = [("pgbouncer", "pgmux")];

/// For a top-level table that is none of pgmux's.
pub(super) fn unknown_table(name: &str) -> String {
    let alias = TABLE_ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map(|(_, table)| *table);
    match alias.or_else(|| closest(name, TABLES)) {
        Some(table) => format!("unknown table (did you mean {table}?)"),
        None => format!("unknown table (expected {})", TABLES.join(", ")),
    }
}

/// An operator's words for serde's `message` about the value `given` for `setting` (its bare
/// name); `variants` finds what an enum setting accepts when the message does not say. serde's
/// text stays when it is about nothing recognised.
pub(super) fn value_message(
    setting: &str,
    message: &str,
    given: &Value,
    variants: impl FnOnce() -> Option<Vec<String>>,
) -> String {
    let kind = match expected_kind(message) {
        // A list's item of the wrong type makes serde expect an item, not the list.
        Some(Kind::Text) if given.is_array() => Some(Kind::Names),
        Some(kind) => Some(kind),
        // serde says no more than "expected string only" when an enum gets no string.
        None => variants().map(Kind::OneOf),
    };
    match kind {
        Some(kind) => kind.for_setting(setting).words(),
        None => message.to_owned(),
    }
}

/// A TOML syntax error's text on one line: the parser puts what it expected on a line of its own.
pub(super) fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(setting: &str, message: &str, given: Value) -> String {
        value_message(setting, message, &given, || None)
    }

    #[test]
    fn integer_types_name_their_range() {
        let given = Value::String("x".into());
        assert_eq!(
            words(
                "listen_port",
                "invalid type: string \"x\", expected u16",
                given.clone()
            ),
            "must be a whole number between 0 and 65535"
        );
        assert_eq!(
            words(
                "max_db_connections",
                "invalid value: integer `-1`, expected u32",
                given.clone()
            ),
            "must be a whole number between 0 and 4294967295"
        );
        assert_eq!(
            words(
                "workers",
                "invalid type: string \"x\", expected usize",
                given
            ),
            "must be a whole number, 0 or more"
        );
    }

    #[test]
    fn bounds_the_rules_enforce_narrow_the_range() {
        let given = Value::String("x".into());
        assert_eq!(
            words(
                "verbose",
                "invalid value: integer `300`, expected u8",
                given.clone()
            ),
            "must be a whole number between 0 and 2"
        );
        assert_eq!(
            words(
                "pool_size",
                "invalid type: string \"x\", expected u32",
                given.clone()
            ),
            "must be a whole number between 1 and 4294967295"
        );
        assert_eq!(
            words(
                "stats_period",
                "invalid type: string \"x\", expected f64",
                given
            ),
            "must be a number of seconds, 1 or more"
        );
    }

    #[test]
    fn other_types_get_their_own_words() {
        let one = Value::Integer(1);
        for (message, expected) in [
            ("invalid type: string \"x\", expected f64", "must be a number of seconds, 0 or more"),
            ("invalid type: integer `1`, expected a boolean", "must be true or false"),
            ("invalid type: integer `1`, expected a string", "must be text in double quotes"),
            ("invalid type: integer `1`, expected path string", "must be text in double quotes"),
            (
                "invalid type: string \"a\", expected a sequence",
                "must be a list of names in brackets, e.g. [\"a\", \"b\"]",
            ),
            (
                "unknown variant `sometimes`, expected one of `session`, `transaction`, `statement`",
                "must be one of: session, transaction, statement",
            ),
        ] {
            assert_eq!(words("query_timeout", message, one.clone()), expected, "{message}");
        }
        // An item of the wrong type in a list: serde expected the item, the setting is a list.
        let list = Value::Array(vec![Value::Integer(1)]);
        assert_eq!(
            words(
                "admin_users",
                "invalid type: integer `1`, expected a string",
                list
            ),
            "must be a list of names in brackets, e.g. [\"a\", \"b\"]"
        );
    }

    #[test]
    fn enums_without_their_variants_in_the_message_ask_for_them() {
        let message = "invalid type: unit variant, expected string only";
        let variants = || Some(vec!["text".to_owned(), "json".to_owned()]);
        assert_eq!(
            value_message("log_format", message, &Value::Integer(1), variants),
            "must be one of: text, json"
        );
    }

    #[test]
    fn unrecognised_messages_are_kept() {
        let message = "invalid type: map, expected something new";
        assert_eq!(words("x", message, Value::Integer(1)), message);
    }

    #[test]
    fn unknown_names_suggest_the_closest_known_one() {
        let message = "unknown field `default_pool_sise`, expected one of `listen_addr`, \
                       `default_pool_size`, `min_pool_size`";
        assert!(is_unknown_field(message));
        assert_eq!(
            unknown_setting("default_pool_sise", message),
            "unknown setting (did you mean default_pool_size?)"
        );
        assert_eq!(unknown_setting("logfile", message), "unknown setting");
        assert_eq!(
            unknown_setting("hots", "unknown field `hots`, expected `host`"),
            "unknown setting (did you mean host?)"
        );
        assert_eq!(
            unknown_table("databse"),
            "unknown table (did you mean databases?)"
        );
        assert_eq!(
            unknown_table("pgbouncer"),
            "unknown table (did you mean pgmux?)"
        );
        assert_eq!(
            unknown_table("extra"),
            "unknown table (expected pgmux, databases, users, peers)"
        );
    }

    #[test]
    fn syntax_messages_are_one_line() {
        assert_eq!(
            one_line("invalid table header\nexpected `.`, `]`"),
            "invalid table header; expected `.`, `]`"
        );
    }
}
