//! Capacity control: what the limits cost on the hot path, and a contended workload against the
//! peers' per-host maps held to the same limit.
//!
//! `limits_hot_path`: one thread, a get that finds an idle connection and the drop that returns
//! it, on the core (system clock) with no limits, with `max_open_per_host`, with that and
//! `max_lifetime`, and with `max_idle_total` on top. `max_idle_total` keeps an exact
//! least-recently-used order across destinations: a list entry per idle connection, and every
//! destination under one lock. The wait and dial timeouts cost nothing until a caller waits or
//! dials; they need a clock that can sleep, whose reading costs what `hot_path` shows for the
//! adapters.
//!
//! `limits_contended`: 64 Tokio tasks on a two-worker runtime share 4 destinations, each task
//! taking a connection, yielding once while it holds it (a stand-in for a request), and giving it
//! back. Each destination is limited to 8 open connections, so most gets wait their turn. Time per
//! iteration is per get + drop, aggregate over all tasks. The peers' maps hash with foldhash, as
//! connpool's tables do (`peers`' `_foldhash` maps).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connpool_benches::peers::{Bb8Manager, DeadpoolManager, FastHash, FixedMap};
use connpool_benches::{addresses, ready, share, Cycle, NoopDialer};
use connpool_core::Pool;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const DESTINATIONS: [usize; 2] = [1, 1000];
const TASKS: usize = 64;
const LIMIT: usize = 8;
const CONTENDED_DESTINATIONS: usize = 4;

fn warm(pool: &Pool<NoopDialer>, addrs: &[String]) {
    for addr in addrs {
        drop(ready(pool.get(addr)).expect("the no-op dialer never fails"));
    }
}

fn hot_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("limits_hot_path");
    for dests in DESTINATIONS {
        let addrs = addresses(dests);
        let settings: [(&str, Pool<NoopDialer>); 4] = [
            ("no_limits", Pool::builder(NoopDialer).build()),
            (
                "max_open_per_host",
                Pool::builder(NoopDialer).max_open_per_host(64).build(),
            ),
            (
                "open_and_lifetime",
                Pool::builder(NoopDialer)
                    .max_open_per_host(64)
                    .max_lifetime(Duration::from_secs(3600))
                    .build(),
            ),
            (
                "all_limits",
                Pool::builder(NoopDialer)
                    .max_open_per_host(64)
                    .max_lifetime(Duration::from_secs(3600))
                    .max_idle_total(1_000_000)
                    .build(),
            ),
        ]
        .map(|(name, pool)| (name, pool.expect("valid settings")));
        for (name, pool) in &settings {
            warm(pool, &addrs);
            group.bench_with_input(BenchmarkId::new(*name, dests), &addrs, |b, addrs| {
                let mut cycle = Cycle::new(addrs, 0);
                b.iter(|| {
                    let conn = ready(pool.get(cycle.next_item())).expect("never fails");
                    black_box(&conn);
                });
            });
            assert_eq!(
                pool.stats().counters.dials,
                dests as u64,
                "the timed loop dialed"
            );
        }
    }
    group.finish();
}

/// Runs `iters` get + yield + drop cycles over `TASKS` tasks on `runtime`; the wall time.
fn contended<F, Fut>(runtime: &tokio::runtime::Runtime, iters: u64, cycle: F) -> Duration
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let cycle = Arc::new(cycle);
    runtime.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|task| {
                let cycle = cycle.clone();
                let n = share(iters, TASKS, task);
                tokio::spawn(async move {
                    for i in 0..n as usize {
                        cycle(task, i).await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a benchmark task panicked");
        }
        start.elapsed()
    })
}

fn contention(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let addrs = Arc::new(addresses(CONTENDED_DESTINATIONS));
    let pick = |addrs: &[String], task: usize, i: usize| (task + i) % addrs.len();
    let mut group = c.benchmark_group("limits_contended");

    let pool = {
        let _context = runtime.enter();
        connpool_tokio::builder(NoopDialer)
            .max_open_per_host(LIMIT)
            .build()
            .expect("valid settings")
    };
    group.bench_function(BenchmarkId::new("connpool", LIMIT), |b| {
        b.iter_custom(|iters| {
            let (pool, addrs) = (pool.clone(), addrs.clone());
            contended(&runtime, iters, move |task, i| {
                let (pool, addrs) = (pool.clone(), addrs.clone());
                async move {
                    let conn = pool.get(&addrs[pick(&addrs, task, i)]).await;
                    let conn = conn.expect("the no-op dialer never fails");
                    tokio::task::yield_now().await;
                    drop(conn);
                }
            })
        });
    });
    for stats in pool.stats().destinations {
        assert!(
            stats.total <= LIMIT,
            "connpool went past its limit: {stats:?}"
        );
    }

    let deadpool = Arc::new(FixedMap::<_, FastHash>::hashed_with(&addrs, || {
        connpool_benches::peers::DeadpoolPool::builder(DeadpoolManager)
            .max_size(LIMIT)
            .build()
            .expect("valid settings")
    }));
    group.bench_function(BenchmarkId::new("deadpool_fixed_map", LIMIT), |b| {
        b.iter_custom(|iters| {
            let (map, addrs) = (deadpool.clone(), addrs.clone());
            contended(&runtime, iters, move |task, i| {
                let (map, addrs) = (map.clone(), addrs.clone());
                async move {
                    let pool = map.pool(&addrs[pick(&addrs, task, i)]).clone();
                    let conn = pool.get().await.expect("the no-op manager never fails");
                    tokio::task::yield_now().await;
                    drop(conn);
                }
            })
        });
    });

    let bb8 = {
        let _context = runtime.enter();
        Arc::new(FixedMap::<_, FastHash>::hashed_with(&addrs, || {
            bb8::Pool::builder()
                .max_size(LIMIT as u32)
                .connection_timeout(Duration::from_secs(60))
                .build_unchecked(Bb8Manager)
        }))
    };
    group.bench_function(BenchmarkId::new("bb8_fixed_map", LIMIT), |b| {
        b.iter_custom(|iters| {
            let (map, addrs) = (bb8.clone(), addrs.clone());
            contended(&runtime, iters, move |task, i| {
                let (map, addrs) = (map.clone(), addrs.clone());
                async move {
                    let pool = map.pool(&addrs[pick(&addrs, task, i)]).clone();
                    let conn = pool
                        .get_owned()
                        .await
                        .expect("the no-op manager never fails");
                    tokio::task::yield_now().await;
                    drop::<bb8::PooledConnection<'static, Bb8Manager>>(conn);
                }
            })
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = hot_path, contention
}
criterion_main!(benches);
