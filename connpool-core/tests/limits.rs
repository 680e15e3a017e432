//! Capacity control: the per-host limit and its FIFO queue, timeouts on the pool's clock, the
//! global idle cap, lifetimes and graceful shutdown. Time is a ManualClock; futures are polled by
//! hand, so every interleaving here is chosen, not hoped for.

mod support;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use connpool_core::{Builder, Clock, Error, ManualClock, Pool, Pooled};
use futures::executor::block_on;
use futures::future::BoxFuture;
use support::{addr, poll_once, TestDialer};

type Pending<'a> = Pin<Box<dyn Future<Output = Result<Pooled<TestDialer>, Error>> + 'a>>;

const SECOND: Duration = Duration::from_secs(1);

fn builder(dialer: &TestDialer, clock: &ManualClock) -> Builder<TestDialer> {
    Pool::builder(dialer.clone())
        .capacity(8)
        .idle_timeout(Duration::from_secs(60))
        .clock(clock.clone())
}

fn limited(max_open: usize) -> (Pool<TestDialer>, TestDialer, ManualClock) {
    limited_with(max_open, |builder| builder)
}

/// [`limited`], with more settings from `configure`.
fn limited_with(
    max_open: usize,
    configure: impl FnOnce(Builder<TestDialer>) -> Builder<TestDialer>,
) -> (Pool<TestDialer>, TestDialer, ManualClock) {
    let (dialer, clock) = (TestDialer::new(), ManualClock::new());
    let pool = configure(builder(&dialer, &clock).max_open_per_host(max_open))
        .build()
        .unwrap();
    (pool, dialer, clock)
}

fn get(pool: &Pool<TestDialer>, a: &str) -> Pooled<TestDialer> {
    block_on(pool.get(&addr(a))).unwrap()
}

fn start<'a>(pool: &'a Pool<TestDialer>, a: &'a String) -> Pending<'a> {
    let mut fut: Pending<'a> = Box::pin(pool.get(a));
    assert!(poll_once(&mut fut).is_pending(), "expected to wait");
    fut
}

fn ready(fut: &mut Pending<'_>) -> Result<Pooled<TestDialer>, Error> {
    match poll_once(fut) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("expected the waiter to be served"),
    }
}

/// (total, idle, waiting) of `a`.
fn counts(pool: &Pool<TestDialer>, a: &str) -> (usize, usize, usize) {
    pool.stats()
        .destination(&addr(a))
        .map_or((0, 0, 0), |d| (d.total, d.idle, d.waiting))
}

/// Without the return check, a connection that died while held goes straight to the waiter
/// that is first in line; the waiter's get checks it, closes it and dials in its slot.
/// Also where nothing is kept idle (`capacity(0)`), which skips the return's check: a returned
/// connection is closed, or handed to a waiter, whose get checks it.
#[test]
fn without_the_return_check_a_waiter_is_never_handed_a_dead_connection() {
    let without_the_check: [fn(Builder<TestDialer>) -> Builder<TestDialer>; 2] =
        [|b| b.check_on_return(false), |b| b.capacity(0)];
    for configure in without_the_check {
        let (pool, dialer, _) = limited_with(1, configure);
        let a = addr("a:1");
        let held = get(&pool, "a:1");
        let mut waiter = start(&pool, &a);
        held.kill();
        drop(held);
        assert_eq!(dialer.checks(), 0);
        let got = ready(&mut waiter).unwrap();
        assert!(
            !got.is_reused(),
            "the waiter was handed the dead connection"
        );
        assert!(got.open.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(dialer.checks(), 1);
        assert_eq!(pool.stats().counters.closed_not_open, 1);
        assert_eq!(counts(&pool, "a:1"), (1, 0, 0));
        assert_eq!(dialer.live(), 1);
    }
}

/// A waiter handed a connection that turns out dead keeps its turn: it dials in that
/// connection's slot, and the waiter behind it is not served first. Without the return check
/// this is every death while held; with it, a death between the return and the waiter's poll.
#[test]
fn a_waiter_handed_a_dead_connection_dials_in_its_place_and_keeps_its_turn() {
    for check_on_return in [false, true] {
        let (pool, dialer, _) = limited_with(1, |b| b.check_on_return(check_on_return));
        let a = addr("a:1");
        let held = get(&pool, "a:1");
        let mut first = start(&pool, &a);
        let mut second = start(&pool, &a);
        if check_on_return {
            drop(held);
            dialer.kill_all();
        } else {
            held.kill();
            drop(held);
        }
        assert!(poll_once(&mut second).is_pending());
        let got = ready(&mut first).unwrap();
        assert!(!got.is_reused(), "the dead connection was handed out");
        assert_eq!(got.id, 1, "the first waiter dials");
        assert!(
            poll_once(&mut second).is_pending(),
            "the second waiter was served before the first"
        );
        assert_eq!(counts(&pool, "a:1"), (1, 0, 1));
        let counters = pool.stats().counters;
        assert_eq!(
            (counters.hits, counters.closed_not_open, counters.dials),
            (0, 1, 2)
        );

        drop(got);
        let next = ready(&mut second).unwrap();
        assert!(next.is_reused() && next.id == 1);
        assert_eq!(dialer.live(), 1);
    }
}

#[test]
fn callers_beyond_the_limit_wait_and_returns_go_to_the_oldest_first() {
    let (pool, dialer, _) = limited(2);
    let a = addr("a:1");
    let (c0, c1) = (get(&pool, "a:1"), get(&pool, "a:1"));
    let mut first = start(&pool, &a);
    let mut second = start(&pool, &a);
    assert_eq!(counts(&pool, "a:1"), (2, 0, 2));
    assert!(poll_once(&mut first).is_pending());

    drop(c1);
    let got = ready(&mut first).unwrap();
    assert_eq!(
        got.id, 1,
        "the returned connection goes straight to the oldest waiter"
    );
    assert!(got.is_reused());
    assert!(poll_once(&mut second).is_pending());
    assert_eq!(counts(&pool, "a:1"), (2, 0, 1));

    // A released connection frees a slot: the next waiter dials for itself.
    c0.release();
    let fresh = ready(&mut second).unwrap();
    assert!(!fresh.is_reused());
    assert_eq!(fresh.id, 2);
    assert_eq!(dialer.dials(), 3);
    let c = pool.stats().counters;
    assert_eq!((c.waits, c.hits, c.released), (2, 1, 1));
    assert_eq!(counts(&pool, "a:1"), (2, 0, 0));
}

#[test]
fn the_limit_counts_idle_and_dialing_connections_too() {
    let (pool, dialer, _) = limited(2);
    let a = addr("a:1");
    let gate = dialer.hold();
    let mut dialing = start(&pool, &a);
    dialer.release_hold();
    let held = get(&pool, "a:1");
    // One held, one being dialed: a third caller waits.
    let mut third = start(&pool, &a);
    gate.open();
    let second = ready(&mut dialing).unwrap();
    assert!(poll_once(&mut third).is_pending());
    drop(second);
    assert_eq!(ready(&mut third).unwrap().id, 1);
    drop(held);
    assert_eq!(counts(&pool, "a:1"), (2, 2, 0));
}

#[test]
fn limits_are_per_destination() {
    let (pool, _, _) = limited(1);
    let a = get(&pool, "a:1");
    let b = get(&pool, "b:1");
    assert_eq!((a.addr.as_str(), b.addr.as_str()), ("a:1", "b:1"));
}

#[test]
fn a_dropped_waiter_leaves_the_queue_at_once_and_swallows_nothing() {
    let (pool, _, _) = limited(1);
    let a = addr("a:1");
    let held = get(&pool, "a:1");
    let gone = start(&pool, &a);
    let mut next = start(&pool, &a);
    drop(gone);
    assert_eq!(counts(&pool, "a:1"), (1, 0, 1));
    drop(held);
    let held = ready(&mut next).unwrap();
    assert_eq!(held.id, 0);

    // Handed a connection but gone before collecting it: the connection moves on.
    let granted = start(&pool, &a);
    let mut after = start(&pool, &a);
    drop(held);
    drop(granted);
    let held = ready(&mut after).unwrap();
    assert_eq!(held.id, 0);
    assert_eq!(
        pool.stats().counters.hits,
        2,
        "the abandoned hand-off is not a hit"
    );

    // Handed a slot but gone before dialing: the slot moves on.
    let slot = start(&pool, &a);
    let mut last = start(&pool, &a);
    held.release();
    drop(slot);
    let conn = ready(&mut last).unwrap();
    assert!(!conn.is_reused());
    drop(conn);
    assert_eq!(counts(&pool, "a:1"), (1, 1, 0));
}

#[test]
fn a_wait_times_out_on_the_pools_clock() {
    let (pool, _, clock) = limited_with(1, |b| b.wait_timeout(5 * SECOND));
    let a = addr("a:1");
    let held = get(&pool, "a:1");
    let mut waiter = start(&pool, &a);
    clock.advance(4 * SECOND);
    assert!(poll_once(&mut waiter).is_pending());
    clock.advance(SECOND);
    assert!(matches!(ready(&mut waiter), Err(Error::Timeout)));
    assert_eq!(pool.stats().counters.wait_timeouts, 1);
    assert_eq!(counts(&pool, "a:1"), (1, 0, 0));

    // A connection handed over just before the timer fires is taken, not lost.
    let mut lucky = start(&pool, &a);
    drop(held);
    clock.advance(5 * SECOND);
    assert_eq!(ready(&mut lucky).unwrap().id, 0);
    assert_eq!(pool.stats().counters.wait_timeouts, 1);
}

/// A clock whose sleeps never end: a wait that depends on one of its timers never answers.
struct NeverWakes(ManualClock);

impl Clock for NeverWakes {
    fn now(&self) -> Instant {
        self.0.now()
    }

    fn sleep(&self, _: Duration) -> BoxFuture<'static, ()> {
        Box::pin(futures::future::pending())
    }
}

/// A zero wait is no wait: the caller is turned away in its first poll, whatever the clock (a
/// runtime's zero sleep ends at its next timer tick, not at once; this one's never ends), and it
/// never queues, so a connection returned after it is not handed to it.
#[test]
fn a_zero_wait_timeout_fails_at_once_when_full() {
    let pool = Pool::builder(TestDialer::new())
        .max_open_per_host(1)
        .wait_timeout(Duration::ZERO)
        .clock(NeverWakes(ManualClock::new()))
        .build()
        .unwrap();
    let a = addr("a:1");
    let held = get(&pool, "a:1");
    for fresh in [false, true] {
        let mut fut: Pending<'_> = if fresh {
            Box::pin(pool.dial(&a))
        } else {
            Box::pin(pool.get(&a))
        };
        assert!(matches!(
            poll_once(&mut fut),
            Poll::Ready(Err(Error::Timeout))
        ));
    }
    assert_eq!(counts(&pool, "a:1"), (1, 0, 0));
    let counters = pool.stats().counters;
    assert_eq!((counters.waits, counters.wait_timeouts), (2, 2));
    drop(held);
    assert_eq!(counts(&pool, "a:1"), (1, 1, 0), "back idle, not handed on");
    assert!(get(&pool, "a:1").is_reused());
}

#[test]
fn a_dial_that_takes_too_long_times_out_and_frees_its_slot() {
    let (pool, dialer, clock) = limited_with(1, |b| b.dial_timeout(3 * SECOND));
    let a = addr("a:1");
    let gate = dialer.hold();
    let mut slow = start(&pool, &a);
    let mut next = start(&pool, &a);
    clock.advance(3 * SECOND);
    assert!(matches!(ready(&mut slow), Err(Error::Timeout)));
    assert_eq!(pool.stats().counters.dial_timeouts, 1);
    // The slot went to the waiter, whose own dial now runs.
    assert!(poll_once(&mut next).is_pending());
    gate.open();
    dialer.release_hold();
    assert!(ready(&mut next).is_ok());
    assert_eq!(dialer.live(), 1);
}

#[test]
fn a_failing_backend_fails_every_waiter_fast_with_its_own_dial_error() {
    let (pool, dialer, _) = limited_with(1, |b| b.wait_timeout(60 * SECOND));
    let a = addr("down:1");
    let gate = dialer.hold();
    dialer.fail("down:1", io::ErrorKind::ConnectionRefused);
    let mut waiters: Vec<Pending<'_>> = (0..4).map(|_| start(&pool, &a)).collect();
    assert_eq!(pool.stats().counters.waits, 3);
    gate.open();
    dialer.release_hold();
    // No time passes: each waiter in turn gets the freed slot, dials, and fails.
    for waiter in &mut waiters {
        match ready(waiter) {
            Err(Error::Dial(err)) => assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("expected the dial error, got {other:?}"),
        }
    }
    let c = pool.stats().counters;
    assert_eq!((c.dial_errors, c.wait_timeouts), (4, 0));
    assert!(pool.stats().destinations.is_empty());
}

#[test]
fn dial_at_the_limit_closes_the_expired_idle_connections_as_expired_before_it_evicts() {
    let (pool, dialer, clock) = limited(3);
    let (first, second, third) = (get(&pool, "a:1"), get(&pool, "a:1"), get(&pool, "a:1"));
    drop(first);
    clock.advance(Duration::from_secs(30));
    drop(second);
    clock.advance(Duration::from_secs(30)); // the first one's idle time is up
    let fresh = block_on(pool.dial(&addr("a:1"))).unwrap();
    assert!(!fresh.is_reused());
    let c = pool.stats().counters;
    assert_eq!((c.closed_expired, c.closed_evicted), (1, 0), "{c:?}");
    assert_eq!(counts(&pool, "a:1"), (3, 1, 0), "the second stays idle");
    drop((third, fresh));
    assert_eq!(dialer.live(), 3);
}

#[test]
fn dial_at_the_limit_replaces_an_idle_connection_or_waits_for_a_slot() {
    let (pool, dialer, _) = limited(2);
    let a = addr("a:1");
    let held = get(&pool, "a:1");
    drop(get(&pool, "a:1").detach());
    let idle = get(&pool, "a:1");
    drop(idle);
    assert_eq!(counts(&pool, "a:1"), (2, 1, 0));
    // Full, one idle: dial closes it to make room.
    let fresh = block_on(pool.dial(&a)).unwrap();
    assert!(!fresh.is_reused());
    assert_eq!(pool.stats().counters.closed_evicted, 1);
    // Full, nothing idle: dial waits, and a returned connection makes room for a fresh one.
    let mut dial: Pending<'_> = Box::pin(pool.dial(&a));
    assert!(poll_once(&mut dial).is_pending());
    drop(held);
    let newer = ready(&mut dial).unwrap();
    assert!(!newer.is_reused());
    assert_eq!(pool.stats().counters.closed_evicted, 2);
    assert_eq!(dialer.live(), 2, "the two held");
}

#[test]
fn close_turns_waiters_away() {
    let (pool, _, _) = limited(1);
    let a = addr("a:1");
    let held = get(&pool, "a:1");
    let mut waiter = start(&pool, &a);
    pool.close();
    assert!(matches!(ready(&mut waiter), Err(Error::Closed)));
    drop(held);
    assert!(pool.stats().destinations.is_empty());
}

#[test]
fn a_waiter_served_before_close_and_collecting_after_it_gets_closed() {
    // Handed a connection: it is closed, not handed out of a closed pool.
    let (pool, dialer, _) = limited(1);
    let a = addr("a:1");
    let held = get(&pool, "a:1");
    let mut waiter = start(&pool, &a);
    drop(held);
    pool.close();
    assert!(matches!(ready(&mut waiter), Err(Error::Closed)));
    let counters = pool.stats().counters;
    assert_eq!((counters.hits, counters.closed_pool_closed), (0, 1));
    assert_eq!(dialer.live(), 0);
    assert!(block_on(pool.shutdown(Duration::ZERO)));

    // Handed a slot, or a dead connection whose slot it would dial in: no dial after close.
    for dead in [false, true] {
        let (pool, dialer, _) = limited_with(1, |b| b.check_on_return(false));
        let held = get(&pool, "a:1");
        let mut waiter = start(&pool, &a);
        if dead {
            held.kill();
            drop(held);
        } else {
            held.release();
        }
        pool.close();
        assert!(matches!(ready(&mut waiter), Err(Error::Closed)));
        assert_eq!(dialer.dials(), 1, "dialed after close (dead: {dead})");
        assert_eq!(dialer.live(), 0);
        assert!(pool.stats().destinations.is_empty());
    }
}

#[test]
fn a_waiter_dropped_by_a_panic_hands_on_its_unused_connection() {
    let (pool, dialer, _) = limited(1);
    let a = addr("a:1");
    let held = get(&pool, "a:1");
    let granted = start(&pool, &a);
    drop(held);
    let checks = dialer.checks();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _granted = granted;
        std::panic::resume_unwind(Box::new("the task awaiting the get failed"));
    }));
    assert!(unwound.is_err());
    assert_eq!(counts(&pool, "a:1"), (1, 1, 0), "kept idle");
    assert_eq!(pool.stats().counters.closed_panicking, 0);
    assert_eq!(dialer.live(), 1);
    // Not checked while the panic unwinds (a panicking `is_open` would abort): the next get
    // checks it.
    assert_eq!(dialer.checks(), checks);
    let conn = get(&pool, "a:1");
    assert!(conn.is_reused());
    assert_eq!(dialer.checks(), checks + 1);
}

#[test]
fn a_dropped_waiters_connection_comes_back_checked() {
    let (pool, dialer, _) = limited(1);
    let a = addr("a:1");
    let held = get(&pool, "a:1");
    let granted = start(&pool, &a);
    drop(held);
    // It dies before the waiter collects it; the waiter goes away.
    dialer.kill_all();
    drop(granted);
    assert_eq!(counts(&pool, "a:1"), (0, 0, 0), "kept idle unchecked");
    let counters = pool.stats().counters;
    assert_eq!((counters.hits, counters.closed_not_open), (0, 1));
    assert_eq!(dialer.live(), 0);
}

#[test]
fn the_global_idle_cap_closes_the_least_recently_used_anywhere() {
    let (dialer, clock) = (TestDialer::new(), ManualClock::new());
    let pool = builder(&dialer, &clock).max_idle_total(3).build().unwrap();
    let conns: Vec<_> = ["a:1", "b:1", "a:1", "c:1"]
        .iter()
        .map(|a| get(&pool, a))
        .collect();
    let ids: Vec<_> = conns.iter().map(|c| (c.addr.clone(), c.id)).collect();
    assert_eq!(ids[0], ("a:1".to_string(), 0));
    for conn in conns {
        drop(conn); // returned in order a0, b1, a2, c3
    }
    // a0 came back first: it goes.
    assert_eq!(pool.stats().idle(), 3);
    assert_eq!(pool.stats().counters.closed_evicted, 1);
    assert_eq!(counts(&pool, "a:1"), (1, 1, 0));
    // Reusing b1 makes it the most recent; the next eviction takes a2.
    drop(get(&pool, "b:1"));
    drop(get(&pool, "d:1"));
    assert_eq!(counts(&pool, "a:1"), (0, 0, 0));
    assert_eq!(pool.stats().idle(), 3);
    assert_eq!(dialer.live(), 3);
}

/// Random gets and returns over five destinations under `max_idle_total(3)` and capacity 2,
/// against a naive model: a list of (destination, connection) in the order they came back, where
/// a get takes the newest of its destination and a return beyond the cap closes the oldest
/// anywhere. Every get must hand out the connection the model names.
#[test]
fn the_global_idle_cap_matches_a_naive_lru_over_random_use() {
    let (dialer, clock) = (TestDialer::new(), ManualClock::new());
    let pool = builder(&dialer, &clock)
        .capacity(2)
        .max_idle_total(3)
        .build()
        .unwrap();
    let addrs = ["a:1", "b:1", "c:1", "d:1", "e:1"];
    let mut model: Vec<(String, usize)> = Vec::new();
    let mut held: Vec<Pooled<TestDialer>> = Vec::new();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..5_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let a = addrs[(seed % 5) as usize];
        if held.is_empty() || (seed >> 8) % 3 != 0 {
            let expected = model.iter().rposition(|(addr, _)| addr == a);
            let conn = get(&pool, a);
            match expected {
                Some(at) => assert_eq!(conn.id, model.remove(at).1, "not the newest idle"),
                None => assert!(!conn.is_reused(), "reused what the model closed"),
            }
            held.push(conn);
        } else {
            let conn = held.swap_remove((seed >> 16) as usize % held.len());
            let entry = (conn.addr.clone(), conn.id);
            drop(conn);
            if model.iter().filter(|(addr, _)| *addr == entry.0).count() < 2 {
                model.push(entry);
                if model.len() > 3 {
                    model.remove(0);
                }
            }
        }
        assert_eq!(pool.stats().idle(), model.len());
    }
    drop(held);
}

#[test]
fn old_connections_are_closed_at_return_at_checkout_and_by_reap() {
    let (dialer, clock) = (TestDialer::new(), ManualClock::new());
    let pool = builder(&dialer, &clock)
        .max_lifetime(10 * SECOND)
        .build()
        .unwrap();
    let old = get(&pool, "a:1");
    clock.advance(10 * SECOND);
    drop(old);
    assert_eq!(pool.stats().counters.closed_lifetime, 1, "closed at return");

    drop(get(&pool, "a:1"));
    clock.advance(10 * SECOND);
    assert!(
        !get(&pool, "a:1").is_reused(),
        "not handed out once too old"
    );
    assert_eq!(pool.stats().counters.closed_lifetime, 2);

    clock.advance(5 * SECOND);
    assert_eq!(pool.reap(), 0);
    clock.advance(5 * SECOND);
    assert_eq!(pool.reap(), 1, "the one returned by the last get");
    assert_eq!(pool.stats().counters.closed_lifetime, 3);
    assert_eq!(dialer.live(), 0);
}

#[test]
fn a_connection_too_old_by_the_time_a_waiter_takes_it_is_not_handed_out() {
    let (pool, _, clock) = limited_with(1, |b| b.max_lifetime(10 * SECOND));
    let a = addr("a:1");

    // Collected late: the waiter turns it down and dials in its slot.
    let held = get(&pool, "a:1");
    let mut waiter = start(&pool, &a);
    clock.advance(9 * SECOND);
    drop(held);
    clock.advance(2 * SECOND);
    let fresh = ready(&mut waiter).unwrap();
    assert!(!fresh.is_reused(), "handed out at 11 s of 10");
    assert_eq!(pool.stats().counters.closed_lifetime, 1);

    // Passed on by a waiter that went away: closed at that return, and the next waiter dials.
    let first = start(&pool, &a);
    let mut second = start(&pool, &a);
    clock.advance(5 * SECOND);
    drop(fresh);
    clock.advance(6 * SECOND);
    drop(first);
    assert!(
        !ready(&mut second).unwrap().is_reused(),
        "handed on at 11 s of 10"
    );
    let counters = pool.stats().counters;
    assert_eq!(
        (counters.hits, counters.closed_lifetime, counters.dials),
        (0, 2, 3)
    );
}

#[test]
fn shutdown_waits_for_held_connections_up_to_the_grace_period() {
    let (dialer, clock) = (TestDialer::new(), ManualClock::new());
    let pool = builder(&dialer, &clock).build().unwrap();
    let held = get(&pool, "a:1");
    drop(get(&pool, "b:1"));
    let mut shutdown = Box::pin(pool.shutdown(10 * SECOND));
    assert!(poll_once(&mut shutdown).is_pending());
    assert!(pool.is_closed());
    assert_eq!(dialer.live(), 1, "idle ones closed at once");
    drop(held);
    assert_eq!(poll_once(&mut shutdown), Poll::Ready(true));
    assert_eq!(dialer.live(), 0);

    let (dialer, clock) = (TestDialer::new(), ManualClock::new());
    let pool = builder(&dialer, &clock).build().unwrap();
    let kept = get(&pool, "a:1");
    let mut shutdown = Box::pin(pool.shutdown(10 * SECOND));
    assert!(poll_once(&mut shutdown).is_pending());
    clock.advance(10 * SECOND);
    assert_eq!(poll_once(&mut shutdown), Poll::Ready(false));
    drop(kept);
    assert_eq!(dialer.live(), 0);
    assert!(block_on(pool.shutdown(SECOND)), "nothing left out");
}

/// A clock whose sleeps panic, as tokio's do on a thread outside its runtime.
struct NoTimers(ManualClock);
impl Clock for NoTimers {
    fn now(&self) -> Instant {
        self.0.now()
    }
    fn sleep(&self, _: Duration) -> BoxFuture<'static, ()> {
        panic!("no timers on this thread")
    }
}

#[test]
fn shutdown_with_nothing_held_makes_no_timer() {
    let dialer = TestDialer::new();
    let pool = Pool::builder(dialer.clone())
        .clock(NoTimers(ManualClock::new()))
        .build()
        .unwrap();
    drop(get(&pool, "a:1"));
    assert!(block_on(pool.shutdown(10 * SECOND)), "nothing was held");
    assert_eq!(dialer.live(), 0);
    assert!(block_on(pool.shutdown(10 * SECOND)), "again, closed");
}

#[test]
fn limit_settings_are_checked() {
    let (dialer, clock) = (TestDialer::new(), ManualClock::new());
    let err = |b: Builder<TestDialer>| b.build().unwrap_err().setting();
    assert_eq!(
        err(builder(&dialer, &clock).max_open_per_host(0)),
        "max_open_per_host"
    );
    assert_eq!(
        err(builder(&dialer, &clock).max_lifetime(Duration::ZERO)),
        "max_lifetime"
    );
    assert_eq!(
        err(builder(&dialer, &clock).dial_timeout(Duration::ZERO)),
        "dial_timeout"
    );
    assert_eq!(
        err(Pool::builder(dialer.clone()).wait_timeout(SECOND)),
        "wait_timeout"
    );
    assert_eq!(
        err(Pool::builder(dialer.clone()).dial_timeout(SECOND)),
        "dial_timeout"
    );
    let huge = builder(&dialer, &clock)
        .max_open_per_host(usize::MAX)
        .max_idle_total(usize::MAX)
        .max_lifetime(Duration::MAX)
        .wait_timeout(Duration::MAX)
        .dial_timeout(Duration::MAX)
        .build()
        .unwrap();
    drop(get(&huge, "a:1"));
    assert!(get(&huge, "a:1").is_reused());
    // No clock that can sleep: shutdown answers at once.
    let plain = Pool::builder(dialer.clone()).build().unwrap();
    let held = get(&plain, "a:1");
    assert!(!block_on(plain.shutdown(SECOND)));
    drop(held);
    assert!(block_on(plain.shutdown(SECOND)));
}

/// A waiter is woken when it is handed something: a returned connection, a slot freed by a
/// release, or the news that the pool closed. Polled once by a task that counts its wake-ups,
/// and never again until woken.
#[test]
fn a_waiter_is_woken_when_it_is_handed_a_connection_a_slot_or_the_close() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    type End = fn(&Pool<TestDialer>, Pooled<TestDialer>);
    let ends: [(&str, End); 3] = [
        ("returned", |_, held| drop(held)),
        ("released", |_, held| held.release()),
        ("closed", |pool, held| {
            pool.close();
            drop(held);
        }),
    ];
    for (how, end) in ends {
        let (pool, _, _) = limited(1);
        let a = addr("a:1");
        let held = get(&pool, "a:1");
        let mut waiter: Pending<'_> = Box::pin(pool.get(&a));
        let task = Arc::new(Count::default());
        let waker = Waker::from(task.clone());
        let polled = waiter.as_mut().poll(&mut Context::from_waker(&waker));
        assert!(polled.is_pending(), "{how}: expected to wait");
        assert_eq!(task.0.load(Ordering::SeqCst), 0, "{how}");
        end(&pool, held);
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "{how}: the waiter was not woken"
        );
        let got = ready(&mut waiter);
        assert_eq!(got.is_ok(), how != "closed", "{how}");
    }
}
