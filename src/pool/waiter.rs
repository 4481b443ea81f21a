//! A client's place in a pool's wait queue. A session makes one and reuses it for every wait:
//! when most transactions wait their turn (many clients on a small pool), a channel and a timer
//! per wait cost more than the hand-over itself.
//!
//! The queue holds a [`Ticket`]; whoever frees a server or a slot pops the longest waiter's ticket
//! and sends it a [`Grant`]. A wait that is given up (its client killed or gone) marks the ticket
//! abandoned: a later send is refused, exactly like a closed channel, and a grant that arrived
//! just before is dropped, which hands the server or slot back to the pool.

use super::{lock, Grant};
use atomic_waker::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

#[derive(Default)]
struct Slot {
    state: Mutex<State>,
    waker: AtomicWaker,
    /// query_wait_timeout for this client: the pool's janitor fails a wait older than this.
    limit: Option<Duration>,
}

#[derive(Default)]
struct State {
    grant: Option<Grant>,
    abandoned: bool,
}

/// What the queue holds for a waiting client.
#[derive(Clone)]
pub(super) struct Ticket(Arc<Slot>);

impl Ticket {
    /// Hands `grant` to the waiter; gives it back if the waiter gave up.
    pub(super) fn send(&self, grant: Grant) -> Result<(), Grant> {
        let mut state = lock(&self.0.state);
        if state.abandoned {
            return Err(grant);
        }
        debug_assert!(state.grant.is_none(), "one grant per wait");
        state.grant = Some(grant);
        drop(state);
        self.0.waker.wake();
        Ok(())
    }

    /// Whether the waiter gave up.
    pub(super) fn is_closed(&self) -> bool {
        lock(&self.0.state).abandoned
    }

    /// How long this waiter may wait, if bounded.
    pub(super) fn limit(&self) -> Option<Duration> {
        self.0.limit
    }
}

/// A client's reusable place in line. Made on the first wait: a client that never waits
/// (an idle one, or one whose pool always has a server free) holds none.
pub struct Waiter {
    slot: Option<Arc<Slot>>,
    limit: Option<Duration>,
}

impl Waiter {
    /// A waiter whose waits fail after `limit` (query_wait_timeout), if given.
    pub fn new(limit: Option<Duration>) -> Waiter {
        Waiter { slot: None, limit }
    }

    /// The ticket for the next wait. A ticket given up on may still sit in a queue, so it is
    /// never reused.
    pub(super) fn ticket(&mut self) -> Ticket {
        let usable = self
            .slot
            .as_ref()
            .is_some_and(|slot| !lock(&slot.state).abandoned);
        if !usable {
            self.slot = Some(Arc::new(Slot {
                limit: self.limit,
                ..Slot::default()
            }));
        }
        Ticket(self.slot.clone().expect("made above"))
    }

    /// Resolves with the grant sent to the ticket last taken.
    pub(super) fn turn(&self) -> Turn<'_> {
        Turn {
            slot: self
                .slot
                .as_deref()
                .expect("a ticket was taken for this wait"),
            done: false,
        }
    }
}

/// The future of [`Waiter::turn`]; dropping it before it resolves gives up the wait.
pub(super) struct Turn<'a> {
    slot: &'a Slot,
    done: bool,
}

impl Future for Turn<'_> {
    type Output = Grant;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Grant> {
        if let Some(grant) = lock(&self.slot.state).grant.take() {
            self.done = true;
            return Poll::Ready(grant);
        }
        self.slot.waker.register(cx.waker());
        // A grant sent between the check and the registration found no waker to wake.
        match lock(&self.slot.state).grant.take() {
            Some(grant) => {
                self.done = true;
                Poll::Ready(grant)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let stale = {
            let mut state = lock(&self.slot.state);
            state.abandoned = true;
            state.grant.take()
        };
        // Dropped outside the lock: a server goes back to its pool, a slot is released.
        drop(stale);
    }
}
