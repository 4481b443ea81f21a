//! Pure bookkeeping of one pool: idle connections, how many exist, and who waits, first come first
//! served. Generic over the connection and waiter types so it is tested with plain integers; the
//! caller does all I/O and all channel sends, outside the lock that guards this.

use std::collections::VecDeque;

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
}

#[derive(Debug)]
pub struct Queue<C, W> {
    idle: Vec<C>,
    /// Connections that exist or are being opened, idle ones included.
    total: usize,
    max: usize,
    waiters: VecDeque<W>,
}

impl<C, W> Queue<C, W> {
    pub fn new(max: usize) -> Queue<C, W> {
        Queue {
            idle: Vec::new(),
            total: 0,
            max,
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

    pub fn wait(&mut self, waiter: W) {
        self.waiters.push_back(waiter);
    }

    /// A healthy connection comes back: to the longest waiter, or to the idle list.
    pub fn put_back(&mut self, conn: C) -> Option<Handoff<C, W>> {
        match self.waiters.pop_front() {
            Some(w) => Some(Handoff::Conn(w, conn)),
            None => {
                self.idle.push(conn);
                None
            }
        }
    }

    /// A connection was closed, or a connect failed: its slot goes to the longest waiter.
    pub fn release_slot(&mut self) -> Option<Handoff<C, W>> {
        match self.waiters.pop_front() {
            Some(w) => Some(Handoff::Slot(w)),
            None => {
                self.total -= 1;
                None
            }
        }
    }

    /// Removes waiters that gave up (`gone` says which).
    pub fn forget_waiters(&mut self, gone: impl Fn(&W) -> bool) {
        self.waiters.retain(|w| !gone(w));
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }
    pub fn total(&self) -> usize {
        self.total
    }
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
        q.wait("first");
        q.wait("second");
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
        q.wait("w");
        assert_eq!(q.take(), Take::Full);
    }

    #[test]
    fn freed_slot_goes_to_a_waiter_or_shrinks_total() {
        let mut q: Queue<u32, &str> = Queue::new(1);
        assert_eq!(q.take(), Take::Connect);
        q.wait("w");
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
    fn gone_waiters_are_forgotten() {
        let mut q: Queue<u32, u32> = Queue::new(1);
        assert_eq!(q.take(), Take::Connect);
        q.wait(1);
        q.wait(2);
        q.forget_waiters(|w| *w == 1);
        assert_eq!(q.waiting(), 1);
        assert_eq!(q.put_back(9), Some(Handoff::Conn(2, 9)));
    }
}
