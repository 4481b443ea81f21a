//! What each statement of a query string may do to its session, read from its tokens: the
//! handful of statement shapes that change state a client keeps across transactions. The
//! verdict is only what the text says; the session state applies it once the server's reply
//! confirms the statement ran (its CommandComplete), and asks the server itself, between
//! transactions, which state only it can hold (temporary tables, cursors, locks...).

pub use super::glance::plain_at_a_glance;
#[cfg(test)]
use super::glance::{mentions_glanced, GLANCED};
use super::lex::{identifier, statements, string_value, Token, TokenKind};
use super::set_config::select_set_config;
pub use super::set_config::{settings_of, Arg, SetConfig};
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
    /// Text the lexer finds broken (an unterminated string, a statement that starts with no
    /// word): the server refuses it whole, and should it not, it pins once it ran.
    Broken,
    /// `SELECT set_config($1, $2, false)`: settings once a Bind gives the parameters.
    SetBound(Vec<SetConfig>),
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
    match plain_at_a_glance(query) {
        true => None,
        false => read(query, standard_strings),
    }
}

/// [`classify`] without the glance: every statement lexed and read. The fuzzer holds the
/// glance to it.
pub fn read(query: &[u8], standard_strings: bool) -> Option<Vec<Kind>> {
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
pub(super) struct Words<'a> {
    pub(super) input: &'a [u8],
    pub(super) tokens: &'a [Token],
}

impl Words<'_> {
    pub(super) fn text(&self, i: usize) -> &[u8] {
        self.tokens
            .get(i)
            .map_or(&[][..], |t| &self.input[t.start..t.end])
    }

    /// Whether token `i` is the unquoted keyword `word` (lower case).
    pub(super) fn is(&self, i: usize, word: &str) -> bool {
        self.tokens
            .get(i)
            .is_some_and(|t| t.kind == TokenKind::Word)
            && self.text(i).eq_ignore_ascii_case(word.as_bytes())
    }

    pub(super) fn is_punct(&self, i: usize, p: u8) -> bool {
        self.tokens
            .get(i)
            .is_some_and(|t| t.kind == TokenKind::Punct(p))
    }

    pub(super) fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The statement's text from token `i` to its end.
    pub(super) fn rest(&self, i: usize) -> Option<&str> {
        let (first, last) = (self.tokens.get(i)?, self.tokens.last()?);
        std::str::from_utf8(&self.input[first.start..last.end]).ok()
    }

    pub(super) fn name(&self, i: usize) -> Option<String> {
        identifier(self.input, self.tokens.get(i)?)
    }

    /// Index of the first token after `i` that is the keyword `word`.
    pub(super) fn find(&self, from: usize, word: &str) -> Option<usize> {
        (from..self.len()).find(|&i| self.is(i, word))
    }
}

fn statement(input: &[u8], tokens: &[Token], standard_strings: bool) -> Kind {
    let kind = shape(input, tokens, standard_strings);
    let replayed = matches!(kind, Kind::Set(_) | Kind::Prepare { .. });
    if replayed && !standard_strings && backslash_in_plain_string(input, tokens) {
        // Replayed on a server where standard_conforming_strings may differ, it would read
        // differently.
        return Kind::Unreadable("a backslash in a string under standard_conforming_strings = off");
    }
    kind
}

fn backslash_in_plain_string(input: &[u8], tokens: &[Token]) -> bool {
    tokens.iter().any(|t| {
        let raw = &input[t.start..t.end];
        matches!(
            t.kind,
            TokenKind::String {
                escapes: true,
                dollar: false
            }
        ) && raw.first() == Some(&b'\'')
            && raw.contains(&b'\\')
    })
}

fn shape(input: &[u8], tokens: &[Token], standard_strings: bool) -> Kind {
    let w = Words { input, tokens };
    if tokens.iter().any(|t| t.kind == TokenKind::Broken) {
        return Kind::Broken;
    }
    let Some(first) = tokens.first().filter(|t| t.kind == TokenKind::Word) else {
        return match tokens.first().map(|t| t.kind) {
            Some(TokenKind::Punct(b'(')) => functions(&w, standard_strings),
            _ => Kind::Broken,
        };
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
        b"load" => Kind::Unreadable("LOAD"),
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
        // With pg_temp first, tables made without a schema are temporary.
        "search_path" if (value_at..w.len()).any(|i| w.name(i).as_deref() == Some("pg_temp")) => {
            return Kind::Unreadable("a search_path with pg_temp")
        }
        _ => {}
    }
    if resets {
        return Kind::Reset(name);
    }
    Kind::Set(vec![Setting {
        sql: match w.rest(at) {
            Some(rest) => format!("SET {rest}"),
            None => return Kind::Unreadable("a SET that is not UTF-8"),
        },
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
    // Setting names match whatever their case, quoted or not.
    Some((name.to_ascii_lowercase(), next))
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
        sql: match w.rest(0) {
            Some(sql) => sql.to_string(),
            None => return Kind::Unreadable("a PREPARE that is not UTF-8"),
        },
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
    if let Some(at) = w.find(1, "language") {
        // Only PL/pgSQL reads as SQL does.
        let language = w.name(at + 1).or_else(|| {
            let t = w.tokens.get(at + 1)?;
            string_value(w.input, t)
        });
        if language.as_deref() != Some("plpgsql") {
            return Kind::Unreadable("a DO block in a language pgmux does not read");
        }
    }
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
    let bytes = text.as_bytes();
    super::lex::Lexer::new(bytes, standard_strings)
        .filter(|t| {
            matches!(
                t.kind,
                TokenKind::Word | TokenKind::Quoted | TokenKind::Broken
            )
        })
        .for_each(|t| {
            let word = match t.kind {
                TokenKind::Word => bytes[t.start..t.end].to_ascii_lowercase(),
                TokenKind::Quoted => match identifier(bytes, &t) {
                    Some(name) => name.to_ascii_lowercase().into_bytes(),
                    None => b"execute".to_vec(),
                },
                _ => b"execute".to_vec(),
            };
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
        let unquoted;
        let text = match token.kind {
            TokenKind::Quoted => match w.name(i) {
                Some(name) => {
                    unquoted = name;
                    unquoted.as_bytes()
                }
                // U&"..." may spell any name at all.
                None if w.text(i).first().is_some_and(|b| b | 0x20 == b'u') => {
                    return Kind::Unreadable("a Unicode-escaped name")
                }
                // Not UTF-8: none of the names that matter.
                None => continue,
            },
            _ => w.text(i),
        };
        let found = match text.len() {
            // pg_temp
            7 if text.eq_ignore_ascii_case(b"pg_temp") && w.is_punct(i + 1, b'.') => Kind::Holds,
            // CREATE [GLOBAL | LOCAL] TEMP[ORARY], INTO [GLOBAL | LOCAL] TEMP[ORARY], and so
            // in EXPLAIN ANALYZE too.
            4 | 9
                if (text.eq_ignore_ascii_case(b"temp")
                    || text.eq_ignore_ascii_case(b"temporary"))
                    && i > 0
                    && ["into", "create", "replace", "global", "local"]
                        .iter()
                        .any(|before| w.is(i - 1, before)) =>
            {
                Kind::Holds
            }
            10 if text.eq_ignore_ascii_case(b"set_config") && w.is_punct(i + 1, b'(') => {
                Kind::Unreadable("set_config with arguments pgmux cannot read")
            }
            // A rule on the view calls set_config.
            11 if text.eq_ignore_ascii_case(b"pg_settings") && w.is(0, "update") => {
                Kind::Unreadable("an UPDATE of pg_settings")
            }
            // Named connections of the session.
            14 if text.eq_ignore_ascii_case(b"dblink_connect") => {
                Kind::Unreadable("dblink_connect")
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

#[cfg(test)]
mod tests;
