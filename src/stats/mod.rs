//! Statistics: per-pool counters and time histograms bumped on the hot path, and the
//! per-database averages over `stats_period`. The one source for the SHOW STATS family and the
//! Prometheus counters and histograms.
//!
//! Every transaction bumps several counters, from whichever worker thread runs its client. One
//! set of atomics per pool would be one cache line that every worker writes on every
//! transaction, moving between cores each time; instead each pool keeps a slot per worker
//! thread (as far as [`slot_count`] goes), each slot on cache lines of its own, and a read sums
//! the slots. A thread's slot is fixed when it first counts.

mod histogram;

pub use histogram::{Histogram, BOUNDS_US};

use histogram::TimeHistogram;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// A duration in whole microseconds, the unit of every time counter.
pub fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

/// What a pool counts, since start; each is a field of [`Totals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    ServerAssignments,
    Transactions,
    Queries,
    BytesReceived,
    BytesSent,
    TransactionTimeUs,
    QueryTimeUs,
    WaitTimeUs,
    ClientLogins,
    ClientParses,
    ServerParses,
    Binds,
    PreparedHits,
    PreparedEvictions,
}

const COUNTERS: usize = Counter::PreparedEvictions as usize + 1;

/// What a pool times, each into a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// From a transaction's first message to the ReadyForQuery that ends it.
    Transaction,
    /// From a query's first client message to the last reply its server owed.
    Query,
    /// A client's wait for a server, one sample per assignment.
    Wait,
}

const TIMINGS: usize = Timing::Wait as usize + 1;

/// One thread's share of a pool's statistics. Aligned to two cache lines, so that no two
/// slots share one (adjacent-line prefetching pairs lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    counters: [AtomicU64; COUNTERS],
    timings: [TimeHistogram; TIMINGS],
}

/// How many slots each pool has: the CPUs rounded up to a power of two, at most 16 (a slot is
/// 512 bytes, so a pool's statistics take at most 8 KiB). pgmux runs half as many workers as
/// CPUs by default; with more threads than slots, threads share slots in turn, which costs
/// some contention and nothing else.
pub fn slot_count() -> usize {
    static SLOTS: OnceLock<usize> = OnceLock::new();
    *SLOTS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus.next_power_of_two().min(16)
    })
}

/// This thread's slot number, taken in turn the first time it counts.
fn this_threads_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) & (slot_count() - 1);
    }
    SLOT.with(|slot| *slot)
}

/// Counters and time histograms of one pool, since start.
#[derive(Debug)]
pub struct PoolStats {
    slots: Box<[Slot]>,
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            slots: (0..slot_count()).map(|_| Slot::default()).collect(),
        }
    }
}

impl PoolStats {
    fn slot(&self) -> &Slot {
        // The slot count is a power of two, and every pool has that many.
        &self.slots[this_threads_slot() & (self.slots.len() - 1)]
    }

    pub fn add(&self, counter: Counter, n: u64) {
        self.slot().counters[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn record(&self, timing: Timing, took: Duration) {
        self.slot().timings[timing as usize].record(took);
    }

    /// Adds one scan's prepared-statement counts.
    pub fn add_prepared(&self, c: &crate::prepared::Counts) {
        let counters = &self.slot().counters;
        let add = |counter: Counter, n: u64| {
            counters[counter as usize].fetch_add(n, Ordering::Relaxed);
        };
        add(Counter::ClientParses, c.client_parses);
        add(Counter::ServerParses, c.server_parses);
        add(Counter::Binds, c.binds);
        add(Counter::PreparedHits, c.hits);
        add(Counter::PreparedEvictions, c.evictions);
    }

    pub fn totals(&self) -> Totals {
        let mut sums = [0u64; COUNTERS];
        for slot in self.slots.iter() {
            for (sum, counter) in sums.iter_mut().zip(&slot.counters) {
                *sum += counter.load(Ordering::Relaxed);
            }
        }
        let get = |counter: Counter| sums[counter as usize];
        Totals {
            server_assignment_count: get(Counter::ServerAssignments),
            xact_count: get(Counter::Transactions),
            query_count: get(Counter::Queries),
            bytes_received: get(Counter::BytesReceived),
            bytes_sent: get(Counter::BytesSent),
            xact_time_us: get(Counter::TransactionTimeUs),
            query_time_us: get(Counter::QueryTimeUs),
            wait_time_us: get(Counter::WaitTimeUs),
            client_login_count: get(Counter::ClientLogins),
            client_parse_count: get(Counter::ClientParses),
            server_parse_count: get(Counter::ServerParses),
            bind_count: get(Counter::Binds),
            prepared_hit_count: get(Counter::PreparedHits),
            prepared_eviction_count: get(Counter::PreparedEvictions),
        }
    }

    /// One histogram, every slot's samples together.
    pub fn histogram(&self, timing: Timing) -> Histogram {
        let mut read = Histogram::default();
        for slot in self.slots.iter() {
            slot.timings[timing as usize].fold_into(&mut read);
        }
        read
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
        s.add(Counter::Transactions, 3);
        s.add(Counter::BytesSent, 7);
        let mut t = s.totals();
        t.add(&s.totals());
        assert_eq!((t.xact_count, t.bytes_sent), (6, 14));
    }

    #[test]
    fn every_thread_counts_into_the_same_totals() {
        let s = PoolStats::default();
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        s.add(Counter::Queries, 1);
                        s.record(Timing::Wait, Duration::from_micros(300));
                    }
                });
            }
        });
        assert_eq!(s.totals().query_count, 8000);
        let waits = s.histogram(Timing::Wait);
        assert_eq!((waits.count(), waits.counts[2]), (8000, 8000));
        assert_eq!(waits.sum_us, 8000 * 300);
        assert_eq!(s.histogram(Timing::Query).count(), 0);
    }

    #[test]
    fn each_counter_lands_in_its_own_total() {
        let s = PoolStats::default();
        let all = [
            Counter::ServerAssignments,
            Counter::Transactions,
            Counter::Queries,
            Counter::BytesReceived,
            Counter::BytesSent,
            Counter::TransactionTimeUs,
            Counter::QueryTimeUs,
            Counter::WaitTimeUs,
            Counter::ClientLogins,
            Counter::ClientParses,
            Counter::ServerParses,
            Counter::Binds,
            Counter::PreparedHits,
            Counter::PreparedEvictions,
        ];
        assert_eq!(all.len(), COUNTERS);
        for (i, counter) in all.into_iter().enumerate() {
            s.add(counter, 1 << i);
        }
        let t = s.totals();
        let got = [
            t.server_assignment_count,
            t.xact_count,
            t.query_count,
            t.bytes_received,
            t.bytes_sent,
            t.xact_time_us,
            t.query_time_us,
            t.wait_time_us,
            t.client_login_count,
            t.client_parse_count,
            t.server_parse_count,
            t.bind_count,
            t.prepared_hit_count,
            t.prepared_eviction_count,
        ];
        for (i, n) in got.into_iter().enumerate() {
            assert_eq!(n, 1 << i, "counter {i}");
        }
    }
}
