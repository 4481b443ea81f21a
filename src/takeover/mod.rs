//! Online upgrade: a new pgmux process takes the listening sockets and the clients of the
//! running one over its Unix socket, and the old one exits once it holds nothing.
//!
//! - `wire.rs`: the messages, pure. `channel.rs`: them over a Unix socket, with descriptors.
//! - `give.rs`: the running (old) process's side. `take.rs`: the new process's side.
//! - `successor.rs`: starting the new process from the old one (the console's UPGRADE).
//! - [`Handover`] here: what the rest of pgmux shares with a takeover under way: copies of
//!   the listening sockets, the line clients offer themselves on, whether to accept.
//!
//! It owns the protocol and the order of a takeover; what a client's state is and how a
//! session starts again from it belongs to `client`, which offers and adopts clients.

pub mod channel;
mod give;
pub mod successor;
mod take;
pub mod wire;

pub use give::{give, may_take_over};
pub use take::{receive, request, Adopt, Pending, Taken};
pub use wire::{ListenerKind, MovedClient};

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How long one side waits for the other's next step before it gives the takeover up.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Clients offered and not yet sent, at most.
const OFFER_QUEUE: usize = 64;

/// A session offering its client to the new process: the client's state, a copy of its
/// socket, and where to say whether it moved.
pub struct Offer {
    pub client: MovedClient,
    pub socket: OwnedFd,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// What a takeover shares with the rest of the process.
pub struct Handover {
    /// Copies of the listening sockets, kept to be handed over.
    listeners: Mutex<Vec<(ListenerKind, OwnedFd)>>,
    /// While this process hands its clients over: where sessions offer them.
    offers: Mutex<Option<mpsc::Sender<Offer>>>,
    /// While this process takes clients over: cancels for keys it does not hold, whose
    /// clients are still in a transaction in the old process.
    cancels_to_old: Mutex<Option<mpsc::Sender<(u32, u32)>>>,
    /// False while the new process accepts in this one's place.
    accepting: watch::Sender<bool>,
    /// The takeover completed: the sockets and the socket file are the new process's.
    given_away: AtomicBool,
}

impl Default for Handover {
    fn default() -> Self {
        Handover {
            listeners: Mutex::default(),
            offers: Mutex::default(),
            cancels_to_old: Mutex::default(),
            accepting: watch::channel(true).0,
            given_away: AtomicBool::new(false),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Handover {
    /// Keeps a copy of a listening socket, to hand over in a takeover.
    pub fn keep_listener(&self, kind: ListenerKind, socket: BorrowedFd<'_>) -> std::io::Result<()> {
        let copy = socket.try_clone_to_owned()?;
        lock(&self.listeners).push((kind, copy));
        Ok(())
    }

    /// The Unix socket's file, where a new process finds this one.
    pub fn unix_socket(&self) -> Option<std::path::PathBuf> {
        lock(&self.listeners)
            .iter()
            .find_map(|(kind, _)| match kind {
                ListenerKind::Unix { path, .. } if !path.is_empty() => Some(path.into()),
                _ => None,
            })
    }

    /// Lets go of the copies of the listening sockets.
    pub fn forget_listeners(&self) {
        lock(&self.listeners).clear();
    }

    /// Copies of the listening sockets kept, to send.
    pub fn listener_copies(&self) -> std::io::Result<Vec<(ListenerKind, OwnedFd)>> {
        lock(&self.listeners)
            .iter()
            .map(|(kind, fd)| Ok((kind.clone(), fd.try_clone()?)))
            .collect()
    }

    /// Whether the accept loops accept; they watch this.
    pub fn accepting(&self) -> watch::Receiver<bool> {
        self.accepting.subscribe()
    }

    /// Whether a completed takeover gave this process's sockets away.
    pub fn given_away(&self) -> bool {
        self.given_away.load(Ordering::Acquire)
    }

    /// Offers a client to the new process. Ok once the new process serves it (the caller
    /// then lets go of its socket without a word); Err with why it stays here.
    pub async fn offer(&self, client: MovedClient, socket: BorrowedFd<'_>) -> Result<(), String> {
        let Some(offers) = lock(&self.offers).clone() else {
            return Err("no takeover under way".into());
        };
        let socket = socket
            .try_clone_to_owned()
            .map_err(|e| format!("cannot copy the client's socket: {e}"))?;
        let (reply, outcome) = oneshot::channel();
        let offer = Offer {
            client,
            socket,
            reply,
        };
        if offers.send(offer).await.is_err() {
            return Err("the takeover ended".into());
        }
        outcome
            .await
            .unwrap_or_else(|_| Err("the takeover ended".into()))
    }

    /// Sends a cancel on to the old process, while this one takes its clients over. False
    /// when no takeover is under way.
    pub fn forward_cancel(&self, pid: u32, secret: u32) -> bool {
        match lock(&self.cancels_to_old).as_ref() {
            Some(to_old) => to_old.try_send((pid, secret)).is_ok(),
            None => false,
        }
    }
}
