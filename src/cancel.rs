//! Cancellation: the keys pgmux gives clients (a fleet's peer_id inside, laid out as PgBouncer
//! lays it out), and the map from each key to the server running that client's query now. A link stays until every cancel in flight for it has been delivered, so a late
//! cancel can never reach the next client's query on the same server.

use crate::address::Address;
use crate::sync::lock;
use bytes::{BufMut, BytesMut};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Notify;

/// The low bits of the secret count the hops a forwarded cancel may still make, so that two
/// processes that each think the other owns a key cannot pass it back and forth for ever.
pub const HOPS_MASK: u32 = 0b11;

/// A fresh cancel key for a client of the process with `peer_id` (0: no peering). The pid's
/// sign bit is clear, as PgBouncer keeps it (pg_basebackup reads the pid as signed).
pub fn new_key(peer_id: u16) -> (u32, u32) {
    let (pid, secret): (u32, u32) = rand::random();
    let pid = pid & 0x7fff_ffff;
    match peer_id {
        0 => (pid, secret),
        id => {
            // Key byte 1 (the pid's second byte) holds the id's low byte, byte 2 its high
            // byte, as PgBouncer writes them.
            let id = u32::from(id);
            let pid = (pid & 0xff00_00ff) | ((id & 0xff) << 16) | ((id >> 8) << 8);
            (pid, secret | HOPS_MASK)
        }
    }
}

/// The peer_id inside a key's pid.
pub fn peer_of(pid: u32) -> u16 {
    (((pid >> 16) & 0xff) | (((pid >> 8) & 0xff) << 8)) as u16
}

/// The key as this process registered it: the hops a forwarded cancel used up do not count.
pub fn registered_key(peer_id: u16, pid: u32, secret: u32) -> (u32, u32) {
    match peer_id {
        0 => (pid, secret),
        _ => (pid, secret | HOPS_MASK),
    }
}

/// How long a cancel may take to reach PostgreSQL before it is dropped.
pub const CANCEL_DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The server a client is linked to: its address and backend key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerKey {
    pub addr: Address,
    pub pid: u32,
    pub secret: u32,
}

#[derive(Default)]
struct SlotState {
    linked: Option<ServerKey>,
    in_flight: u32,
    /// A cancel failed or timed out after it may have reached PostgreSQL: it could still
    /// interrupt whatever that server runs next.
    doubtful: bool,
}

/// One client's cancel link.
#[derive(Default)]
pub struct CancelSlot {
    state: Mutex<SlotState>,
    delivered: Notify,
}

impl CancelSlot {
    pub fn link(&self, key: ServerKey) {
        lock(&self.state).linked = Some(key);
    }

    /// Unlinks, first waiting for cancels in flight to be delivered. Returns true when a cancel
    /// may still land on the server later: the server must then be closed, not pooled.
    pub async fn unlink(&self) -> bool {
        loop {
            {
                let mut s = lock(&self.state);
                if s.in_flight == 0 {
                    s.linked = None;
                    return std::mem::take(&mut s.doubtful);
                }
            }
            self.delivered.notified().await;
        }
    }

    /// Takes the linked server for a cancel, counting it in flight.
    fn begin_cancel(&self) -> Option<ServerKey> {
        let mut s = lock(&self.state);
        let key = s.linked.clone()?;
        s.in_flight += 1;
        Some(key)
    }

    fn end_cancel(&self, delivered: bool) {
        let mut s = lock(&self.state);
        s.in_flight -= 1;
        s.doubtful |= !delivered;
        drop(s);
        self.delivered.notify_one();
    }
}

/// Every logged-in client's key and slot.
#[derive(Default)]
pub struct Cancels {
    map: Mutex<HashMap<(u32, u32), Arc<CancelSlot>>>,
}

impl Cancels {
    /// Registers a client under a fresh random key that carries `peer_id` (0: no peering).
    pub fn register(&self, peer_id: u16) -> ((u32, u32), Arc<CancelSlot>) {
        let slot = Arc::new(CancelSlot::default());
        let mut map = lock(&self.map);
        loop {
            let key = new_key(peer_id);
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(key) {
                e.insert(slot.clone());
                return (key, slot);
            }
        }
    }

    /// Registers a client moved here by a takeover under the key it already has; None if a
    /// client of this process holds that key.
    pub fn adopt(&self, key: (u32, u32)) -> Option<Arc<CancelSlot>> {
        let slot = Arc::new(CancelSlot::default());
        match lock(&self.map).entry(key) {
            std::collections::hash_map::Entry::Vacant(e) => Some(e.insert(slot).clone()),
            std::collections::hash_map::Entry::Occupied(_) => None,
        }
    }

    pub fn unregister(&self, key: (u32, u32)) {
        lock(&self.map).remove(&key);
    }

    /// Handles a CancelRequest: forwards it to the server the client is linked to, if any.
    /// False when no client here has the key.
    pub async fn cancel(&self, pid: u32, secret: u32) -> bool {
        let Some(slot) = lock(&self.map).get(&(pid, secret)).cloned() else {
            return false;
        };
        let Some(server) = slot.begin_cancel() else {
            tracing::debug!("cancel request for a client holding no server dropped");
            return true;
        };
        let delivered = match tokio::time::timeout(CANCEL_DELIVERY_TIMEOUT, deliver(server.clone()))
            .await
        {
            Ok(Ok(())) => {
                tracing::debug!(server = %server.addr, "cancel delivered");
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(server = %server.addr, error = %e, "cancel failed; its server will be closed");
                false
            }
            Err(_) => {
                tracing::warn!(server = %server.addr, "cancel timed out; its server will be closed");
                false
            }
        };
        slot.end_cancel(delivered);
        true
    }
}

/// Sends the CancelRequest and waits for PostgreSQL to close the connection, which it does once
/// the signal has been sent to the backend.
pub async fn deliver(server: ServerKey) -> std::io::Result<()> {
    let mut packet = BytesMut::with_capacity(16);
    packet.put_u32(16);
    packet.put_u32(80_877_102);
    packet.put_u32(server.pid);
    packet.put_u32(server.secret);
    match &server.addr {
        Address::Tcp(addr) => send_and_wait(TcpStream::connect(addr).await?, &packet).await,
        Address::Unix { path, .. } => {
            send_and_wait(UnixStream::connect(path).await?, &packet).await
        }
    }
}

async fn send_and_wait(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    packet: &[u8],
) -> std::io::Result<()> {
    stream.write_all(packet).await?;
    let mut sink = [0u8; 64];
    while stream.read(&mut sink).await? > 0 {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unlink_waits_for_cancel_in_flight() {
        let slot = Arc::new(CancelSlot::default());
        let key = ServerKey {
            addr: "127.0.0.1:1".parse().unwrap(),
            pid: 1,
            secret: 2,
        };
        slot.link(key.clone());
        assert_eq!(slot.begin_cancel(), Some(key));
        let unlinker = tokio::spawn({
            let slot = slot.clone();
            async move { slot.unlink().await }
        });
        tokio::task::yield_now().await;
        assert!(!unlinker.is_finished());
        assert!(
            lock(&slot.state).linked.is_some(),
            "still linked while in flight"
        );
        slot.end_cancel(true);
        assert!(
            !unlinker.await.unwrap(),
            "delivered: the server may be pooled"
        );
        assert_eq!(slot.begin_cancel(), None, "unlinked after delivery");
    }

    #[tokio::test]
    async fn a_cancel_that_may_land_late_closes_its_server() {
        let slot = CancelSlot::default();
        slot.link(ServerKey {
            addr: "127.0.0.1:1".parse().unwrap(),
            pid: 1,
            secret: 2,
        });
        assert!(slot.begin_cancel().is_some());
        slot.end_cancel(false);
        assert!(slot.unlink().await, "doubtful: close the server");
        slot.link(ServerKey {
            addr: "127.0.0.1:1".parse().unwrap(),
            pid: 3,
            secret: 4,
        });
        assert!(!slot.unlink().await, "the next server starts clean");
    }

    #[tokio::test]
    async fn unknown_and_unlinked_keys_are_dropped() {
        let cancels = Cancels::default();
        let ((pid, secret), _slot) = cancels.register(0);
        cancels.cancel(pid, secret).await;
        cancels.cancel(pid ^ 1, secret).await;
        cancels.unregister((pid, secret));
        assert!(lock(&cancels.map).is_empty());
    }
}
