//! Online upgrade: a new pgmux process takes the listening sockets and the clients of the
//! running one over its Unix socket, and the old one exits once it holds nothing.
//!
//! - `give.rs`: the running (old) process's side. `take.rs`: the new process's side.
//! - `successor.rs`: starting the new process from the old one (the console's UPGRADE).
//! - The messages, and what the rest of pgmux shares with a takeover under way, are
//!   `handover`'s.
//!
//! It owns the order of a takeover; what a client's state is and how a session starts again
//! from it belongs to `client`, which offers and adopts clients.

mod give;
pub mod successor;
mod take;

pub use give::{give, may_take_over};
pub use take::{receive, request, Adopt, Pending, Taken};

use crate::handover::{channel, wire};
use crate::shared::Shared;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A cancel the other process of a takeover received for a client here: delivered on its own
/// task, so the takeover's line is not held up.
fn deliver_cancel(shared: &Arc<Shared>, pid: u32, secret: u32) {
    let shared = shared.clone();
    tokio::spawn(async move { shared.cancels.cancel(pid, secret).await });
}

/// After a takeover was given up, while both processes serve clients: passes cancels for
/// keys this process does not hold to the other one (`cancels`, from
/// [`Handover::take_back`](crate::handover::Handover::take_back) or
/// [`Handover::begin_taking_over`](crate::handover::Handover::begin_taking_over)), and
/// delivers those it passes here,
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
                    deliver_cancel(&shared, pid, secret)
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
    shared.handover.cut_line_to_peer();
}
