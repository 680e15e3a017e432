//! The hot path of connpool next to what a Rust user writes today for per-host pooling, in one
//! criterion group per configuration so that the ratios come from one run.
//!
//! The workload is `hot_path.rs`'s: a get that finds an idle connection and the drop that returns
//! it, a no-op connection, destinations walked round robin, one idle connection per destination
//! and thread to start with. The peers (see `connpool_benches::peers`):
//!
//! - `connpool_check_on` / `connpool_check_off`: connpool-core, `check_on_get` on (the default)
//!   and off;
//! - `connpool_tokio`: the pool `connpool_tokio::builder` makes (defaults, the reaper on the Tokio
//!   runtime the other peers' gets run in, a multi-thread one), what a Tokio user gets;
//! - `deadpool_locked_map` / `bb8_locked_map`: `RwLock<HashMap<String, Pool>>`, a pool per
//!   destination made on first use: what a user writes when destinations are not known up front;
//! - `deadpool_fixed_map` / `bb8_fixed_map`: a read-only `HashMap<String, Pool>` built up front,
//!   no lock: the best case for those two;
//! - `hyper_legacy`: hyper-util's legacy client pool (`hyper_util::client::legacy::pool`), one
//!   pool keyed by destination, driven as hyper's `Client` drives it;
//! - `naive_mutex_map`: `Mutex<HashMap<String, Vec<Conn>>>`, a lookup on get and another on
//!   return;
//! - `deadpool_fixed_map_foldhash`, `bb8_fixed_map_foldhash`, `naive_mutex_map_foldhash`: the
//!   same maps hashing with foldhash, the hasher connpool's tables use, in place of std's SipHash
//!   (what a map written with the defaults hashes with): the peers with the same hashing cost.
//!   The "best of the deadpool/bb8 maps" is taken over these too.
//!
//! Checks before reuse are each peer's default: deadpool always runs `Manager::recycle`, bb8 runs
//! `is_valid` (test on check-out) and `has_broken` on return, hyper-util asks `is_open` on checkout
//! and on return; all are no-ops that answer "fine" here, as connpool's `is_open` does.
//!
//! bb8 times every get out with Tokio's timer, so its gets run inside a Tokio runtime's context
//! (still polled once, like every other get here).

use std::hash::{BuildHasher, RandomState};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use connpool_benches::peers::{
    bb8_pool, deadpool_pool, hyper_pool, hyper_pooled, Bb8Pool, DeadpoolPool, FastHash, FixedMap,
    HyperKey, HyperPool, LockedMap, NaiveMap,
};
use connpool_benches::{addresses, ready, run_on_threads, Conn, Cycle, NoopDialer};
use connpool_core::Pool;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};

const DESTINATIONS: [usize; 3] = [1, 16, 1000];
const THREADS: [usize; 2] = [1, 2];

/// Where each thread starts its walk over the destinations.
fn start(thread: usize, threads: usize, dests: usize) -> usize {
    thread * dests / threads
}

/// One configuration: `threads` threads over `addrs`.
struct Setup<'a> {
    threads: usize,
    addrs: &'a [String],
    runtime: &'a tokio::runtime::Runtime,
}

impl Setup<'_> {
    /// Times `cycle(thread_walk)` as the group's function `name`; `cycle` is called once per
    /// iteration with the thread's round-robin walk.
    fn bench<T: Sync>(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        name: &str,
        items: &[T],
        cycle: impl Fn(&T) + Sync,
    ) {
        let (threads, runtime) = (self.threads, self.runtime);
        group.bench_function(BenchmarkId::new(name, self.addrs.len()), |b| {
            b.iter_custom(|iters| {
                run_on_threads(threads, iters, |thread, iters| {
                    let _context = runtime.enter();
                    let mut walk = Cycle::new(items, start(thread, threads, items.len()));
                    for _ in 0..iters {
                        cycle(walk.next_item());
                    }
                })
            });
        });
    }

    fn connpool(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        name: &str,
        pool: Pool<NoopDialer>,
    ) {
        for addr in self.addrs {
            let held: Vec<_> = (0..self.threads)
                .map(|_| ready(pool.get(addr)).expect("the no-op dialer never fails"))
                .collect();
            drop(held);
        }
        self.bench(group, name, self.addrs, |addr| {
            let conn = ready(pool.get(addr)).expect("the no-op dialer never fails");
            black_box(&conn);
        });
        assert_eq!(
            pool.stats().counters.dials,
            (self.addrs.len() * self.threads) as u64,
            "a get in the timed loop dialed"
        );
    }

    fn deadpool_locked(&self, group: &mut BenchmarkGroup<'_, WallTime>) {
        let map = LockedMap::<DeadpoolPool>::new(deadpool_pool);
        for addr in self.addrs {
            let pool = map.pool(addr);
            let held: Vec<_> = (0..self.threads)
                .map(|_| ready(pool.get()).expect("the no-op manager never fails"))
                .collect();
            drop(held);
        }
        self.bench(group, "deadpool_locked_map", self.addrs, |addr| {
            let pool = map.pool(addr);
            let conn = ready(pool.get()).expect("the no-op manager never fails");
            black_box(&conn);
        });
        self.assert_no_growth(self.addrs.iter().map(|addr| map.pool(addr).status().size));
    }

    /// `name`'s fixed map hashing with `S`.
    fn deadpool_fixed<S: BuildHasher + Default + Send + Sync>(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        name: &str,
    ) {
        let map = FixedMap::<_, S>::hashed_with(self.addrs, deadpool_pool);
        for addr in self.addrs {
            let pool = map.pool(addr);
            let held: Vec<_> = (0..self.threads)
                .map(|_| ready(pool.get()).expect("the no-op manager never fails"))
                .collect();
            drop(held);
        }
        self.bench(group, name, self.addrs, |addr| {
            let conn = ready(map.pool(addr).get()).expect("the no-op manager never fails");
            black_box(&conn);
        });
        self.assert_no_growth(self.addrs.iter().map(|addr| map.pool(addr).status().size));
    }

    /// Gives a bb8 pool one idle connection per thread. (A get that finds nothing idle hands the
    /// dial to a spawned task and waits, so it cannot warm a pool that is polled once.)
    fn bb8_warm(&self, pool: &Bb8Pool) {
        for _ in 0..self.threads {
            if pool.add(Conn).is_err() {
                panic!("bb8 refused a connection below its max_size");
            }
        }
    }

    fn bb8_locked(&self, group: &mut BenchmarkGroup<'_, WallTime>) {
        let _context = self.runtime.enter();
        let map = LockedMap::<Bb8Pool>::new(bb8_pool);
        for addr in self.addrs {
            self.bb8_warm(&map.pool(addr));
        }
        self.bench(group, "bb8_locked_map", self.addrs, |addr| {
            let pool = map.pool(addr);
            let conn = ready(pool.get()).expect("the no-op manager never fails");
            black_box(&conn);
        });
        self.assert_no_growth(
            self.addrs
                .iter()
                .map(|addr| map.pool(addr).state().connections as usize),
        );
    }

    fn bb8_fixed<S: BuildHasher + Default + Send + Sync>(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        name: &str,
    ) {
        let _context = self.runtime.enter();
        let map = FixedMap::<_, S>::hashed_with(self.addrs, bb8_pool);
        for addr in self.addrs {
            self.bb8_warm(map.pool(addr));
        }
        self.bench(group, name, self.addrs, |addr| {
            let conn = ready(map.pool(addr).get()).expect("the no-op manager never fails");
            black_box(&conn);
        });
        self.assert_no_growth(
            self.addrs
                .iter()
                .map(|addr| map.pool(addr).state().connections as usize),
        );
    }

    fn hyper(&self, group: &mut BenchmarkGroup<'_, WallTime>) {
        let pool: HyperPool = hyper_pool();
        let keys: Vec<HyperKey> = self.addrs.iter().map(|addr| Arc::from(&**addr)).collect();
        for key in &keys {
            let held: Vec<_> = (0..self.threads)
                .map(|_| hyper_pooled(&pool, key))
                .collect();
            drop(held);
        }
        self.bench(group, "hyper_legacy", &keys, |key| {
            let conn = ready(pool.checkout(key.clone())).expect("an idle connection");
            black_box(&conn);
        });
        // A checkout that found nothing idle fails (above); one that found its connection gone
        // would show here as a destination with fewer idle than it was warmed with.
        for key in &keys {
            let held: Vec<_> = (0..self.threads)
                .map(|_| ready(pool.checkout(key.clone())).expect("an idle connection"))
                .collect();
            drop(held);
        }
    }

    /// The naive map hashing with `S`, as `name`.
    fn naive<S: BuildHasher + Default + Send + Sync>(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        name: &str,
    ) {
        let map = NaiveMap::<S>::default();
        for addr in self.addrs {
            let held: Vec<_> = (0..self.threads).map(|_| map.get(addr)).collect();
            drop(held);
        }
        self.bench(group, name, self.addrs, |addr| {
            let conn = map.get(addr);
            black_box(&*conn);
        });
        self.assert_no_growth(map.sizes().into_iter());
    }

    /// Every destination still has just the connections it was warmed with: no get in the timed
    /// loop made a new one.
    fn assert_no_growth(&self, sizes: impl Iterator<Item = usize>) {
        for size in sizes {
            assert_eq!(
                size, self.threads,
                "a get in the timed loop made a connection"
            );
        }
    }
}

fn peers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    for threads in THREADS {
        for dests in DESTINATIONS {
            let addrs = addresses(dests);
            let setup = Setup {
                threads,
                addrs: &addrs,
                runtime: &runtime,
            };
            let mut group = c.benchmark_group(format!("peers_{threads}t_{dests}dest"));
            for (name, check_on_get) in [("connpool_check_off", false), ("connpool_check_on", true)]
            {
                let pool = Pool::builder(NoopDialer)
                    .check_on_get(check_on_get)
                    .build()
                    .expect("valid settings");
                setup.connpool(&mut group, name, pool);
            }
            let tokio_pool = {
                let _context = runtime.enter();
                connpool_tokio::builder(NoopDialer)
                    .build()
                    .expect("valid settings")
            };
            setup.connpool(&mut group, "connpool_tokio", tokio_pool);
            setup.deadpool_locked(&mut group);
            setup.deadpool_fixed::<RandomState>(&mut group, "deadpool_fixed_map");
            setup.deadpool_fixed::<FastHash>(&mut group, "deadpool_fixed_map_foldhash");
            setup.bb8_locked(&mut group);
            setup.bb8_fixed::<RandomState>(&mut group, "bb8_fixed_map");
            setup.bb8_fixed::<FastHash>(&mut group, "bb8_fixed_map_foldhash");
            setup.hyper(&mut group);
            setup.naive::<RandomState>(&mut group, "naive_mutex_map");
            setup.naive::<FastHash>(&mut group, "naive_mutex_map_foldhash");
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = peers
}
criterion_main!(benches);
