//! The running process's side of a takeover, in order: check the new process speaks this
//! format; hand over copies of the listening sockets; once the new process accepts on them,
//! stop accepting and ask every client to move; send each client as its session offers itself
//! between transactions; past the deadline, close the clients still here with 57P01; when none
//! is left, exit.
//!
//! Who owns a client: this process, until the new one has acknowledged it (Ack) and this one
//! has told it so (Commit); the new process touches the client's socket only after Commit, and
//! this one lets go of it only once Commit is written. So a takeover that fails at any step
//! (the new process dies, answers nonsense, or takes too long) is given up: this process tells
//! the new one it abandons (the new one then stops accepting and keeps only the clients
//! committed to it), accepts again, and keeps every client it did not commit.

use crate::handover::channel::Channel;
use crate::handover::wire::{ListenerKind, Message, FORMAT, MAX_MESSAGE, MAX_TO_OLD};
use crate::handover::{Offer, OFFER_QUEUE};
use crate::shared::Shared;
use crate::signal::Stop;
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

/// Serves a takeover request that came on the Unix socket; `buffered` is what was read past
/// the request.
pub async fn give(stream: UnixStream, buffered: BytesMut, shared: Arc<Shared>) {
    let mut channel = Channel::new(stream, buffered, MAX_TO_OLD);
    let (offers, queue) = mpsc::channel(OFFER_QUEUE);
    // One takeover at a time; none of a process still taking another's clients, nor while
    // the new process of a takeover given up still serves clients beside this one.
    if !shared.handover.open_offers(offers) {
        let why = "a takeover is under way, or the new process of one given up still serves \
                   clients beside this one";
        refuse(&mut channel, why).await;
        return;
    }
    match hand_over(&mut channel, queue, &shared).await {
        Ok(()) => {
            tracing::info!("takeover complete: the new process serves every client; exiting");
            shared
                .shutdown
                .begin_quietly(crate::shutdown::ShutdownMode::Immediate);
        }
        Err(Failed::Refused(why)) => {
            tracing::warn!("takeover refused: {why}");
            refuse(&mut channel, &why).await;
        }
        Err(Failed::Abandoned(why)) => {
            tracing::error!("takeover failed, serving on as before: {why}");
            shared.registry.stop_moving();
            let cancels = shared.handover.take_back();
            // Tells a new process that still listens to stop accepting; it keeps only the
            // clients committed to it, and the two pass each other's cancels on until it
            // goes.
            let abandon = format!("the old process abandons the takeover: {why}");
            refuse(&mut channel, &abandon).await;
            shared.handover.close_offers();
            super::pass_cancels(channel, shared, cancels).await;
            return;
        }
    }
    // Last: sessions offering from now on stay here, and another takeover may begin.
    shared.handover.close_offers();
}

/// Why a takeover did not complete.
enum Failed {
    /// Before anything changed here.
    Refused(String),
    /// After the new process began to accept: undone.
    Abandoned(String),
}

async fn refuse(channel: &mut Channel, reason: &str) {
    let refused = Message::Refused {
        reason: reason.to_owned(),
    };
    let _ = channel.send_step(&refused, &[], PEER).await;
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
        (other, _) => return Err(format!("expected Hello, got {}", other.name())),
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

/// How the log names the other side.
const PEER: &str = "the new process";

async fn next(channel: &mut Channel) -> Result<(Message, Vec<std::os::fd::OwnedFd>), String> {
    channel.recv_step(PEER).await
}

async fn send(channel: &mut Channel, message: &Message) -> Result<(), String> {
    channel.send_step(message, &[], PEER).await
}

/// Everything after the slot is taken, up to the moment no client is left here.
async fn hand_over(
    channel: &mut Channel,
    mut queue: mpsc::Receiver<Offer>,
    shared: &Arc<Shared>,
) -> Result<(), Failed> {
    let deadline = hello(channel, shared).await.map_err(Failed::Refused)?;
    let welcome = Message::Welcome {
        format: FORMAT,
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
    };
    send(channel, &welcome).await.map_err(Failed::Refused)?;
    let copies = shared.handover.listener_copies();
    let copies = copies.map_err(|e| Failed::Refused(format!("cannot copy the sockets: {e}")))?;
    let kinds: Vec<ListenerKind> = copies.iter().map(|(k, _)| k.clone()).collect();
    let fds: Vec<_> = copies.iter().map(|(_, fd)| fd.as_fd()).collect();
    let message = Message::Listeners(kinds);
    let sent = channel.send_step(&message, &fds, PEER).await;
    sent.map_err(Failed::Refused)?;
    drop(fds);
    drop(copies);
    match next(channel).await.map_err(Failed::Refused)? {
        (Message::Listening, _) => {}
        (Message::Refused { reason }, _) => {
            return Err(Failed::Refused(format!(
                "the new process gave up: {reason}"
            )))
        }
        (other, _) => {
            return Err(Failed::Refused(format!(
                "expected Listening, got {}",
                other.name()
            )))
        }
    }
    // From here on the new process accepts on the same sockets.
    shared.handover.step_aside();
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
    let deadline = Instant::now() + deadline;
    move_clients(channel, &mut queue, shared, deadline)
        .await
        .map_err(Failed::Abandoned)?;
    send(channel, &Message::Done)
        .await
        .map_err(Failed::Abandoned)?;
    match next(channel).await {
        Ok((Message::Finished, _)) => {}
        Ok((other, _)) => tracing::warn!("takeover: expected Finished, got {}", other.name()),
        Err(e) => tracing::warn!("takeover: {e}"),
    }
    Ok(())
}

/// Connections this process still serves, console sessions and this takeover's own aside:
/// logged-in clients, and those accepted and still logging in (they move once in).
fn clients_held(shared: &Shared) -> usize {
    let connections = shared.clients.load(Ordering::Acquire);
    connections.saturating_sub(shared.registry.console_count() + 1)
}

/// Sends each client offered until none is left; from `deadline` on, closes those still
/// here (and any that finish logging in after it) with 57P01, and no longer waits for
/// connections still logging in.
async fn move_clients(
    channel: &mut Channel,
    queue: &mut mpsc::Receiver<Offer>,
    shared: &Arc<Shared>,
    deadline: Instant,
) -> Result<(), String> {
    let mut next_id = 0u64;
    let mut past_deadline = false;
    // Twice none, one check apart: an accept loop counts a client a moment after accepting it.
    let mut seen_empty = false;
    loop {
        let held = match past_deadline {
            false => clients_held(shared),
            true => shared.registry.pool_clients(),
        };
        match (held, seen_empty) {
            (0, true) => return Ok(()),
            (0, false) => seen_empty = true,
            _ => seen_empty = false,
        }
        if past_deadline {
            for entry in shared.registry.all() {
                entry.signal.raise(Stop::Killed);
            }
        }
        tokio::select! {
            offer = queue.recv() => {
                let Some(offer) = offer else {
                    return Err("the offers' line closed".into());
                };
                next_id += 1;
                send_client(channel, offer, next_id, shared).await?;
            }
            // Cancel-safe: what a recv read stays in the channel for the next one.
            received = channel.recv() => match received {
                Ok((Message::Cancel { pid, secret }, _)) => super::deliver_cancel(shared, pid, secret),
                Ok((other, _)) => return Err(format!("unexpected {} from the new process", other.name())),
                Err(e) => return Err(format!("the new process: {e}")),
            },
            _ = tokio::time::sleep_until(deadline), if !past_deadline => {
                past_deadline = true;
                tracing::warn!(
                    clients = shared.registry.pool_clients(),
                    "takeover deadline passed: closing the clients still in a transaction or \
                     unable to move (TLS, session mode, pinned)"
                );
            }
            _ = tokio::time::sleep(EMPTY_CHECK) => {}
        }
    }
}

/// Sends one client, waits for the new process to take it or refuse it (delivering the
/// cancels it passes on meanwhile), and commits it. Err fails the whole takeover; the client
/// then stays here, uncommitted.
async fn send_client(
    channel: &mut Channel,
    offer: Offer,
    id: u64,
    shared: &Arc<Shared>,
) -> Result<(), String> {
    let Offer {
        client,
        socket,
        entry,
        reply,
    } = offer;
    if entry.signal.is_raised(Stop::Killed) {
        let _ = reply.send(Err("killed while waiting to move".into()));
        return Ok(());
    }
    let message = Message::Client {
        id,
        client: Box::new(client),
    };
    if message.encoded_len() > MAX_MESSAGE {
        let _ = reply.send(Err("its state is over the takeover's message limit".into()));
        return Ok(());
    }
    let fds = [socket.as_fd()];
    if let Err(e) = channel.send_step(&message, &fds, PEER).await {
        let _ = reply.send(Err("the takeover failed".into()));
        return Err(e);
    }
    loop {
        let received = match next(channel).await {
            Ok(received) => received,
            Err(e) => {
                let _ = reply.send(Err("the takeover failed".into()));
                return Err(e);
            }
        };
        match received {
            (Message::Ack { id: acked, refused }, _) if acked == id => {
                if let Some(why) = refused {
                    let _ = reply.send(Err(why));
                    return Ok(());
                }
                if let Err(e) = send(channel, &Message::Commit { id }).await {
                    // Small and written whole, or not at all: the new process never has it.
                    let _ = reply.send(Err("the takeover failed".into()));
                    return Err(e);
                }
                let _ = reply.send(Ok(()));
                return Ok(());
            }
            (Message::Cancel { pid, secret }, _) => super::deliver_cancel(shared, pid, secret),
            (other, _) => {
                let _ = reply.send(Err("the takeover failed".into()));
                return Err(format!(
                    "expected the Ack of client {id}, got {}",
                    other.name()
                ));
            }
        }
    }
}
