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
