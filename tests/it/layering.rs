//! The house rule of `src/`: modules are layered, and each uses only those below it. The order
//! is the `# Layers` list at the top of `src/lib.rs`, read here; a module that uses one listed
//! after it, or reaches into `lib.rs` itself, fails this test with the file and line. (Two
//! modules that use each other are one such case, whichever of them comes first.) Uses are
//! found through `crate::` paths and groups and through `super::` chains that leave the
//! module; a glob or an alias of the crate's root fails too, since it would hide the rest. Test
//! code is left out: a test may build whatever it needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The module names of the `# Layers` list, lowest first: its bullets, up to the next heading.
fn layers(lib_rs: &str) -> Vec<String> {
    let mut list = lib_rs
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .map(str::trim)
        .skip_while(|l| *l != "# Layers")
        .skip(1);
    let mut names = Vec::new();
    for line in list.by_ref() {
        if line.starts_with('#') {
            break;
        }
        if let Some(name) = line.strip_prefix("- `").and_then(|l| l.split('`').next()) {
            names.push(name.to_owned());
        }
    }
    names
}

/// A use of a module the layering forbids.
#[derive(Debug, PartialEq, Eq)]
struct Upward {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// One line without its comment, and with string and character literals blanked, so that
/// neither hides nor fakes a path.
fn code_only(line: &str) -> String {
    let mut code = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        match (in_string, c) {
            (true, '\\') => {
                chars.next();
            }
            (true, '"') => {
                in_string = false;
                code.push('"');
            }
            (true, _) => {}
            (false, '"') => {
                in_string = true;
                code.push('"');
            }
            (false, '/') if chars.peek() == Some(&'/') => break,
            (false, '\'') => {
                // A character literal ('{', '\''), or a lifetime ('a): skip the literal only.
                let rest: String = chars.clone().take(3).collect();
                let literal = rest.starts_with('\\') || rest.chars().nth(1) == Some('\'');
                if literal {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                }
                code.push(' ');
            }
            (false, c) => code.push(c),
        }
    }
    code
}

/// An item under `#[cfg(test)]` being skipped: how deep its braces and parentheses are so far,
/// and whether it has begun (anything but attributes and blank lines).
#[derive(Clone, Copy)]
struct TestItem {
    braces: isize,
    parens: isize,
    begun: bool,
}

impl TestItem {
    /// Follows the item over one more line of code; false once the item has ended. An item
    /// ends with a line at depth 0 that ends in `;`, `,` or `}` (a use, a field or variant, a
    /// match arm, a body), or with a line that closes the block around it.
    fn goes_on(&mut self, code: &str) -> bool {
        let trimmed = code.trim();
        if !self.begun && (trimmed.is_empty() || trimmed.starts_with("#[")) {
            return true;
        }
        self.begun = true;
        let count = |c: char| code.matches(c).count() as isize;
        self.braces += count('{') - count('}');
        self.parens += count('(') - count(')');
        if self.braces < 0 {
            return false;
        }
        let at_depth_0 = self.braces == 0 && self.parens <= 0;
        !(at_depth_0
            && (trimmed.ends_with(';') || trimmed.ends_with(',') || trimmed.ends_with('}')))
    }
}

/// The code of a file, line by line with its numbers, less comments, literals and items under
/// `#[cfg(test)]` (a test module, a test-only function, field, variant or match arm).
fn code_of(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut test_item: Option<TestItem> = None;
    for (i, line) in text.lines().enumerate() {
        let code = code_only(line);
        if let Some(item) = test_item.as_mut() {
            if !item.goes_on(&code) {
                test_item = None;
            }
            continue;
        }
        let trimmed = code.trim_start();
        if let Some(after) = trimmed.strip_prefix("#[cfg(test)]") {
            let mut item = TestItem {
                braces: 0,
                parens: 0,
                begun: false,
            };
            // The attribute and (some of) its item on one line.
            if item.goes_on(after) {
                test_item = Some(item);
            }
            continue;
        }
        lines.push((i + 1, code));
    }
    lines
}

/// A `use crate::{...}` group open across lines: how deep its braces are, and whether the
/// next name starts an item at its top level.
#[derive(Default)]
struct Group {
    open: bool,
    depth: usize,
    item_start: bool,
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The top-level names one line reaches: through `crate::` (a path, or the items of a
/// `use crate::{...}` group, which may span lines) and through `super::` chains that climb
/// out of the file's module (`depth`: how many modules deep the file is, 1 for `src/x.rs`
/// and `src/x/mod.rs`). A glob or an alias of the crate's root is reported as `crate`.
fn named_modules(code: &str, depth: usize, group: &mut Group) -> Vec<String> {
    let mut names = Vec::new();
    if group.open {
        parse_group(code, group, &mut names);
    }
    let mut rest = code;
    while let Some(at) = rest.find("crate") {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + "crate".len()..];
        rest = after;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let after_ws = after.trim_start();
        if after_ws.starts_with("as ") {
            names.push("crate".into());
            continue;
        }
        let Some(path) = after.strip_prefix("::") else {
            continue;
        };
        if let Some(inner) = path.strip_prefix('{') {
            *group = Group {
                open: true,
                depth: 0,
                item_start: true,
            };
            parse_group(inner, group, &mut names);
            break;
        }
        match ident(path).as_str() {
            "" => names.push("crate".into()),
            name => names.push(name.to_owned()),
        }
    }
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let before = rest[..at].chars().next_back();
        let mut climbed = 0;
        let mut path = &rest[at..];
        while let Some(up) = path.strip_prefix("super::") {
            climbed += 1;
            path = up;
        }
        rest = path;
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if climbed >= depth {
            match ident(path).as_str() {
                "" => names.push("crate".into()),
                name => names.push(name.to_owned()),
            }
        }
    }
    names
}

/// Reads the items of an open `use crate::{...}` group from `code`.
fn parse_group(code: &str, group: &mut Group, names: &mut Vec<String>) {
    for (i, c) in code.char_indices() {
        match c {
            '{' => {
                group.depth += 1;
                group.item_start = false;
            }
            '}' if group.depth == 0 => {
                group.open = false;
                return;
            }
            '}' => group.depth -= 1,
            ',' if group.depth == 0 => group.item_start = true,
            '*' if group.depth == 0 && group.item_start => {
                names.push("crate".into());
                group.item_start = false;
            }
            c if group.item_start && (c.is_ascii_alphanumeric() || c == '_') => {
                let name = ident(&code[i..]);
                let alias = code[i + name.len()..].trim_start().starts_with("as ");
                match name.as_str() {
                    "self" if alias => names.push("crate".into()),
                    "self" => {}
                    _ => names.push(name),
                }
                group.item_start = false;
            }
            _ => {}
        }
    }
}

/// Every forbidden use in `files` (path relative to `src/`, text), under `order`.
fn upward_uses(order: &[String], files: &[(String, String)]) -> Vec<Upward> {
    let rank: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut found = Vec::new();
    for (path, text) in files {
        let segments: Vec<&str> = path.split('/').collect();
        let file_name = segments.last().copied().unwrap_or_default();
        let module = segments[0]
            .strip_suffix(".rs")
            .unwrap_or(segments[0])
            .to_owned();
        if module == "lib" || module == "main" || file_name == "tests.rs" {
            continue;
        }
        // src/x.rs and src/x/mod.rs are one module deep; src/x/y.rs two.
        let depth = match file_name {
            "mod.rs" => segments.len() - 1,
            _ => segments.len(),
        };
        let from = rank.get(module.as_str()).copied();
        let mut group = Group::default();
        for (line, code) in code_of(text) {
            for to in named_modules(&code, depth, &mut group) {
                if to == module {
                    continue;
                }
                // A name that is no module is one of lib.rs's own items, the top of the house.
                let upward = match (from, rank.get(to.as_str())) {
                    (Some(from), Some(&to)) => to > from,
                    _ => true,
                };
                if upward {
                    found.push(Upward {
                        file: path.clone(),
                        line,
                        from: module.clone(),
                        to: to.clone(),
                    });
                }
            }
        }
    }
    found
}

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            rust_files(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under src");
            let text = std::fs::read_to_string(&path).expect("read source");
            out.push((rel.to_string_lossy().replace('\\', "/"), text));
        }
    }
}

#[test]
fn every_module_uses_only_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib_rs = std::fs::read_to_string(src.join("lib.rs")).expect("read src/lib.rs");
    let order = layers(&lib_rs);
    assert!(
        order.len() > 10,
        "no `# Layers` list in src/lib.rs: {order:?}"
    );
    let mut files = Vec::new();
    rust_files(&src, &src, &mut files);
    // The list names every module, once: a module left out has no place in the house.
    let mut modules: Vec<String> = files
        .iter()
        .filter_map(|(path, _)| {
            let top = path.split('/').next()?;
            let top = top.strip_suffix(".rs").unwrap_or(top);
            (top != "lib" && top != "main").then(|| top.to_owned())
        })
        .collect();
    modules.sort();
    modules.dedup();
    let mut listed = order.clone();
    listed.sort();
    assert_eq!(
        listed, modules,
        "src/lib.rs's `# Layers` lists each module once"
    );
    let upward = upward_uses(&order, &files);
    let report: Vec<String> = upward
        .iter()
        .map(|u| format!("src/{}:{}: {} uses {}", u.file, u.line, u.from, u.to))
        .collect();
    assert!(
        upward.is_empty(),
        "uses of a module listed later in src/lib.rs's `# Layers` (or of lib.rs):\n{}",
        report.join("\n")
    );
}

/// The check itself catches what it is for: an upward use, in a path or inside a group that
/// spans lines, and a use of lib.rs's own items; and it lets downward uses and tests be.
#[test]
fn a_planted_upward_use_is_caught() {
    let order: Vec<String> = ["protocol", "pool", "admin", "client", "listener"]
        .map(String::from)
        .to_vec();
    let file = |path: &str, text: &str| (path.to_owned(), text.to_owned());
    let files = [
        file("protocol.rs", "use crate::pool::Pool;\n"),
        file(
            "pool/mod.rs",
            "use crate::{\n    protocol::Message,\n    client::ClientConn,\n};\n",
        ),
        file("pool/queue.rs", "fn f() { let s: crate::Shared; }\n"),
        file(
            "client/mod.rs",
            "use crate::pool::Pool;\n// crate::nothing\n#[cfg(test)]\nmod tests { use crate::x; }\n",
        ),
        file(
            "pool/guard.rs",
            "#[cfg(test)]\nfn only_in_tests(\n    c: crate::client::C,\n) {\n    let s: crate::Shared;\n}\n\nfn after() -> crate::client::C {}\n",
        ),
        file("pool/tests.rs", "use crate::client::Anything;\n"),
        file(
            "pool/waiter.rs",
            "use crate::{\n    protocol::{\n        frame,\n    },\n    client::C,\n};\nconst U: &str = \"a://crate::client\"; use super::super::client::D;\n",
        ),
        file("protocol/mod.rs", "use super::pool::Q;\nuse super::Shared;\n"),
        file("protocol/frame.rs", "use super::super::client::Q;\nuse super::header;\n"),
        file("pool/caps.rs", "use crate::*;\nuse crate as root;\n"),
        file(
            "client/stream.rs",
            "enum S {\n    A,\n    #[cfg(test)]\n    B(crate::x::Y),\n}\nfn f(s: S) {\n    match s {\n        #[cfg(test)]\n        S::B(_) => {}\n        S::A => crate::listener::go(),\n    }\n}\nfn g() -> crate::listener::L {}\n",
        ),
    ];
    let found = upward_uses(&order, &files);
    let got: Vec<(&str, usize, &str)> = found
        .iter()
        .map(|u| (u.file.as_str(), u.line, u.to.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("protocol.rs", 1, "pool"),
            ("pool/mod.rs", 3, "client"),
            ("pool/queue.rs", 1, "Shared"),
            ("pool/guard.rs", 8, "client"),
            ("pool/waiter.rs", 5, "client"),
            ("pool/waiter.rs", 7, "client"),
            ("protocol/mod.rs", 1, "pool"),
            ("protocol/mod.rs", 2, "Shared"),
            ("protocol/frame.rs", 1, "client"),
            ("pool/caps.rs", 1, "crate"),
            ("pool/caps.rs", 2, "crate"),
            ("client/stream.rs", 10, "listener"),
            ("client/stream.rs", 13, "listener"),
        ]
    );
    let lib = "//! pgmux\n//!\n//! # Layers\n//!\n//! - `a`: one.\n//! - `b`: two.\n//!\n//! # Next\n//! - `c`\n\npub mod a;\n";
    assert_eq!(layers(lib), ["a", "b"]);
}
