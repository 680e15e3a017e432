//! Model checking of the store with loom: every interleaving of a few threads on one destination.
//!
//! Run with `RUSTFLAGS="--cfg connpool_loom" cargo test -p connpool-core --lib --release loom_models`
//! (`.ci/run` does, in its own target directory, with bounded preemptions). The models live in
//! the library, not under `tests/`, because loom is a dev-dependency: an integration test links
//! the library built without it. As a dependency, loom would sit in every user's lockfile.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::{Error, ManualClock, Pool};
use loom::future::block_on;
use loom::thread;

/// A connection that counts itself alive, so a model can check that each is closed exactly once.
struct Conn {
    id: usize,
    live: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct Dialer {
    dialed: Arc<AtomicUsize>,
    live: Arc<AtomicUsize>,
}

#[crate::async_trait]
impl crate::Dialer for Dialer {
    type Addr = u8;
    type Conn = Conn;

    async fn dial(&self, _addr: &u8) -> io::Result<Conn> {
        // Suspend once, so that a caller can go away in the middle of a dial.
        YieldOnce(false).await;
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(Conn {
            id: self.dialed.fetch_add(1, Ordering::SeqCst),
            live: self.live.clone(),
        })
    }
}

struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

fn pool(capacity: usize) -> (Pool<Dialer>, Dialer, ManualClock) {
    let dialer = Dialer::default();
    let clock = ManualClock::new();
    let pool = Pool::builder(dialer.clone())
        .capacity(capacity)
        .idle_timeout(Duration::from_secs(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    (pool, dialer, clock)
}

/// I3 at rest: every dialed connection is idle, closed or detached, and the live ones are idle.
fn assert_accounts(pool: &Pool<Dialer>, dialer: &Dialer) {
    let stats = pool.stats();
    let c = &stats.counters;
    assert_eq!(c.dials as usize, dialer.dialed.load(Ordering::SeqCst));
    assert_eq!(
        c.dials,
        stats.idle() as u64 + c.closed() + c.detached,
        "{c:?}"
    );
    assert_eq!(dialer.live.load(Ordering::SeqCst), stats.idle());
    assert_eq!(stats.total(), stats.idle(), "nothing is held at the end");
}

#[test]
fn get_and_drop_race_with_reap() {
    loom::model(|| {
        let (pool, dialer, clock) = pool(1);
        drop(block_on(pool.get(&1)).unwrap());
        clock.advance(Duration::from_secs(1));
        let getter = {
            let pool = pool.clone();
            thread::spawn(move || {
                let conn = block_on(pool.get(&1)).unwrap();
                // I6: the only idle connection expired before this thread started.
                assert!(!conn.is_reused());
                conn.id
            })
        };
        let reaped = pool.reap();
        let id = getter.join().unwrap();
        assert_eq!(id, 1);
        assert!(reaped <= 1);
        assert_accounts(&pool, &dialer);
    });
}

#[test]
fn two_gets_never_share_a_connection() {
    loom::model(|| {
        let (pool, dialer, _clock) = pool(2);
        drop(block_on(pool.get(&1)).unwrap());
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let pool = pool.clone();
                thread::spawn(move || {
                    let conn = block_on(pool.get(&1)).unwrap();
                    let id = conn.id;
                    drop(conn);
                    id
                })
            })
            .collect();
        let ids: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        // I1: the idle connection went to one of them; if they overlapped, the other dialed.
        assert!(ids.contains(&0));
        assert_accounts(&pool, &dialer);
        let stats = pool.stats();
        assert!(stats.idle() <= 2, "I2");
    });
}

#[test]
fn get_races_with_close() {
    loom::model(|| {
        let (pool, dialer, _clock) = pool(1);
        drop(block_on(pool.get(&1)).unwrap());
        let getter = {
            let pool = pool.clone();
            thread::spawn(move || match block_on(pool.get(&1)) {
                Ok(conn) => drop(conn),
                Err(Error::Closed) => {}
                Err(err) => panic!("unexpected {err:?}"),
            })
        };
        pool.close();
        getter.join().unwrap();
        // Whatever the order, nothing stays idle or open after close.
        assert_eq!(dialer.live.load(Ordering::SeqCst), 0);
        assert_accounts(&pool, &dialer);
    });
}

#[test]
fn a_drop_races_with_close_and_a_get() {
    loom::model(|| {
        let (pool, dialer, _clock) = pool(1);
        let held = block_on(pool.get(&1)).unwrap();
        let dropper = thread::spawn(move || drop(held));
        let getter = {
            let pool = pool.clone();
            thread::spawn(move || {
                if let Ok(conn) = block_on(pool.get(&1)) {
                    drop(conn);
                }
            })
        };
        pool.close();
        dropper.join().unwrap();
        getter.join().unwrap();
        assert_eq!(dialer.live.load(Ordering::SeqCst), 0);
        assert_accounts(&pool, &dialer);
    });
}

#[test]
fn a_cancelled_dial_races_with_a_drop() {
    loom::model(|| {
        let (pool, dialer, _clock) = pool(1);
        let held = block_on(pool.get(&1)).unwrap();
        let canceller = {
            let pool = pool.clone();
            thread::spawn(move || {
                // Reserve a dial, then go away before it completes.
                let mut fut = Box::pin(pool.dial(&1));
                let poll = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                assert!(poll.is_pending());
                drop(fut);
            })
        };
        drop(held);
        canceller.join().unwrap();
        assert_accounts(&pool, &dialer);
        assert!(pool.stats().idle() <= 1, "I2");
    });
}

fn limited() -> (Pool<Dialer>, Dialer) {
    let dialer = Dialer::default();
    let pool = Pool::builder(dialer.clone())
        .capacity(1)
        .max_open_per_host(1)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    (pool, dialer)
}

/// A thread whose get is polled once (queued, or served at once if a return came first) and
/// then dropped.
fn get_once_and_go_away(pool: &Pool<Dialer>) -> thread::JoinHandle<()> {
    let pool = pool.clone();
    thread::spawn(move || {
        let mut fut = Box::pin(pool.get(&1));
        let poll = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        drop(poll);
        drop(fut);
    })
}

#[test]
fn a_returned_connection_reaches_a_waiter() {
    loom::model(|| {
        let (pool, dialer) = limited();
        let held = block_on(pool.get(&1)).unwrap();
        let waiter = {
            let pool = pool.clone();
            thread::spawn(move || block_on(pool.get(&1)).unwrap().id)
        };
        drop(held);
        // Whether it queued before or after the return, the waiter ends with the one connection.
        assert_eq!(waiter.join().unwrap(), 0);
        assert_accounts(&pool, &dialer);
        assert_eq!(pool.stats().counters.dials, 1);
    });
}

#[test]
fn a_hand_off_races_with_the_waiter_going_away() {
    loom::model(|| {
        let (pool, dialer) = limited();
        let held = block_on(pool.get(&1)).unwrap();
        let waiter = get_once_and_go_away(&pool);
        drop(held);
        waiter.join().unwrap();
        // The connection was not swallowed: it is idle, ready for the next get.
        assert_eq!(pool.stats().idle(), 1);
        assert_accounts(&pool, &dialer);
        assert!(block_on(pool.get(&1)).unwrap().is_reused());
    });
}

#[test]
fn a_freed_slot_races_with_the_waiter_going_away() {
    loom::model(|| {
        let (pool, dialer) = limited();
        let held = block_on(pool.get(&1)).unwrap();
        let waiter = get_once_and_go_away(&pool);
        held.release();
        waiter.join().unwrap();
        // The slot was not swallowed: the destination is empty and a new get can dial.
        assert_accounts(&pool, &dialer);
        assert!(pool.stats().destinations.is_empty());
        assert!(block_on(pool.get(&1)).is_ok());
    });
}

/// Counts its wake-ups.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_release_racing_with_shutdown_wakes_it() {
    loom::model(|| {
        let (pool, dialer, _clock) = pool(1);
        let held = block_on(pool.get(&1)).unwrap();
        let releaser = thread::spawn(move || held.release());
        let wakes = Arc::new(CountingWaker::default());
        let waker = Waker::from(wakes.clone());
        let mut shutdown = Box::pin(pool.shutdown(Duration::from_secs(1)));
        let first = shutdown.as_mut().poll(&mut Context::from_waker(&waker));
        releaser.join().unwrap();
        if first.is_pending() {
            // The last connection came back after shutdown looked: it must have been told.
            assert!(
                wakes.0.load(Ordering::SeqCst) > 0,
                "shutdown was never woken"
            );
            let again = shutdown.as_mut().poll(&mut Context::from_waker(&waker));
            assert!(matches!(again, Poll::Ready(true)));
        } else {
            assert!(matches!(first, Poll::Ready(true)));
        }
        assert_eq!(dialer.live.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn shutdown_is_true_only_once_a_racing_expiry_has_closed_its_connection() {
    loom::model(|| {
        let (pool, dialer, clock) = pool(2);
        let first = block_on(pool.get(&1)).unwrap();
        let second = block_on(pool.get(&1)).unwrap();
        drop(first);
        clock.advance(Duration::from_secs(1));
        // The return closes the expired first connection on its way, after its unlock; or, the
        // pool closed, closes the second.
        let returner = thread::spawn(move || drop(second));
        let wakes = Arc::new(CountingWaker::default());
        let waker = Waker::from(wakes.clone());
        let mut shutdown = Box::pin(pool.shutdown(Duration::from_secs(1)));
        let first = shutdown.as_mut().poll(&mut Context::from_waker(&waker));
        if first.is_ready() {
            assert!(matches!(first, Poll::Ready(true)));
            assert_eq!(dialer.live.load(Ordering::SeqCst), 0, "true before a close");
        }
        returner.join().unwrap();
        if first.is_pending() {
            assert!(
                wakes.0.load(Ordering::SeqCst) > 0,
                "shutdown was never woken"
            );
            let again = shutdown.as_mut().poll(&mut Context::from_waker(&waker));
            assert!(matches!(again, Poll::Ready(true)));
        }
        assert_eq!(dialer.live.load(Ordering::SeqCst), 0);
    });
}

/// A pool of two lanes (without limits, so the lanes are kept): each of a model's threads gets
/// from a lane of its own, in the order they first get.
fn two_lanes(capacity: usize) -> (Pool<Dialer>, Dialer) {
    let dialer = Dialer::default();
    let pool = Pool::builder(dialer.clone())
        .capacity(capacity)
        .lanes(2)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    (pool, dialer)
}

#[test]
fn a_get_taking_from_another_lane_races_with_that_lanes_own_get() {
    loom::model(|| {
        let (pool, dialer) = two_lanes(2);
        drop(block_on(pool.get(&1)).unwrap()); // idle in the main thread's lane
        let other = {
            let pool = pool.clone();
            thread::spawn(move || block_on(pool.get(&1)).unwrap())
        };
        let mine = block_on(pool.get(&1)).unwrap();
        let theirs = other.join().unwrap();
        assert_ne!(mine.id, theirs.id, "one connection handed to two gets");
        assert!(
            mine.is_reused() || theirs.is_reused(),
            "the idle one is used"
        );
        drop((mine, theirs));
        assert!(pool.stats().idle() <= 2);
        assert_accounts(&pool, &dialer);
    });
}

#[test]
fn returns_to_two_lanes_share_one_destinations_capacity() {
    loom::model(|| {
        let (pool, dialer) = two_lanes(1);
        let held = block_on(pool.get(&1)).unwrap(); // from the main thread's lane
        let other = {
            let pool = pool.clone();
            thread::spawn(move || drop(block_on(pool.get(&1)).unwrap()))
        };
        drop(held);
        other.join().unwrap();
        assert!(pool.stats().idle() <= 1, "{:?}", pool.stats());
        assert_accounts(&pool, &dialer);
    });
}

#[test]
fn stats_count_a_connection_taken_from_another_lane_once() {
    loom::model(|| {
        let (pool, dialer) = two_lanes(1);
        drop(block_on(pool.get(&1)).unwrap());
        let other = {
            let pool = pool.clone();
            thread::spawn(move || drop(block_on(pool.get(&1)).unwrap()))
        };
        let stats = pool.stats();
        assert_eq!(stats.total(), 1, "{stats:?}");
        assert!(stats.idle() <= 1, "{stats:?}");
        other.join().unwrap();
        assert_accounts(&pool, &dialer);
    });
}

#[test]
fn a_get_taking_from_another_lane_races_with_a_return_asking_the_lanes_for_room() {
    loom::model(|| {
        let (pool, dialer) = two_lanes(1);
        let kept = block_on(pool.get(&1)).unwrap();
        drop(block_on(pool.get(&1)).unwrap()); // idle in the main thread's lane, its room taken
        let other = {
            let pool = pool.clone();
            thread::spawn(move || drop(block_on(pool.get(&1)).unwrap()))
        };
        drop(kept); // no room left in the lane: asks every lane, as the get takes from them
        other.join().unwrap();
        assert!(pool.stats().idle() <= 1, "{:?}", pool.stats());
        assert_accounts(&pool, &dialer);
    });
}
