//! The session parameters that follow a client from server to server: every setting PostgreSQL
//! reports with ParameterStatus that a client can change (PgBouncer 1.26's tracked set), and
//! any other reported one (an extension's); their values, and the SET statement that moves a
//! server's values to a client's.

/// Tracked parameters, by the names PostgreSQL reports them under in ParameterStatus.
pub const TRACKED: [&str; 10] = [
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
    "default_transaction_read_only",
    // Reported from PostgreSQL 18 on; before, a client's own value is set on every server.
    "search_path",
    // Only a superuser can change it; for everyone else it is the login user on every server.
    "session_authorization",
    // Reported from PostgreSQL 16 on.
    "scram_iterations",
];

/// Reported parameters no client can set: the same on every server of a pool (or following
/// from one that is tracked, as is_superuser from session_authorization), never SET.
const READ_ONLY: [&str; 5] = [
    "server_version",
    "server_encoding",
    "integer_datetimes",
    "in_hot_standby",
    "is_superuser",
];

/// Index into [`TRACKED`] of a parameter name, compared case-insensitively as GUC names are.
pub fn tracked_index(name: &str) -> Option<usize> {
    TRACKED.iter().position(|t| t.eq_ignore_ascii_case(name))
}

/// Whether `name` can be tracked beyond [`TRACKED`]: a setting name (letters, digits, `_` and
/// the `.` of an extension's prefix) that no client is refused to set.
pub fn trackable_extra(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        && !READ_ONLY.iter().any(|r| r.eq_ignore_ascii_case(name))
        && tracked_index(name).is_none()
}

/// Values of the tracked parameters; `None` where nothing is known. Parameters beyond
/// [`TRACKED`] (an extension's reported ones, track_extra_parameters) are kept in a list that
/// is almost always empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamSet {
    values: [Option<String>; TRACKED.len()],
    extra: Vec<(String, String)>,
}

impl ParamSet {
    /// Records `name = value` if `name` is tracked; returns whether it was. A reported
    /// parameter that is not in [`TRACKED`] and not read-only is tracked as an extra.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        if value.len() > MAX_VALUE_LEN {
            return false;
        }
        match tracked_index(name) {
            Some(i) => {
                if self.values[i].as_deref() != Some(value) {
                    self.values[i] = Some(value.to_owned());
                }
                true
            }
            None if trackable_extra(name) => {
                match self
                    .extra
                    .iter_mut()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                {
                    Some((_, v)) if v == value => {}
                    Some((_, v)) => *v = value.to_owned(),
                    None => self.extra.push((name.to_owned(), value.to_owned())),
                }
                true
            }
            None => false,
        }
    }

    /// Forgets every value (a RESET ALL or DISCARD ALL set them all back).
    pub fn forget_all(&mut self) {
        *self = ParamSet::default();
    }

    /// Forgets `name`'s value.
    pub fn forget(&mut self, name: &str) {
        match tracked_index(name) {
            Some(i) => self.values[i] = None,
            None => self.extra.retain(|(n, _)| !n.eq_ignore_ascii_case(name)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        match tracked_index(name) {
            Some(i) => self.values[i].as_deref(),
            None => self
                .extra
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
        }
    }

    /// Every known (name, value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let tracked = TRACKED
            .iter()
            .zip(&self.values)
            .filter_map(|(n, v)| Some((*n, v.as_deref()?)));
        tracked.chain(self.extra.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// The statements that give a server holding `server` this set's values, or None when the
    /// server already matches: one `set_config` call per value that differs (it reads a value
    /// as a configuration file does, so a list such as search_path keeps its items), and a
    /// RESET for each value pgmux set there that this set does not have. Values are written
    /// as E'' strings, so standard_conforming_strings cannot change how they read.
    pub fn set_statements(&self, server: &ParamSet) -> Option<String> {
        let local = false;
        let mut calls = Vec::new();
        let mut resets = String::new();
        let tracked = self.values.iter().zip(&server.values).zip(TRACKED);
        for ((want, has), name) in tracked {
            match (want, has) {
                (Some(want), has) if has.as_deref() != Some(want.as_str()) => {
                    calls.push(set_config(name, want, local))
                }
                (None, Some(_)) => resets.push_str(&format!("RESET {name};")),
                _ => {}
            }
        }
        for (name, want) in &self.extra {
            if server.get(name) != Some(want.as_str()) {
                calls.push(set_config(name, want, local));
            }
        }
        for (name, _) in &server.extra {
            if self.get(name).is_none() {
                resets.push_str(&format!("RESET {name};"));
            }
        }
        if calls.is_empty() && resets.is_empty() {
            return None;
        }
        let mut sql = String::new();
        if !calls.is_empty() {
            sql = format!("SELECT {};", calls.join(", "));
        }
        sql.push_str(&resets);
        Some(sql)
    }

    /// One statement that sets this set's values that differ from `server`'s for itself
    /// alone (set_config's is_local): it fails where a value is refused, and changes nothing.
    pub fn check_statement(&self, server: &ParamSet) -> Option<String> {
        let calls: Vec<String> = self
            .iter()
            .filter(|(name, value)| server.get(name) != Some(*value))
            .map(|(name, value)| set_config(name, value, true))
            .collect();
        (!calls.is_empty()).then(|| format!("SELECT {};", calls.join(", ")))
    }

    /// What a server holds once `set_statements(server)` has run on it: this set's values,
    /// where the server may not report them itself (search_path before PostgreSQL 18).
    pub fn applied_to(&self, server: &mut ParamSet) {
        for (value, has) in self.values.iter().zip(server.values.iter_mut()) {
            if has != value {
                has.clone_from(value);
            }
        }
        server.extra.clone_from(&self.extra);
    }
}

/// The longest value pgmux tracks: a client cannot make every server connection it touches,
/// and its own session, keep more.
pub const MAX_VALUE_LEN: usize = 4096;

/// `pg_catalog.set_config(E'name', E'value', local)`, both escaped for an E'' string: a name a
/// client chose must not end the string.
pub(crate) fn set_config(name: &str, value: &str, local: bool) -> String {
    let (name, value) = (escape(name), escape(value));
    format!("pg_catalog.set_config(E'{name}', E'{value}', {local})")
}

/// Text for the inside of an E'' string.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\'' => escaped.push_str("''"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_case_insensitively() {
        let mut p = ParamSet::default();
        assert!(p.set("datestyle", "ISO, MDY"));
        assert_eq!(p.get("DateStyle"), Some("ISO, MDY"));
        assert!(p.set("search_path", "x"));
        assert_eq!(p.get("SEARCH_PATH"), Some("x"));
    }

    #[test]
    fn read_only_parameters_are_not_tracked_and_extras_are() {
        let mut p = ParamSet::default();
        assert!(!p.set("server_version", "15.1"));
        assert!(!p.set("is_superuser", "on"));
        assert!(!p.set("bad name;", "x"));
        assert!(p.set("citus.shard_count", "4"));
        assert!(p.set("Citus.Shard_Count", "8"));
        assert_eq!(p.get("citus.shard_count"), Some("8"));
        assert_eq!(p.iter().count(), 1);
    }

    #[test]
    fn set_statements_cover_only_differences_and_quote() {
        let mut client = ParamSet::default();
        let mut server = ParamSet::default();
        client.set("TimeZone", "UTC");
        server.set("TimeZone", "UTC");
        assert_eq!(client.set_statements(&server), None);
        client.set("application_name", "it's \\ here");
        server.set("application_name", "other");
        client.set("search_path", "app, public");
        client.set("citus.shard_count", "4");
        assert_eq!(
            client.set_statements(&server).unwrap(),
            "SELECT pg_catalog.set_config(E'application_name', E'it''s \\\\ here', false), \
             pg_catalog.set_config(E'search_path', E'app, public', false), \
             pg_catalog.set_config(E'citus.shard_count', E'4', false);"
        );
    }

    #[test]
    fn what_pgmux_set_and_the_next_client_lacks_is_reset() {
        let mut first = ParamSet::default();
        first.set("search_path", "tenant_a");
        first.set("citus.shard_count", "4");
        let mut server = ParamSet::default();
        first.applied_to(&mut server);
        assert_eq!(first.set_statements(&server), None);
        let second = ParamSet::default();
        assert_eq!(
            second.set_statements(&server).unwrap(),
            "RESET search_path;RESET citus.shard_count;"
        );
        second.applied_to(&mut server);
        assert_eq!(server, ParamSet::default());
    }
}
