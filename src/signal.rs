//! Why a session must stop, raised from outside it (KILL, KILL_CLIENT, a draining shutdown)
//! and noticed by the session while it waits on its sockets.
//!
//! One atomic and one waker slot per client. A session waits on it on every read, so it must
//! cost next to nothing to wait on: a `Notify` or a `watch` takes a lock to enqueue and again
//! to dequeue the waiter on every wait.

use atomic_waker::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

/// A reason to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stop {
    /// KILL or KILL_CLIENT: stop now, even in the middle of a transaction.
    Killed = 1,
    /// A shutdown that lets transactions in flight finish: stop when between transactions.
    Draining = 2,
    /// A takeover: hand the client over to the new process when between transactions. Not a
    /// stop for a session that cannot move (TLS, session mode, pinned): it stays until it
    /// leaves or the takeover's deadline kills it.
    Moving = 4,
}

/// The stops raised for one client, and the waker of its session's task.
#[derive(Default)]
pub struct Signal {
    raised: AtomicU8,
    waker: AtomicWaker,
}

impl Signal {
    /// Raises `why` and wakes the session if it waits.
    pub fn raise(&self, why: Stop) {
        self.raised.fetch_or(why as u8, Ordering::Release);
        self.waker.wake();
    }

    /// Takes `why` back (a takeover that failed, or that refused this client).
    pub fn lower(&self, why: Stop) {
        self.raised.fetch_and(!(why as u8), Ordering::Release);
    }

    /// Whether `why` has been raised.
    pub fn is_raised(&self, why: Stop) -> bool {
        self.raised.load(Ordering::Acquire) & why as u8 != 0
    }

    /// The stop that ends a session now: Killed always, Draining only if `draining_counts`.
    pub fn pending(&self, draining_counts: bool) -> Option<Stop> {
        let raised = self.raised.load(Ordering::Acquire);
        if raised & Stop::Killed as u8 != 0 {
            Some(Stop::Killed)
        } else if draining_counts && raised & Stop::Draining as u8 != 0 {
            Some(Stop::Draining)
        } else {
            None
        }
    }

    /// Resolves once [`Signal::pending`] would return a stop. Only the session's own task
    /// waits: the signal keeps one waker.
    pub fn stopped(&self, draining_counts: bool) -> Stopped<'_> {
        Stopped {
            signal: self,
            draining_counts,
            moving_counts: false,
        }
    }

    /// As [`Signal::stopped`] between transactions, and also resolving with `Moving` once a
    /// takeover asks for the client.
    pub fn stopped_or_moving(&self) -> Stopped<'_> {
        Stopped {
            signal: self,
            draining_counts: true,
            moving_counts: true,
        }
    }
}

/// The future of [`Signal::stopped`].
pub struct Stopped<'a> {
    signal: &'a Signal,
    draining_counts: bool,
    moving_counts: bool,
}

impl Stopped<'_> {
    fn ready(&self) -> Option<Stop> {
        match self.signal.pending(self.draining_counts) {
            None if self.moving_counts && self.signal.is_raised(Stop::Moving) => Some(Stop::Moving),
            pending => pending,
        }
    }
}

impl Future for Stopped<'_> {
    type Output = Stop;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Stop> {
        if let Some(stop) = self.ready() {
            return Poll::Ready(stop);
        }
        self.signal.waker.register(cx.waker());
        // A raise between the check and the registration would have found no waker.
        match self.ready() {
            Some(stop) => Poll::Ready(stop),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn kill_always_counts_and_draining_only_when_asked() {
        let s = Signal::default();
        assert_eq!(s.pending(true), None);
        s.raise(Stop::Draining);
        assert_eq!(s.pending(false), None);
        assert_eq!(s.pending(true), Some(Stop::Draining));
        assert!(s.is_raised(Stop::Draining));
        s.raise(Stop::Killed);
        assert_eq!(s.pending(false), Some(Stop::Killed));
        assert_eq!(s.pending(true), Some(Stop::Killed));
    }

    #[test]
    fn moving_counts_only_where_asked_and_can_be_lowered() {
        let s = Signal::default();
        s.raise(Stop::Moving);
        assert_eq!(s.pending(true), None, "moving is no stop by itself");
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut moving = std::pin::pin!(s.stopped_or_moving());
        assert_eq!(moving.as_mut().poll(&mut cx), Poll::Ready(Stop::Moving));
        let mut stopped = std::pin::pin!(s.stopped(true));
        assert_eq!(stopped.as_mut().poll(&mut cx), Poll::Pending);
        s.lower(Stop::Moving);
        assert!(!s.is_raised(Stop::Moving));
        let mut moving = std::pin::pin!(s.stopped_or_moving());
        assert_eq!(moving.as_mut().poll(&mut cx), Poll::Pending);
        s.raise(Stop::Draining);
        assert_eq!(moving.as_mut().poll(&mut cx), Poll::Ready(Stop::Draining));
    }

    #[tokio::test]
    async fn a_waiting_session_wakes_when_raised() {
        let s = Arc::new(Signal::default());
        let raiser = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            raiser.raise(Stop::Draining);
            tokio::time::sleep(Duration::from_millis(20)).await;
            raiser.raise(Stop::Killed);
        });
        assert_eq!(s.stopped(true).await, Stop::Draining);
        // Draining alone does not end a wait that only kills end.
        assert_eq!(s.stopped(false).await, Stop::Killed);
    }
}
