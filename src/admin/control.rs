//! The console's pool control commands: PAUSE, RESUME, DISABLE, ENABLE, RECONNECT, WAIT_CLOSE,
//! KILL and KILL_CLIENT.

use crate::pool::Pool;
use crate::shared::Shared;
use std::sync::Arc;
use std::time::Duration;

/// The commands [`run`] handles.
pub const COMMANDS: [&str; 8] = [
    "KILL",
    "KILL_CLIENT",
    "PAUSE",
    "RESUME",
    "DISABLE",
    "ENABLE",
    "RECONNECT",
    "WAIT_CLOSE",
];

/// How often PAUSE and WAIT_CLOSE look again.
const POLL: Duration = Duration::from_millis(50);

/// Longest a KILL waits for the sessions it ended to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

async fn wait_until(done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + KILL_WAIT;
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn pools_of(shared: &Shared, db: Option<&str>) -> Vec<Arc<Pool>> {
    shared
        .pools
        .all()
        .into_iter()
        .filter(|p| db.is_none_or(|d| p.database == d))
        .collect()
}

fn known(shared: &Shared, db: Option<&str>) -> Result<(), String> {
    match db {
        Some(d) if !shared.config().databases.contains_key(d) => {
            Err(format!("no such database: {d}"))
        }
        _ => Ok(()),
    }
}

pub async fn run(shared: &Shared, name: &str, db: Option<&str>) -> Result<(), String> {
    if name == "KILL_CLIENT" {
        let id = db
            .and_then(|a| a.parse::<u64>().ok())
            .ok_or("KILL_CLIENT needs a client id from SHOW CLIENTS")?;
        if !shared.registry.kill(id) {
            return Err(format!("no client with id {id}"));
        }
        // Like PgBouncer's, the command returns once the client is gone. The id may be a
        // console session's, as in PgBouncer; the asking session's own ends this one (the
        // console's loop stops on the signal) with FATAL 57P01, as pg_terminate_backend does.
        wait_until(|| !shared.registry.contains(id)).await;
        return Ok(());
    }
    known(shared, db)?;
    let needs_db = || db.ok_or_else(|| format!("{name} needs a database name"));
    match name {
        "PAUSE" => {
            shared.control.pause(db)?;
            // Returns once every transaction in flight has given its server back; then the
            // idle servers are closed, as PgBouncer does.
            loop {
                let pools = pools_of(shared, db);
                let busy = pools.iter().any(|p| {
                    let s = p.snapshot();
                    s.servers > s.idle
                });
                if !busy {
                    pools.iter().for_each(|p| p.close_idle());
                    tracing::info!(database = db.unwrap_or("*"), "paused");
                    return Ok(());
                }
                tokio::time::sleep(POLL).await;
            }
        }
        "KILL" => {
            // As PgBouncer: drop the database's clients (and with them the servers they hold),
            // close its idle servers, and leave it paused until RESUME.
            let _ = shared.control.pause(db);
            let of_db = |c: &crate::registry::ClientEntry| db.is_none_or(|d| c.database == d);
            for client in shared.registry.all() {
                if of_db(&client) {
                    client.signal.raise(crate::signal::Stop::Killed);
                }
            }
            wait_until(|| !shared.registry.all().iter().any(|c| of_db(c))).await;
            pools_of(shared, db).iter().for_each(|p| p.close_idle());
            tracing::info!(database = db.unwrap_or("*"), "killed; paused until RESUME");
            Ok(())
        }
        "RESUME" => {
            shared.control.resume(db)?;
            tracing::info!(database = db.unwrap_or("*"), "resumed");
            Ok(())
        }
        "DISABLE" => {
            shared.control.set_disabled(needs_db()?, true);
            Ok(())
        }
        "ENABLE" => {
            shared.control.set_disabled(needs_db()?, false);
            Ok(())
        }
        "RECONNECT" => {
            pools_of(shared, db).iter().for_each(|p| p.reconnect());
            Ok(())
        }
        "WAIT_CLOSE" => {
            while pools_of(shared, db).iter().any(|p| p.stale_servers() > 0) {
                tokio::time::sleep(POLL).await;
            }
            Ok(())
        }
        other => Err(format!("{other} is not a pool control command")),
    }
}
