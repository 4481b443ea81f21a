//! The Debian package: built with cargo-deb, installed with dpkg, and the installed binary with
//! the packaged example config serves a query. It changes the machine (it installs a package),
//! so `cargo test` reports it ignored (never passed without running); `.ci/run` runs it with
//! `--ignored` after the README's test command.

use crate::harness::{eventually, shared_cluster, TempDir};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "installs a Debian package on this machine: cargo test --test it package -- --ignored"]
async fn debian_package_installs_and_serves() {
    let root = env!("CARGO_MANIFEST_DIR");
    let deb = Path::new(root).join("target/debian/pgmux-test.deb");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    tokio::task::block_in_place(|| {
        run(Command::new(&cargo)
            .current_dir(root)
            .args(["deb", "--output"])
            .arg(&deb));
        run(Command::new("dpkg").arg("-i").arg(&deb));
        run(Command::new("id").arg("pgmux"));
        run(Command::new("/usr/bin/pgmux").args(["check", "/etc/pgmux/pgmux.toml"]));
    });
    assert!(Path::new("/usr/lib/systemd/system/pgmux.service").exists());
    assert!(Path::new("/usr/lib/systemd/system/pgmux.socket").exists());
    assert!(
        Path::new("/usr/share/man/man1/pgmux.1.gz").exists(),
        "man page installed"
    );

    // The packaged example config, pointed at the test PostgreSQL and a free port.
    let pg = shared_cluster();
    let port = crate::harness::free_port();
    let packaged = std::fs::read_to_string("/etc/pgmux/pgmux.toml").unwrap();
    let dir = TempDir::new("package");
    let config = packaged
        .replace("listen_port = 6432", &format!("listen_port = {port}"))
        .replace("port = 5432", &format!("port = {}", pg.port))
        .replace(
            "unix_socket_dir = \"/run/pgmux\"",
            &format!("unix_socket_dir = \"{}\"", dir.path().display()),
        )
        .replace(
            "auth_file = \"userlist.txt\"",
            "auth_file = \"/etc/pgmux/userlist.txt\"",
        );
    let path = dir.path().join("pgmux.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new("/usr/bin/pgmux")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "installed pgmux listening",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    let url = format!("host=127.0.0.1 port={port} user=app password=app dbname=app");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .simple_query("SELECT 'from the package'")
        .await
        .unwrap();
    assert_eq!(
        crate::transaction_mode::first_value(&rows),
        "from the package"
    );
    drop(client);
    let _ = child.kill();
    let _ = child.wait();
}
