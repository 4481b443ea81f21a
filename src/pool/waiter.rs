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
use std::time::Instant;

#[derive(Default)]
struct Slot {
    state: Mutex<State>,
    waker: AtomicWaker,
}

#[derive(Default)]
struct State {
    grant: Option<Grant>,
    abandoned: bool,
    /// When the current wait fails (query_wait_timeout): the pool's janitor checks it.
    deadline: Option<Instant>,
    /// When the client should be told it waits (query_wait_notify), until the janitor has
    /// found it due; then `notice` wakes the waiter once to tell it.
    notice_at: Option<Instant>,
    notice: bool,
}

/// What a turn at the pool brings: a grant, or the moment to tell the client it waits.
pub enum Waited {
    Granted(Grant),
    /// query_wait_notify passed: tell the client, then wait on (the place in line is kept).
    Notice,
}

/// What the queue holds for a waiting client.
#[derive(Clone)]
pub(super) struct Ticket(Arc<Slot>);

impl Ticket {
    /// Hands `grant` to the waiter; gives it back if the waiter gave up (or, which no path
    /// does, already holds one: a grant is never dropped here, under the slot's lock).
    pub(super) fn send(&self, grant: Grant) -> Result<(), Grant> {
        let mut state = lock(&self.0.state);
        if state.abandoned || state.grant.is_some() {
            return Err(grant);
        }
        state.grant = Some(grant);
        drop(state);
        self.0.waker.wake();
        Ok(())
    }

    /// Whether the waiter gave up.
    pub(super) fn is_closed(&self) -> bool {
        lock(&self.0.state).abandoned
    }

    /// When this wait fails, if it is bounded.
    pub(super) fn deadline(&self) -> Option<Instant> {
        lock(&self.0.state).deadline
    }

    /// Wakes the waiter to tell its client it waits, if query_wait_notify has passed `now`
    /// (once per wait). False while it is not due yet; true once it is, or was, or never will
    /// be (no notice asked for).
    pub(super) fn notice_if_due(&self, now: Instant) -> bool {
        let mut state = lock(&self.0.state);
        match state.notice_at {
            Some(at) if at > now => false,
            Some(_) if !state.abandoned => {
                state.notice_at = None;
                state.notice = true;
                drop(state);
                self.0.waker.wake();
                true
            }
            _ => true,
        }
    }
}

/// A client's reusable place in line. Made on the first wait: a client that never waits
/// (an idle one, or one whose pool always has a server free) holds none.
#[derive(Default)]
pub struct Waiter {
    slot: Option<Arc<Slot>>,
}

impl Waiter {
    /// The ticket for the next wait, which fails at `deadline` and has its client told it
    /// waits at `notice_at`, if given. A ticket given up on may still sit in a queue, so it is
    /// never reused.
    pub(super) fn ticket(
        &mut self,
        deadline: Option<Instant>,
        notice_at: Option<Instant>,
    ) -> Ticket {
        let reusable = self
            .slot
            .as_ref()
            .filter(|slot| !lock(&slot.state).abandoned);
        let slot = match reusable {
            Some(slot) => slot.clone(),
            None => {
                let slot = Arc::new(Slot::default());
                self.slot = Some(slot.clone());
                slot
            }
        };
        {
            let mut state = lock(&slot.state);
            state.deadline = deadline;
            state.notice_at = notice_at;
            state.notice = false;
        }
        Ticket(slot)
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

impl Turn<'_> {
    fn check(&mut self) -> Option<Waited> {
        let mut state = lock(&self.slot.state);
        let waited = match state.grant.take() {
            Some(grant) => Waited::Granted(grant),
            None if std::mem::take(&mut state.notice) => Waited::Notice,
            None => return None,
        };
        // Either way this future is finished; after a notice the ticket stays in line.
        self.done = true;
        Some(waited)
    }
}

impl Future for Turn<'_> {
    type Output = Waited;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Waited> {
        if let Some(waited) = self.check() {
            return Poll::Ready(waited);
        }
        self.slot.waker.register(cx.waker());
        // A grant sent between the check and the registration found no waker to wake.
        match self.check() {
            Some(waited) => Poll::Ready(waited),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_grant_per_wait_and_a_ticket_given_up_on_refuses_grants() {
        let mut waiter = Waiter::default();
        let ticket = waiter.ticket(None, None);
        assert!(ticket.send(Grant::TimedOut).is_ok());
        assert!(matches!(ticket.send(Grant::TimedOut), Err(Grant::TimedOut)));
        assert!(matches!(
            waiter.turn().await,
            Waited::Granted(Grant::TimedOut)
        ));

        // The same slot serves the next wait, with that wait's deadline.
        let deadline = Instant::now() + Duration::from_secs(1);
        let reused = waiter.ticket(Some(deadline), None);
        assert!(Arc::ptr_eq(&ticket.0, &reused.0));
        assert_eq!(reused.deadline(), Some(deadline));

        // A wait given up on: its ticket refuses grants from then on, and is never reused.
        drop(waiter.turn());
        assert!(reused.is_closed());
        assert!(matches!(reused.send(Grant::TimedOut), Err(Grant::TimedOut)));
        let fresh = waiter.ticket(None, None);
        assert!(!Arc::ptr_eq(&reused.0, &fresh.0));
        assert!(!fresh.is_closed() && fresh.deadline().is_none());
    }

    #[tokio::test]
    async fn a_grant_sent_while_waiting_wakes_the_waiter() {
        let mut waiter = Waiter::default();
        let ticket = waiter.ticket(None, None);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(ticket.send(Grant::TimedOut).is_ok());
        });
        let grant = tokio::time::timeout(Duration::from_secs(5), waiter.turn()).await;
        assert!(matches!(grant, Ok(Waited::Granted(Grant::TimedOut))));
    }
}

#[cfg(test)]
mod notice_tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_notice_wakes_the_waiter_once_and_keeps_its_place() {
        let mut waiter = Waiter::default();
        let now = Instant::now();
        let ticket = waiter.ticket(None, Some(now + Duration::from_secs(5)));
        ticket.notice_if_due(now);
        ticket.notice_if_due(now + Duration::from_secs(5));
        assert!(matches!(waiter.turn().await, Waited::Notice));
        ticket.notice_if_due(now + Duration::from_secs(9));
        assert!(!ticket.is_closed(), "still in line after the notice");
        assert!(ticket.send(Grant::TimedOut).is_ok());
        assert!(matches!(
            waiter.turn().await,
            Waited::Granted(Grant::TimedOut)
        ));
    }
}
