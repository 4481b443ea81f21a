//! What a session holds that pgmux can give another server: settings and SQL prepared
//! statements, each with the statement that makes it. A client keeps what it committed; a
//! server connection keeps what pgmux last gave it, so that moving a client there costs only
//! the difference.

use std::sync::Arc;

/// The most settings, and SQL prepared statements, pgmux follows for one session, and the
/// most text of theirs; a statement that would add more is refused.
pub const MAX_ENTRIES: usize = 64;
pub const MAX_PREPARED: usize = 256;
pub const MAX_BYTES: usize = 256 * 1024;

/// Settings and SQL prepared statements, in the order they were last changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Setting name (folded) and the statement that sets it.
    pub settings: Vec<(String, Arc<str>)>,
    /// Statement name (folded) and its PREPARE statement.
    pub prepared: Vec<(String, Arc<str>)>,
}

/// One confirmed change to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set(String, Arc<str>),
    Reset(String),
    ResetAll,
    Prepare(String, Arc<str>),
    Deallocate(String),
    DeallocateAll,
    DiscardAll,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty() && self.prepared.is_empty()
    }

    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Set(name, sql) => {
                self.settings.retain(|(n, _)| n != name);
                self.settings.push((name.clone(), sql.clone()));
            }
            Change::Reset(name) => self.settings.retain(|(n, _)| n != name),
            Change::ResetAll => self.settings.clear(),
            Change::Prepare(name, sql) => {
                self.prepared.retain(|(n, _)| n != name);
                self.prepared.push((name.clone(), sql.clone()));
            }
            Change::Deallocate(name) => self.prepared.retain(|(n, _)| n != name),
            Change::DeallocateAll => self.prepared.clear(),
            Change::DiscardAll => {
                self.settings.clear();
                self.prepared.clear();
            }
        }
    }

    /// The bytes of text it holds.
    pub fn bytes(&self) -> usize {
        self.settings
            .iter()
            .chain(&self.prepared)
            .map(|(n, s)| n.len() + s.len())
            .sum()
    }

    /// Whether this much is more than pgmux keeps for one session.
    pub fn over_bound(&self) -> bool {
        self.settings.len() > MAX_ENTRIES
            || self.prepared.len() > MAX_PREPARED
            || self.bytes() > MAX_BYTES
    }

    fn setting(&self, name: &str) -> Option<&Arc<str>> {
        self.settings
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    fn statement(&self, name: &str) -> Option<&Arc<str>> {
        self.prepared
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }
}

/// What moves a server holding `server` to `client`: the statements that undo what the client
/// lacks (run before the client's tracked parameters are set), those that add what it has
/// (after them), and each PREPARE apart, so that one that fails (its table dropped since)
/// costs only that statement.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    pub undo: String,
    pub redo: String,
    pub prepares: Vec<(String, Arc<str>)>,
    /// Setting names the replay touches: what pgmux knows of their values is stale.
    pub touched: Vec<String>,
}

impl Replay {
    pub fn between(server: &Held, client: &Held) -> Replay {
        let mut replay = Replay::default();
        for (name, sql) in &server.settings {
            if client.setting(name).is_none_or(|s| s != sql) {
                replay
                    .undo
                    .push_str(&format!("RESET {};", quote_setting(name)));
                replay.touched.push(name.clone());
            }
        }
        for (name, sql) in &server.prepared {
            if client.statement(name).is_none_or(|s| s != sql) {
                replay
                    .undo
                    .push_str(&format!("DEALLOCATE {};", quote_ident(name)));
            }
        }
        for (name, sql) in &client.settings {
            if server.setting(name).is_none_or(|s| s != sql) {
                replay.redo.push_str(sql);
                replay.redo.push(';');
                if !replay.touched.contains(name) {
                    replay.touched.push(name.clone());
                }
            }
        }
        for (name, sql) in &client.prepared {
            if server.statement(name).is_none_or(|s| s != sql) {
                replay.prepares.push((name.clone(), sql.clone()));
            }
        }
        replay
    }

    pub fn is_empty(&self) -> bool {
        self.undo.is_empty() && self.redo.is_empty() && self.prepares.is_empty()
    }
}

/// A name as a quoted identifier, so that any folded name reads back as itself.
fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// A dotted setting name quotes each part on its own (`"myapp"."tenant"`).
fn quote_setting(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, sql: &str) -> Change {
        Change::Set(name.into(), sql.into())
    }

    #[test]
    fn a_move_costs_only_the_difference() {
        let mut server = Held::default();
        server.apply(&set("work_mem", "SET work_mem = '64MB'"));
        server.apply(&set("myapp.tenant", "SET myapp.tenant = 1"));
        server.apply(&Change::Prepare("q".into(), "PREPARE q AS SELECT 1".into()));
        let mut client = Held::default();
        client.apply(&set("work_mem", "SET work_mem = '64MB'"));
        client.apply(&set("search_path", "SET search_path = a"));
        let replay = Replay::between(&server, &client);
        assert_eq!(replay.undo, "RESET \"myapp\".\"tenant\";DEALLOCATE \"q\";");
        assert_eq!(replay.redo, "SET search_path = a;");
        assert!(replay.prepares.is_empty());
        assert_eq!(replay.touched, ["myapp.tenant", "search_path"]);
        assert!(Replay::between(&client, &client).is_empty());
    }

    #[test]
    fn changes_keep_the_latest_last() {
        let mut held = Held::default();
        held.apply(&set("a", "SET a = 1"));
        held.apply(&set("b", "SET b = 1"));
        held.apply(&set("a", "SET a = 2"));
        assert_eq!(held.settings[1], ("a".to_string(), Arc::from("SET a = 2")));
        held.apply(&Change::Reset("b".into()));
        held.apply(&Change::Prepare("p".into(), "PREPARE p AS SELECT 1".into()));
        held.apply(&Change::ResetAll);
        assert!(held.settings.is_empty());
        assert_eq!(held.prepared.len(), 1);
        held.apply(&Change::DiscardAll);
        assert!(held.is_empty());
    }
}
