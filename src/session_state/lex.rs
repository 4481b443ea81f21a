//! A small SQL lexer: enough of PostgreSQL's to split a query string into its top-level
//! statements the way the server does (strings, quoted identifiers, dollar quotes, nested
//! comments, parentheses and `BEGIN ATOMIC` bodies keep their semicolons) and to hand the
//! classifier each statement's tokens. It never allocates; tokens are spans of the input.

/// One token: its kind and where it is in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// An unquoted identifier or keyword.
    Word,
    /// A `"quoted"` identifier (`U&"..."` too).
    Quoted,
    /// A string constant: `'...'`, `E'...'`, `B'...'`, `X'...'`, `N'...'`, `U&'...'`, or a
    /// dollar-quoted one. `escapes` says whether backslashes escape inside it.
    String {
        escapes: bool,
        dollar: bool,
    },
    Number,
    /// `$1`.
    Param,
    /// One punctuation or operator character (`;`, `(`, `)`, `,`, `.`, `=`...).
    Punct(u8),
    /// Input the lexer cannot read with certainty: an unterminated string, identifier,
    /// dollar quote or comment.
    Broken,
}

/// Tokens of a query string, in order, skipping spaces and comments.
pub struct Lexer<'a> {
    input: &'a [u8],
    pos: usize,
    /// standard_conforming_strings: whether `'...'` takes backslashes literally.
    standard_strings: bool,
}

impl<'a> Lexer<'a> {
    pub fn new(input: &'a [u8], standard_strings: bool) -> Lexer<'a> {
        Lexer {
            input,
            pos: 0,
            standard_strings,
        }
    }

    fn peek(&self, at: usize) -> Option<u8> {
        self.input.get(self.pos + at).copied()
    }

    /// Skips whitespace and comments; false when a comment never ends.
    fn skip_space(&mut self) -> bool {
        loop {
            match self.peek(0) {
                Some(b) if is_space(b) => self.pos += 1,
                Some(b'-') if self.peek(1) == Some(b'-') => {
                    // As PostgreSQL's scanner: a line comment ends at either line break.
                    while let Some(b) = self.peek(0) {
                        self.pos += 1;
                        if b == b'\n' || b == b'\r' {
                            break;
                        }
                    }
                }
                Some(b'/') if self.peek(1) == Some(b'*') => {
                    self.pos += 2;
                    let mut depth = 1;
                    while depth > 0 {
                        match (self.peek(0), self.peek(1)) {
                            (None, _) => return false,
                            (Some(b'*'), Some(b'/')) => {
                                depth -= 1;
                                self.pos += 2;
                            }
                            (Some(b'/'), Some(b'*')) => {
                                depth += 1;
                                self.pos += 2;
                            }
                            _ => self.pos += 1,
                        }
                    }
                }
                _ => return true,
            }
        }
    }

    /// A quoted run starting at `self.pos` (the opening quote), with `quote` doubled inside
    /// and, where `escapes`, backslashes escaping the next byte. False if it never ends.
    fn quoted(&mut self, quote: u8, escapes: bool) -> bool {
        self.pos += 1;
        loop {
            match self.peek(0) {
                None => return false,
                Some(b'\\') if escapes => self.pos += 2,
                Some(b) if b == quote => {
                    self.pos += 1;
                    if self.peek(0) != Some(quote) {
                        return true;
                    }
                    self.pos += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// A dollar quote's opening tag at `self.pos`, `$tag$` or `$$`: its length.
    fn dollar_tag(&self) -> Option<usize> {
        let rest = &self.input[self.pos + 1..];
        if rest.first().is_some_and(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = rest
            .iter()
            .take_while(|&&b| is_ident_start(b) || b.is_ascii_digit())
            .count();
        (rest.get(n) == Some(&b'$')).then_some(n + 2)
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        if !self.skip_space() {
            let token = Token {
                kind: TokenKind::Broken,
                start: self.pos,
                end: self.input.len(),
            };
            self.pos = self.input.len();
            return Some(token);
        }
        let start = self.pos;
        let first = self.peek(0)?;
        let second = self.peek(1);
        let kind = match first {
            b'\'' => {
                let escapes = !self.standard_strings;
                match self.quoted(b'\'', escapes) {
                    true => TokenKind::String {
                        escapes,
                        dollar: false,
                    },
                    false => TokenKind::Broken,
                }
            }
            b'e' | b'E' if second == Some(b'\'') => {
                self.pos += 1;
                match self.quoted(b'\'', true) {
                    true => TokenKind::String {
                        escapes: true,
                        dollar: false,
                    },
                    false => TokenKind::Broken,
                }
            }
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if second == Some(b'\'') => {
                self.pos += 1;
                match self.quoted(b'\'', false) {
                    true => TokenKind::String {
                        escapes: false,
                        dollar: false,
                    },
                    false => TokenKind::Broken,
                }
            }
            b'u' | b'U' if second == Some(b'&') && matches!(self.peek(2), Some(b'\'' | b'"')) => {
                self.pos += 2;
                let quote = self.input[self.pos];
                match (self.quoted(quote, false), quote) {
                    (false, _) => TokenKind::Broken,
                    (true, b'"') => TokenKind::Quoted,
                    (true, _) => TokenKind::String {
                        escapes: false,
                        dollar: false,
                    },
                }
            }
            b'"' => match self.quoted(b'"', false) {
                true => TokenKind::Quoted,
                false => TokenKind::Broken,
            },
            b'$' if second.is_some_and(|b| b.is_ascii_digit()) => {
                self.pos += 1;
                while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                }
                TokenKind::Param
            }
            b'$' => match self.dollar_tag() {
                Some(tag_len) => {
                    let tag = &self.input[self.pos..self.pos + tag_len];
                    let body = self.pos + tag_len;
                    match find(&self.input[body..], tag) {
                        Some(at) => {
                            self.pos = body + at + tag_len;
                            TokenKind::String {
                                escapes: false,
                                dollar: true,
                            }
                        }
                        None => {
                            self.pos = self.input.len();
                            TokenKind::Broken
                        }
                    }
                }
                None => {
                    self.pos += 1;
                    TokenKind::Punct(b'$')
                }
            },
            b if is_ident_start(b) => {
                while self.peek(0).is_some_and(is_ident_char) {
                    self.pos += 1;
                }
                TokenKind::Word
            }
            b if b.is_ascii_digit()
                || (b == b'.' && second.is_some_and(|c| c.is_ascii_digit())) =>
            {
                while self
                    .peek(0)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_')
                {
                    self.pos += 1;
                }
                TokenKind::Number
            }
            b => {
                self.pos += 1;
                TokenKind::Punct(b)
            }
        };
        if kind == TokenKind::Broken {
            self.pos = self.input.len();
        }
        Some(Token {
            kind,
            start,
            end: self.pos,
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whitespace as PostgreSQL's scanner reads it: space, tab, the line breaks, form feed and
/// (from PostgreSQL 16) vertical tab.
pub fn is_space(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0x0b
}

pub fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// The top-level statements of a query string, as PostgreSQL splits it: at semicolons outside
/// parentheses and `BEGIN ATOMIC ... END` bodies, leaving out empty ones. Yields each
/// statement's tokens.
pub fn statements(
    input: &[u8],
    standard_strings: bool,
    mut each: impl FnMut(&[Token]) -> std::ops::ControlFlow<()>,
) {
    let mut tokens: [Token; STATEMENT_TOKENS] = [Token {
        kind: TokenKind::Punct(b';'),
        start: 0,
        end: 0,
    }; STATEMENT_TOKENS];
    let mut overflow = Vec::new();
    let mut len = 0;
    let mut depth = 0usize;
    // Inside a BEGIN ATOMIC body: how many CASE ... END are open in it, plus one.
    let mut atomic = 0usize;
    let mut previous_word_begin = false;
    // Only CREATE FUNCTION and CREATE PROCEDURE have bodies: a statement that starts so.
    let mut creates = false;
    for token in Lexer::new(input, standard_strings) {
        let text = &input[token.start..token.end];
        if len == 0 {
            creates = token.kind == TokenKind::Word && text.eq_ignore_ascii_case(b"create");
        }
        match token.kind {
            TokenKind::Punct(b'(') => depth += 1,
            TokenKind::Punct(b')') => depth = depth.saturating_sub(1),
            TokenKind::Word if atomic > 0 && text.eq_ignore_ascii_case(b"case") => atomic += 1,
            TokenKind::Word if atomic > 0 && text.eq_ignore_ascii_case(b"end") => atomic -= 1,
            TokenKind::Word
                if creates && previous_word_begin && text.eq_ignore_ascii_case(b"atomic") =>
            {
                atomic = 1
            }
            _ => {}
        }
        previous_word_begin = token.kind == TokenKind::Word && text.eq_ignore_ascii_case(b"begin");
        if token.kind == TokenKind::Punct(b';') && depth == 0 && atomic == 0 {
            if len > 0 {
                let statement = match len > STATEMENT_TOKENS {
                    true => &overflow[..],
                    false => &tokens[..len],
                };
                if each(statement).is_break() {
                    return;
                }
            }
            len = 0;
            overflow.clear();
            continue;
        }
        if len < STATEMENT_TOKENS {
            tokens[len] = token;
        } else {
            if len == STATEMENT_TOKENS {
                overflow.extend_from_slice(&tokens);
            }
            overflow.push(token);
        }
        len += 1;
    }
    if len > 0 {
        let statement = match len > STATEMENT_TOKENS {
            true => &overflow[..],
            false => &tokens[..len],
        };
        let _ = each(statement);
    }
}

/// Tokens a statement keeps on the stack; longer ones spill into a vector.
const STATEMENT_TOKENS: usize = 64;

/// The value of a string token, unescaped, or None where pgmux does not read it with
/// certainty (Unicode escapes, bit strings, backslash escapes other than the simple ones).
pub fn string_value(input: &[u8], token: &Token) -> Option<String> {
    let TokenKind::String { escapes, dollar } = token.kind else {
        return None;
    };
    let raw = &input[token.start..token.end];
    if dollar {
        let tag_len = raw.iter().skip(1).position(|&b| b == b'$')? + 2;
        let body = raw.get(tag_len..raw.len().checked_sub(tag_len)?)?;
        return String::from_utf8(body.to_vec()).ok();
    }
    let body = match raw.first()? {
        b'\'' => &raw[1..raw.len() - 1],
        b'e' | b'E' => &raw[2..raw.len() - 1],
        // Bit strings, hex strings, national and Unicode-escaped strings: not read.
        _ => return None,
    };
    let mut value = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\'' => {
                value.push(b'\'');
                i += 2;
            }
            b'\\' if escapes => {
                let c = *body.get(i + 1)?;
                value.push(match c {
                    b'\\' | b'\'' | b'"' => c,
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    _ => return None,
                });
                i += 2;
            }
            b => {
                value.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(value).ok()
}

/// An identifier token's name as PostgreSQL folds it: unquoted to lower case, quoted as
/// written with doubled quotes undone.
pub fn identifier(input: &[u8], token: &Token) -> Option<String> {
    let raw = &input[token.start..token.end];
    let name = match token.kind {
        TokenKind::Word => raw.to_ascii_lowercase(),
        TokenKind::Quoted if raw.first() == Some(&b'"') => {
            let inner = &raw[1..raw.len() - 1];
            let mut name = Vec::with_capacity(inner.len());
            let mut i = 0;
            while i < inner.len() {
                name.push(inner[i]);
                i += if inner[i] == b'"' { 2 } else { 1 };
            }
            name
        }
        _ => return None,
    };
    String::from_utf8(name).ok().filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(sql: &str) -> Vec<String> {
        let mut out = Vec::new();
        statements(sql.as_bytes(), true, |tokens| {
            let (s, e) = (tokens[0].start, tokens[tokens.len() - 1].end);
            out.push(sql[s..e].to_string());
            std::ops::ControlFlow::Continue(())
        });
        out
    }

    #[test]
    fn splits_at_top_level_semicolons_only() {
        assert_eq!(split("SELECT 1; SELECT 2"), ["SELECT 1", "SELECT 2"]);
        assert_eq!(split(" ;; SELECT ';' ; "), ["SELECT ';'"]);
        assert_eq!(split("SELECT $$a;b$$; x"), ["SELECT $$a;b$$", "x"]);
        assert_eq!(split("SELECT $q$a;$$;b$q$"), ["SELECT $q$a;$$;b$q$"]);
        assert_eq!(split("SELECT \"a;b\"; y"), ["SELECT \"a;b\"", "y"]);
        assert_eq!(
            split("SELECT /* ; /* ; */ ; */ 1; z"),
            ["SELECT /* ; /* ; */ ; */ 1", "z"]
        );
        assert_eq!(split("SELECT 1 -- ;\n; w"), ["SELECT 1", "w"]);
        assert_eq!(split("SELECT 1; --x\rSET a = 1"), ["SELECT 1", "SET a = 1"]);
        assert_eq!(split("\x0bSET a = 1"), ["SET a = 1"]);
        assert_eq!(
            split("SELECT begin atomic FROM s; SET a = 1"),
            ["SELECT begin atomic FROM s", "SET a = 1"]
        );
        assert_eq!(
            split("CREATE RULE r AS ON INSERT TO t DO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2)); v"),
            ["CREATE RULE r AS ON INSERT TO t DO (INSERT INTO a VALUES (1); INSERT INTO b VALUES (2))", "v"]
        );
        assert_eq!(
            split("CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END; SELECT 3"),
            ["CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END", "SELECT 3"]
        );
    }

    #[test]
    fn backslashes_follow_standard_conforming_strings() {
        let sql = br"SELECT 'a\'; SELECT 1";
        let mut n = 0;
        statements(sql, true, |_| {
            n += 1;
            std::ops::ControlFlow::Continue(())
        });
        assert_eq!(n, 2);
        let mut kinds = Vec::new();
        statements(sql, false, |t| {
            kinds.push(t.iter().map(|t| t.kind).collect::<Vec<_>>());
            std::ops::ControlFlow::Continue(())
        });
        assert_eq!(kinds.len(), 1);
        assert_eq!(kinds[0].last(), Some(&TokenKind::Broken));
    }

    #[test]
    fn string_values_and_identifiers() {
        let sql = br#"'it''s' E'a\\b\'c' $t$x'y$t$ "My""Name" Foo"#;
        let tokens: Vec<Token> = Lexer::new(sql, true).collect();
        assert_eq!(string_value(sql, &tokens[0]).as_deref(), Some("it's"));
        assert_eq!(string_value(sql, &tokens[1]).as_deref(), Some("a\\b'c"));
        assert_eq!(string_value(sql, &tokens[2]).as_deref(), Some("x'y"));
        assert_eq!(identifier(sql, &tokens[3]).as_deref(), Some("My\"Name"));
        assert_eq!(identifier(sql, &tokens[4]).as_deref(), Some("foo"));
        let odd = br"E'\x41' U&'d\0061t'";
        let tokens: Vec<Token> = Lexer::new(odd, true).collect();
        assert_eq!(string_value(odd, &tokens[0]), None);
        assert_eq!(string_value(odd, &tokens[1]), None);
    }

    #[test]
    fn unterminated_input_is_broken() {
        for sql in ["SELECT 'x", "SELECT \"x", "SELECT $a$ x", "SELECT /* x"] {
            let last = Lexer::new(sql.as_bytes(), true).last().unwrap();
            assert_eq!(last.kind, TokenKind::Broken, "{sql}");
        }
        let params: Vec<_> = Lexer::new(b"$1 a$b", true).map(|t| t.kind).collect();
        assert_eq!(params, [TokenKind::Param, TokenKind::Word]);
    }
}
