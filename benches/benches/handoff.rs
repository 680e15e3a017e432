//! Connections returned from another thread than the one that got them: what a pool costs when a
//! Tokio task moves to another worker between its get and its drop.
//!
//! Two threads each get a batch of [`BATCH`] connections (walking the destinations round robin),
//! leave the batch in a mailbox and meet at a barrier. In `other_thread` each thread then drops the
//! batch the other one got; in `own_thread`, its own. Both cells move the same batches through the
//! same mailboxes and barriers, so what differs between a pool's two cells is where its returns
//! run: `other_thread - own_thread` is what a return from another core adds. `no_pool` hands over
//! batches of plain values as large as connpool's guards the same way: the harness's own cost,
//! moving the guards' bytes included, for scale. Time per iteration is the aggregate per get +
//! drop of both threads, as in the hot path's two-thread cells.
//!
//! The pools are connpool-core with its check off and on, and the peers' fixed maps hashing as
//! connpool does (see `peers.rs`): deadpool's, bb8's and the naive mutex map.

use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use connpool_benches::peers::{
    bb8_pool, deadpool_pool, Bb8Pool, DeadpoolPool, FastHash, FixedMap, NaiveMap,
};
use connpool_benches::{addresses, ready, run_on_threads, Conn, Cycle, NoopDialer};
use connpool_core::{Pool, Pooled};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};

/// Connections a thread gets before it hands them over.
const BATCH: usize = 32;
const DESTINATIONS: [usize; 2] = [16, 1000];
const THREADS: usize = 2;

/// Idle connections each destination starts with: at most two batches per thread are out at once
/// (one being got, one waiting to be dropped), spread over the destinations, and a margin.
fn per_destination(dests: usize) -> usize {
    (2 * THREADS * BATCH).div_ceil(dests) + 2
}

/// Where each thread starts its walk over the destinations.
fn start(thread: usize, dests: usize) -> usize {
    thread * dests / THREADS
}

/// A barrier for two threads that spins (a thread that blocked would put the system's wake-up
/// in every round), yielding after a while in case the other thread is not running.
struct SpinBarrier {
    arrived: AtomicU64,
    /// A thread panicked: the other would wait for it for ever.
    broken: AtomicBool,
}

impl SpinBarrier {
    /// Waits until both threads have called this for `round` (rounds numbered from 0).
    ///
    /// # Panics
    ///
    /// When the other thread panicked (see [`SpinBarrier::break_on_panic`]).
    fn wait(&self, round: u64) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        let all = (round + 1) * THREADS as u64;
        let mut spins = 0_u32;
        while self.arrived.load(Ordering::Acquire) < all {
            assert!(
                !self.broken.load(Ordering::Relaxed),
                "the other thread panicked"
            );
            if spins < 1 << 8 {
                spins += 1;
                spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Breaks the barrier if the calling thread panics before the returned value is dropped.
    fn break_on_panic(&self) -> impl Drop + '_ {
        struct OnPanic<'a>(&'a AtomicBool);
        impl Drop for OnPanic<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
        }
        OnPanic(&self.broken)
    }
}

/// What `no_pool` hands over: as many bytes as connpool's guard, so that the harness's own cost
/// includes moving the guards' bytes from one core to the other.
type Payload = [u64; std::mem::size_of::<Pooled<NoopDialer>>().div_ceil(8)];

/// One mailbox on cache lines of its own.
#[repr(align(128))]
struct Mailbox<G>(Mutex<Vec<G>>);

fn open<G>(mailbox: &Mailbox<G>) -> MutexGuard<'_, Vec<G>> {
    mailbox.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `iters` get + drop cycles on two threads in batches, each batch dropped by the other
/// thread (`to_other`) or by the one that got it, and returns the aggregate time for `iters`.
///
/// Both threads run the same number of rounds, whole batches, which may be a few cycles more than
/// `iters`: the time is scaled back to `iters`. Mailboxes alternate between rounds, so that a
/// thread that has passed a round's barrier fills the other set while the other thread may still
/// be emptying this one; its next round's barrier waits for that.
fn handoff<'a, G: Send>(
    addrs: &'a [String],
    runtime: &tokio::runtime::Runtime,
    iters: u64,
    to_other: bool,
    get: impl Fn(&'a String) -> G + Sync,
) -> Duration {
    let rounds = iters.div_ceil((THREADS * BATCH) as u64).max(1);
    let cycles = rounds * (THREADS * BATCH) as u64;
    let mailboxes: [[Mailbox<G>; THREADS]; 2] = std::array::from_fn(|_| {
        std::array::from_fn(|_| Mailbox(Mutex::new(Vec::with_capacity(BATCH))))
    });
    let barrier = SpinBarrier {
        arrived: AtomicU64::new(0),
        broken: AtomicBool::new(false),
    };
    let elapsed = run_on_threads(THREADS, iters, |thread, _| {
        let _broken = barrier.break_on_panic();
        let _context = runtime.enter();
        let from = if to_other { 1 - thread } else { thread };
        let mut walk = Cycle::new(addrs, start(thread, addrs.len()));
        let mut batch: Vec<G> = Vec::with_capacity(BATCH);
        for round in 0..rounds {
            batch.extend((0..BATCH).map(|_| get(walk.next_item())));
            let boxes = &mailboxes[(round % 2) as usize];
            std::mem::swap(&mut batch, &mut *open(&boxes[thread]));
            assert!(
                batch.is_empty(),
                "a mailbox was filled before it was emptied"
            );
            barrier.wait(round);
            std::mem::swap(&mut batch, &mut *open(&boxes[from]));
            black_box(&batch);
            batch.clear();
        }
    });
    elapsed.mul_f64(iters as f64 / cycles as f64)
}

/// One destination count's cells.
struct Setup<'a> {
    addrs: &'a [String],
    runtime: &'a tokio::runtime::Runtime,
}

impl<'a> Setup<'a> {
    /// `name`'s two cells, `own_thread` and `other_thread`; `get` runs in the Tokio runtime's
    /// context (bb8 times its gets out on Tokio's timer).
    fn bench<G: Send>(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        name: &str,
        get: impl Fn(&'a String) -> G + Sync,
    ) {
        for (side, to_other) in [("own_thread", false), ("other_thread", true)] {
            let id = BenchmarkId::new(format!("{name}/{side}"), self.addrs.len());
            group.bench_function(id, |b| {
                b.iter_custom(|iters| handoff(self.addrs, self.runtime, iters, to_other, &get));
            });
        }
    }

    fn connpool(&self, group: &mut BenchmarkGroup<'_, WallTime>, name: &str, check_on_get: bool) {
        let per_dest = per_destination(self.addrs.len());
        let pool = Pool::builder(NoopDialer)
            .capacity(per_dest)
            .check_on_get(check_on_get)
            .build()
            .expect("valid settings");
        for addr in self.addrs {
            let held: Vec<_> = (0..per_dest)
                .map(|_| ready(pool.get(addr)).expect("the no-op dialer never fails"))
                .collect();
            drop(held);
        }
        self.bench(group, name, |addr| {
            ready(pool.get(addr)).expect("the no-op dialer never fails")
        });
        let stats = pool.stats();
        assert_eq!(
            stats.counters.dials,
            (self.addrs.len() * per_dest) as u64,
            "a get in the timed loop dialed"
        );
        assert_eq!(
            stats.idle(),
            self.addrs.len() * per_dest,
            "a connection was lost"
        );
    }

    fn deadpool(&self, group: &mut BenchmarkGroup<'_, WallTime>) {
        let per_dest = per_destination(self.addrs.len());
        let map = FixedMap::<DeadpoolPool, FastHash>::hashed_with(self.addrs, deadpool_pool);
        for addr in self.addrs {
            let pool = map.pool(addr);
            let held: Vec<_> = (0..per_dest)
                .map(|_| ready(pool.get()).expect("the no-op manager never fails"))
                .collect();
            drop(held);
        }
        self.bench(group, "deadpool_fixed_map_foldhash", |addr| {
            ready(map.pool(addr).get()).expect("the no-op manager never fails")
        });
        for addr in self.addrs {
            let status = map.pool(addr).status();
            assert_eq!(
                status.size, per_dest,
                "a get in the timed loop made a connection"
            );
            assert_eq!(status.available, per_dest, "a connection was not returned");
        }
    }

    fn bb8(&self, group: &mut BenchmarkGroup<'_, WallTime>) {
        let per_dest = per_destination(self.addrs.len());
        let _context = self.runtime.enter();
        let map = FixedMap::<Bb8Pool, FastHash>::hashed_with(self.addrs, bb8_pool);
        for addr in self.addrs {
            for _ in 0..per_dest {
                if map.pool(addr).add(Conn).is_err() {
                    panic!("bb8 refused a connection below its max_size");
                }
            }
        }
        self.bench(group, "bb8_fixed_map_foldhash", |addr| {
            ready(map.pool(addr).get()).expect("the no-op manager never fails")
        });
        for addr in self.addrs {
            let state = map.pool(addr).state();
            assert_eq!(
                state.connections as usize, per_dest,
                "a get in the timed loop made a connection"
            );
            assert_eq!(
                state.idle_connections as usize, per_dest,
                "a connection was not returned"
            );
        }
    }

    fn naive(&self, group: &mut BenchmarkGroup<'_, WallTime>) {
        let per_dest = per_destination(self.addrs.len());
        let map = NaiveMap::<FastHash>::default();
        for addr in self.addrs {
            let held: Vec<_> = (0..per_dest).map(|_| map.get(addr)).collect();
            drop(held);
        }
        self.bench(group, "naive_mutex_map_foldhash", |addr| map.get(addr));
        for size in map.sizes() {
            assert_eq!(size, per_dest, "a get in the timed loop made a connection");
        }
    }
}

fn handoffs(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    for dests in DESTINATIONS {
        let addrs = addresses(dests);
        let setup = Setup {
            addrs: &addrs,
            runtime: &runtime,
        };
        let mut group = c.benchmark_group(format!("handoff_2t_{dests}dest"));
        setup.bench(&mut group, "no_pool", |_| Payload::default());
        setup.connpool(&mut group, "connpool_check_off", false);
        setup.connpool(&mut group, "connpool_check_on", true);
        setup.deadpool(&mut group);
        setup.bb8(&mut group);
        setup.naive(&mut group);
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = handoffs
}
criterion_main!(benches);
