//! The house rule of `src/`: modules are layered, and each uses only those below it. The order
//! is the `# Layers` list at the top of `src/lib.rs`, read here; a module that uses one listed
//! after it, or reaches into `lib.rs` itself, fails this test with the file and line. (Two
//! modules that use each other are one such case, whichever of them comes first.) Test code
//! is left out: a test may build whatever it needs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The module names of the `# Layers` list, lowest first.
fn layers(lib_rs: &str) -> Vec<String> {
    let list = lib_rs
        .lines()
        .map_while(|l| l.strip_prefix("//!"))
        .skip_while(|l| l.trim() != "# Layers");
    list.filter_map(|l| l.trim().strip_prefix("- `")?.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// A use of a module the layering forbids.
#[derive(Debug, PartialEq, Eq)]
struct Upward {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// Where a file's lines stand relative to an item under `#[cfg(test)]`.
enum TestItem {
    None,
    /// The attribute was seen; the item starts on a later line.
    Next,
    /// Inside the item, this many braces deep.
    Inside(usize),
}

/// The lines of a file with their numbers, less comments and items under `#[cfg(test)]` (a
/// test module, or a test-only function anywhere in the file).
fn code_of(text: &str) -> Vec<(usize, &str)> {
    let mut lines = Vec::new();
    let mut test_item = TestItem::None;
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let trimmed = code.trim();
        if trimmed.starts_with("#[cfg(test)]") {
            test_item = TestItem::Next;
            continue;
        }
        let opens = code.matches('{').count();
        let closes = code.matches('}').count();
        test_item = match test_item {
            TestItem::None => {
                lines.push((i + 1, code));
                TestItem::None
            }
            TestItem::Next if trimmed.is_empty() || trimmed.starts_with("#[") => TestItem::Next,
            TestItem::Next if opens == 0 => match trimmed.ends_with(';') {
                true => TestItem::None,
                // A signature over several lines: the body opens further down.
                false => TestItem::Next,
            },
            TestItem::Next | TestItem::Inside(_) => {
                let depth = match test_item {
                    TestItem::Inside(depth) => depth,
                    _ => 0,
                };
                match (depth + opens).saturating_sub(closes) {
                    0 => TestItem::None,
                    depth => TestItem::Inside(depth),
                }
            }
        };
    }
    lines
}

/// The top-level modules one line names through `crate::`, including those inside a
/// `use crate::{a, b::c}` group that opened on this line or an earlier one (`group_open`).
fn named_modules(code: &str, group_open: &mut bool) -> Vec<String> {
    let mut names = Vec::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            *group_open = true;
            rest = group;
            break;
        }
        names.push(ident(after));
        rest = after;
    }
    if *group_open {
        // Inside `crate::{...}`: each item at the group's top level starts with a module.
        let mut depth = 0;
        let mut start = true;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    *group_open = false;
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => start = true,
                c if start && (c.is_ascii_alphanumeric() || c == '_') => {
                    names.push(ident(&rest[i..]));
                    start = false;
                }
                _ => {}
            }
        }
    }
    names.retain(|n| !n.is_empty() && n != "self");
    names
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
        let module = path.split('/').next().unwrap_or_default();
        let module = module.strip_suffix(".rs").unwrap_or(module).to_owned();
        if module == "lib" || module == "main" || path.ends_with("tests.rs") {
            continue;
        }
        let from = rank.get(module.as_str()).copied();
        let mut group_open = false;
        for (line, code) in code_of(text) {
            for to in named_modules(code, &mut group_open) {
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
    let order: Vec<String> = ["protocol", "pool", "client"].map(String::from).to_vec();
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
        ]
    );
    let lib = "//! pgmux\n//!\n//! # Layers\n//!\n//! - `a`: one.\n//! - `b`: two.\n\npub mod a;\n";
    assert_eq!(layers(lib), ["a", "b"]);
}
