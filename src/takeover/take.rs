//! The new process's side of a takeover: ask the running process over its Unix socket, take
//! its listening sockets (before anything else is started, so a refusal changes nothing), then,
//! once accepting on them, take each client it sends and pass on the cancels meant for clients
//! still there.

use super::channel::Channel;
use super::wire::{ListenerKind, Message, MovedClient, FORMAT};
use super::{lock, STEP_TIMEOUT};
use crate::protocol::startup::TAKEOVER_REQUEST;
use crate::Shared;
use bytes::BytesMut;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

/// Cancels waiting to be passed on to the old process, at most.
const CANCEL_QUEUE: usize = 256;

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
    let mut channel = Channel::new(stream, BytesMut::new());
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
                "unexpected answer from the running pgmux: {other:?}"
            ))
        }
    };
    let listeners = match next(&mut channel).await? {
        (Message::Listeners(kinds), fds) => kinds.into_iter().zip(fds).collect(),
        (other, _) => {
            return Err(format!(
                "unexpected answer from the running pgmux: {other:?}"
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
    match tokio::time::timeout(STEP_TIMEOUT, channel.recv()).await {
        Ok(Ok(received)) => Ok(received),
        Ok(Err(e)) => Err(format!("the running pgmux: {e}")),
        Err(_) => Err("the running pgmux did not answer in time".into()),
    }
}

/// How the new process starts serving a client it was sent.
pub type Adopt = fn(&Arc<Shared>, MovedClient, OwnedFd) -> Result<(), String>;

/// Once this process accepts on the sockets taken: takes the old process's clients until it
/// says it holds none, and passes on cancels for those still there.
pub async fn receive(taken: Taken, shared: Arc<Shared>, adopt: Adopt) {
    let Taken {
        mut channel,
        old_pid,
        ..
    } = taken;
    let (to_old, mut cancels) = mpsc::channel(CANCEL_QUEUE);
    *lock(&shared.handover.cancels_to_old) = Some(to_old);
    let outcome = take_clients(&mut channel, &mut cancels, &shared, adopt).await;
    *lock(&shared.handover.cancels_to_old) = None;
    match outcome {
        Ok(moved) => {
            // Under systemd this process is the service's main process from now on.
            crate::notify::main_pid();
            let _ = channel.send(&Message::Finished, &[]).await;
            tracing::info!(old_pid, moved, "takeover complete");
        }
        Err(e) => tracing::error!(
            old_pid,
            "takeover ended early: {e}; clients the old process still held stay with it"
        ),
    }
}

async fn take_clients(
    channel: &mut Channel,
    cancels: &mut mpsc::Receiver<(u32, u32)>,
    shared: &Arc<Shared>,
    adopt: Adopt,
) -> Result<u64, String> {
    channel
        .send(&Message::Listening, &[])
        .await
        .map_err(|e| format!("cannot write to the running pgmux: {e}"))?;
    let mut moved = 0u64;
    loop {
        let reply = tokio::select! {
            received = channel.recv() => match received {
                Ok((Message::Client { id, client }, mut fds)) => {
                    let Some(socket) = fds.pop() else {
                        return Err("a client came without its socket".into());
                    };
                    let refused = adopt(shared, *client, socket).err();
                    if let Some(why) = &refused {
                        tracing::warn!("takeover: a client stays with the old process: {why}");
                    } else {
                        moved += 1;
                    }
                    Message::Ack { id, refused }
                }
                Ok((Message::Done, _)) => return Ok(moved),
                Ok((other, _)) => return Err(format!("unexpected {other:?}")),
                Err(e) => return Err(format!("the old process: {e}")),
            },
            Some((pid, secret)) = cancels.recv() => Message::Cancel { pid, secret },
        };
        channel
            .send(&reply, &[])
            .await
            .map_err(|e| format!("cannot write to the old process: {e}"))?;
    }
}
