//! Pure bookkeeping of one pool: idle connections, how many exist, and who waits, first come first
//! served. Generic over the connection and waiter types so it is tested with plain integers; the
//! caller does all I/O and all channel sends, outside the lock that guards this.

use std::collections::VecDeque;
use std::time::Instant;

/// What a checkout found.
#[derive(Debug, PartialEq, Eq)]
pub enum Take<C> {
    /// An idle connection, now the caller's.
    Idle(C),
    /// Room for one more: the caller connects, and calls [`Queue::release_slot`] if that fails.
    Connect,
    /// At the limit: the caller should wait.
    Full,
}

/// Something to hand to the longest waiter.
#[derive(Debug, PartialEq, Eq)]
pub enum Handoff<C, W> {
    /// Give this connection to the waiter.
    Conn(W, C),
    /// The waiter may open a new connection (a slot was freed for it).
    Slot(W),
    /// Nobody waits and the pool is over its size and reserve (shrunk by a reload): close
    /// this connection; its slot is already freed.
    Surplus(C),
}

#[derive(Debug)]
pub struct Queue<C, W> {
    idle: Vec<C>,
    /// Connections that exist or are being opened, idle ones included.
    total: usize,
    max: usize,
    /// Reserve servers kept open beyond `max` once opened (as PgBouncer keeps them).
    reserve: usize,
    /// Waiters with the time they started waiting, longest first.
    waiters: VecDeque<(Instant, W)>,
}

impl<C, W> Queue<C, W> {
    pub fn new(max: usize) -> Queue<C, W> {
        Queue {
            idle: Vec::new(),
            total: 0,
            max,
            reserve: 0,
            waiters: VecDeque::new(),
        }
    }

    /// Takes the most recently used idle connection, or room for a new one. Waiters queued
    /// earlier always come first: a newcomer gets nothing while anyone waits.
    pub fn take(&mut self) -> Take<C> {
        if !self.waiters.is_empty() {
            return Take::Full;
        }
        if let Some(c) = self.idle.pop() {
            return Take::Idle(c);
        }
        if self.total < self.max {
            self.total += 1;
            return Take::Connect;
        }
        Take::Full
    }

    /// The most recently used idle connection, if nobody waits.
    pub fn take_idle(&mut self) -> Option<C> {
        match self.waiters.is_empty() {
            true => self.idle.pop(),
            false => None,
        }
    }

    /// The waiters, longest first.
    pub fn waiters(&self) -> impl Iterator<Item = &W> {
        self.waiters.iter().map(|(_, w)| w)
    }

    pub fn wait(&mut self, waiter: W, now: Instant) {
        self.waiters.push_back((now, waiter));
    }

    /// A healthy connection comes back: to the longest waiter, to the idle list, or closed if
    /// the pool is over its size and reserve.
    pub fn put_back(&mut self, conn: C) -> Option<Handoff<C, W>> {
        match self.waiters.pop_front() {
            Some((_, w)) => Some(Handoff::Conn(w, conn)),
            None if self.total > self.max + self.reserve => {
                self.total -= 1;
                Some(Handoff::Surplus(conn))
            }
            None => {
                self.idle.push(conn);
                None
            }
        }
    }

    /// A connection was closed, or a connect failed: its slot goes to the longest waiter,
    /// unless the pool is over its size (waiters then get connections as they come back).
    pub fn release_slot(&mut self) -> Option<Handoff<C, W>> {
        if self.total <= self.max {
            if let Some((_, w)) = self.waiters.pop_front() {
                return Some(Handoff::Slot(w));
            }
        }
        self.total -= 1;
        None
    }

    /// Removes waiters that gave up (`gone` says which).
    pub fn forget_waiters(&mut self, gone: impl Fn(&W) -> bool) {
        self.waiters.retain(|(_, w)| !gone(w));
    }

    /// Removes and returns the waiters that `expired` picks, given when each began to wait.
    pub fn expire_waiters(&mut self, expired: impl Fn(Instant, &W) -> bool) -> Vec<W> {
        if !self.waiters.iter().any(|(since, w)| expired(*since, w)) {
            return Vec::new();
        }
        let mut gone = Vec::new();
        let mut kept = VecDeque::with_capacity(self.waiters.len());
        for (since, w) in self.waiters.drain(..) {
            match expired(since, &w) {
                true => gone.push(w),
                false => kept.push_back((since, w)),
            }
        }
        self.waiters = kept;
        gone
    }

    /// Room beyond the pool's size for the longest waiter, if it has waited since before
    /// `waited_since` and the total stays within `max + reserve`.
    pub fn grant_reserve(&mut self, reserve: usize, waited_since: Instant) -> Option<W> {
        let (since, _) = self.waiters.front()?;
        if *since > waited_since || self.total >= self.max + reserve {
            return None;
        }
        self.total += 1;
        self.waiters.pop_front().map(|(_, w)| w)
    }

    /// Changes the pool's size (on reload); a smaller size takes effect as connections come
    /// back or close.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// How many reserve servers may stay open beyond the size.
    pub fn set_reserve(&mut self, reserve: usize) {
        self.reserve = reserve;
    }

    /// Undoes a [`Take::Connect`] whose connection may not be opened after all.
    pub fn cancel_connect(&mut self) {
        self.total -= 1;
    }

    /// When the longest waiter started waiting, if there is room for it to connect.
    pub fn waiter_with_room(&self) -> Option<Instant> {
        let (since, _) = self.waiters.front()?;
        (self.total < self.max).then_some(*since)
    }

    /// Room for the longest waiter to open a connection, within the pool's size.
    pub fn take_for_waiter(&mut self) -> Option<W> {
        if self.total >= self.max {
            return None;
        }
        let (_, w) = self.waiters.pop_front()?;
        self.total += 1;
        Some(w)
    }

    /// Removes the longest-idle connection, freeing its slot.
    pub fn evict_oldest_idle(&mut self) -> Option<C> {
        if self.idle.is_empty() {
            return None;
        }
        self.total -= 1;
        Some(self.idle.remove(0))
    }

    /// Room for one more connection to keep the pool at `min`, when nobody waits.
    pub fn take_for_minimum(&mut self, min: usize) -> bool {
        if self.total < min.min(self.max) && self.waiters.is_empty() {
            self.total += 1;
            true
        } else {
            false
        }
    }

    /// Removes idle connections for which `close` says so, oldest first, never taking the total
    /// below `keep` when `close` allows keeping (`close` returns (close, even_below_keep)).
    pub fn remove_idle(&mut self, keep: usize, close: impl Fn(&C) -> (bool, bool)) -> Vec<C> {
        let mut removed = Vec::new();
        let mut i = 0;
        while i < self.idle.len() {
            let (wanted, forced) = close(&self.idle[i]);
            if wanted && (forced || self.total > keep) {
                removed.push(self.idle.remove(i));
                self.total -= 1;
            } else {
                i += 1;
            }
        }
        removed
    }

    pub fn idle(&self) -> &[C] {
        &self.idle
    }

    /// When the longest waiter started waiting.
    pub fn oldest_waiter(&self) -> Option<Instant> {
        self.waiters.front().map(|(since, _)| *since)
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }
    pub fn total(&self) -> usize {
        self.total
    }
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Removes every idle connection, freeing their slots (for closing them outside the lock).
    pub fn drain_idle(&mut self) -> Vec<C> {
        self.total -= self.idle.len();
        std::mem::take(&mut self.idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_up_to_max_then_waits() {
        let mut q: Queue<u32, &str> = Queue::new(2);
        assert_eq!(q.take(), Take::Connect);
        assert_eq!(q.take(), Take::Connect);
        assert_eq!(q.take(), Take::Full);
        assert_eq!(q.total(), 2);
    }

    #[test]
    fn returned_connection_goes_to_the_longest_waiter() {
        let mut q: Queue<u32, &str> = Queue::new(1);
        assert_eq!(q.take(), Take::Connect);
        q.wait("first", Instant::now());
        q.wait("second", Instant::now());
        assert_eq!(q.put_back(7), Some(Handoff::Conn("first", 7)));
        assert_eq!(q.put_back(7), Some(Handoff::Conn("second", 7)));
        assert_eq!(q.put_back(7), None);
        assert_eq!(q.idle_count(), 1);
        assert_eq!(q.take(), Take::Idle(7));
    }

    #[test]
    fn newcomers_do_not_overtake_waiters() {
        let mut q: Queue<u32, &str> = Queue::new(1);
        assert_eq!(q.take(), Take::Connect);
        q.wait("w", Instant::now());
        assert_eq!(q.take(), Take::Full);
    }

    #[test]
    fn freed_slot_goes_to_a_waiter_or_shrinks_total() {
        let mut q: Queue<u32, &str> = Queue::new(1);
        assert_eq!(q.take(), Take::Connect);
        q.wait("w", Instant::now());
        assert_eq!(q.release_slot(), Some(Handoff::Slot("w")));
        assert_eq!(q.total(), 1, "the waiter now owns the slot");
        assert_eq!(q.release_slot(), None);
        assert_eq!(q.total(), 0);
        assert_eq!(q.take(), Take::Connect);
    }

    #[test]
    fn idle_is_lifo_and_drain_frees_slots() {
        let mut q: Queue<u32, &str> = Queue::new(3);
        for _ in 0..3 {
            assert_eq!(q.take(), Take::Connect);
        }
        q.put_back(1);
        q.put_back(2);
        assert_eq!(q.take(), Take::Idle(2));
        q.put_back(2);
        assert_eq!(q.drain_idle(), vec![1, 2]);
        assert_eq!(q.total(), 1);
    }

    #[test]
    fn reserve_goes_to_waiters_that_waited_long_enough() {
        use std::time::Duration;
        let start = Instant::now();
        let mut q: Queue<u32, &str> = Queue::new(1);
        assert_eq!(q.take(), Take::Connect);
        q.wait("early", start);
        q.wait("late", start + Duration::from_secs(10));
        assert_eq!(
            q.grant_reserve(1, start - Duration::from_secs(1)),
            None,
            "not long enough"
        );
        assert_eq!(q.grant_reserve(1, start), Some("early"));
        assert_eq!(q.total(), 2);
        assert_eq!(
            q.grant_reserve(1, start + Duration::from_secs(20)),
            None,
            "reserve used up"
        );
        assert_eq!(q.grant_reserve(0, start), None);
    }

    #[test]
    fn a_smaller_size_is_enforced_as_connections_come_back() {
        let mut q: Queue<u32, &str> = Queue::new(3);
        for _ in 0..3 {
            assert_eq!(q.take(), Take::Connect);
        }
        q.set_max(1);
        q.wait("w", Instant::now());
        // A closed connection's slot is not reused while over the size.
        assert_eq!(q.release_slot(), None);
        assert_eq!(q.total(), 2);
        // A returning one still serves the waiter...
        assert_eq!(q.put_back(7), Some(Handoff::Conn("w", 7)));
        // ...and once nobody waits, the surplus is closed down to the size.
        assert_eq!(q.put_back(8), Some(Handoff::Surplus(8)));
        assert_eq!(q.total(), 1);
        assert_eq!(q.put_back(9), None);
        assert_eq!(q.idle_count(), 1);
    }

    #[test]
    fn minimum_is_filled_only_when_nobody_waits() {
        let mut q: Queue<u32, &str> = Queue::new(3);
        assert!(q.take_for_minimum(2));
        assert!(q.take_for_minimum(2));
        assert!(!q.take_for_minimum(2));
        assert!(!q.take_for_minimum(0));
        assert!(q.take_for_minimum(5));
        assert!(!q.take_for_minimum(5), "never above the pool size");
    }

    #[test]
    fn remove_idle_respects_keep_unless_forced() {
        let mut q: Queue<u32, &str> = Queue::new(4);
        for _ in 0..4 {
            assert_eq!(q.take(), Take::Connect);
        }
        for c in [1, 2, 3, 4] {
            q.put_back(c);
        }
        // Idle ones (even numbers) may go, but keep 3 in all.
        let removed = q.remove_idle(3, |c| (c % 2 == 0, false));
        assert_eq!(removed, vec![2]);
        // Forced ones (3) go regardless.
        let removed = q.remove_idle(3, |c| (*c == 3, true));
        assert_eq!(removed, vec![3]);
        assert_eq!(q.total(), 2);
        assert_eq!(q.idle_count(), 2);
    }

    #[test]
    fn waiters_blocked_elsewhere_get_room_in_order() {
        let mut q: Queue<u32, &str> = Queue::new(2);
        assert_eq!(q.take(), Take::Connect);
        q.cancel_connect();
        assert_eq!(q.total(), 0);
        let t = Instant::now();
        q.wait("a", t);
        q.wait("b", t);
        assert_eq!(q.waiter_with_room(), Some(t));
        assert_eq!(q.take_for_waiter(), Some("a"));
        assert_eq!(q.take_for_waiter(), Some("b"));
        assert_eq!(q.take_for_waiter(), None);
        assert_eq!(q.total(), 2);
        q.put_back(1);
        q.put_back(2);
        assert_eq!(q.evict_oldest_idle(), Some(1));
        assert_eq!(q.total(), 1);
    }

    #[test]
    fn expired_waiters_leave_the_line_and_the_rest_keep_their_order() {
        let mut q: Queue<u32, (&str, u64)> = Queue::new(1);
        assert_eq!(q.take(), Take::Connect);
        let start = Instant::now();
        q.wait(("a", 10), start);
        q.wait(("b", 1), start);
        q.wait(("c", 10), start);
        q.wait(("d", 1), start);
        let gone = q.expire_waiters(|_, (_, limit)| *limit < 5);
        assert_eq!(gone, [("b", 1), ("d", 1)]);
        assert!(q.expire_waiters(|_, _| false).is_empty());
        assert_eq!(q.put_back(7), Some(Handoff::Conn(("a", 10), 7)));
        assert_eq!(q.waiting(), 1);
    }

    #[test]
    fn gone_waiters_are_forgotten() {
        let mut q: Queue<u32, u32> = Queue::new(1);
        assert_eq!(q.take(), Take::Connect);
        q.wait(1, Instant::now());
        q.wait(2, Instant::now());
        q.forget_waiters(|w| *w == 1);
        assert_eq!(q.waiting(), 1);
        assert_eq!(q.put_back(9), Some(Handoff::Conn(2, 9)));
    }
}
