//! The hot path: a `get` that finds an idle connection, and the drop that returns it.
//!
//! The connection is a no-op, so the figures are the pool's own cost. Each destination starts with
//! one idle connection per thread, so no get in the timed loop dials (checked after each run).
//! Threads walk the destinations round robin from evenly spread starts. With two threads the time
//! per iteration is the aggregate: wall time divided by the operations of both threads.
//!
//! `core` is connpool-core on its own (system clock, no reaper); `tokio` and `smol` are the pools
//! the adapters' `builder` makes, with a background reaper on the runtime's spawner. Built in a
//! multi-thread runtime (Tokio) or on smol, whose time is the system's, they read the system's
//! clock as the core does; `hot_path_tokio_current_thread` measures a pool that reads Tokio's.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use connpool_benches::{addresses, ready, run_on_threads, Cycle, NoopDialer};
use connpool_core::Pool;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const DESTINATIONS: [usize; 4] = [1, 16, 1000, 100_000];
const THREADS: [usize; 2] = [1, 2];

/// Gives every destination `per_dest` idle connections.
fn warm(pool: &Pool<NoopDialer>, addrs: &[String], per_dest: usize) {
    for addr in addrs {
        let held: Vec<_> = (0..per_dest)
            .map(|_| ready(pool.get(addr)).expect("the no-op dialer never fails"))
            .collect();
        drop(held);
    }
}

/// `iters` get + drop cycles spread over `threads` threads; the aggregate wall time.
fn cycles(pool: &Pool<NoopDialer>, addrs: &[String], threads: usize, iters: u64) -> Duration {
    run_on_threads(threads, iters, |thread, iters| {
        let mut cycle = Cycle::new(addrs, thread * addrs.len() / threads);
        for _ in 0..iters {
            let conn = ready(pool.get(cycle.next_item())).expect("the no-op dialer never fails");
            black_box(&conn);
            drop(conn);
        }
    })
}

/// The pools measured, by name, for one `check_on_get` setting. The runtime behind the Tokio
/// adapter's spawner is returned too, to outlive its pool.
fn pools(
    check_on_get: bool,
) -> (
    tokio::runtime::Runtime,
    Vec<(&'static str, Pool<NoopDialer>)>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let core = Pool::builder(NoopDialer)
        .check_on_get(check_on_get)
        .build()
        .expect("valid settings");
    let tokio = {
        let _context = runtime.enter();
        connpool_tokio::builder(NoopDialer)
            .check_on_get(check_on_get)
            .build()
            .expect("valid settings")
    };
    let smol = connpool_smol::builder(NoopDialer)
        .check_on_get(check_on_get)
        .build()
        .expect("valid settings");
    (
        runtime,
        vec![("core", core), ("tokio", tokio), ("smol", smol)],
    )
}

fn hot_path(c: &mut Criterion) {
    for threads in THREADS {
        for check_on_get in [false, true] {
            let check = if check_on_get { "on" } else { "off" };
            let mut group = c.benchmark_group(format!("hot_path_{threads}t_check_{check}"));
            for dests in DESTINATIONS {
                let addrs = addresses(dests);
                let (_runtime, pools) = pools(check_on_get);
                for (name, pool) in &pools {
                    warm(pool, &addrs, threads);
                    group.bench_with_input(BenchmarkId::new(*name, dests), &addrs, |b, addrs| {
                        b.iter_custom(|iters| cycles(pool, addrs, threads, iters));
                    });
                    let counters = pool.stats().counters;
                    assert_eq!(
                        counters.dials,
                        (dests * threads) as u64,
                        "a get in the timed loop dialed"
                    );
                }
            }
            group.finish();
        }
    }
}

/// Many more threads than cores (16), each walking 16 destinations, on the core: what the store's
/// lock costs when its holders are preempted, as with a thread per request. `lanes` is the default
/// store; `one_lane` sets `max_open_per_host` (to 16, so no get ever waits), which keeps one lane,
/// so every thread shares each destination's shard.
fn oversubscribed(c: &mut Criterion) {
    const THREADS: usize = 16;
    let addrs = addresses(16);
    let mut group = c.benchmark_group("hot_path_oversubscribed");
    for (name, max_open) in [("lanes", None), ("one_lane", Some(THREADS))] {
        let mut builder = Pool::builder(NoopDialer)
            .capacity(THREADS)
            .check_on_get(false);
        if let Some(max_open) = max_open {
            builder = builder.max_open_per_host(max_open);
        }
        let pool = builder.build().expect("valid settings");
        warm(&pool, &addrs, THREADS);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| cycles(&pool, &addrs, THREADS, iters));
        });
    }
    group.finish();
}

/// What the building blocks of any locked per-host pool cost on this machine, to read the hot
/// path's figures against: a precise clock reading, an uncontended lock and unlock of a std
/// mutex, of a parking_lot one, and of one taken by a compare-and-swap and released by a plain
/// store (what the store's lock does uncontended), an `Arc` clone and drop, comparing two equal
/// addresses, and moving one cache line from one thread to another and back.
fn reference(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_path_reference");
    group.bench_function("instant_now", |b| b.iter(Instant::now));
    let mutex = Mutex::new(0_u64);
    group.bench_function("mutex_lock_unlock", |b| {
        b.iter(|| {
            *black_box(&mutex)
                .lock()
                .unwrap_or_else(PoisonError::into_inner) += 1
        })
    });
    let fast_mutex = parking_lot::Mutex::new(0_u64);
    group.bench_function("parking_lot_lock_unlock", |b| {
        b.iter(|| *black_box(&fast_mutex).lock() += 1)
    });
    let (flag, count) = (AtomicBool::new(false), AtomicU64::new(0));
    group.bench_function("cas_store_lock_unlock", |b| {
        b.iter(|| {
            let flag = black_box(&flag);
            while flag
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                std::hint::spin_loop();
            }
            count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            flag.store(false, Ordering::Release);
        })
    });
    let arc = Arc::new(0_u64);
    group.bench_function("arc_clone_drop", |b| {
        b.iter(|| black_box(black_box(&arc).clone()))
    });
    let (left, right) = (addresses(1), addresses(1));
    group.bench_function("address_eq", |b| {
        b.iter(|| black_box(&left[0]) == black_box(&right[0]))
    });
    group.bench_function("cache_line_round_trip", |b| {
        b.iter_custom(cache_line_round_trips)
    });
    group.finish();
}

/// `rounds` round trips of one cache line between two threads: this thread writes an odd number
/// and waits for the other to answer with the next even one. The time of a trip is what a pool
/// pays whenever a thread writes a line another core wrote last (a shared lock, a shared count).
fn cache_line_round_trips(rounds: u64) -> Duration {
    let line = AtomicU64::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for round in 0..rounds {
                while line.load(Ordering::Acquire) != 2 * round + 1 {
                    std::hint::spin_loop();
                }
                line.store(2 * round + 2, Ordering::Release);
            }
        });
        let start = Instant::now();
        for round in 0..rounds {
            line.store(2 * round + 1, Ordering::Release);
            while line.load(Ordering::Acquire) != 2 * round + 2 {
                std::hint::spin_loop();
            }
        }
        start.elapsed()
    })
}

/// The one-destination cycle of `hot_path_1t_check_off/core/1` driven two ways: `poll_in_place`
/// as in the groups above (the get's future built and polled in the loop, where the compiler can
/// keep it in registers), and `async_caller` from a loop inside one `async` block, as an
/// application awaits it (the future then lives in the block's state, in memory).
fn callers(c: &mut Criterion) {
    let addrs = addresses(1);
    let addr = &addrs[0];
    let pool = Pool::builder(NoopDialer)
        .check_on_get(false)
        .build()
        .expect("valid settings");
    warm(&pool, &addrs, 1);
    let mut group = c.benchmark_group("hot_path_callers");
    group.bench_function("poll_in_place", |b| {
        b.iter_custom(|iters| cycles(&pool, &addrs, 1, iters));
    });
    group.bench_function("async_caller", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            ready(async {
                for _ in 0..iters {
                    let conn = pool.get(addr).await.expect("the no-op dialer never fails");
                    black_box(&conn);
                    drop(conn);
                }
            });
            start.elapsed()
        });
    });
    group.finish();
    assert_eq!(
        pool.stats().counters.dials,
        1,
        "a get in the timed loop dialed"
    );
}

/// The one-thread cycle through the pool Tokio's `builder` makes on a current-thread runtime,
/// driven from inside that runtime: such a runtime's time may be paused, so the pool reads Tokio's
/// clock ([`connpool_tokio::TokioClock`]) at every get and every return, where the `tokio` cells
/// above, built in a multi-thread runtime, read the system's coarse clock. `task` runs the loop in
/// a spawned task, `block_on` in the future the runtime blocks on (as a `#[tokio::test]` body).
fn current_thread(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let mut group = c.benchmark_group("hot_path_tokio_current_thread");
    for dests in [1, 1000] {
        let addrs = addresses(dests);
        let pool = runtime.block_on(async {
            connpool_tokio::builder(NoopDialer)
                .check_on_get(false)
                .build()
                .expect("valid settings")
        });
        warm(&pool, &addrs, 1);
        // One thread: `cycles` runs on the calling thread, here inside the runtime.
        group.bench_with_input(BenchmarkId::new("block_on", dests), &addrs, |b, addrs| {
            b.iter_custom(|iters| runtime.block_on(async { cycles(&pool, addrs, 1, iters) }));
        });
        group.bench_with_input(BenchmarkId::new("task", dests), &addrs, |b, addrs| {
            b.iter_custom(|iters| {
                let (pool, addrs) = (pool.clone(), addrs.clone());
                let task = async move { cycles(&pool, &addrs, 1, iters) };
                runtime
                    .block_on(runtime.spawn(task))
                    .expect("the loop does not panic")
            });
        });
        assert_eq!(
            pool.stats().counters.dials,
            dests as u64,
            "a get in the timed loop dialed"
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = hot_path, callers, oversubscribed, current_thread, reference
}
criterion_main!(benches);
