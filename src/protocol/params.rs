//! The session parameters that follow a client from server to server (PgBouncer's tracked set):
//! their canonical names, a small fixed-size set of values, and the SET statement that moves a
//! server's values to a client's.

/// Tracked parameters, by the names PostgreSQL reports them under in ParameterStatus.
pub const TRACKED: [&str; 6] = [
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "application_name",
];

/// Index into [`TRACKED`] of a parameter name, compared case-insensitively as GUC names are.
pub fn tracked_index(name: &str) -> Option<usize> {
    TRACKED.iter().position(|t| t.eq_ignore_ascii_case(name))
}

/// Values of the tracked parameters; `None` where nothing is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamSet {
    values: [Option<String>; TRACKED.len()],
}

impl ParamSet {
    /// Records `name = value` if `name` is tracked; returns whether it was.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        match tracked_index(name) {
            Some(i) => {
                if self.values[i].as_deref() != Some(value) {
                    self.values[i] = Some(value.to_owned());
                }
                true
            }
            None => false,
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        tracked_index(name).and_then(|i| self.values[i].as_deref())
    }

    /// `SET` statements that give a server holding `server` this set's values, or None when the
    /// server already matches. Unknown values on our side are left as the server has them.
    pub fn set_statements(&self, server: &ParamSet) -> Option<String> {
        let mut sql = String::new();
        for (i, want) in self.values.iter().enumerate() {
            let Some(want) = want else { continue };
            if server.values[i].as_deref() == Some(want.as_str()) {
                continue;
            }
            sql.push_str("SET ");
            sql.push_str(TRACKED[i]);
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
        assert!(!p.set("search_path", "x"));
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
        assert_eq!(
            client.set_statements(&server).unwrap(),
            "SET DateStyle TO 'ISO, DMY';SET application_name TO 'it''s';"
        );
    }
}
