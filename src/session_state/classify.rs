//! What each statement of a query string may do to its session, read from its tokens: the
//! handful of statement shapes that change state a client keeps across transactions. The
//! verdict is only what the text says; the session state applies it once the server's reply
//! confirms the statement ran (its CommandComplete), and asks the server itself, between
//! transactions, which state only it can hold (temporary tables, cursors, locks...).

use super::lex::{identifier, statements, string_value, Token, TokenKind};
use std::ops::ControlFlow;

/// What one top-level statement does to session state, as far as its text tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Nothing pgmux follows: ordinary statements, `SET LOCAL`, `SET TRANSACTION`,
    /// `set_config(..., true)`, transaction control (followed from its CommandComplete).
    Plain,
    /// Session settings, each with the statement that sets it again on another server.
    Set(Vec<Setting>),
    /// `RESET name`, `SET name TO DEFAULT`.
    Reset(String),
    ResetAll,
    /// SQL `PREPARE name AS ...`: the name as PostgreSQL folds it, the statement as written.
    Prepare {
        name: String,
        sql: String,
    },
    Deallocate(String),
    DeallocateAll,
    DiscardAll,
    Savepoint(String),
    Release(String),
    RollbackTo(String),
    /// May create state that only its server can hold: temporary objects, a `WITH HOLD`
    /// cursor, a session advisory lock, `LISTEN`, `SET ROLE` / `SESSION AUTHORIZATION`.
    Holds,
    /// May release such state: `DROP`, `DISCARD TEMP`, `CLOSE`, `UNLISTEN`, an advisory
    /// unlock, `RESET ROLE`.
    Releases,
    /// Changes session state in a way pgmux does not read with certainty.
    Unreadable(&'static str),
    /// Text too large for pgmux to hold and read: followed from its replies' tags alone.
    Unread,
}

/// One setting a statement makes for the rest of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The setting's name, folded to lower case as PostgreSQL matches them.
    pub name: String,
    /// A statement that gives another server the same value.
    pub sql: String,
}

/// The statements of `query` in order, one [`Kind`] each; None when every one is
/// [`Kind::Plain`] (almost always, and then nothing is allocated).
pub fn classify(query: &[u8], standard_strings: bool) -> Option<Vec<Kind>> {
    let mut kinds: Option<Vec<Kind>> = None;
    let mut seen = 0;
    statements(query, standard_strings, |tokens| {
        let kind = statement(query, tokens, standard_strings);
        if kind != Kind::Plain || kinds.is_some() {
            let list = kinds.get_or_insert_with(|| vec![Kind::Plain; seen]);
            list.push(kind);
        }
        seen += 1;
        ControlFlow::Continue(())
    });
    kinds
}

/// A statement's tokens, with the input they point into.
struct Words<'a> {
    input: &'a [u8],
    tokens: &'a [Token],
}

impl Words<'_> {
    fn text(&self, i: usize) -> &[u8] {
        self.tokens
            .get(i)
            .map_or(&[][..], |t| &self.input[t.start..t.end])
    }

    /// Whether token `i` is the unquoted keyword `word` (lower case).
    fn is(&self, i: usize, word: &str) -> bool {
        self.tokens
            .get(i)
            .is_some_and(|t| t.kind == TokenKind::Word)
            && self.text(i).eq_ignore_ascii_case(word.as_bytes())
    }

    fn is_punct(&self, i: usize, p: u8) -> bool {
        self.tokens
            .get(i)
            .is_some_and(|t| t.kind == TokenKind::Punct(p))
    }

    fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The statement's text from token `i` to its end.
    fn rest(&self, i: usize) -> &str {
        let (Some(first), Some(last)) = (self.tokens.get(i), self.tokens.last()) else {
            return "";
        };
        std::str::from_utf8(&self.input[first.start..last.end]).unwrap_or("")
    }

    fn name(&self, i: usize) -> Option<String> {
        identifier(self.input, self.tokens.get(i)?)
    }

    /// Index of the first token after `i` that is the keyword `word`.
    fn find(&self, from: usize, word: &str) -> Option<usize> {
        (from..self.len()).find(|&i| self.is(i, word))
    }
}

fn statement(input: &[u8], tokens: &[Token], standard_strings: bool) -> Kind {
    let w = Words { input, tokens };
    if tokens.iter().any(|t| t.kind == TokenKind::Broken) {
        return Kind::Unreadable("a statement pgmux cannot read");
    }
    let Some(first) = tokens.first().filter(|t| t.kind == TokenKind::Word) else {
        return functions(&w, standard_strings);
    };
    // Folded on the stack: this runs for every statement.
    let mut folded = [0u8; 12];
    let word = &input[first.start..first.end];
    let first = match word.len() <= folded.len() {
        true => {
            folded[..word.len()].copy_from_slice(word);
            folded[..word.len()].make_ascii_lowercase();
            &folded[..word.len()]
        }
        false => &[][..],
    };
    match first {
        b"set" => set(&w),
        b"reset" => reset(&w),
        b"prepare" => prepare(&w, standard_strings),
        b"deallocate" => {
            let at = if w.is(1, "prepare") && w.len() > 2 {
                2
            } else {
                1
            };
            match (w.is(at, "all"), w.name(at), w.len() == at + 1) {
                (true, _, true) => Kind::DeallocateAll,
                (false, Some(name), true) => Kind::Deallocate(name),
                _ => Kind::Unreadable("a DEALLOCATE pgmux cannot read"),
            }
        }
        b"discard" => match () {
            _ if w.is(1, "all") => Kind::DiscardAll,
            _ if w.is(1, "temp") || w.is(1, "temporary") => Kind::Releases,
            _ => Kind::Plain,
        },
        b"savepoint" => savepoint(&w, 1, Kind::Savepoint),
        b"release" => savepoint(&w, if w.is(1, "savepoint") { 2 } else { 1 }, Kind::Release),
        b"rollback" | b"abort" => {
            let mut at = 1;
            if w.is(at, "work") || w.is(at, "transaction") {
                at += 1;
            }
            if !w.is(at, "to") {
                return Kind::Plain;
            }
            at += 1;
            if w.is(at, "savepoint") && w.len() > at + 1 {
                at += 1;
            }
            savepoint(&w, at, Kind::RollbackTo)
        }
        b"listen" => Kind::Holds,
        b"unlisten" | b"close" | b"drop" => Kind::Releases,
        b"declare" => match hold_cursor(&w) {
            true => Kind::Holds,
            false => functions(&w, standard_strings),
        },
        b"create" if creates_temporary(&w) => Kind::Holds,
        b"do" => do_block(&w, standard_strings),
        b"select" => match select_set_config(&w, standard_strings) {
            Some(kind) => kind,
            None => functions(&w, standard_strings),
        },
        _ => functions(&w, standard_strings),
    }
}

fn savepoint(w: &Words, at: usize, kind: fn(String) -> Kind) -> Kind {
    match w.name(at) {
        Some(name) if w.len() == at + 1 => kind(name),
        _ => Kind::Unreadable("a savepoint statement pgmux cannot read"),
    }
}

/// `SET ...`.
fn set(w: &Words) -> Kind {
    let mut at = 1;
    if w.is(at, "local") {
        return Kind::Plain;
    }
    if w.is(at, "session") {
        if w.is(at + 1, "authorization") {
            return match w.is(at + 2, "default") {
                true => Kind::Releases,
                false => Kind::Holds,
            };
        }
        if w.is(at + 1, "characteristics") {
            return Kind::Unreadable("SET SESSION CHARACTERISTICS");
        }
        at += 1;
    }
    if w.is(at, "transaction") || w.is(at, "constraints") {
        return Kind::Plain;
    }
    let (name, value_at) = match () {
        _ if w.is(at, "time") && w.is(at + 1, "zone") => ("timezone".to_string(), at + 2),
        _ if w.is(at, "schema") => ("search_path".to_string(), at + 1),
        _ if w.is(at, "names") => ("client_encoding".to_string(), at + 1),
        _ if w.is(at, "xml") && w.is(at + 1, "option") => ("xmloption".to_string(), at + 2),
        _ if w.is(at, "seed") => return Kind::Plain,
        _ if w.is(at, "role") && !(w.is_punct(at + 1, b'=') || w.is(at + 1, "to")) => {
            return match w.is(at + 1, "none") && w.len() == at + 2 {
                true => Kind::Releases,
                false => Kind::Holds,
            };
        }
        _ => {
            let Some((name, next)) = setting_name(w, at) else {
                return Kind::Unreadable("a SET pgmux cannot read");
            };
            if !(w.is_punct(next, b'=') || w.is(next, "to")) {
                return Kind::Unreadable("a SET pgmux cannot read");
            }
            (name, next + 1)
        }
    };
    if value_at >= w.len() {
        return Kind::Unreadable("a SET pgmux cannot read");
    }
    let resets = w.len() == value_at + 1
        && (w.is(value_at, "default") || (name == "timezone" && w.is(value_at, "local")));
    match name.as_str() {
        "role" | "session_authorization" => {
            return match resets || (name == "role" && w.is(value_at, "none")) {
                true => Kind::Releases,
                false => Kind::Holds,
            }
        }
        "transaction_isolation" | "transaction_read_only" | "transaction_deferrable" => {
            return Kind::Plain
        }
        _ => {}
    }
    if resets {
        return Kind::Reset(name);
    }
    Kind::Set(vec![Setting {
        sql: format!("SET {}", w.rest(at)),
        name,
    }])
}

/// A setting's name at token `at`, dotted parts joined (`myapp.tenant`), and the index after.
fn setting_name(w: &Words, at: usize) -> Option<(String, usize)> {
    let mut name = w.name(at)?;
    let mut next = at + 1;
    while w.is_punct(next, b'.') {
        name.push('.');
        name.push_str(&w.name(next + 1)?);
        next += 2;
    }
    Some((name, next))
}

/// `RESET ...`.
fn reset(w: &Words) -> Kind {
    if w.is(1, "all") && w.len() == 2 {
        return Kind::ResetAll;
    }
    if w.is(1, "time") && w.is(2, "zone") && w.len() == 3 {
        return Kind::Reset("timezone".into());
    }
    if w.is(1, "session") && w.is(2, "authorization") {
        return Kind::Releases;
    }
    match setting_name(w, 1) {
        Some((name, next)) if next == w.len() => match name.as_str() {
            "role" | "session_authorization" => Kind::Releases,
            _ => Kind::Reset(name),
        },
        _ => Kind::Unreadable("a RESET pgmux cannot read"),
    }
}

/// `PREPARE name [(types)] AS statement`; `PREPARE TRANSACTION` is transaction control.
fn prepare(w: &Words, standard_strings: bool) -> Kind {
    if w.is(1, "transaction") {
        return Kind::Plain;
    }
    let Some(name) = w.name(1) else {
        return Kind::Unreadable("a PREPARE pgmux cannot read");
    };
    let Some(as_at) = w.find(2, "as") else {
        return Kind::Unreadable("a PREPARE pgmux cannot read");
    };
    // What EXECUTE runs later must be plain, or pgmux would not see it happen.
    let inner = Words {
        input: w.input,
        tokens: &w.tokens[as_at + 1..],
    };
    let inner_kind = match inner.tokens.is_empty() {
        true => Kind::Plain,
        false => statement(w.input, inner.tokens, standard_strings),
    };
    if inner_kind != Kind::Plain {
        return Kind::Unreadable("a prepared statement that changes session state");
    }
    Kind::Prepare {
        name,
        sql: w.rest(0).to_string(),
    }
}

/// `DECLARE ... WITH HOLD FOR ...`.
fn hold_cursor(w: &Words) -> bool {
    let end = w.find(1, "for").unwrap_or(w.len());
    (1..end).any(|i| w.is(i, "with") && w.is(i + 1, "hold"))
}

/// `CREATE [OR REPLACE] [GLOBAL | LOCAL] TEMP[ORARY] ...`, or anything made in pg_temp.
fn creates_temporary(w: &Words) -> bool {
    let mut at = 1;
    if w.is(at, "or") && w.is(at + 1, "replace") {
        at += 2;
    }
    if w.is(at, "global") || w.is(at, "local") {
        at += 1;
    }
    w.is(at, "temp") || w.is(at, "temporary")
}

/// `DO [LANGUAGE l] 'body'`: a body that changes settings or runs dynamic SQL is unreadable;
/// one that may hold or release server-only state is checked like a statement.
fn do_block(w: &Words, standard_strings: bool) -> Kind {
    let Some(body) = w
        .tokens
        .iter()
        .find(|t| matches!(t.kind, TokenKind::String { .. }))
    else {
        return Kind::Unreadable("a DO block pgmux cannot read");
    };
    let Some(text) = string_value(w.input, body) else {
        return Kind::Unreadable("a DO block pgmux cannot read");
    };
    let mut kind = Kind::Plain;
    super::lex::Lexer::new(text.as_bytes(), standard_strings)
        .filter(|t| t.kind == TokenKind::Word)
        .for_each(|t| {
            let word = text.as_bytes()[t.start..t.end].to_ascii_lowercase();
            let found = match word.as_slice() {
                b"set" | b"reset" | b"set_config" | b"prepare" | b"deallocate" | b"discard"
                | b"execute" => {
                    Kind::Unreadable("a DO block that changes settings or runs dynamic SQL")
                }
                b"temp" | b"temporary" | b"pg_temp" | b"listen" | b"hold" | b"role"
                | b"authorization" => Kind::Holds,
                w if advisory(w) == Some(true) => Kind::Holds,
                w if advisory(w) == Some(false) => Kind::Releases,
                b"drop" | b"close" | b"unlisten" => Kind::Releases,
                _ => Kind::Plain,
            };
            kind = stronger(std::mem::replace(&mut kind, Kind::Plain), found);
        });
    kind
}

/// Of two verdicts on one statement, the one that asks more of pgmux.
fn stronger(a: Kind, b: Kind) -> Kind {
    fn rank(k: &Kind) -> u8 {
        match k {
            Kind::Unreadable(_) | Kind::Unread => 3,
            Kind::Holds => 2,
            Kind::Releases => 1,
            _ => 0,
        }
    }
    match rank(&b) > rank(&a) {
        true => b,
        false => a,
    }
}

/// Whether a function name takes a session advisory lock (Some(true)) or releases one
/// (Some(false)).
fn advisory(name: &[u8]) -> Option<bool> {
    match name {
        b"pg_advisory_lock"
        | b"pg_advisory_lock_shared"
        | b"pg_try_advisory_lock"
        | b"pg_try_advisory_lock_shared" => Some(true),
        b"pg_advisory_unlock" | b"pg_advisory_unlock_shared" | b"pg_advisory_unlock_all" => {
            Some(false)
        }
        _ => None,
    }
}

/// Any statement: what the functions it calls and the names it uses may do. The common case,
/// so it looks at each word's length and first byte before anything else.
fn functions(w: &Words, _standard_strings: bool) -> Kind {
    let mut kind = Kind::Plain;
    for i in 0..w.len() {
        let token = &w.tokens[i];
        if !matches!(token.kind, TokenKind::Word | TokenKind::Quoted) {
            continue;
        }
        let text = w.text(i);
        let found = match text.len() {
            // pg_temp
            7 if text.eq_ignore_ascii_case(b"pg_temp") && w.is_punct(i + 1, b'.') => Kind::Holds,
            // INTO TEMP[ORARY]
            4 | 9
                if (text.eq_ignore_ascii_case(b"temp")
                    || text.eq_ignore_ascii_case(b"temporary"))
                    && i > 0
                    && w.is(i - 1, "into") =>
            {
                Kind::Holds
            }
            10 if text.eq_ignore_ascii_case(b"set_config") && w.is_punct(i + 1, b'(') => {
                Kind::Unreadable("set_config with arguments pgmux cannot read")
            }
            16..=27 if w.is_punct(i + 1, b'(') => match advisory(&text.to_ascii_lowercase()) {
                Some(true) => Kind::Holds,
                Some(false) => Kind::Releases,
                None => Kind::Plain,
            },
            _ => Kind::Plain,
        };
        if found != Kind::Plain {
            kind = stronger(kind, found);
        }
    }
    kind
}

/// `SELECT [pg_catalog.]set_config('name', 'value', false) [, ...]`, each argument a string
/// constant (the local flag may be a boolean one): the settings it makes. None when the
/// statement has another shape.
fn select_set_config(w: &Words, standard_strings: bool) -> Option<Kind> {
    let _ = standard_strings;
    let mut at = 1;
    let mut settings = Vec::new();
    let mut all_local = true;
    loop {
        if w.is(at, "pg_catalog") && w.is_punct(at + 1, b'.') {
            at += 2;
        }
        if !(w.is(at, "set_config") && w.is_punct(at + 1, b'(')) {
            return None;
        }
        let name = string_value(w.input, w.tokens.get(at + 2)?)?;
        let value = string_value(w.input, w.tokens.get(at + 4)?)?;
        if !w.is_punct(at + 3, b',') || !w.is_punct(at + 5, b',') || !w.is_punct(at + 7, b')') {
            return None;
        }
        let local = match w.tokens.get(at + 6)?.kind {
            TokenKind::Word if w.is(at + 6, "true") => true,
            TokenKind::Word if w.is(at + 6, "false") => false,
            TokenKind::String { .. } => match string_value(w.input, &w.tokens[at + 6])?
                .to_ascii_lowercase()
                .as_str()
            {
                "true" | "on" | "t" | "yes" | "1" => true,
                "false" | "off" | "f" | "no" | "0" => false,
                _ => return None,
            },
            _ => return None,
        };
        at += 8;
        if !local {
            all_local = false;
            let folded = name.to_ascii_lowercase();
            if matches!(folded.as_str(), "role" | "session_authorization") {
                return Some(Kind::Holds);
            }
            settings.push(Setting {
                sql: format!(
                    "SELECT {}",
                    crate::protocol::params::set_config(&name, &value, false)
                ),
                name: folded,
            });
        }
        match () {
            _ if at == w.len() => break,
            _ if w.is_punct(at, b',') => at += 1,
            _ => return None,
        }
    }
    Some(match all_local {
        true => Kind::Plain,
        false => Kind::Set(settings),
    })
}

#[cfg(test)]
mod tests;
