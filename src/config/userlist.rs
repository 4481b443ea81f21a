//! PgBouncer's auth_file format: one `"user" "secret"` per line, a quote inside doubled (`""`).
//! Blank lines and lines starting with `;` or `#` are skipped.

use crate::auth::Secret;
use std::collections::BTreeMap;

/// Parses userlist text; each error names its line number (and never the secret).
pub fn parse_userlist(text: &str) -> Result<BTreeMap<String, Secret>, Vec<String>> {
    let mut users = BTreeMap::new();
    let mut errors = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        let lineno = index + 1;
        let parsed = quoted(line).and_then(|(user, rest)| {
            let (secret, tail) = quoted(rest.trim_start())?;
            Some((user, secret, tail))
        });
        match parsed {
            Some((user, secret, _)) => match Secret::parse(&secret) {
                Ok(s) => {
                    users.insert(user, s);
                }
                Err(e) => errors.push(format!("line {lineno}: {e} for user \"{user}\"")),
            },
            None => errors.push(format!(
                "line {lineno}: expected \"user\" \"secret\" with both values in double quotes"
            )),
        }
    }
    if errors.is_empty() {
        Ok(users)
    } else {
        Err(errors)
    }
}

/// One double-quoted value at the front of `s`, with `""` as an escaped quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut rest = s.strip_prefix('"')?;
    let mut out = String::new();
    loop {
        let end = rest.find('"')?;
        out.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('"') {
            Some(after) => {
                out.push('"');
                rest = after;
            }
            None => return Some((out, rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_secret_kinds_and_escapes() {
        let text = "; comment\n\"alice\" \"pw\"\n\n\"bob\"  \"md5e1ceb6e8a0e0a0c8b7c36b3ab4d1f5a1\"\n\"q\"\"uote\" \"a\"\"b\" extra\n";
        let users = parse_userlist(text).unwrap();
        assert_eq!(users["alice"], Secret::Plain("pw".into()));
        assert!(matches!(users["bob"], Secret::Md5(_)));
        assert_eq!(users["q\"uote"], Secret::Plain("a\"b".into()));
    }

    #[test]
    fn bad_lines_are_named_without_the_secret() {
        let errors =
            parse_userlist("\"a\" \"x\"\nalice secret\n\"b\" \"SCRAM-SHA-256$bad\"\n").unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].starts_with("line 2:"), "{errors:?}");
        assert!(errors[1].starts_with("line 3:") && !errors[1].contains("bad"));
    }
}
