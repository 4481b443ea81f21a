//! Statistics: per-pool counters bumped on the hot path (relaxed atomic adds, no locks) and the
//! per-database averages over `stats_period`. The one source for the SHOW STATS family.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A duration in whole microseconds, the unit of every time counter.
pub fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// Counters of one pool, since start.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub server_assignment_count: AtomicU64,
    pub xact_count: AtomicU64,
    pub query_count: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub xact_time_us: AtomicU64,
    pub query_time_us: AtomicU64,
    pub wait_time_us: AtomicU64,
    pub client_login_count: AtomicU64,
    pub client_parse_count: AtomicU64,
    pub server_parse_count: AtomicU64,
    pub bind_count: AtomicU64,
    pub prepared_hit_count: AtomicU64,
    pub prepared_eviction_count: AtomicU64,
}

impl PoolStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one scan's prepared-statement counts.
    pub fn add_prepared(&self, c: &crate::prepared::Counts) {
        PoolStats::add(&self.client_parse_count, c.client_parses);
        PoolStats::add(&self.server_parse_count, c.server_parses);
        PoolStats::add(&self.bind_count, c.binds);
        PoolStats::add(&self.prepared_hit_count, c.hits);
        PoolStats::add(&self.prepared_eviction_count, c.evictions);
    }

    pub fn totals(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            server_assignment_count: get(&self.server_assignment_count),
            xact_count: get(&self.xact_count),
            query_count: get(&self.query_count),
            bytes_received: get(&self.bytes_received),
            bytes_sent: get(&self.bytes_sent),
            xact_time_us: get(&self.xact_time_us),
            query_time_us: get(&self.query_time_us),
            wait_time_us: get(&self.wait_time_us),
            client_login_count: get(&self.client_login_count),
            client_parse_count: get(&self.client_parse_count),
            server_parse_count: get(&self.server_parse_count),
            bind_count: get(&self.bind_count),
            prepared_hit_count: get(&self.prepared_hit_count),
            prepared_eviction_count: get(&self.prepared_eviction_count),
        }
    }
}

/// A snapshot of counters (one pool's, or a database's summed).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub server_assignment_count: u64,
    pub xact_count: u64,
    pub query_count: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub xact_time_us: u64,
    pub query_time_us: u64,
    pub wait_time_us: u64,
    pub client_login_count: u64,
    pub client_parse_count: u64,
    /// Parses pgmux sent to servers: prepared-statement cache misses.
    pub server_parse_count: u64,
    pub bind_count: u64,
    pub prepared_hit_count: u64,
    pub prepared_eviction_count: u64,
}

impl Totals {
    pub fn add(&mut self, o: &Totals) {
        self.server_assignment_count += o.server_assignment_count;
        self.xact_count += o.xact_count;
        self.query_count += o.query_count;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
        self.xact_time_us += o.xact_time_us;
        self.query_time_us += o.query_time_us;
        self.wait_time_us += o.wait_time_us;
        self.client_login_count += o.client_login_count;
        self.client_parse_count += o.client_parse_count;
        self.server_parse_count += o.server_parse_count;
        self.bind_count += o.bind_count;
        self.prepared_hit_count += o.prepared_hit_count;
        self.prepared_eviction_count += o.prepared_eviction_count;
    }

    /// Averages between `earlier` and `self`, `seconds` apart, as PgBouncer reports them:
    /// counts and bytes per second; times per transaction, query and server assignment.
    pub fn averages_since(&self, earlier: &Totals, seconds: f64) -> Averages {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        let per_second = |n: u64| {
            if seconds > 0.0 {
                (n as f64 / seconds) as u64
            } else {
                0
            }
        };
        let per = |sum: u64, count: u64| sum.checked_div(count).unwrap_or(0);
        let xacts = d(self.xact_count, earlier.xact_count);
        let queries = d(self.query_count, earlier.query_count);
        let assignments = d(
            self.server_assignment_count,
            earlier.server_assignment_count,
        );
        Averages {
            server_assignment_count: per_second(assignments),
            xact_count: per_second(xacts),
            query_count: per_second(queries),
            bytes_received: per_second(d(self.bytes_received, earlier.bytes_received)),
            bytes_sent: per_second(d(self.bytes_sent, earlier.bytes_sent)),
            xact_time_us: per(d(self.xact_time_us, earlier.xact_time_us), xacts),
            query_time_us: per(d(self.query_time_us, earlier.query_time_us), queries),
            wait_time_us: per(d(self.wait_time_us, earlier.wait_time_us), assignments),
            client_login_count: per_second(d(self.client_login_count, earlier.client_login_count)),
            client_parse_count: per_second(d(self.client_parse_count, earlier.client_parse_count)),
            server_parse_count: per_second(d(self.server_parse_count, earlier.server_parse_count)),
            bind_count: per_second(d(self.bind_count, earlier.bind_count)),
            prepared_hit_count: per_second(d(self.prepared_hit_count, earlier.prepared_hit_count)),
            prepared_eviction_count: per_second(d(
                self.prepared_eviction_count,
                earlier.prepared_eviction_count,
            )),
        }
    }
}

/// Averages over the last stats_period.
pub type Averages = Totals;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_are_rates_and_per_event_times() {
        let earlier = Totals::default();
        let now = Totals {
            server_assignment_count: 20,
            xact_count: 10,
            query_count: 40,
            bytes_received: 1000,
            bytes_sent: 3000,
            xact_time_us: 5000,
            query_time_us: 8000,
            wait_time_us: 200,
            client_login_count: 2,
            ..Totals::default()
        };
        let a = now.averages_since(&earlier, 10.0);
        assert_eq!(a.xact_count, 1);
        assert_eq!(a.query_count, 4);
        assert_eq!(a.bytes_sent, 300);
        assert_eq!(a.xact_time_us, 500, "per transaction");
        assert_eq!(a.query_time_us, 200, "per query");
        assert_eq!(a.wait_time_us, 10, "per assignment");
        assert_eq!(
            Totals::default().averages_since(&earlier, 10.0),
            Totals::default()
        );
    }

    #[test]
    fn counters_snapshot_and_sum() {
        let s = PoolStats::default();
        PoolStats::add(&s.xact_count, 3);
        PoolStats::add(&s.bytes_sent, 7);
        let mut t = s.totals();
        t.add(&s.totals());
        assert_eq!((t.xact_count, t.bytes_sent), (6, 14));
    }
}
