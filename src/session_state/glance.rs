//! The hot path's shortcut: a look at a statement's bytes that is sure only of "plain", so
//! that the statements of ordinary traffic are not lexed.

use super::lex::{is_ident_start, is_space};

/// First words of the statements the classifier reads for themselves; every other statement
/// is read only for the names in [`GLANCED`].
const READ_BY_FIRST_WORD: [&[u8]; 17] = [
    b"load",
    b"set",
    b"reset",
    b"prepare",
    b"deallocate",
    b"discard",
    b"savepoint",
    b"release",
    b"rollback",
    b"abort",
    b"listen",
    b"unlisten",
    b"close",
    b"drop",
    b"declare",
    b"create",
    b"do",
];

/// What any statement must contain, in any case, for the classifier to find something in it
/// beyond its first word: pg_temp and TEMP[ORARY], set_config, the advisory lock functions,
/// pg_settings, dblink_connect.
#[cfg(test)]
pub(super) const GLANCED: [&[u8]; 5] = [
    b"temp",
    b"set_config",
    b"advisory",
    b"pg_settings",
    b"dblink_connect",
];

/// The hot path's shortcut, sure only of "plain": one statement (a `;` only at the end), whose
/// first word is none of [`READ_BY_FIRST_WORD`], with none of [`GLANCED`] anywhere. Anything
/// else is lexed. A byte scan, no tokens.
pub fn plain_at_a_glance(query: &[u8]) -> bool {
    let start = query
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(query.len());
    let rest = &query[start..];
    let word_len = rest.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let after_word = rest.get(word_len).copied();
    if word_len == 0
        || after_word.is_some_and(|b| is_ident_start(b) || b.is_ascii_digit() || b == b'$')
    {
        return false;
    }
    let word = &rest[..word_len];
    // Every word of READ_BY_FIRST_WORD is 2 to 10 letters; SELECT, INSERT, UPDATE and the
    // like are sorted out by their first letter and length first.
    let first = word[0] | 0x20;
    if (2..=10).contains(&word.len())
        && READ_BY_FIRST_WORD
            .iter()
            .any(|w| w[0] == first && w.len() == word.len() && w.eq_ignore_ascii_case(word))
    {
        return false;
    }
    // A `;` with more after it is a second statement.
    !mentions_glanced(rest)
}

/// Whether `text` holds a second statement (a `;` with more after it), or any of [`GLANCED`]
/// in any case, or a Unicode-escaped name: one pass that stops only at `;`, `&` and at the
/// bytes those words have that SQL seldom has (`m`, `_`, `v`), looking around them.
pub(super) fn mentions_glanced(text: &[u8]) -> bool {
    // The byte just before must be the word's, folded, before anything longer is compared.
    let around = |at: usize, before: &[u8], after: &[u8]| {
        at >= before.len()
            && text[at - 1] | 0x20 == before[before.len() - 1]
            && text[at - before.len()..at].eq_ignore_ascii_case(before)
            && text
                .get(at + 1..at + 1 + after.len())
                .is_some_and(|a| a.eq_ignore_ascii_case(after))
    };
    // Eight bytes at a time: most hold no byte to stop at; those that may are looked at one
    // by one.
    let mut from = 0;
    while from < text.len() {
        let to = (from + 8).min(text.len());
        if let Ok(chunk) = <[u8; 8]>::try_from(&text[from..to]) {
            if !may_stop(u64::from_le_bytes(chunk)) {
                from = to;
                continue;
            }
        }
        for at in from..to {
            let found = match GLANCE_STOPS[usize::from(text[at])] {
                Stop::No => continue,
                Stop::Semicolon => !text[at + 1..].iter().all(|&b| is_space(b)),
                Stop::M => around(at, b"te", b"p"),
                Stop::Underscore => {
                    around(at, b"set", b"config")
                        || around(at, b"pg", b"settings")
                        || around(at, b"dblink", b"connect")
                }
                Stop::V => around(at, b"ad", b"isory"),
                // U&"..." may spell any name without its letters.
                Stop::Ampersand => at > 0 && text[at - 1] | 0x20 == b'u',
            };
            if found {
                return true;
            }
        }
        from = to;
    }
    false
}

#[derive(Clone, Copy)]
enum Stop {
    No,
    Semicolon,
    M,
    Underscore,
    V,
    Ampersand,
}

/// Whether any byte of these eight may be one [`mentions_glanced`] stops at: folded as letters
/// fold, equal to `m`, `v`, `_`, `;` or `&` (each test finds the zero bytes of a difference; the
/// fold makes a few other bytes match too, which then are looked at one by one for nothing).
fn may_stop(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let folded = word | (ONES * 0x20);
    has_zero(folded ^ (ONES * u64::from(b'm')))
        | has_zero(folded ^ (ONES * u64::from(b'v')))
        | has_zero(folded ^ (ONES * u64::from(b'_' | 0x20)))
        | has_zero(folded ^ (ONES * u64::from(b';')))
        | has_zero(folded ^ (ONES * u64::from(b'&')))
}

/// Where [`mentions_glanced`] stops, by byte.
const GLANCE_STOPS: [Stop; 256] = {
    let mut stops = [Stop::No; 256];
    stops[b';' as usize] = Stop::Semicolon;
    stops[b'm' as usize] = Stop::M;
    stops[b'M' as usize] = Stop::M;
    stops[b'_' as usize] = Stop::Underscore;
    stops[b'v' as usize] = Stop::V;
    stops[b'V' as usize] = Stop::V;
    stops[b'&' as usize] = Stop::Ampersand;
    stops
};
