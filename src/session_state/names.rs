//! What the session state reads of names and tags: the protocol-level statements and portals
//! it follows by name (bounded lists), a Parse's parts, and which CommandComplete tags
//! confirm which statements.

use super::held;
use super::Kind;
use std::sync::Arc;

/// Whether a CommandComplete tag is the one a statement of this kind draws.
pub(super) fn confirms(kind: &Kind, tag: &[u8]) -> bool {
    match kind {
        Kind::Set(settings) => match settings.first() {
            Some(s) if s.sql.starts_with("SELECT") => tag == b"SELECT 1",
            _ => tag == b"SET",
        },
        Kind::Reset(_) | Kind::ResetAll => tag == b"RESET" || tag == b"SET",
        Kind::Prepare { .. } => tag == b"PREPARE",
        Kind::Deallocate(_) => tag == b"DEALLOCATE",
        Kind::DeallocateAll => tag == b"DEALLOCATE ALL",
        Kind::DiscardAll => tag == b"DISCARD ALL",
        Kind::Savepoint(_) => tag == b"SAVEPOINT",
        Kind::Release(_) => tag == b"RELEASE",
        Kind::RollbackTo(_) => tag == b"ROLLBACK",
        // Settled at Bind; one that reaches a reply was never bound.
        Kind::SetBound(_) => false,
        Kind::Plain
        | Kind::Holds
        | Kind::Releases
        | Kind::Unreadable(_)
        | Kind::Unread
        | Kind::Broken => true,
    }
}

pub(super) fn sets_standard_strings(kind: &Kind) -> bool {
    match kind {
        Kind::Set(settings) => settings
            .iter()
            .any(|s| s.name == "standard_conforming_strings"),
        Kind::Reset(name) => name == "standard_conforming_strings",
        Kind::ResetAll | Kind::DiscardAll | Kind::SetBound(_) => true,
        _ => false,
    }
}

/// Whether a CommandComplete tag is of a data change or a COPY.
pub(super) fn data_tag(tag: &[u8]) -> bool {
    [&b"INSERT "[..], b"UPDATE ", b"DELETE ", b"MERGE ", b"COPY "]
        .iter()
        .any(|t| tag.starts_with(t))
}

/// A Parse body's name, query text and what follows (the parameter types).
pub(super) fn parse_parts(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let name_end = memchr::memchr(0, body)?;
    let rest = &body[name_end + 1..];
    let text_end = memchr::memchr(0, rest)?;
    Some((&body[..name_end], &rest[..text_end], &rest[text_end + 1..]))
}

pub(super) fn find(list: &[(Vec<u8>, Arc<[Kind]>)], name: &[u8]) -> Option<Arc<[Kind]>> {
    if list.is_empty() {
        return None;
    }
    list.iter().find(|(n, _)| n == name).map(|(_, k)| k.clone())
}

/// Records (or, with None, forgets) the kinds of a named statement or portal; returns false
/// when the list is full and the oldest had to go.
pub(super) fn remember(
    list: &mut Vec<(Vec<u8>, Arc<[Kind]>)>,
    name: &[u8],
    kinds: Option<Arc<[Kind]>>,
) -> bool {
    if list.is_empty() && kinds.is_none() {
        return true;
    }
    list.retain(|(n, _)| n != name);
    let Some(kinds) = kinds else {
        return true;
    };
    let full = list.len() >= held::MAX_ENTRIES
        || list.iter().map(|(n, k)| n.len() + size(k)).sum::<usize>() > held::MAX_BYTES;
    if full {
        list.remove(0);
    }
    list.push((name.to_vec(), kinds));
    !full
}

/// About how many bytes kinds hold.
pub(super) fn size(kinds: &[Kind]) -> usize {
    kinds
        .iter()
        .map(|k| match k {
            Kind::Set(settings) => settings.iter().map(|s| s.name.len() + s.sql.len()).sum(),
            Kind::Prepare { name, sql } => name.len() + sql.len(),
            _ => 16,
        })
        .sum()
}
