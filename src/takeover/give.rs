//! The running process's side of a takeover, in order: check the asker is this OS user and
//! speaks this format; hand over copies of the listening sockets; once the new process accepts
//! on them, stop accepting and ask every client to move; send each client as its session
//! offers itself between transactions, and wait for the new process to say it serves it; past
//! the deadline, close the clients still here with 57P01; when none is left, exit.
//!
//! Anything going wrong before the end (the new process dies, answers nonsense, or takes too
//! long) gives the takeover up: this process accepts again and keeps every client it still
//! has. Clients the new process had confirmed are its own by then.

use super::channel::Channel;
use super::wire::{ListenerKind, Message, FORMAT};
use super::{lock, Offer, OFFER_QUEUE, STEP_TIMEOUT};
use crate::signal::Stop;
use crate::Shared;
use bytes::BytesMut;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often the hand-over looks whether any client is left.
const EMPTY_CHECK: Duration = Duration::from_millis(50);

/// Serves a takeover request that came on the Unix socket; `buffered` is what was read past
/// the request.
pub async fn give(stream: UnixStream, buffered: BytesMut, shared: Arc<Shared>) {
    let mut channel = Channel::new(stream, buffered);
    let deadline = match hello(&mut channel, &shared).await {
        Ok(deadline) => deadline,
        Err(why) => {
            tracing::warn!("takeover refused: {why}");
            refuse(&mut channel, &why).await;
            return;
        }
    };
    let (offers, queue) = mpsc::channel(OFFER_QUEUE);
    let first = {
        let mut slot = lock(&shared.handover.offers);
        let first = slot.is_none();
        if first {
            *slot = Some(offers);
        }
        first
    };
    if !first {
        refuse(&mut channel, "a takeover is already under way").await;
        return;
    }
    let outcome = hand_over(&mut channel, queue, &shared, deadline).await;
    // Sessions offering from now on stay here.
    *lock(&shared.handover.offers) = None;
    match outcome {
        Ok(()) => {
            tracing::info!("takeover complete: the new process serves every client; exiting");
            shared.shutdown.begin_handed_over();
        }
        Err(why) => {
            tracing::error!("takeover failed, serving on as before: {why}");
            shared.registry.stop_moving();
            shared.handover.accepting.send_replace(true);
        }
    }
}

/// Only the OS user pgmux runs as (or root) may take its clients; anyone else is answered as
/// PostgreSQL answers a request code it does not know, by the caller.
pub fn may_take_over(stream: &UnixStream) -> Result<(), String> {
    let peer = stream
        .peer_cred()
        .map_err(|e| format!("cannot tell who asks: {e}"))?;
    // SAFETY: geteuid has no preconditions.
    let own = unsafe { libc::geteuid() };
    match peer.uid() == own || peer.uid() == 0 {
        true => Ok(()),
        false => Err(format!(
            "asked by OS user {}, not by this process's user {own}",
            peer.uid()
        )),
    }
}

async fn refuse(channel: &mut Channel, reason: &str) {
    let refused = Message::Refused {
        reason: reason.to_owned(),
    };
    let _ = tokio::time::timeout(STEP_TIMEOUT, channel.send(&refused, &[])).await;
}

/// Reads the new process's Hello; returns its deadline for clients in a transaction.
async fn hello(channel: &mut Channel, shared: &Shared) -> Result<Duration, String> {
    let (format, version, deadline_ms) = match next(channel).await? {
        (
            Message::Hello {
                format,
                version,
                deadline_ms,
            },
            _,
        ) => (format, version, deadline_ms),
        (other, _) => return Err(format!("expected Hello, got {other:?}")),
    };
    if format != FORMAT {
        return Err(format!(
            "the new process (pgmux {version}) speaks takeover format {format}, this one \
             (pgmux {}) format {FORMAT}; restart instead",
            env!("CARGO_PKG_VERSION")
        ));
    }
    if shared.shutdown.mode().is_some() {
        return Err("this process is shutting down".into());
    }
    tracing::info!(new_version = %version, "takeover requested by a new pgmux process");
    Ok(Duration::from_millis(deadline_ms))
}

/// The next message, within [`STEP_TIMEOUT`].
async fn next(channel: &mut Channel) -> Result<(Message, Vec<std::os::fd::OwnedFd>), String> {
    match tokio::time::timeout(STEP_TIMEOUT, channel.recv()).await {
        Ok(Ok(received)) => Ok(received),
        Ok(Err(e)) => Err(format!("the new process: {e}")),
        Err(_) => Err("the new process did not answer in time".into()),
    }
}

async fn send(channel: &mut Channel, message: &Message) -> Result<(), String> {
    channel
        .send(message, &[])
        .await
        .map_err(|e| format!("cannot write to the new process: {e}"))
}

/// Everything after the Hello, up to the moment no client is left here.
async fn hand_over(
    channel: &mut Channel,
    mut queue: mpsc::Receiver<Offer>,
    shared: &Arc<Shared>,
    deadline: Duration,
) -> Result<(), String> {
    let welcome = Message::Welcome {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
    };
    send(channel, &welcome).await?;
    let copies = shared.handover.listener_copies();
    let copies = copies.map_err(|e| format!("cannot copy the listening sockets: {e}"))?;
    let kinds: Vec<ListenerKind> = copies.iter().map(|(k, _)| k.clone()).collect();
    let fds: Vec<_> = copies.iter().map(|(_, fd)| fd.as_fd()).collect();
    let message = Message::Listeners(kinds);
    let sent = channel.send(&message, &fds);
    match tokio::time::timeout(STEP_TIMEOUT, sent).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot hand the listening sockets over: {e}")),
        Err(_) => return Err("the new process did not read in time".into()),
    }
    drop(copies);
    match next(channel).await? {
        (Message::Listening, _) => {}
        (Message::Refused { reason }, _) => {
            return Err(format!("the new process gave up: {reason}"))
        }
        (other, _) => return Err(format!("expected Listening, got {other:?}")),
    }
    shared.handover.accepting.send_replace(false);
    shared.registry.move_all();
    // Servers are not handed over: the new process opens its own. Idle ones go now, so that
    // both processes together stay near the pool sizes.
    for pool in shared.pools.all() {
        pool.close_idle();
    }
    tracing::info!(
        clients = shared.registry.pool_clients(),
        "takeover: the new process accepts; clients move as their transactions end"
    );
    move_clients(channel, &mut queue, shared, Instant::now() + deadline).await?;
    shared.handover.given_away.store(true, Ordering::Release);
    send(channel, &Message::Done).await?;
    match next(channel).await {
        Ok((Message::Finished, _)) => {}
        Ok((other, _)) => tracing::warn!("takeover: expected Finished, got {other:?}"),
        Err(e) => tracing::warn!("takeover: {e}"),
    }
    Ok(())
}

/// Sends each client offered until none is left; closes those still here at `deadline`.
async fn move_clients(
    channel: &mut Channel,
    queue: &mut mpsc::Receiver<Offer>,
    shared: &Arc<Shared>,
    deadline: Instant,
) -> Result<(), String> {
    let mut next_id = 0u64;
    let mut closed = false;
    while clients_held(shared) > 0 {
        tokio::select! {
            offer = queue.recv() => {
                let Some(offer) = offer else {
                    return Err("the offers' line closed".into());
                };
                next_id += 1;
                send_client(channel, offer, next_id, shared).await?;
            }
            received = channel.recv() => match received {
                Ok((Message::Cancel { pid, secret }, _)) => cancel(shared, pid, secret),
                Ok((other, _)) => return Err(format!("unexpected {other:?} from the new process")),
                Err(e) => return Err(format!("the new process: {e}")),
            },
            _ = tokio::time::sleep_until(deadline), if !closed => {
                closed = true;
                let left = shared.registry.all();
                tracing::warn!(
                    clients = left.len(),
                    "takeover deadline passed: closing the clients still in a transaction or \
                     unable to move (TLS, session mode, pinned)"
                );
                for entry in left {
                    entry.signal.raise(Stop::Killed);
                }
            }
            _ = tokio::time::sleep(EMPTY_CHECK) => {}
        }
    }
    Ok(())
}

/// Connections this process still serves, console sessions and this takeover's own aside:
/// logged-in clients, and those still logging in (they move once in).
fn clients_held(shared: &Shared) -> usize {
    let connections = shared.clients.load(Ordering::Acquire);
    connections.saturating_sub(shared.registry.console_count() + 1)
}

/// Sends one client and waits for the new process to take it or refuse it; cancels the new
/// process passes on meanwhile are delivered.
async fn send_client(
    channel: &mut Channel,
    offer: Offer,
    id: u64,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let Offer {
        client,
        socket,
        reply,
    } = offer;
    let message = Message::Client {
        id,
        client: Box::new(client),
    };
    let fds = [socket.as_fd()];
    let sent = channel.send(&message, &fds);
    if let Err(e) = tokio::time::timeout(STEP_TIMEOUT, sent)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    {
        let _ = reply.send(Err("the takeover failed".into()));
        return Err(format!("cannot send a client: {e}"));
    }
    loop {
        match next(channel).await {
            Ok((Message::Ack { id: acked, refused }, _)) if acked == id => {
                let _ = reply.send(refused.map_or(Ok(()), Err));
                return Ok(());
            }
            Ok((Message::Cancel { pid, secret }, _)) => cancel(shared, pid, secret),
            Ok((other, _)) => {
                let _ = reply.send(Err("the takeover failed".into()));
                return Err(format!("expected the Ack of client {id}, got {other:?}"));
            }
            Err(e) => {
                // Unknown whether the new process serves it: the socket is still here, and
                // the new process, if it lives, read nothing from it before its Ack.
                let _ = reply.send(Err("the takeover failed".into()));
                return Err(e);
            }
        }
    }
}

/// A cancel the new process received for a client still here.
fn cancel(shared: &Arc<Shared>, pid: u32, secret: u32) {
    let shared = shared.clone();
    tokio::spawn(async move {
        shared.cancels.cancel(pid, secret).await;
    });
}
