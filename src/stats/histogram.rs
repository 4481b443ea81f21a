//! Time histograms with fixed buckets. Recording is two relaxed atomic adds on the recording
//! thread's own slot (see [`super::PoolStats`]): no allocation, no lock. Three records happen
//! per transaction, so this is on the hot path; reading folds the slots into a [`Histogram`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets in microseconds, from a fast query to a long transaction.
pub const BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000, 30_000_000,
];

/// Buckets: one per bound, and one for samples above every bound.
const BUCKETS: usize = BOUNDS_US.len() + 1;

/// The same bounds in nanoseconds, the unit samples are compared in.
const BOUNDS_NS: [u64; 14] = {
    let mut ns = [0; 14];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = BOUNDS_US[i] * 1_000;
        i += 1;
    }
    ns
};

/// One slot's share of a histogram.
#[derive(Debug, Default)]
pub(super) struct TimeHistogram {
    /// Samples per bucket, not cumulative.
    counts: [AtomicU64; BUCKETS],
    /// In microseconds: a u64 of them does not wrap in any pgmux's lifetime.
    sum_us: AtomicU64,
}

impl TimeHistogram {
    pub(super) fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // A sample equal to a bound belongs to that bound's bucket (`le`).
        let bucket = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(ns / 1_000, Ordering::Relaxed);
    }

    pub(super) fn fold_into(&self, into: &mut Histogram) {
        for (sum, count) in into.counts.iter_mut().zip(&self.counts) {
            *sum += count.load(Ordering::Relaxed);
        }
        into.sum_us += self.sum_us.load(Ordering::Relaxed);
    }
}

/// A histogram as read: samples per bucket (not cumulative; the last one above every bound of
/// [`BOUNDS_US`]) and their sum.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Histogram {
    pub counts: [u64; BUCKETS],
    pub sum_us: u64,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_their_buckets_with_le_bounds() {
        let h = TimeHistogram::default();
        h.record(Duration::ZERO);
        h.record(Duration::from_micros(100));
        h.record(Duration::from_micros(101));
        h.record(Duration::from_secs(60));
        let mut read = Histogram::default();
        h.fold_into(&mut read);
        h.fold_into(&mut read);
        assert_eq!(read.counts[0], 4, "0 and 100 µs are both le 100 µs, twice");
        assert_eq!(read.counts[1], 2);
        assert_eq!(read.counts[BUCKETS - 1], 2, "above every bound");
        assert_eq!(read.count(), 8);
        assert_eq!(read.sum_us, 2 * 60_000_201);
    }
}
