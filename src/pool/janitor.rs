//! The janitor: one task per pool that closes servers past server_lifetime or idle past
//! server_idle_timeout, keeps min_pool_size servers open, and lets clients that waited
//! reserve_pool_timeout use the reserve pool. Every close says why in one debug line.

use super::guard::ConnectSlot;
use super::{lock, Grant, Pool, PooledServer};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often each pool is looked after.
const TICK: Duration = Duration::from_millis(200);

/// A lifetime shortened by up to a fifth at random, so servers opened together do not all
/// close in the same second.
pub(super) fn spread(lifetime: Duration) -> Duration {
    lifetime.mul_f64(1.0 - rand::random::<f64>() * 0.2)
}

pub(super) async fn run(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        end_long_waits(&pool);
        close_expired(&pool);
        grant_reserve(&pool);
        fill_minimum(&pool);
        while pool.serve_waiter_with_room() {}
    }
}

/// Fails the waits longer than their client's query_wait_timeout, as PgBouncer's janitor
/// does: a timer per wait would cost every waiting transaction.
fn end_long_waits(pool: &Arc<Pool>) {
    let now = Instant::now();
    let mut queue = lock(&pool.queue);
    // Longest waiter first, all with the same delay: the first not yet due ends the search.
    for ticket in queue.waiters() {
        if !ticket.notice_if_due(now) {
            break;
        }
    }
    let expired =
        queue.expire_waiters(|_, ticket| ticket.deadline().is_some_and(|deadline| now >= deadline));
    drop(queue);
    for ticket in expired {
        // A waiter that gave up meanwhile has nothing to be told.
        let _ = ticket.send(Grant::TimedOut);
    }
}

fn close_expired(pool: &Arc<Pool>) {
    let settings = pool.settings();
    let health = &settings.health;
    let generation = pool.generation();
    let now = Instant::now();
    let closed = lock(&pool.queue).remove_idle(health.min_size, |conn| {
        let old = conn.expires_at.is_some_and(|at| at <= now) || conn.generation != generation;
        let idle = health
            .idle_timeout
            .is_some_and(|limit| now.duration_since(conn.last_used) >= limit);
        (old || idle, old)
    });
    pool.return_caps(closed.len());
    for mut conn in closed {
        let reason = if conn.generation != generation {
            "config reloaded"
        } else if conn.expires_at.is_some_and(|at| at <= now) {
            "server_lifetime"
        } else {
            "server_idle_timeout"
        };
        tracing::debug!(server = conn.id(), database = %pool.database, reason, "closing server");
        pool.retire(&mut conn);
    }
}

fn grant_reserve(pool: &Arc<Pool>) {
    let settings = pool.settings();
    let health = &settings.health;
    if health.reserve_size == 0 {
        return;
    }
    let Some(waited_since) = Instant::now().checked_sub(health.reserve_timeout) else {
        return;
    };
    loop {
        if !pool.take_caps() {
            return;
        }
        let granted = lock(&pool.queue).grant_reserve(health.reserve_size, waited_since);
        let Some(waiter) = granted else {
            pool.return_caps(1);
            return;
        };
        tracing::debug!(database = %pool.database, "reserve pool used for a waiting client");
        if let Err(Grant::Slot(slot)) = waiter.send(Grant::Slot(ConnectSlot::new(pool.clone()))) {
            // The waiter gave up; its slot is released as the guard drops.
            drop(slot);
        }
    }
}

fn fill_minimum(pool: &Arc<Pool>) {
    let min = pool.settings().health.min_size;
    if min == 0 || !pool.has_credentials() {
        return;
    }
    while lock(&pool.queue).take_for_minimum(min) {
        if !pool.take_caps() {
            lock(&pool.queue).cancel_connect();
            return;
        }
        let pool = pool.clone();
        let slot = ConnectSlot::new(pool.clone());
        tokio::spawn(async move {
            // On success the server goes straight to the idle list through its guard.
            match pool.connect(slot, super::Checkout::FailFast).await {
                Ok(server) => drop::<PooledServer>(server),
                Err(e) => {
                    tracing::debug!(database = %pool.database, error = %e, "min_pool_size connect failed")
                }
            }
        });
    }
}
