//! Caps on server connections shared by several pools: max_db_connections (one database,
//! all its users) and max_user_connections (one user, all databases). A pool takes a unit of
//! each of its caps for every server it opens and gives it back when the server closes. When a
//! cap is full, an idle server of another pool under it is closed to make room (as PgBouncer
//! does); otherwise the client waits, and freed room goes to the longest waiter under the cap.

use super::guard::ConnectSlot;
use super::{lock, Grant, Pool};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Which setting a cap enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapKind {
    Database,
    User,
}

/// Every database and every user has a cap; one whose setting is 0 has no limit, so a reload
/// can set or lift a limit while servers are open and the count stays right.
pub struct Cap {
    pub kind: CapKind,
    pub label: String,
    max: AtomicUsize,
    open: AtomicUsize,
    pools: Mutex<Vec<Weak<Pool>>>,
}

fn limit(setting: usize) -> usize {
    if setting == 0 {
        usize::MAX
    } else {
        setting
    }
}

impl Cap {
    pub fn new(kind: CapKind, name: &str, setting: usize) -> Cap {
        let label = match kind {
            CapKind::Database => format!("max_db_connections of {name}"),
            CapKind::User => format!("max_user_connections of {name}"),
        };
        Cap {
            kind,
            label,
            max: AtomicUsize::new(limit(setting)),
            open: AtomicUsize::new(0),
            pools: Mutex::new(Vec::new()),
        }
    }

    pub fn set_max(&self, setting: usize) {
        self.max.store(limit(setting), Ordering::Release);
    }

    fn full(&self) -> bool {
        self.open.load(Ordering::Acquire) >= self.max.load(Ordering::Acquire)
    }

    pub fn register(&self, pool: &Arc<Pool>) {
        let mut pools = lock(&self.pools);
        // Pools that were dropped (names that came and went) leave nothing behind.
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(pool));
    }

    fn try_take(&self) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max.load(Ordering::Acquire)).then_some(open + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    fn pools(&self) -> Vec<Arc<Pool>> {
        lock(&self.pools).iter().filter_map(Weak::upgrade).collect()
    }
}

impl Pool {
    /// Takes a unit of every cap over this pool, or none.
    pub(super) fn take_caps(&self) -> bool {
        for (i, cap) in self.caps.iter().enumerate() {
            if !cap.try_take() {
                self.caps[..i].iter().for_each(|c| c.give_back());
                return false;
            }
        }
        true
    }

    /// Gives back the units of `count` closed servers and lets waiters under the caps use them.
    pub(super) fn return_caps(&self, count: usize) {
        if count == 0 || self.caps.is_empty() {
            return;
        }
        for cap in &self.caps {
            (0..count).for_each(|_| cap.give_back());
        }
        for cap in &self.caps {
            wake_longest_waiter(cap);
        }
    }

    /// Closes the longest-idle server of another pool under a full cap of ours.
    pub(super) fn evict_for_caps(&self) -> bool {
        for cap in self.caps.iter().filter(|c| c.full()) {
            for other in cap.pools() {
                if std::ptr::eq(&*other, self) {
                    continue;
                }
                let evicted = lock(&other.queue).evict_oldest_idle();
                if let Some(mut conn) = evicted {
                    tracing::debug!(
                        server = conn.id(),
                        database = %other.database,
                        cap = %cap.label,
                        reason = "evicted to make room under a connection cap",
                        "closing server"
                    );
                    other.retire(&mut conn);
                    other.return_caps(1);
                    return true;
                }
            }
        }
        false
    }

    /// Lets this pool's longest waiter connect if the pool's size and its caps allow (evicting
    /// idle servers of other pools under a full cap). Returns whether a waiter was served.
    pub(super) fn serve_waiter_with_room(self: &Arc<Self>) -> bool {
        if lock(&self.queue).waiter_with_room().is_none() {
            return false;
        }
        let room = self.take_caps() || (self.evict_for_caps() && self.take_caps());
        if !room {
            return false;
        }
        let waiter = lock(&self.queue).take_for_waiter();
        match waiter {
            Some(w) => {
                // A waiter that gave up hands the slot back through the guard's drop.
                let _ = w.send(Grant::Slot(ConnectSlot::new(self.clone())));
                true
            }
            None => {
                self.return_caps(1);
                false
            }
        }
    }
}

/// Gives freed room under `cap` to the pool whose waiter has waited longest.
fn wake_longest_waiter(cap: &Cap) {
    let pools = cap.pools();
    let longest = pools
        .iter()
        .filter_map(|p| lock(&p.queue).waiter_with_room().map(|since| (since, p)))
        .min_by_key(|(since, _)| *since);
    if let Some((_, pool)) = longest {
        if pool.take_caps() {
            let waiter = lock(&pool.queue).take_for_waiter();
            match waiter {
                Some(w) => {
                    let _ = w.send(Grant::Slot(ConnectSlot::new(pool.clone())));
                }
                None => pool.caps.iter().for_each(|c| c.give_back()),
            }
        }
    }
}
