//! One table per SHOW command, with PgBouncer's column names, types and order (as its code sends
//! them), read from pool snapshots and statistics. Never on the hot path.

use crate::shared::Shared;
use crate::stats::Totals;
use std::collections::BTreeMap;

pub const TEXT: u32 = 25;
pub const INT4: u32 = 23;
pub const INT8: u32 = 20;
pub const NUMERIC: u32 = 1700;

/// A result set: columns (name, type OID) and rows of text values (None = NULL).
pub struct Table {
    pub columns: Vec<(&'static str, u32)>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub(super) fn new(columns: &[(&'static str, u32)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, values: Vec<String>) {
        debug_assert_eq!(values.len(), self.columns.len());
        self.rows.push(values.into_iter().map(Some).collect());
    }
}

/// PgBouncer SHOWs the console knows but does not answer (yet).
pub const NOT_YET: [&str; 3] = ["SOCKETS", "ACTIVE_SOCKETS", "FDS"];

/// Every SHOW the console answers: what the test of SHOW HELP checks it against.
#[cfg(test)]
pub const SHOWS: [&str; 16] = [
    "POOLS",
    "STATS",
    "STATS_TOTALS",
    "STATS_AVERAGES",
    "TOTALS",
    "DATABASES",
    "USERS",
    "CONFIG",
    "LISTS",
    "STATE",
    "VERSION",
    "CLIENTS",
    "SERVERS",
    "MEM",
    "PEERS",
    "PEER_POOLS",
];

/// The table for `SHOW what`, or None if there is no such SHOW.
pub fn show(shared: &Shared, what: &str) -> Option<Table> {
    Some(match what {
        "POOLS" => pools(shared),
        "STATS" => stats(shared),
        "STATS_TOTALS" => stats_totals(shared),
        "STATS_AVERAGES" => stats_averages(shared),
        "TOTALS" => totals(shared),
        "DATABASES" => databases(shared),
        "USERS" => users(shared),
        "CONFIG" => config(shared),
        "LISTS" => lists(shared),
        "STATE" => state(shared),
        "VERSION" => version(),
        "CLIENTS" => super::sockets::clients(shared),
        "SERVERS" => super::sockets::servers(shared),
        "MEM" => mem(shared),
        "PEERS" => super::peers::peers(shared),
        "PEER_POOLS" => super::peers::peer_pools(shared),
        _ => return None,
    })
}

fn pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", TEXT),
        ("user", TEXT),
        ("cl_active", INT4),
        ("cl_waiting", INT4),
        ("cl_active_cancel_req", INT4),
        ("cl_waiting_cancel_req", INT4),
        ("sv_active", INT4),
        ("sv_active_cancel", INT4),
        ("sv_being_canceled", INT4),
        ("sv_idle", INT4),
        ("sv_used", INT4),
        ("sv_tested", INT4),
        ("sv_login", INT4),
        ("maxwait", INT4),
        ("maxwait_us", INT4),
        ("pool_mode", TEXT),
        ("load_balance_hosts", TEXT),
    ]);
    for p in shared.pools.all().iter().map(|p| p.snapshot()) {
        let active = p.servers.saturating_sub(p.idle + p.connecting);
        t.row(vec![
            p.database,
            p.user,
            p.clients.saturating_sub(p.waiting).to_string(),
            p.waiting.to_string(),
            "0".into(),
            "0".into(),
            active.to_string(),
            "0".into(),
            "0".into(),
            p.idle.to_string(),
            "0".into(),
            "0".into(),
            p.connecting.to_string(),
            p.max_wait.as_secs().to_string(),
            p.max_wait.subsec_micros().to_string(),
            p.mode.to_owned(),
            String::new(),
        ]);
    }
    t
}

fn totals_by_database(shared: &Shared) -> BTreeMap<String, Totals> {
    shared.totals_by_database()
}

fn averages_by_database(shared: &Shared) -> BTreeMap<String, Totals> {
    let averages = shared.stats_averages();
    totals_by_database(shared)
        .into_keys()
        .map(|db| {
            let a = averages.get(&db).copied().unwrap_or_default();
            (db, a)
        })
        .collect()
}

/// Reads one counter of a [`Totals`].
type Get = fn(&Totals) -> u64;

/// One counter of the SHOW STATS family, with the name each command gives it. The getter and
/// every name sit together, so no column list can fall out of step with the values.
struct Counter {
    get: Get,
    /// SHOW STATS: the total's column and the average's.
    stats: (&'static str, &'static str),
    /// SHOW STATS_TOTALS, and SHOW STATS_AVERAGES (PgBouncer's own mix of prefixes, kept so
    /// exporters find what they expect).
    stats_totals: &'static str,
    stats_averages: &'static str,
    /// SHOW TOTALS, after `total_` or `avg_`.
    totals: &'static str,
}

/// PgBouncer's twelve counters, in its order.
const COUNTERS: [Counter; 12] = [
    Counter {
        get: |t| t.server_assignment_count,
        stats: (
            "total_server_assignment_count",
            "avg_server_assignment_count",
        ),
        stats_totals: "server_assignment_count",
        stats_averages: "server_assignment_count",
        totals: "server_assignment_count",
    },
    Counter {
        get: |t| t.xact_count,
        stats: ("total_xact_count", "avg_xact_count"),
        stats_totals: "xact_count",
        stats_averages: "xact_count",
        totals: "xact_count",
    },
    Counter {
        get: |t| t.query_count,
        stats: ("total_query_count", "avg_query_count"),
        stats_totals: "query_count",
        stats_averages: "query_count",
        totals: "query_count",
    },
    Counter {
        get: |t| t.bytes_received,
        stats: ("total_received", "avg_recv"),
        stats_totals: "bytes_received",
        stats_averages: "bytes_received",
        totals: "client_bytes",
    },
    Counter {
        get: |t| t.bytes_sent,
        stats: ("total_sent", "avg_sent"),
        stats_totals: "bytes_sent",
        stats_averages: "bytes_sent",
        totals: "server_bytes",
    },
    Counter {
        get: |t| t.xact_time_us,
        stats: ("total_xact_time", "avg_xact_time"),
        stats_totals: "xact_time",
        stats_averages: "xact_time",
        totals: "xact_time",
    },
    Counter {
        get: |t| t.query_time_us,
        stats: ("total_query_time", "avg_query_time"),
        stats_totals: "query_time",
        stats_averages: "query_time",
        totals: "query_time",
    },
    Counter {
        get: |t| t.wait_time_us,
        stats: ("total_wait_time", "avg_wait_time"),
        stats_totals: "wait_time",
        stats_averages: "wait_time",
        totals: "wait_time",
    },
    Counter {
        get: |t| t.client_parse_count,
        stats: ("total_client_parse_count", "avg_client_parse_count"),
        stats_totals: "client_parse_count",
        stats_averages: "avg_client_parse_count",
        totals: "ps_client_parse_count",
    },
    Counter {
        get: |t| t.server_parse_count,
        stats: ("total_server_parse_count", "avg_server_parse_count"),
        stats_totals: "server_parse_count",
        stats_averages: "avg_server_parse_count",
        totals: "ps_server_parse_count",
    },
    Counter {
        get: |t| t.bind_count,
        stats: ("total_bind_count", "avg_bind_count"),
        stats_totals: "bind_count",
        stats_averages: "avg_bind_count",
        totals: "ps_bind_count",
    },
    Counter {
        get: |t| t.client_login_count,
        stats: ("total_client_login_count", "avg_client_login_count"),
        stats_totals: "client_login_count",
        stats_averages: "avg_client_login_count",
        totals: "client_login_count",
    },
];

/// pgmux's own columns of SHOW STATS, after PgBouncer's: the prepared-statement cache's hits,
/// misses (Parses sent to servers) and evictions, total then average.
const CACHE_COUNTERS: [(Get, &str, &str); 3] = [
    (
        |t| t.prepared_hit_count,
        "total_prepared_hits",
        "avg_prepared_hits",
    ),
    (
        |t| t.server_parse_count,
        "total_prepared_misses",
        "avg_prepared_misses",
    ),
    (
        |t| t.prepared_eviction_count,
        "total_prepared_evictions",
        "avg_prepared_evictions",
    ),
];

fn stats(shared: &Shared) -> Table {
    let mut columns = vec![("database", TEXT)];
    columns.extend(COUNTERS.iter().map(|c| (c.stats.0, NUMERIC)));
    columns.extend(COUNTERS.iter().map(|c| (c.stats.1, NUMERIC)));
    columns.extend(CACHE_COUNTERS.iter().map(|c| (c.1, NUMERIC)));
    columns.extend(CACHE_COUNTERS.iter().map(|c| (c.2, NUMERIC)));
    let mut t = Table::new(&columns);
    let averages = averages_by_database(shared);
    for (db, total) in totals_by_database(shared) {
        let average = &averages[&db];
        let mut row = vec![db.clone()];
        row.extend(COUNTERS.iter().map(|c| (c.get)(&total).to_string()));
        row.extend(COUNTERS.iter().map(|c| (c.get)(average).to_string()));
        row.extend(CACHE_COUNTERS.iter().map(|c| c.0(&total).to_string()));
        row.extend(CACHE_COUNTERS.iter().map(|c| c.0(average).to_string()));
        t.row(row);
    }
    t
}

fn per_database(rows: BTreeMap<String, Totals>, name: fn(&Counter) -> &'static str) -> Table {
    let mut columns = vec![("database", TEXT)];
    columns.extend(COUNTERS.iter().map(|c| (name(c), NUMERIC)));
    let mut t = Table::new(&columns);
    for (db, totals) in rows {
        let mut row = vec![db];
        row.extend(COUNTERS.iter().map(|c| (c.get)(&totals).to_string()));
        t.row(row);
    }
    t
}

fn stats_totals(shared: &Shared) -> Table {
    per_database(totals_by_database(shared), |c| c.stats_totals)
}

fn stats_averages(shared: &Shared) -> Table {
    per_database(averages_by_database(shared), |c| c.stats_averages)
}

fn totals(shared: &Shared) -> Table {
    let mut total = Totals::default();
    totals_by_database(shared)
        .values()
        .for_each(|t| total.add(t));
    let mut average = Totals::default();
    averages_by_database(shared)
        .values()
        .for_each(|t| average.add(t));
    let mut t = Table::new(&[("name", TEXT), ("value", NUMERIC)]);
    for (prefix, of) in [("total", &total), ("avg", &average)] {
        for c in &COUNTERS {
            t.row(vec![
                format!("{prefix}_{}", c.totals),
                (c.get)(of).to_string(),
            ]);
        }
    }
    t
}

fn databases(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", TEXT),
        ("host", TEXT),
        ("port", INT4),
        ("database", TEXT),
        ("force_user", TEXT),
        ("pool_size", INT4),
        ("min_pool_size", INT4),
        ("reserve_pool_size", INT4),
        ("server_lifetime", INT4),
        ("pool_mode", TEXT),
        ("load_balance_hosts", TEXT),
        ("max_connections", INT4),
        ("current_connections", INT4),
        ("max_client_connections", INT4),
        ("current_client_connections", INT4),
        ("paused", INT4),
        ("disabled", INT4),
    ]);
    let config = shared.config();
    let g = &config.general;
    let pools = shared.pools.all();
    let control = shared.control.state();
    // As PgBouncer: the databases listed, then those made from the `*` fallback, not `*`.
    let mut names: Vec<&String> = config
        .databases
        .keys()
        .filter(|n| *n != crate::config::FALLBACK_DATABASE)
        .collect();
    for pool in &pools {
        if config.is_auto_database(&pool.database) && !names.contains(&&pool.database) {
            names.push(&pool.database);
        }
    }
    for name in names {
        let Some(db) = config.database(name) else {
            continue;
        };
        let of_db = pools.iter().filter(|p| &p.database == name);
        let servers: usize = of_db.map(|p| p.snapshot().servers).sum();
        t.row(vec![
            name.clone(),
            config.server_host(db),
            db.port.to_string(),
            db.dbname.clone().unwrap_or_else(|| name.clone()),
            db.user.clone().unwrap_or_default(),
            db.pool_size.unwrap_or(g.default_pool_size).to_string(),
            g.min_pool_size.to_string(),
            g.reserve_pool_size.to_string(),
            (g.server_lifetime as u64).to_string(),
            db.pool_mode.map_or("", |m| m.as_str()).to_owned(),
            String::new(),
            config.max_db_connections(name).to_string(),
            servers.to_string(),
            config.max_db_client_connections(name).to_string(),
            shared.registry.clients_of_database(name).to_string(),
            u8::from(control.is_paused(name)).to_string(),
            u8::from(control.disabled.contains(name)).to_string(),
        ]);
    }
    t
}

fn users(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", TEXT),
        ("pool_size", TEXT),
        ("reserve_pool_size", TEXT),
        ("pool_mode", TEXT),
        ("max_user_connections", INT4),
        ("current_connections", INT4),
        ("max_user_client_connections", INT4),
        ("current_client_connections", INT4),
    ]);
    let config = shared.config();
    let mut names: Vec<&String> = config.users.keys().chain(config.userlist.keys()).collect();
    names.sort();
    names.dedup();
    let pools = shared.pools.all();
    for name in names {
        let user = config.users.get(name);
        let of_user = pools.iter().filter(|p| &p.user == name);
        let servers: usize = of_user.map(|p| p.snapshot().servers).sum();
        t.row(vec![
            name.clone(),
            user.and_then(|u| u.pool_size)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            String::new(),
            user.and_then(|u| u.pool_mode)
                .map_or("", |m| m.as_str())
                .to_owned(),
            config.max_user_connections(name).to_string(),
            servers.to_string(),
            config.max_user_client_connections(name).to_string(),
            shared.registry.clients_of_user(name).to_string(),
        ]);
    }
    t
}

fn config(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("key", TEXT),
        ("value", TEXT),
        ("default", TEXT),
        ("changeable", TEXT),
    ]);
    for s in super::settings::rows(&shared.config().general) {
        let changeable = if s.changeable { "yes" } else { "no" };
        t.row(vec![s.key, s.value, s.default, changeable.into()]);
    }
    t
}

/// PgBouncer's lists, counted as it counts them, from what pgmux has:
/// - databases, users, pools: the rows of SHOW DATABASES, SHOW USERS and SHOW POOLS. PgBouncer
///   also counts its console database and pools; pgmux shows those in none of the three.
/// - peers, peer_pools: the rows of SHOW PEERS and SHOW PEER_POOLS.
/// - dns_*: pgmux has no DNS cache of its own: 0.
/// - free_clients, free_servers: PgBouncer's slab objects freed and kept for reuse. pgmux
///   keeps none (idle servers are in use, as in PgBouncer's count): 0.
/// - used_clients: every client connection open: logging in, in a pool, or on the console
///   (the asking session included), as PgBouncer's live client objects.
/// - login_clients: those still logging in (neither in a pool nor on the console yet).
/// - used_servers: every server connection open: active, idle and still connecting.
fn lists(shared: &Shared) -> Table {
    let mut t = Table::new(&[("list", TEXT), ("items", INT4)]);
    let pools = shared.pools.all();
    let servers: usize = pools.iter().map(|p| p.snapshot().servers).sum();
    let open = shared.clients.load(std::sync::atomic::Ordering::Relaxed);
    let in_pools = shared.registry.all().len();
    let consoles = shared.registry.consoles().len();
    for (name, n) in [
        ("databases", databases(shared).rows.len()),
        ("users", users(shared).rows.len()),
        ("peers", super::peers::peers(shared).rows.len()),
        ("pools", pools.len()),
        ("peer_pools", super::peers::peer_pool_rows(shared).len()),
        ("free_clients", 0),
        // At least those listed: a client is counted open a moment before it is listed.
        ("used_clients", open.max(in_pools + consoles)),
        ("login_clients", open.saturating_sub(in_pools + consoles)),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        t.row(vec![name.into(), n.to_string()]);
    }
    t
}

fn state(shared: &Shared) -> Table {
    let mut t = Table::new(&[("key", TEXT), ("value", TEXT)]);
    let paused = shared.control.state().all_paused;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    for (k, v) in [
        ("active", !paused),
        ("paused", paused),
        ("suspended", false),
    ] {
        t.row(vec![k.into(), yes_no(v).into()]);
    }
    t
}

/// The PgBouncer version whose console pgmux's answers: its SHOW columns and commands.
pub const COMPATIBLE_PGBOUNCER: &str = "1.26.0";

/// `PgBouncer 1.26.0 compatible, pgmux 0.1.0`. PgBouncer prints `PgBouncer 1.25.2`, and
/// exporters and dashboards take the first `x.y.z` (or the word after `PgBouncer`) as the
/// version to gate on, e.g. which SHOW columns to expect. pgmux answers with PgBouncer 1.26's
/// columns, so that version comes first; pgmux's own follows for people.
fn version() -> Table {
    let mut t = Table::new(&[("version", TEXT)]);
    t.row(vec![version_string()]);
    t
}

fn version_string() -> String {
    format!(
        "PgBouncer {COMPATIBLE_PGBOUNCER} compatible, pgmux {}",
        env!("CARGO_PKG_VERSION")
    )
}

/// PgBouncer lists its slab caches; pgmux has none, so it lists what it holds per client, server
/// and pool: `size` is the bytes each starts with (its read buffer, or the pool structure),
/// `used` how many exist, `free` 0, `memtotal` their product. Buffers grow for large messages,
/// so these are floors, not measurements.
fn mem(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", TEXT),
        ("size", INT4),
        ("used", INT4),
        ("free", INT4),
        ("memtotal", INT4),
    ]);
    let pools = shared.pools.all();
    let servers: usize = pools.iter().map(|p| p.snapshot().servers).sum();
    let clients = shared.clients.load(std::sync::atomic::Ordering::Relaxed);
    for (name, size, used) in [
        ("client_cache", crate::connection::CLIENT_BUFFER, clients),
        ("server_cache", crate::server::READ_BUFFER, servers),
        (
            "pool_cache",
            std::mem::size_of::<crate::pool::Pool>(),
            pools.len(),
        ),
    ] {
        t.row(vec![
            name.into(),
            size.to_string(),
            used.to_string(),
            "0".into(),
            (size * used).to_string(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    /// The first `x.y.z` in SHOW VERSION, as exporters read it, is the PgBouncer version whose
    /// columns pgmux returns; pgmux's own comes after.
    #[test]
    fn version_reads_as_the_compatible_pgbouncer() {
        let v = super::version_string();
        let first = v
            .split(|c: char| !c.is_ascii_digit() && c != '.')
            .find(|w| w.split('.').count() == 3 && w.split('.').all(|n| !n.is_empty()));
        assert_eq!(first, Some(super::COMPATIBLE_PGBOUNCER), "{v}");
        assert_eq!(v.split(' ').nth(1), Some(super::COMPATIBLE_PGBOUNCER));
        assert!(v.starts_with("PgBouncer "), "{v}");
        assert!(
            v.ends_with(&format!("pgmux {}", env!("CARGO_PKG_VERSION"))),
            "{v}"
        );
    }
}
