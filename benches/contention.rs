//! What every transaction touches that every worker thread shares, under 1, 2 and 4 threads
//! at once: the pool's statistics (as `count` bumps them per transaction: six counters and two
//! histogram samples) and the pool's queue (a checkout and a check-in of an idle server, each
//! a short critical section, with the pool handle cloned and dropped as `PooledServer` does;
//! `queue_only` leaves the handle out).
//!
//! `stats/one_line` is the layout pgmux had before per-thread slots: one set of atomics per
//! pool, which every thread writes. Times are per transaction per thread, so flat across
//! thread counts means no contention (up to the machine's cores; beyond them threads take
//! turns and the time grows with them).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pgmux::pool::queue::{Queue, Take};
use pgmux::stats::{Counter, PoolStats, Timing};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const THREADS: [usize; 3] = [1, 2, 4];

/// Benchmarks `transaction` run on `threads` threads at once, each as many times as criterion
/// asks; the wall time they took together.
fn bench_on_threads(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    threads: usize,
    transaction: impl Fn() + Sync,
) {
    group.bench_function(BenchmarkId::new(name, threads), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..threads {
                    scope.spawn(|| (0..iters).for_each(|_| transaction()));
                }
            });
            start.elapsed()
        })
    });
}

/// The counters of one pool as pgmux kept them before: one shared set.
#[derive(Default)]
struct OneLine {
    counters: [AtomicU64; 14],
    histogram: [AtomicU64; 32],
}

impl OneLine {
    fn transaction(&self, took: Duration) {
        let add = |i: usize, n: u64| self.counters[i].fetch_add(n, Ordering::Relaxed);
        add(0, 1);
        add(3, 80);
        add(4, 120);
        add(1, 1);
        add(5, took.as_micros() as u64);
        add(7, 2);
        let bucket = (took.as_micros() as usize / 100).min(14);
        self.histogram[bucket].fetch_add(1, Ordering::Relaxed);
        self.histogram[15].fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.histogram[16 + bucket].fetch_add(1, Ordering::Relaxed);
        self.histogram[31].fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

fn sharded_transaction(stats: &PoolStats, took: Duration) {
    stats.add(Counter::ServerAssignments, 1);
    stats.add(Counter::BytesReceived, 80);
    stats.add(Counter::BytesSent, 120);
    stats.add(Counter::Transactions, 1);
    stats.add(Counter::TransactionTimeUs, took.as_micros() as u64);
    stats.add(Counter::WaitTimeUs, 2);
    stats.record(Timing::Transaction, took);
    stats.record(Timing::Wait, took);
}

fn stats(c: &mut Criterion) {
    let mut group = c.benchmark_group("stats");
    let took = Duration::from_micros(340);
    for threads in THREADS {
        let one = OneLine::default();
        bench_on_threads(&mut group, "one_line", threads, || {
            one.transaction(black_box(took))
        });
        let sharded = PoolStats::default();
        bench_on_threads(&mut group, "per_thread", threads, || {
            sharded_transaction(&sharded, black_box(took))
        });
    }
    group.finish();
}

/// A pool of 16 idle servers, as `Pool` keeps them: the queue behind a mutex, in an `Arc`.
struct Pool {
    queue: Mutex<Queue<Box<u64>, ()>>,
}

fn pool_of_16() -> Arc<Pool> {
    let mut queue = Queue::new(16);
    for _ in 0..16 {
        assert_eq!(queue.take(), Take::Connect);
    }
    for i in 0..16 {
        assert!(queue.put_back(Box::new(i)).is_none());
    }
    Arc::new(Pool {
        queue: Mutex::new(queue),
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn checkout_checkin(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkout_checkin");
    for threads in THREADS {
        let pool = pool_of_16();
        bench_on_threads(&mut group, "idle_server", threads, || {
            let server = lock(&pool.queue).take_idle().expect("16 idle");
            let handle = Arc::clone(&pool);
            black_box(&server);
            assert!(lock(&handle.queue).put_back(server).is_none());
            drop(handle);
        });
        let pool = pool_of_16();
        bench_on_threads(&mut group, "queue_only", threads, || {
            let server = lock(&pool.queue).take_idle().expect("16 idle");
            black_box(&server);
            assert!(lock(&pool.queue).put_back(server).is_none());
        });
    }
    group.finish();
}

criterion_group!(benches, stats, checkout_checkin);
criterion_main!(benches);
