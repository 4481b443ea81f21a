//! `SELECT set_config(name, value, false)`, the one function call whose settings pgmux
//! follows: with constants, or with Bind parameters (see `bound.rs`).

use super::classify::{Kind, Setting, Words};
use super::lex::{string_value, TokenKind};

/// `SELECT [pg_catalog.]set_config(name, value, false) [, ...]`, the name and value each a
/// string constant or a parameter (`$1`, maybe cast to text), the local flag a boolean
/// constant: the settings it makes (once a Bind gives the parameters).
/// None when the statement has another shape.
pub(super) fn select_set_config(w: &Words, standard_strings: bool) -> Option<Kind> {
    let _ = standard_strings;
    let mut at = 1;
    let mut calls = Vec::new();
    loop {
        if w.is(at, "pg_catalog") && w.is_punct(at + 1, b'.') {
            at += 2;
        }
        if !(w.is(at, "set_config") && w.is_punct(at + 1, b'(')) {
            return None;
        }
        let (name, next) = argument(w, at + 2)?;
        if !w.is_punct(next, b',') {
            return None;
        }
        let (value, next) = argument(w, next + 1)?;
        if !w.is_punct(next, b',') || !w.is_punct(next + 2, b')') {
            return None;
        }
        let local = match w.tokens.get(next + 1)?.kind {
            TokenKind::Word if w.is(next + 1, "true") => true,
            TokenKind::Word if w.is(next + 1, "false") => false,
            TokenKind::String { .. } => {
                match string_value(w.input, &w.tokens[next + 1])?
                    .to_ascii_lowercase()
                    .as_str()
                {
                    "true" | "on" | "t" | "yes" | "1" => true,
                    "false" | "off" | "f" | "no" | "0" => false,
                    _ => return None,
                }
            }
            _ => return None,
        };
        at = next + 3;
        if !local {
            calls.push(SetConfig { name, value });
        }
        match () {
            _ if at == w.len() => break,
            _ if w.is_punct(at, b',') => at += 1,
            _ => return None,
        }
    }
    if calls.is_empty() {
        return Some(Kind::Plain);
    }
    if calls
        .iter()
        .any(|c| c.name.param().is_some() || c.value.param().is_some())
    {
        return Some(Kind::SetBound(calls));
    }
    Some(settings_of(&calls, &[]))
}

/// One argument of set_config at token `at`: a string constant or `$n`, maybe with a
/// `::text` or `::varchar` cast; and the index after it.
fn argument(w: &Words, at: usize) -> Option<(Arg, usize)> {
    let token = w.tokens.get(at)?;
    let arg = match token.kind {
        TokenKind::String { .. } => Arg::Literal(string_value(w.input, token)?),
        TokenKind::Param => Arg::Param(std::str::from_utf8(&w.text(at)[1..]).ok()?.parse().ok()?),
        _ => return None,
    };
    let mut next = at + 1;
    if w.is_punct(next, b':') && w.is_punct(next + 1, b':') {
        if !(w.is(next + 2, "text") || w.is(next + 2, "varchar")) {
            return None;
        }
        next += 3;
    }
    Some((arg, next))
}

/// A set_config argument: a constant, or the value of a Bind parameter (numbered from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Literal(String),
    Param(usize),
}

impl Arg {
    pub fn param(&self) -> Option<usize> {
        match self {
            Arg::Param(n) => Some(*n),
            Arg::Literal(_) => None,
        }
    }
}

/// One `set_config(name, value, false)` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetConfig {
    pub name: Arg,
    pub value: Arg,
}

/// What set_config calls do, with `params` the Bind's parameter values (None for NULL): the
/// settings they make; a role set this way is checked like SET ROLE.
pub fn settings_of(calls: &[SetConfig], params: &[Option<&[u8]>]) -> Kind {
    let resolve = |arg: &Arg| -> Option<String> {
        match arg {
            Arg::Literal(s) => Some(s.clone()),
            Arg::Param(n) => {
                let bytes = (*params.get(n.checked_sub(1)?)?)?;
                String::from_utf8(bytes.to_vec()).ok()
            }
        }
    };
    let mut settings = Vec::new();
    for call in calls {
        let (Some(name), Some(value)) = (resolve(&call.name), resolve(&call.value)) else {
            return Kind::Unreadable("a set_config parameter pgmux cannot read");
        };
        let folded = name.to_ascii_lowercase();
        if matches!(folded.as_str(), "role" | "session_authorization") {
            return Kind::Holds;
        }
        let call = crate::protocol::params::set_config(&name, &value, false);
        settings.push(Setting {
            sql: format!("SELECT {call}"),
            name: folded,
        });
    }
    Kind::Set(settings)
}
