//! A fleet of pgmux processes sharing one address (so_reuseport) or behind one load balancer:
//! the cancel key of every client carries its process's peer_id (see `cancel`), and a cancel
//! that reaches another process is forwarded to the one that owns the key.

use crate::address::Address;
use crate::cancel::{peer_of, ServerKey, HOPS_MASK};
use crate::config::{Config, Peer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// Cancels that may wait for a peer per place in its pool_size; more are dropped.
const WAITING_PER_PLACE: usize = 4;

/// Where a CancelRequest goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One of this process's clients (or nobody's).
    Here,
    /// Another process's: forward it with one hop fewer.
    Forward { peer: u16, secret: u32 },
    /// Passed around too often already.
    Drop,
}

pub fn route(config: &Config, pid: u32, secret: u32) -> Route {
    let own = config.general.peer_id;
    let owner = peer_of(pid);
    if own == 0 || owner == own || !config.peers.contains_key(&owner) {
        return Route::Here;
    }
    match secret & HOPS_MASK {
        0 => Route::Drop,
        hops => Route::Forward {
            peer: owner,
            secret: (secret & !HOPS_MASK) | (hops - 1),
        },
    }
}

/// Where a peer listens, when its host is a socket directory or an address; a host name is
/// resolved when a cancel is forwarded.
pub fn address(peer: &Peer) -> Option<Address> {
    if let Some(dir) = crate::address::socket_dir(&peer.host) {
        return Some(Address::unix_socket(dir, peer.port));
    }
    let ip: std::net::IpAddr = peer.host.parse().ok()?;
    Some(Address::Tcp((ip, peer.port).into()))
}

/// Forwarded cancels in flight per peer, bounded by the peer's pool_size, and what SHOW
/// PEER_POOLS reports of them.
#[derive(Default)]
pub struct PeerPools {
    pools: Mutex<HashMap<u16, Arc<PeerPool>>>,
}

pub struct PeerPool {
    /// The pool_size it was made with: a reload that changes it makes a new pool.
    size: usize,
    turns: Semaphore,
    /// Cancels being forwarded now.
    pub active: AtomicUsize,
    /// Cancels waiting for a turn.
    pub waiting: AtomicUsize,
}

impl PeerPools {
    fn pool(&self, id: u16, size: usize) -> Arc<PeerPool> {
        let mut pools = crate::sync::lock(&self.pools);
        match pools.get(&id) {
            Some(pool) if pool.size == size => pool.clone(),
            // New, or resized by a reload: cancels in flight finish in the old one.
            _ => {
                let pool = Arc::new(PeerPool {
                    size,
                    turns: Semaphore::new(size.max(1)),
                    active: AtomicUsize::new(0),
                    waiting: AtomicUsize::new(0),
                });
                pools.insert(id, pool.clone());
                pool
            }
        }
    }

    /// (peer_id, active, waiting) for every peer a cancel was forwarded to.
    pub fn snapshot(&self) -> Vec<(u16, usize, usize)> {
        let pools = crate::sync::lock(&self.pools);
        let mut rows: Vec<_> = pools
            .iter()
            .map(|(id, p)| {
                (
                    *id,
                    p.active.load(Ordering::Relaxed),
                    p.waiting.load(Ordering::Relaxed),
                )
            })
            .collect();
        rows.sort();
        rows
    }

    /// Forwards a cancel to `peer`, at most its pool_size at once. A cancel that cannot be
    /// on its way within the time a cancel may take is dropped: late, it could stop the
    /// client's next statement instead; and a flood of them (anyone may send one) holds no
    /// more than a few waiting per place.
    pub async fn forward(&self, config: &Config, peer: u16, pid: u32, secret: u32) {
        let Some(target) = config.peers.get(&peer) else {
            return;
        };
        let size = target.pool_size.unwrap_or(config.general.default_pool_size) as usize;
        let pool = self.pool(peer, size);
        if pool.waiting.load(Ordering::Relaxed) >= size.max(1) * WAITING_PER_PLACE {
            tracing::warn!(peer, "too many cancels waiting for their peer: dropped");
            return;
        }
        let forwarded = tokio::time::timeout(crate::cancel::CANCEL_DELIVERY_TIMEOUT, async {
            pool.waiting.fetch_add(1, Ordering::Relaxed);
            let turn = pool.turns.acquire().await;
            pool.waiting.fetch_sub(1, Ordering::Relaxed);
            let Ok(_turn) = turn else {
                return Ok(());
            };
            pool.active.fetch_add(1, Ordering::Relaxed);
            let delivered = deliver(target, pid, secret).await;
            pool.active.fetch_sub(1, Ordering::Relaxed);
            delivered
        })
        .await;
        match forwarded {
            Ok(Ok(())) => tracing::debug!(peer, "cancel forwarded to its peer"),
            Ok(Err(e)) => tracing::warn!(peer, error = %e, "cannot forward a cancel to its peer"),
            Err(_) => tracing::warn!(peer, "a cancel could not reach its peer in time: dropped"),
        }
    }
}

/// Sends the CancelRequest to the peer (the caller bounds the time, the name lookup included).
async fn deliver(peer: &Peer, pid: u32, secret: u32) -> std::io::Result<()> {
    let addr = match address(peer) {
        Some(addr) => addr,
        None => {
            let mut found = tokio::net::lookup_host((peer.host.as_str(), peer.port)).await?;
            let addr = found.next().ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "peer host not found")
            })?;
            Address::Tcp(addr)
        }
    };
    crate::cancel::deliver(ServerKey { addr, pid, secret }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel::{new_key, registered_key};

    fn fleet(own: u16) -> Config {
        let text = format!(
            "[pgmux]\npeer_id = {own}\n[peers.1]\nhost = \"/run/a\"\n[peers.2]\nhost = \"10.0.0.2\"\nport = 7000\n"
        );
        Config::parse(&text, std::path::Path::new(".")).unwrap()
    }

    #[test]
    fn keys_carry_their_peer_and_route_to_it() {
        for _ in 0..100 {
            let (pid, secret) = new_key(2);
            assert_eq!(peer_of(pid), 2);
            assert_eq!(pid >> 31, 0, "sign bit clear");
            assert_eq!(route(&fleet(2), pid, secret), Route::Here);
            let Route::Forward { peer, secret: fwd } = route(&fleet(1), pid, secret) else {
                panic!("forwarded");
            };
            assert_eq!(peer, 2);
            // At the owner, the forwarded key is the key it registered.
            assert_eq!(registered_key(2, pid, fwd), (pid, secret));
        }
    }

    #[test]
    fn the_peer_id_sits_in_key_bytes_1_and_2_as_pgbouncer_writes_it() {
        let (pid, _) = new_key(0x1234);
        let key = pid.to_be_bytes();
        assert_eq!((key[1], key[2]), (0x34, 0x12));
        assert_eq!(peer_of(pid), 0x1234);
    }

    #[test]
    fn a_cancel_passed_around_runs_out_of_hops() {
        let (pid, mut secret) = new_key(2);
        let mut hops = 0;
        while let Route::Forward { secret: next, .. } = route(&fleet(1), pid, secret) {
            secret = next;
            hops += 1;
        }
        assert_eq!(hops, 3);
        assert_eq!(route(&fleet(1), pid, secret), Route::Drop);
    }

    #[test]
    fn peers_are_reached_by_socket_directory_or_address() {
        let config = fleet(1);
        let shown = |id| address(&config.peers[&id]).map(|a| a.to_string());
        assert_eq!(shown(1).as_deref(), Some("/run/a/.s.PGSQL.6432"));
        assert_eq!(shown(2).as_deref(), Some("10.0.0.2:7000"));
    }
}
