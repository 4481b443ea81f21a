//! The new process's side of a takeover: ask the running process over its Unix socket, take
//! its listening sockets (before anything else is started, so a refusal changes nothing), then,
//! once accepting on them, take each client it sends and pass on the cancels meant for clients
//! still there.

use crate::handover::channel::Channel;
use crate::handover::wire::{ListenerKind, Message, MovedClient, FORMAT, MAX_MESSAGE};
use crate::handover::{TakingOverEnded, STEP_TIMEOUT};
use crate::protocol::startup::TAKEOVER_REQUEST;
use crate::shared::Shared;
use bytes::BytesMut;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// What the running process handed over before clients move: its listening sockets.
pub struct Taken {
    channel: Channel,
    pub listeners: Vec<(ListenerKind, OwnedFd)>,
    /// The old process's id, for the log.
    pub old_pid: u32,
}

/// Asks the pgmux listening on `socket` to hand over; `deadline` is how long its clients in a
/// transaction may take before it closes them.
pub async fn request(socket: &Path, deadline: Duration) -> Result<Taken, String> {
    let unreachable = |e: &dyn std::fmt::Display| {
        format!(
            "cannot reach the running pgmux at {}: {e}",
            socket.display()
        )
    };
    let mut stream = match tokio::time::timeout(STEP_TIMEOUT, UnixStream::connect(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(unreachable(&e)),
        Err(_) => return Err(unreachable(&"timed out")),
    };
    let mut packet = 8u32.to_be_bytes().to_vec();
    packet.extend_from_slice(&TAKEOVER_REQUEST.to_be_bytes());
    stream
        .write_all(&packet)
        .await
        .map_err(|e| unreachable(&e))?;
    let mut channel = Channel::new(stream, BytesMut::new(), MAX_MESSAGE);
    let hello = Message::Hello {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").into(),
        deadline_ms: deadline.as_millis().min(u64::MAX as u128) as u64,
    };
    channel
        .send(&hello, &[])
        .await
        .map_err(|e| unreachable(&e))?;
    let old_pid = match next(&mut channel).await? {
        (Message::Welcome { format, pid, .. }, _) if format == FORMAT => pid,
        (
            Message::Welcome {
                format, version, ..
            },
            _,
        ) => {
            return Err(format!(
                "the running pgmux {version} speaks takeover format {format}, this one {FORMAT}"
            ))
        }
        (Message::Refused { reason }, _) => {
            return Err(format!("the running pgmux refused the takeover: {reason}"))
        }
        (other, _) => {
            return Err(format!(
                "unexpected answer from the running pgmux: {}",
                other.name()
            ))
        }
    };
    let listeners = match next(&mut channel).await? {
        (Message::Listeners(kinds), fds) => kinds.into_iter().zip(fds).collect(),
        (other, _) => {
            return Err(format!(
                "unexpected answer from the running pgmux: {}",
                other.name()
            ))
        }
    };
    Ok(Taken {
        channel,
        listeners,
        old_pid,
    })
}

async fn next(channel: &mut Channel) -> Result<(Message, Vec<OwnedFd>), String> {
    channel.recv_step("the running pgmux").await
}

/// A client the new process has acknowledged and not yet been given: registered here, its
/// socket untouched. Dropped without [`Pending::start`], it is forgotten again.
pub trait Pending: Send {
    /// Starts serving it: the old process has let go of it.
    fn start(self: Box<Self>);
}

/// How the new process takes a client it was sent: Ok to acknowledge it, Err (why) to leave
/// it with the old process.
pub type Adopt = fn(&Arc<Shared>, MovedClient, OwnedFd) -> Result<Box<dyn Pending>, String>;

/// How the exchange of clients ended.
enum Ended {
    /// The old process holds no client any more.
    Done(u64),
    /// The takeover was given up (by the old process, or by this one shutting down); the
    /// old process serves on.
    GivenUp(String),
    /// The connection broke without a word.
    Lost(String),
}

/// Once this process accepts on the sockets taken: takes the old process's clients until it
/// says it holds none, and passes on cancels for those still there. `cancels` are those
/// [`Handover::begin_taking_over`](crate::handover::Handover::begin_taking_over) gave.
pub async fn receive(
    taken: Taken,
    shared: Arc<Shared>,
    adopt: Adopt,
    mut cancels: mpsc::Receiver<(u32, u32)>,
) {
    let Taken {
        mut channel,
        old_pid,
        ..
    } = taken;
    let ended = take_clients(&mut channel, &mut cancels, &shared, adopt).await;
    let handover = &shared.handover;
    match ended {
        Ended::Done(moved) => {
            handover.end_taking_over(TakingOverEnded::Alone);
            // Under systemd this process is the service's main process from now on.
            crate::notify::main_pid();
            let _ = channel.send(&Message::Finished, &[]).await;
            tracing::info!(old_pid, moved, "takeover complete");
        }
        Ended::GivenUp(why) => {
            // The old process accepts again and keeps its socket file; this one serves the
            // clients committed to it, passes cancels with the old one (on the same line as
            // during the takeover, so none is dropped in between), and exits when its
            // clients have left.
            handover.end_taking_over(TakingOverEnded::GivenUp);
            shared
                .shutdown
                .begin_quietly(crate::shutdown::ShutdownMode::WaitForClients);
            tracing::error!(
                old_pid,
                "takeover abandoned: {why}; serving only the clients already moved, then exiting"
            );
            super::pass_cancels(channel, shared.clone(), cancels).await;
        }
        Ended::Lost(why) => {
            // The old process went away: it always says so when it gives up.
            handover.end_taking_over(TakingOverEnded::Alone);
            crate::notify::main_pid();
            tracing::error!(
                old_pid,
                "takeover ended early: {why}; the old process is gone, this one serves on alone"
            );
        }
    }
}

/// This process gives the takeover up (it broke, or it is stopping): it tells the old
/// process, which then accepts again and keeps the clients it did not commit.
async fn give_up(channel: &mut Channel, why: String) -> Ended {
    let refused = Message::Refused {
        reason: why.clone(),
    };
    let _ = channel.send_step(&refused, &[], "the old process").await;
    Ended::GivenUp(why)
}

async fn take_clients(
    channel: &mut Channel,
    cancels: &mut mpsc::Receiver<(u32, u32)>,
    shared: &Arc<Shared>,
    adopt: Adopt,
) -> Ended {
    // Subscribed before the first check: a shutdown that began earlier is seen below.
    let mut shutdown = shared.shutdown.watch();
    if let Err(e) = channel.send(&Message::Listening, &[]).await {
        return why_closed(channel, format!("cannot write to the old process: {e}")).await;
    }
    let mut moved = 0u64;
    // Acknowledged, not committed: at most one at a time, as the old process sends them.
    let mut pending: HashMap<u64, Box<dyn Pending>> = HashMap::new();
    loop {
        // Never between an Ack and its Commit: the old process may have let go already.
        if pending.is_empty() && shared.shutdown.mode().is_some() {
            return give_up(channel, "the new process is shutting down".into()).await;
        }
        let reply = tokio::select! {
            received = channel.recv() => match received {
                Ok((Message::Client { id, client }, mut fds)) => {
                    let Some(socket) = fds.pop() else {
                        return give_up(channel, "a client came without its socket".into()).await;
                    };
                    let refused = match adopt(shared, *client, socket) {
                        Ok(client) => {
                            pending.insert(id, client);
                            None
                        }
                        Err(why) => {
                            tracing::warn!("takeover: a client stays with the old process: {why}");
                            Some(why)
                        }
                    };
                    Message::Ack { id, refused }
                }
                Ok((Message::Commit { id }, _)) => {
                    match pending.remove(&id) {
                        Some(client) => {
                            client.start();
                            moved += 1;
                        }
                        None => {
                            let why = format!("a commit of client {id}, never acknowledged");
                            return give_up(channel, why).await;
                        }
                    }
                    continue;
                }
                Ok((Message::Done, _)) => return Ended::Done(moved),
                Ok((Message::Refused { reason }, _)) => return Ended::GivenUp(reason),
                Ok((other, _)) => {
                    return give_up(channel, format!("unexpected {}", other.name())).await;
                }
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return give_up(channel, format!("the old process: {e}")).await;
                }
                Err(e) => return Ended::Lost(format!("the old process: {e}")),
            },
            Some((pid, secret)) = cancels.recv() => Message::Cancel { pid, secret },
            Ok(()) = shutdown.changed() => continue,
        };
        if let Err(e) = channel.send(&reply, &[]).await {
            return why_closed(channel, format!("cannot write to the old process: {e}")).await;
        }
    }
}

/// After a write to the old process failed: whether it had said it gives up, in what it sent
/// before it closed.
async fn why_closed(channel: &mut Channel, error: String) -> Ended {
    let last_words = Duration::from_secs(1);
    while let Ok(Ok((message, _))) = tokio::time::timeout(last_words, channel.recv()).await {
        if let Message::Refused { reason } = message {
            return Ended::GivenUp(reason);
        }
    }
    Ended::Lost(error)
}
