//! The one SQL statement pgmux reads for prepared statements: `DEALLOCATE [PREPARE] name`, sent
//! as a simple query, which must drop the client's own name rather than reach the server, where
//! the statement goes by another name. Anything else (comments, several statements,
//! `DEALLOCATE ALL`) goes to the server untouched; pgmux learns of `DEALLOCATE ALL` and
//! `DISCARD ALL` from their CommandComplete.

/// The statement name if `query` (a Query body, without its NUL) is exactly one
/// `DEALLOCATE [PREPARE] name`, with the name folded as PostgreSQL folds identifiers.
pub fn deallocate_target(query: &[u8]) -> Option<Vec<u8>> {
    let mut rest = skip_space(query);
    rest = keyword(rest, b"deallocate")?;
    let after_keyword = skip_space(rest);
    if after_keyword.len() == rest.len() {
        return None; // "DEALLOCATEfoo"
    }
    rest = after_keyword;
    if let Some(after) = keyword(rest, b"prepare") {
        let after_space = skip_space(after);
        if after_space.len() < after.len() && !at_end(after_space) {
            rest = after_space;
        }
    }
    let (name, rest) = identifier(rest)?;
    if !at_end(rest) {
        return None;
    }
    if name == b"all" {
        return None;
    }
    Some(name)
}

fn skip_space(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &s[n..]
}

/// Whether only whitespace and at most one semicolon are left.
fn at_end(s: &[u8]) -> bool {
    let s = skip_space(s);
    let s = s.strip_prefix(b";").unwrap_or(s);
    skip_space(s).is_empty()
}

/// `s` after a case-insensitive keyword that is not the start of a longer word.
fn keyword<'a>(s: &'a [u8], word: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..word.len())?;
    if !head.eq_ignore_ascii_case(word) {
        return None;
    }
    let rest = &s[word.len()..];
    match rest.first() {
        Some(&b) if is_ident_char(b) => None,
        _ => Some(rest),
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// An identifier: quoted (doubled quotes inside) kept as written, unquoted folded to lower case.
fn identifier(s: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    if let Some(mut rest) = s.strip_prefix(b"\"") {
        let mut name = Vec::new();
        loop {
            let end = rest.iter().position(|&b| b == b'"')?;
            name.extend_from_slice(&rest[..end]);
            rest = &rest[end + 1..];
            match rest.strip_prefix(b"\"") {
                Some(after) => {
                    name.push(b'"');
                    rest = after;
                }
                None => break,
            }
        }
        return (!name.is_empty()).then_some((name, rest));
    }
    if !is_ident_start(*s.first()?) {
        return None;
    }
    let n = s.iter().take_while(|&&b| is_ident_char(b)).count();
    Some((s[..n].to_ascii_lowercase(), &s[n..]))
}

#[cfg(test)]
mod tests {
    use super::deallocate_target as target;

    #[test]
    fn names_are_folded_like_postgres() {
        assert_eq!(target(b"DEALLOCATE foo"), Some(b"foo".to_vec()));
        assert_eq!(target(b"  deallocate Foo ; "), Some(b"foo".to_vec()));
        assert_eq!(target(b"DEALLOCATE PREPARE s_1"), Some(b"s_1".to_vec()));
        assert_eq!(
            target(b"DEALLOCATE \"Mixed\"\"q\""),
            Some(b"Mixed\"q".to_vec())
        );
        assert_eq!(target(b"deallocate prepare"), Some(b"prepare".to_vec()));
        assert_eq!(target(b"DEALLOCATE \"_pg3_0\""), Some(b"_pg3_0".to_vec()));
    }

    #[test]
    fn anything_else_goes_to_the_server() {
        assert_eq!(target(b"DEALLOCATE ALL"), None);
        assert_eq!(target(b"DEALLOCATE PREPARE ALL"), None);
        assert_eq!(target(b"DEALLOCATE foo; SELECT 1"), None);
        assert_eq!(target(b"DEALLOCATEfoo"), None);
        assert_eq!(target(b"DEALLOCATE"), None);
        assert_eq!(target(b"DEALLOCATE \"\""), None);
        assert_eq!(target(b"DEALLOCATE \"open"), None);
        assert_eq!(target(b"/* c */ DEALLOCATE foo"), None);
        assert_eq!(target(b"SELECT 1"), None);
        assert_eq!(target(b"DEALLOCATE 1x"), None);
    }
}
