//! A pool, once its handles, guards and futures are gone, has freed all it allocated: each
//! scenario below, run many times over, leaves the heap's live bytes and allocations where it
//! found them (counted by this binary's allocator), and its reaper task has ended on its own.
//!
//! Only the test's own thread counts: the harness's main thread may still be noting the test
//! down while it begins.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use connpool_core::{Builder, Error, ManualClock, Pool};
use futures::executor::block_on;
use futures::FutureExt;
use support::{addr, poll_once, TestDialer, TestSpawner};

/// The system's allocator, counting what is live.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Whether this thread's allocations count.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Counts `bytes` and `allocs` more live, or fewer when negative, if this thread counts (and,
/// while its thread-locals are torn down, it does not).
fn grew(bytes: isize, allocs: isize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(allocs, Ordering::Relaxed);
    }
}

// SAFETY: every call goes to the system's allocator with the caller's arguments unchanged, so it
// keeps that allocator's contract; the counting around it touches only atomics and a
// thread-local that never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's promises about `layout` are passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size() as isize, 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size() as isize, 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, which is the system's, with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        grew(-(layout.size() as isize), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` as the caller promised.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            grew(new_size as isize - layout.size() as isize, 0);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> (isize, isize) {
    (
        LIVE_BYTES.load(Ordering::SeqCst),
        LIVE_ALLOCS.load(Ordering::SeqCst),
    )
}

/// `fut`, polled once and found waiting.
fn pending<F: Future + Unpin>(mut fut: F) -> F {
    assert!(poll_once(&mut fut).is_pending());
    fut
}

/// The pools' idle timeout.
const IDLE: Duration = Duration::from_secs(10);

/// A pool on a manual clock, with its reaper on `spawner`.
fn builder(dialer: &TestDialer, clock: &ManualClock, spawner: &TestSpawner) -> Builder<TestDialer> {
    Pool::builder(dialer.clone())
        .capacity(2)
        .idle_timeout(IDLE)
        .clock(clock.clone())
        .spawner(spawner.clone())
}

/// Runs `scenario` (given a dialer, clock and spawner of its own) 16 times, for what a process
/// allocates once (thread-locals, the lane's number), then 200 times more, and checks that those
/// left nothing behind: no connection open, no task unfinished, not a byte.
fn assert_frees_all(
    what: &str,
    scenario: impl Fn(&TestDialer, &ManualClock, &TestSpawner) -> Result<(), Error>,
) {
    let run = || {
        let (dialer, clock, spawner) = (
            TestDialer::new(),
            ManualClock::new(),
            TestSpawner::default(),
        );
        scenario(&dialer, &clock, &spawner).unwrap_or_else(|err| panic!("{what}: {err}"));
        spawner.run();
        assert_eq!(dialer.live(), 0, "{what}: a connection is still open");
        assert_eq!(spawner.pending(), 0, "{what}: the reaper did not end");
    };
    for _ in 0..16 {
        run();
    }
    let before = live();
    for _ in 0..200 {
        run();
    }
    let (bytes, allocs) = live();
    assert_eq!(
        (bytes - before.0, allocs - before.1),
        (0, 0),
        "{what}: bytes and allocations left by 200 runs"
    );
}

#[test]
fn a_pool_gone_with_all_it_handed_out_leaves_nothing_allocated() {
    COUNTED.with(|counted| counted.set(true));
    assert_frees_all(
        "gets, returns, release, detach, dial",
        |dialer, clock, spawner| {
            let pool = builder(dialer, clock, spawner).build().unwrap();
            let (a, b) = (addr("a:1"), addr("b:1"));
            block_on(async {
                drop(pool.get(&a).await?);
                pool.get(&a).await?.release();
                drop(pool.get(&b).await?.detach());
                drop(pool.dial(&a).await?);
                dialer.fail("c:1", io::ErrorKind::ConnectionRefused);
                assert!(matches!(pool.get(&addr("c:1")).await, Err(Error::Dial(_))));
                Ok(())
            })
        },
    );

    assert_frees_all(
        "the pool dropped before its guards",
        |dialer, clock, spawner| {
            let pool = builder(dialer, clock, spawner).build().unwrap();
            let held = block_on(async {
                Ok::<_, Error>([
                    pool.get(&addr("a:1")).await?,
                    pool.get(&addr("a:1")).await?,
                    pool.get(&addr("b:1")).await?,
                ])
            })?;
            drop(pool);
            spawner.run();
            let [first, second, third] = held;
            drop(first);
            second.release();
            drop(third.detach());
            Ok(())
        },
    );

    assert_frees_all(
        "gets and dials dropped in line and while dialing",
        |dialer, clock, spawner| {
            let pool = builder(dialer, clock, spawner)
                .max_open_per_host(1)
                .build()
                .unwrap();
            let a = addr("a:1");
            let held = block_on(pool.get(&a))?;
            // In line, then dropped.
            let waiting = pending(pool.get(&a).boxed());
            drop(waiting);
            // In line, handed the returned connection, dropped before it took it.
            let waiting = pending(pool.get(&a).boxed());
            drop(held);
            drop(waiting);
            // Dialing, then dropped; a dial holding the pool's last handle, dropped while dialing.
            let (b, gate) = (addr("b:1"), dialer.hold());
            let dialing = pending(pool.get(&b).boxed());
            drop(dialing);
            let dialing = pending(async move { pool.dial(&b).await }.boxed());
            gate.open();
            drop(dialing);
            Ok(())
        },
    );

    assert_frees_all(
        "a wait and a dial that time out",
        |dialer, clock, spawner| {
            let pool = builder(dialer, clock, spawner)
                .max_open_per_host(1)
                .wait_timeout(Duration::from_secs(1))
                .dial_timeout(Duration::from_secs(1))
                .build()
                .unwrap();
            let (a, b) = (addr("a:1"), addr("b:1"));
            let held = block_on(pool.get(&a))?;
            let mut waiting = pending(pool.get(&a).boxed());
            let _gate = dialer.hold();
            let mut dialing = pending(pool.get(&b).boxed());
            clock.advance(Duration::from_secs(1));
            assert!(matches!(
                poll_once(&mut waiting),
                Poll::Ready(Err(Error::Timeout))
            ));
            assert!(matches!(
                poll_once(&mut dialing),
                Poll::Ready(Err(Error::Timeout))
            ));
            drop(held);
            Ok(())
        },
    );

    assert_frees_all(
        "destinations used once and left to expire",
        |dialer, clock, spawner| {
            let pool = builder(dialer, clock, spawner).build().unwrap();
            block_on(async {
                for i in 0..100 {
                    drop(pool.get(&format!("10.0.0.{i}:80")).await?);
                }
                Ok::<_, Error>(())
            })?;
            clock.advance(IDLE);
            spawner.run();
            assert_eq!(pool.stats().destinations.len(), 0);
            Ok(())
        },
    );

    assert_frees_all(
        "a close and a shutdown with a guard out",
        |dialer, clock, spawner| {
            let pool = builder(dialer, clock, spawner).build().unwrap();
            let held = block_on(pool.get(&addr("a:1")))?;
            drop(block_on(pool.get(&addr("b:1")))?);
            pool.close();
            let mut shutdown = pending(pool.shutdown(Duration::from_secs(1)).boxed());
            drop(held);
            assert_eq!(poll_once(&mut shutdown), Poll::Ready(true));
            Ok(())
        },
    );
}
