//! SHOW PEERS and SHOW PEER_POOLS: the other processes of a fleet, and the cancels forwarded
//! to them, with PgBouncer's columns.

use super::show::{Table, INT4, TEXT};
use crate::shared::Shared;

/// The other processes of the fleet, as `[peers]` names them (this process's own id left
/// out, as PgBouncer ignores it).
pub(super) fn peers(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("peer_id", INT4),
        ("host", TEXT),
        ("port", INT4),
        ("pool_size", INT4),
    ]);
    let config = shared.config();
    for (id, peer) in &config.peers {
        if *id == config.general.peer_id {
            continue;
        }
        let size = peer.pool_size.unwrap_or(config.general.default_pool_size);
        t.row(vec![
            id.to_string(),
            peer.host.clone(),
            peer.port.to_string(),
            size.to_string(),
        ]);
    }
    t
}

/// Cancels forwarded to each peer: in flight (cl_active_cancel_req, sv_active_cancel) and
/// waiting for a turn (cl_waiting_cancel_req); a forward opens its connection at once, so none
/// is logging in.
pub(super) fn peer_pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("peer_id", INT4),
        ("cl_active_cancel_req", INT4),
        ("cl_waiting_cancel_req", INT4),
        ("sv_active_cancel", INT4),
        ("sv_login", INT4),
    ]);
    for (id, active, waiting) in peer_pool_rows(shared) {
        t.row(vec![
            id.to_string(),
            active.to_string(),
            waiting.to_string(),
            active.to_string(),
            "0".into(),
        ]);
    }
    t
}

/// The peer pools of the peers configured now: one a reload removed is not shown.
pub(super) fn peer_pool_rows(shared: &Shared) -> Vec<(u16, usize, usize)> {
    let config = shared.config();
    let mut rows = shared.peer_pools.snapshot();
    rows.retain(|(id, _, _)| config.peers.contains_key(id));
    rows
}
