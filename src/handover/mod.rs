//! What an online upgrade shares with the rest of the process ([`Handover`]: copies of the
//! listening sockets, the line clients offer themselves on, whether to accept) and its wire
//! format: `wire.rs` the messages, pure; `channel.rs` them over a Unix socket, with
//! descriptors. The steps of a takeover are `takeover`'s.

pub mod channel;
pub mod wire;

pub use wire::{ListenerKind, MovedClient};

use crate::registry::ClientEntry;
use crate::sync::lock;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How long one side waits for the other's next step before it gives the takeover up.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Clients offered and not yet sent, at most.
pub const OFFER_QUEUE: usize = 64;

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

/// How a new process's takeover ended, for [`Handover::end_taking_over`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakingOverEnded {
    /// Every client is here, or the old process went away: this one serves alone.
    Alone,
    /// The old process serves on: this one stops accepting and keeps only what it was given.
    GivenUp,
}

impl Handover {
    /// The old process, as a takeover begins: where sessions offer their clients from now
    /// on. False (and nothing installed) while a takeover is under way, this process is
    /// taking another's clients, or the new process of a takeover given up still serves
    /// clients beside this one.
    pub fn open_offers(&self, offers: mpsc::Sender<Offer>) -> bool {
        let mut slot = lock(&self.offers);
        let busy = slot.is_some() || self.taking_over() || lock(&self.cancels_to_peer).is_some();
        if !busy {
            *slot = Some(offers);
        }
        !busy
    }

    /// Sessions offering from now on stay here.
    pub fn close_offers(&self) {
        *lock(&self.offers) = None;
    }

    /// The old process, once the new one accepts in its place: it stops accepting, and the
    /// socket file is the new process's (left in place if this one exits), unless the
    /// takeover is undone.
    pub fn step_aside(&self) {
        self.socket_file_ours.store(false, Ordering::Release);
        self.accepting.send_replace(false);
    }

    /// The old process, when its takeover is given up: it accepts again and keeps its socket
    /// file. Returns where cancels for the new process's clients wait, while it serves some.
    pub fn take_back(&self) -> mpsc::Receiver<(u32, u32)> {
        let cancels = self.line_to_peer();
        self.socket_file_ours.store(true, Ordering::Release);
        self.accepting.send_replace(true);
        cancels
    }

    /// The new process, when its takeover ends.
    pub fn end_taking_over(&self, ended: TakingOverEnded) {
        self.taking_over.store(false, Ordering::Release);
        match ended {
            TakingOverEnded::Alone => {
                self.cut_line_to_peer();
                self.socket_file_ours.store(true, Ordering::Release);
            }
            TakingOverEnded::GivenUp => {
                self.accepting.send_replace(false);
                self.forget_listeners();
            }
        }
    }

    /// Where cancels for the other process of a takeover given up wait, installed before
    /// this process serves beside it.
    fn line_to_peer(&self) -> mpsc::Receiver<(u32, u32)> {
        let (to_peer, cancels) = mpsc::channel(CANCEL_QUEUE);
        *lock(&self.cancels_to_peer) = Some(to_peer);
        cancels
    }

    /// The other process is gone: cancels for keys this one does not hold go nowhere.
    pub fn cut_line_to_peer(&self) {
        *lock(&self.cancels_to_peer) = None;
    }
}
