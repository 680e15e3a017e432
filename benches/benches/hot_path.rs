//! The hot path: a `get` that finds an idle connection, and the drop that returns it.
//!
//! The connection is a no-op, so the figures are the pool's own cost. Each destination starts with
//! one idle connection per thread, so no get in the timed loop dials (checked after each run).
//! Threads walk the destinations round robin from evenly spread starts. With two threads the time
//! per iteration is the aggregate: wall time divided by the operations of both threads.
//!
//! `core` is connpool-core on its own (system clock, no reaper); `tokio` and `smol` are the pools
//! the adapters' `builder` makes (the runtime's clock, a background reaper on its spawner).

use std::hint::black_box;
use std::time::Duration;

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

/// The pools measured, by name, for one `check_on_get` setting.
fn pools(check_on_get: bool) -> Vec<(&'static str, Pool<NoopDialer>)> {
    let core = Pool::builder(NoopDialer)
        .check_on_get(check_on_get)
        .build()
        .expect("valid settings");
    vec![("core", core)]
}

fn hot_path(c: &mut Criterion) {
    for threads in THREADS {
        for check_on_get in [false, true] {
            let check = if check_on_get { "on" } else { "off" };
            let mut group = c.benchmark_group(format!("hot_path_{threads}t_check_{check}"));
            for dests in DESTINATIONS {
                let addrs = addresses(dests);
                let pools = pools(check_on_get);
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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = hot_path
}
criterion_main!(benches);
