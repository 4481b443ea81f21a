//! Time histograms with fixed buckets, rendered in Prometheus' text format. Recording is two
//! relaxed atomic adds: no allocation, no lock, and nothing to fold in later. Three records
//! happen per transaction, so this is on the hot path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets in microseconds, from a fast query to a long transaction.
const BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000, 30_000_000,
];

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

#[derive(Debug, Default)]
pub struct TimeHistogram {
    /// Samples per bucket, not cumulative; the last one counts samples above every bound.
    counts: [AtomicU64; BOUNDS_NS.len() + 1],
    /// In microseconds: a u64 of them does not wrap in any pgmux's lifetime.
    sum_us: AtomicU64,
}

impl TimeHistogram {
    pub fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // A sample equal to a bound belongs to that bound's bucket (`le`).
        let bucket = BOUNDS_NS.partition_point(|&bound| bound < ns);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(ns / 1_000, Ordering::Relaxed);
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines of one series; `labels` is the
    /// rendered label list without braces (`database="app",user="app"`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in BOUNDS_US.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.counts[BOUNDS_US.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// A label value as Prometheus' text format quotes it.
pub fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(h: &TimeHistogram) -> String {
        let mut out = String::new();
        h.render(&mut out, "t", "db=\"x\"");
        out
    }

    #[test]
    fn samples_land_in_cumulative_buckets_with_le_bounds() {
        let h = TimeHistogram::default();
        h.record(Duration::ZERO);
        h.record(Duration::from_micros(100));
        h.record(Duration::from_micros(101));
        h.record(Duration::from_secs(60));
        let out = rendered(&h);
        assert!(
            out.contains("t_bucket{db=\"x\",le=\"0.0001\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("t_bucket{db=\"x\",le=\"0.00025\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("t_bucket{db=\"x\",le=\"30\"} 3\n"), "{out}");
        assert!(out.contains("t_bucket{db=\"x\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("t_count{db=\"x\"} 4\n"), "{out}");
        assert!(out.contains("t_sum{db=\"x\"} 60.000201\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
    }
}
