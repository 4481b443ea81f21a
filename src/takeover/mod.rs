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

use crate::registry::ClientEntry;
use crate::Shared;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How long one side waits for the other's next step before it gives the takeover up.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Clients offered and not yet sent, at most.
const OFFER_QUEUE: usize = 64;

/// A session offering its client to the new process: the client's state, a copy of its
/// socket, its entry (a client killed while it waits its turn is not sent), and where to say
/// whether it moved.
pub struct Offer {
    pub client: MovedClient,
    pub socket: OwnedFd,
    pub entry: Arc<ClientEntry>,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// What a takeover shares with the rest of the process.
pub struct Handover {
    /// Copies of the listening sockets, kept to be handed over.
    listeners: Mutex<Vec<(ListenerKind, OwnedFd)>>,
    /// While this process hands its clients over: where sessions offer them.
    offers: Mutex<Option<mpsc::Sender<Offer>>>,
    /// While the other process of a takeover serves clients beside this one (during it, or
    /// after it was given up): cancels for keys this process does not hold go there.
    cancels_to_peer: Mutex<Option<mpsc::Sender<(u32, u32)>>>,
    /// This process is taking another's clients (until Done, or the takeover ends).
    taking_over: AtomicBool,
    /// False while another process accepts in this one's place.
    accepting: watch::Sender<bool>,
    /// Whether the Unix socket's file is this process's to remove when it exits: not while a
    /// takeover has given it to the new process, nor in a new process until the takeover is
    /// done.
    socket_file_ours: AtomicBool,
}

impl Default for Handover {
    fn default() -> Self {
        Handover {
            listeners: Mutex::default(),
            offers: Mutex::default(),
            cancels_to_peer: Mutex::default(),
            taking_over: AtomicBool::new(false),
            accepting: watch::channel(true).0,
            socket_file_ours: AtomicBool::new(true),
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

    /// Whether the Unix socket's file is this process's to remove when it exits.
    pub fn socket_file_ours(&self) -> bool {
        self.socket_file_ours.load(Ordering::Acquire)
    }

    /// Whether this process is taking another's clients now.
    pub fn taking_over(&self) -> bool {
        self.taking_over.load(Ordering::Acquire)
    }

    /// A new process, before it accepts on the sockets it took: taking over, and not owning
    /// the socket file until the takeover is done. Returns where cancels for the old
    /// process's clients wait to be sent.
    pub fn begin_taking_over(&self) -> mpsc::Receiver<(u32, u32)> {
        let (to_old, cancels) = mpsc::channel(CANCEL_QUEUE);
        *lock(&self.cancels_to_peer) = Some(to_old);
        self.taking_over.store(true, Ordering::Release);
        self.socket_file_ours.store(false, Ordering::Release);
        cancels
    }

    /// Offers a client to the new process. Ok once the new process serves it (the caller
    /// then lets go of its socket without a word); Err with why it stays here.
    pub async fn offer(
        &self,
        client: MovedClient,
        socket: BorrowedFd<'_>,
        entry: Arc<ClientEntry>,
    ) -> Result<(), String> {
        let Some(offers) = lock(&self.offers).clone() else {
            return Err("no takeover under way".into());
        };
        // A place in the line first, then the copy of the socket: thousands of clients
        // waiting their turn must not hold a second descriptor each.
        let Ok(place) = offers.reserve().await else {
            return Err("the takeover ended".into());
        };
        let socket = socket
            .try_clone_to_owned()
            .map_err(|e| format!("cannot copy the client's socket: {e}"))?;
        let (reply, outcome) = oneshot::channel();
        place.send(Offer {
            client,
            socket,
            entry,
            reply,
        });
        outcome
            .await
            .unwrap_or_else(|_| Err("the takeover ended".into()))
    }

    /// Sends a cancel on to the other process of a takeover, while there is one serving
    /// clients beside this one. False when there is none.
    pub fn forward_cancel(&self, pid: u32, secret: u32) -> bool {
        match lock(&self.cancels_to_peer).as_ref() {
            Some(peer) => peer.try_send((pid, secret)).is_ok(),
            None => false,
        }
    }
}

/// Cancels waiting to be passed to the other process, at most.
const CANCEL_QUEUE: usize = 256;

/// Where cancels for the other process of a takeover given up wait, installed before this
/// process serves beside it.
pub(crate) fn line_to_peer(handover: &Handover) -> mpsc::Receiver<(u32, u32)> {
    let (to_peer, cancels) = mpsc::channel(CANCEL_QUEUE);
    *lock(&handover.cancels_to_peer) = Some(to_peer);
    cancels
}

/// After a takeover was given up, while both processes serve clients: passes cancels for
/// keys this process does not hold to the other one (`cancels`, from
/// [`line_to_peer`] or [`Handover::begin_taking_over`]), and delivers those it passes here,
/// until it goes away.
pub(crate) async fn pass_cancels(
    mut channel: channel::Channel,
    shared: Arc<Shared>,
    mut cancels: mpsc::Receiver<(u32, u32)>,
) {
    loop {
        tokio::select! {
            received = channel.recv() => match received {
                Ok((wire::Message::Cancel { pid, secret }, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move { shared.cancels.cancel(pid, secret).await });
                }
                // Anything else is the other process still in the takeover's steps: it reads
                // the Refused already sent, and gives up too.
                Ok(_) => {}
                Err(_) => break,
            },
            Some((pid, secret)) = cancels.recv() => {
                let cancel = wire::Message::Cancel { pid, secret };
                if channel.send(&cancel, &[]).await.is_err() {
                    break;
                }
            }
        }
    }
    *lock(&shared.handover.cancels_to_peer) = None;
}
