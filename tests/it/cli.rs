//! The binary's command line: `pgmux check` names every bad key and exits non-zero.

use crate::harness::TempDir;
use std::process::Command;

fn pgmux() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgmux"))
}

#[test]
fn check_names_every_bad_key() {
    let dir = TempDir::new("cli");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[pgmux]\nlisten_port = \"x\"\npool_mod = \"transaction\"\n[databases.app]\nport = 1\nbogus = 2\n",
    )
    .unwrap();
    let out = pgmux().arg("check").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["pgmux.listen_port", "pgmux.pool_mod", "databases.app.bogus"] {
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
    let out = pgmux()
        .arg("--check")
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn check_names_the_file_and_line_of_each_problem_in_plain_words() {
    let dir = TempDir::new("cli-lines");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[pgmux]\nlisten_addr = \"*\"\ndefault_pool_sise = 10\npool_mode = \"sometimes\"\n\
         listen_port = \"6432\"\n[databases.app]\nhots = \"db\"\n",
    )
    .unwrap();
    let out = pgmux().arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = bad.display();
    for line in [
        format!(
            "{file}:3: pgmux.default_pool_sise: unknown setting (did you mean default_pool_size?)"
        ),
        format!("{file}:4: pgmux.pool_mode: must be one of: session, transaction, statement"),
        format!("{file}:5: pgmux.listen_port: must be a whole number between 0 and 65535"),
        format!("{file}:7: databases.app.hots: unknown setting (did you mean host?)"),
    ] {
        assert!(err.lines().any(|l| l == line), "{line:?} not in:\n{err}");
    }

    std::fs::write(&bad, "[pgmux]\nlisten_port = 6432\n[databases.app\n").unwrap();
    let out = pgmux().arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with(&format!("{file}:3:15: (syntax): invalid table header"))),
        "{err}"
    );
}

#[test]
fn check_accepts_the_example_config() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pgmux.toml");
    let out = pgmux().arg("check").arg(example).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn missing_config_is_a_usage_error() {
    let out = pgmux().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
