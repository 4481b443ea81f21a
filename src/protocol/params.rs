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

    /// `SET` statements that give a server holding `server` this set's values, or None when the
    /// server already matches. Unknown values on our side are left as the server has them.
    pub fn set_statements(&self, server: &ParamSet) -> Option<String> {
        let mut sql = String::new();
        for (name, want) in self.iter() {
            if server.get(name) == Some(want) {
                continue;
            }
            sql.push_str("SET ");
            sql.push_str(name);
            sql.push_str(" TO '");
            sql.push_str(&want.replace('\'', "''"));
            sql.push_str("';");
        }
        (!sql.is_empty()).then_some(sql)
    }
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
        client.set("application_name", "it's");
        server.set("application_name", "other");
        client.set("DateStyle", "ISO, DMY");
        client.set("citus.shard_count", "4");
        assert_eq!(
            client.set_statements(&server).unwrap(),
            "SET DateStyle TO 'ISO, DMY';SET application_name TO 'it''s';\
             SET citus.shard_count TO '4';"
        );
    }
}
