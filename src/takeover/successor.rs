//! Starting the process that takes this one's place (the console's UPGRADE): the binary at the
//! path this process was started from, which a package upgrade may have replaced since, run
//! with `--takeover` and this process's config file. Started by this process, it stays in the
//! same service (a systemd unit's control group), and becomes its main process once it holds
//! every client.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts the successor, which finds this process at `socket` (this process's Unix socket
/// file, whatever the config file says now); returns its process id. `deadline` is
/// --takeover-timeout.
pub fn start(
    config: Option<PathBuf>,
    socket: Option<PathBuf>,
    deadline: Option<Duration>,
) -> Result<u32, String> {
    let config = config.ok_or("pgmux was started without a config file to hand on")?;
    let socket = socket.ok_or("a takeover needs this process's Unix socket (unix_socket_dir)")?;
    let binary = binary()?;
    let mut command = Command::new(&binary);
    command
        .arg("--takeover")
        .arg("--takeover-socket")
        .arg(&socket)
        .arg("--config")
        .arg(&config);
    if let Some(deadline) = deadline {
        command
            .arg("--takeover-timeout")
            .arg(deadline.as_secs_f64().to_string());
    }
    // Sockets systemd passed this process are for it alone; the new one takes copies over
    // the takeover, like every other socket.
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        command.env_remove(name);
    }
    let mut child = command
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let pid = child.id();
    tracing::info!(pid, binary = %binary.display(), "started a new pgmux to take over");
    // Reaped here if it gives up; if it takes over, it outlives this process.
    std::thread::spawn(move || match child.wait() {
        Ok(status) if !status.success() => tracing::error!(
            pid,
            %status,
            "the new pgmux exited without taking over; this process serves on"
        ),
        _ => {}
    });
    Ok(pid)
}

/// The path of this process's binary, even once a newer file replaced it there.
fn binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find pgmux's binary: {e}"))?;
    let text = exe.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}
