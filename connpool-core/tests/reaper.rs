//! The background reaper, driven by a ManualClock and a spawner that runs only when told.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use connpool_core::{Builder, Clock, Error, ManualClock, Pool, Pooled, Spawner};
use futures::executor::block_on;
use futures::future::BoxFuture;
use support::{addr, TestDialer, TestSpawner};

const TIMEOUT: Duration = Duration::from_secs(10);

fn pool() -> (Pool<TestDialer>, TestDialer, ManualClock, TestSpawner) {
    pool_with(|builder| builder)
}

/// [`pool`], with more settings from `configure`.
fn pool_with(
    configure: impl FnOnce(Builder<TestDialer>) -> Builder<TestDialer>,
) -> (Pool<TestDialer>, TestDialer, ManualClock, TestSpawner) {
    let dialer = TestDialer::new();
    let clock = ManualClock::new();
    let spawner = TestSpawner::default();
    let builder = Pool::builder(dialer.clone())
        .capacity(4)
        .idle_timeout(TIMEOUT)
        .clock(clock.clone())
        .spawner(spawner.clone());
    let pool = configure(builder).build().unwrap();
    (pool, dialer, clock, spawner)
}

/// A clock that says whether it reads the system's time, sleeps on a [`ManualClock`], and counts
/// how often the pool asks it for the time.
#[derive(Clone)]
struct CountingClock {
    sleeps: ManualClock,
    nows: Arc<AtomicUsize>,
    system: bool,
}

impl Clock for CountingClock {
    fn now(&self) -> Instant {
        self.nows.fetch_add(1, Ordering::SeqCst);
        Instant::now()
    }

    fn sleep(&self, dur: Duration) -> BoxFuture<'static, ()> {
        self.sleeps.sleep(dur)
    }

    fn is_system_time(&self) -> bool {
        self.system
    }
}

/// How a test hands its clock and spawner to the builder.
type Give = fn(Builder<TestDialer>, CountingClock, TestSpawner) -> Builder<TestDialer>;

/// As themselves, shared and boxed: a pool uses each the same way.
const WAYS: [(&str, Give); 3] = [
    ("as themselves", |b, clock, spawner| {
        b.clock(clock).spawner(spawner)
    }),
    ("in an Arc<dyn _>", |b, clock, spawner| {
        b.clock(Arc::new(clock) as Arc<dyn Clock>)
            .spawner(Arc::new(spawner) as Arc<dyn Spawner>)
    }),
    ("in a Box<dyn _>", |b, clock, spawner| {
        b.clock(Box::new(clock) as Box<dyn Clock>)
            .spawner(Box::new(spawner) as Box<dyn Spawner>)
    }),
];

#[test]
fn a_clock_on_the_systems_time_is_slept_on_and_not_read() {
    for (system, (way, give)) in [true, false].into_iter().flat_map(|s| WAYS.map(|w| (s, w))) {
        let clock = CountingClock {
            sleeps: ManualClock::new(),
            nows: Arc::default(),
            system,
        };
        let spawner = TestSpawner::default();
        let builder = Pool::builder(TestDialer::new()).idle_timeout(TIMEOUT);
        let pool = give(builder, clock.clone(), spawner.clone())
            .build()
            .unwrap();
        let at_build = clock.nows.load(Ordering::SeqCst);
        for _ in 0..10 {
            drop(block_on(pool.get(&addr("a:1"))).unwrap());
        }
        spawner.run();
        assert_eq!(
            clock.sleeps.pending_sleeps(),
            1,
            "system time {system}, {way}: the reaper sleeps on the clock"
        );
        let asked = clock.nows.load(Ordering::SeqCst) - at_build;
        if system {
            assert_eq!(asked, 0, "{way}: the pool reads the system's clock itself");
        } else {
            assert!(
                asked >= 20,
                "{way}: every get and return asks the clock: {asked}"
            );
        }
    }
}

#[test]
fn the_reaper_closes_idle_connections_after_the_timeout_without_any_call() {
    let (pool, dialer, clock, spawner) = pool();
    spawner.run();
    assert_eq!(spawner.pending(), 1);
    let conns: Vec<_> = (0..3)
        .map(|_| block_on(pool.get(&addr("a:1"))).unwrap())
        .collect();
    drop(conns);
    spawner.run();
    assert_eq!(
        clock.pending_sleeps(),
        1,
        "the reaper sleeps until the deadline"
    );
    clock.advance(TIMEOUT - Duration::from_millis(1));
    spawner.run();
    assert_eq!(dialer.live(), 3);
    clock.advance(Duration::from_millis(1));
    spawner.run();
    assert_eq!(dialer.live(), 0);
    assert!(pool.stats().destinations.is_empty());
    assert_eq!(pool.stats().counters.closed_expired, 3);
}

#[test]
fn the_reaper_follows_staggered_deadlines() {
    let (pool, dialer, clock, spawner) = pool();
    spawner.run();
    drop(block_on(pool.get(&addr("a:1"))).unwrap());
    spawner.run();
    clock.advance(Duration::from_secs(4));
    drop(block_on(pool.get(&addr("b:1"))).unwrap());
    spawner.run();
    clock.advance(Duration::from_secs(6));
    spawner.run();
    assert_eq!(dialer.live(), 1, "a:1 expired, b:1 has 4 s left");
    assert!(pool.stats().destination(&addr("b:1")).is_some());
    clock.advance(Duration::from_secs(4));
    spawner.run();
    assert_eq!(dialer.live(), 0);
}

#[test]
fn the_reaper_parks_while_nothing_is_idle() {
    let (pool, _dialer, clock, spawner) = pool();
    spawner.run();
    let parked_polls = spawner.polls();
    assert_eq!(clock.pending_sleeps(), 0, "nothing idle: no timer at all");
    for _ in 0..100 {
        clock.advance(TIMEOUT);
        spawner.run();
    }
    assert_eq!(
        spawner.polls(),
        parked_polls,
        "a parked reaper is never polled"
    );

    // A held connection is not idle: still parked.
    let held = block_on(pool.get(&addr("a:1"))).unwrap();
    spawner.run();
    assert_eq!(spawner.polls(), parked_polls);

    // Once it comes back, the reaper wakes once, sleeps until its deadline, reaps, parks again.
    drop(held);
    spawner.run();
    clock.advance(TIMEOUT);
    spawner.run();
    let after_reap = spawner.polls();
    assert!(
        after_reap - parked_polls <= 3,
        "woke {} times",
        after_reap - parked_polls
    );
    assert_eq!(clock.pending_sleeps(), 0);
    for _ in 0..100 {
        clock.advance(TIMEOUT);
        spawner.run();
    }
    assert_eq!(spawner.polls(), after_reap);
}

#[test]
fn the_reaper_wakes_a_bounded_number_of_times_per_timeout() {
    let (pool, _dialer, clock, spawner) = pool();
    spawner.run();
    // A connection comes back every 100 ms for ten timeouts: a naive reaper would wake for each.
    let start = spawner.polls();
    for _ in 0..1000 {
        drop(block_on(pool.get(&addr("a:1"))).unwrap());
        clock.advance(Duration::from_millis(100));
        spawner.run();
    }
    let wakeups = spawner.polls() - start;
    assert!(
        wakeups <= 10 * 17,
        "{wakeups} wake-ups in ten idle timeouts"
    );
}

#[test]
fn a_connection_whose_lifetime_ends_before_the_reapers_next_look_wakes_it() {
    let (pool, dialer, clock, spawner) = pool_with(|builder| builder.max_lifetime(TIMEOUT / 2));
    spawner.run();
    let old = block_on(pool.get(&addr("a:1"))).unwrap(); // lives until 5 s
    clock.advance(Duration::from_secs(4));
    spawner.run();
    drop(block_on(pool.get(&addr("b:1"))).unwrap()); // lives until 9 s; idle until 14 s
    spawner.run(); // the reaper sleeps until 9 s
    drop(old); // at 4 s, idle with 1 s to live
    spawner.run();
    clock.advance(Duration::from_secs(1));
    spawner.run();
    assert_eq!(
        pool.stats().destination(&addr("a:1")).map(|d| d.idle),
        None,
        "a:1 reaped at the end of its lifetime"
    );
    assert_eq!(pool.stats().counters.closed_lifetime, 1);
    assert_eq!(dialer.live(), 1);
    clock.advance(Duration::from_secs(4));
    spawner.run();
    assert_eq!(dialer.live(), 0, "b:1 at the end of its own");
}

#[test]
fn a_return_on_the_fast_path_whose_lifetime_ends_early_wakes_the_reaper() {
    let (pool, _dialer, clock, spawner) = pool_with(|builder| builder.max_lifetime(TIMEOUT / 2));
    spawner.run();
    // Returned once, so that this lane has room and the next return takes the fast path.
    drop(block_on(pool.get(&addr("a:1"))).unwrap()); // lives until 5 s
    let old = block_on(pool.get(&addr("a:1"))).unwrap();
    assert!(old.is_reused());
    spawner.run();
    clock.advance(Duration::from_secs(4));
    drop(block_on(pool.get(&addr("b:1"))).unwrap()); // lives until 9 s
    spawner.run();
    drop(old); // at 4 s, 1 s to live
    spawner.run();
    clock.advance(Duration::from_secs(1));
    spawner.run();
    assert_eq!(pool.stats().destination(&addr("a:1")).map(|d| d.idle), None);
}

#[test]
fn a_lifetime_still_wakes_the_reaper_after_it_woke_on_its_own() {
    let (pool, _dialer, clock, spawner) = pool_with(|builder| builder.max_lifetime(TIMEOUT / 2));
    let quarter = Duration::from_millis(250);
    spawner.run();
    drop(block_on(pool.get(&addr("c:1"))).unwrap()); // lives until 5 s
    let old = block_on(pool.get(&addr("a:1"))).unwrap(); // lives until 5 s
    spawner.run();
    clock.advance(Duration::from_secs(1));
    let old2 = block_on(pool.get(&addr("e:1"))).unwrap(); // lives until 6 s
    clock.advance(Duration::from_secs(2));
    drop(block_on(pool.get(&addr("d:1"))).unwrap()); // lives until 8 s
    spawner.run();
    clock.advance(Duration::from_secs(2));
    spawner.run(); // wakes by its own plan at 5 s, closes c:1, plans for d:1 at 8 s
    assert_eq!(pool.stats().counters.closed_lifetime, 1);
    drop(old); // past its lifetime: closed at the return
    drop(old2); // 1 s to live
    let polls = spawner.polls();
    for _ in 0..8 {
        clock.advance(quarter);
        spawner.run();
    }
    assert_eq!(pool.stats().destination(&addr("e:1")).map(|d| d.idle), None);
    assert_eq!(pool.stats().counters.closed_lifetime, 3);
    let woken = spawner.polls() - polls;
    assert!(woken <= 3, "woke {woken} times between 5 s and 7 s");
}

/// A [`ManualClock`] that, once armed, plays another thread getting and returning a connection
/// each time the reaper reads the time: the reaper reads it as it starts a look, after it has
/// marked itself looking and before it takes any shard lock.
#[derive(Clone)]
struct BusyClock {
    clock: ManualClock,
    /// The pool it plays on, which holds this clock: taken back at the end of the test, or
    /// neither would ever be freed.
    pool: Arc<std::sync::Mutex<Option<Pool<TestDialer>>>>,
    /// Returns played so far, plus one; 0: not armed.
    armed: Arc<AtomicUsize>,
}

impl Clock for BusyClock {
    fn now(&self) -> Instant {
        let armed = self.armed.load(Ordering::SeqCst);
        // The get and the drop read the time too: play a return only for the reaper's reads.
        if (1..=100).contains(&armed) {
            self.armed.store(0, Ordering::SeqCst);
            let pool = self.pool.lock().unwrap().clone();
            if let Some(pool) = pool {
                drop(block_on(pool.get(&addr("a:1"))).unwrap());
            }
            self.armed.store(armed + 1, Ordering::SeqCst);
        }
        self.clock.now()
    }

    fn sleep(&self, dur: Duration) -> BoxFuture<'static, ()> {
        self.clock.sleep(dur)
    }
}

#[test]
fn returns_during_a_look_do_not_keep_the_reaper_looking() {
    let clock = BusyClock {
        clock: ManualClock::new(),
        pool: Arc::default(),
        armed: Arc::default(),
    };
    let spawner = TestSpawner::default();
    let pool = Pool::builder(TestDialer::new())
        .idle_timeout(9 * TIMEOUT)
        .max_lifetime(6 * TIMEOUT)
        .clock(clock.clone())
        .spawner(spawner.clone())
        .build()
        .unwrap();
    *clock.pool.lock().unwrap() = Some(pool.clone());
    spawner.run();
    let held = block_on(pool.get(&addr("a:1"))).unwrap(); // lives until 60 s
    clock.clock.advance(TIMEOUT);
    drop(block_on(pool.get(&addr("b:1"))).unwrap()); // lives until 70 s
    spawner.run(); // the reaper sleeps until b:1's end
    drop(held); // ends earlier: wakes the reaper, rightly
    clock.armed.store(1, Ordering::SeqCst);
    spawner.run();
    let looks = clock.armed.swap(0, Ordering::SeqCst) - 1;
    assert!(
        looks <= 2,
        "{looks} looks in a row at 10 s, nothing due before 60 s"
    );
    pool.close();
    clock.pool.lock().unwrap().take();
}

#[test]
fn lifetimes_do_not_wake_the_reaper_more_than_a_bounded_number_of_times() {
    let (pool, _dialer, clock, spawner) =
        pool_with(|builder| builder.capacity(64).max_lifetime(TIMEOUT));
    spawner.run();
    // Dialed 100 ms apart, they come back youngest first: each return's lifetime ends before
    // every one already idle, the worst order for a reaper woken by earlier deadlines.
    let mut held: Vec<_> = (0..64)
        .map(|_| {
            clock.advance(Duration::from_millis(100));
            block_on(pool.dial(&addr("a:1"))).unwrap()
        })
        .collect();
    let start = spawner.polls();
    while let Some(conn) = held.pop() {
        drop(conn);
        spawner.run();
        clock.advance(Duration::from_millis(1));
    }
    let wakeups = spawner.polls() - start;
    assert!(
        (2..=12).contains(&wakeups),
        "{wakeups} wake-ups for 6.4 s of lifetimes at one per 625 ms"
    );
}

#[test]
fn the_reaper_ends_when_the_pool_is_closed() {
    let (pool, _dialer, _clock, spawner) = pool();
    drop(block_on(pool.get(&addr("a:1"))).unwrap());
    spawner.run();
    assert_eq!(spawner.pending(), 1);
    pool.close();
    spawner.run();
    assert_eq!(spawner.pending(), 0);
}

#[test]
fn the_reaper_ends_when_the_last_handle_is_dropped_even_with_a_guard_out() {
    let (pool, dialer, _clock, spawner) = pool();
    spawner.run();
    let held = block_on(pool.get(&addr("a:1"))).unwrap();
    drop(pool);
    spawner.run();
    assert_eq!(spawner.pending(), 0);
    drop(held);
    assert_eq!(dialer.live(), 0);
}

/// A runtime shut down while its pool lives on (a pool in a `static`, or one handed to another
/// runtime) drops the reaper's task unfinished: the pool must not keep the task's waker, which
/// holds the runtime (on tokio, its I/O and timer drivers, with their descriptors).
#[test]
fn a_reaper_dropped_by_its_executor_leaves_no_waker_behind() {
    for idle in [false, true] {
        let (pool, dialer, clock, spawner) = pool();
        if idle {
            drop(block_on(pool.get(&addr("a:1"))).unwrap());
        }
        spawner.run(); // parked, or asleep until the idle deadline
        assert_eq!(spawner.pending(), 1);
        assert!(spawner.wakers_out() > 0, "idle {idle}: the reaper waits");
        spawner.shut_down();
        assert_eq!(
            spawner.wakers_out(),
            0,
            "idle {idle}: a waker outlived its task"
        );
        // The pool goes on without a reaper, closing what expires lazily.
        clock.advance(TIMEOUT);
        drop(block_on(pool.get(&addr("a:1"))).unwrap());
        assert_eq!(dialer.dials(), if idle { 2 } else { 1 });
    }
}

#[test]
fn a_get_never_hands_out_an_expired_connection_before_the_reaper_runs() {
    let (pool, dialer, clock, spawner) = pool();
    spawner.run();
    drop(block_on(pool.get(&addr("a:1"))).unwrap());
    clock.advance(TIMEOUT); // the reaper has not run yet
    let conn = block_on(pool.get(&addr("a:1"))).unwrap();
    assert!(!conn.is_reused());
    assert_eq!(dialer.dials(), 2);
}

/// What a get of the test pool comes to.
type Got = Result<Pooled<TestDialer>, Error>;

/// On a pool with `max_open_per_host(1)`: the one connection to `a`, held, and a second get for
/// `a`, polled once, waiting in line for it.
fn held_and_waiting<'a>(
    pool: &'a Pool<TestDialer>,
    a: &'a String,
) -> (Pooled<TestDialer>, Pin<Box<impl Future<Output = Got> + 'a>>) {
    let held = block_on(pool.get(a)).unwrap();
    let mut waiting = Box::pin(pool.get(a));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        waiting.as_mut().poll(&mut cx).is_pending(),
        "the destination is full"
    );
    (held, waiting)
}

/// A waiter dropped after a returned connection was handed to it puts that connection idle: the
/// parked reaper must hear of it, or the connection outlives its idle timeout until the next call.
#[test]
fn a_connection_left_by_a_cancelled_waiter_is_reaped() {
    let (pool, dialer, clock, spawner) = pool_with(|builder| builder.max_open_per_host(1));
    spawner.run();
    assert_eq!(clock.pending_sleeps(), 0, "nothing idle: the reaper parks");
    let a = addr("a:1");
    let (held, waiting) = held_and_waiting(&pool, &a);
    drop(held); // handed straight to the waiter, so nothing went idle
    drop(waiting); // the waiter goes away and its connection goes idle
    assert_eq!(pool.stats().destination(&a).map(|d| d.idle), Some(1));
    spawner.run();
    clock.advance(TIMEOUT);
    spawner.run();
    assert_eq!(
        dialer.live(),
        0,
        "the reaper closed it without any other call"
    );
    assert_eq!(pool.stats().counters.closed_expired, 1);
}

/// A waiter dropped with nothing given to it leaves nothing idle: the parked reaper stays parked.
#[test]
fn a_waiter_cancelled_empty_handed_leaves_the_reaper_parked() {
    let (pool, _dialer, clock, spawner) = pool_with(|builder| builder.max_open_per_host(1));
    spawner.run();
    let a = addr("a:1");
    let (held, waiting) = held_and_waiting(&pool, &a);
    drop(waiting);
    assert_eq!(spawner.run(), 0, "the reaper was woken for nothing");
    assert_eq!(clock.pending_sleeps(), 0);
    drop(held);
    assert_eq!(spawner.run(), 1, "a connection went idle: the reaper looks");
}

/// A [`ManualClock`] that fails the test when read far more often than a few looks need: a
/// reaper that looks again and again within one poll.
#[derive(Clone)]
struct BoundedClock {
    inner: ManualClock,
    reads: Arc<AtomicUsize>,
}

impl Clock for BoundedClock {
    fn now(&self) -> Instant {
        let reads = self.reads.fetch_add(1, Ordering::SeqCst);
        assert!(reads < 10_000, "the clock was read {reads} times");
        self.inner.now()
    }

    fn sleep(&self, dur: Duration) -> BoxFuture<'static, ()> {
        self.inner.sleep(dur)
    }
}

#[test]
fn the_reaper_sleeps_when_an_idle_deadline_is_past_the_pools_time() {
    // An idle timeout just inside what the pool's nanoseconds count, so that the reaper runs,
    // and one far past them with a lifetime as long: either way, a connection's deadline adds up
    // to more than the pool's time can count.
    let centuries = Duration::from_nanos(u64::MAX - 1);
    for (idle_timeout, max_lifetime) in [(centuries, None), (Duration::MAX, Some(centuries))] {
        let clock = BoundedClock {
            inner: ManualClock::new(),
            reads: Arc::default(),
        };
        let spawner = TestSpawner::default();
        let mut builder = Pool::builder(TestDialer::new())
            .idle_timeout(idle_timeout)
            .clock(clock.clone())
            .spawner(spawner.clone());
        if let Some(max_lifetime) = max_lifetime {
            builder = builder.max_lifetime(max_lifetime);
        }
        let pool = builder.build().unwrap();
        spawner.run();
        clock.inner.advance(Duration::from_secs(1));
        drop(block_on(pool.get(&addr("a:1"))).unwrap());
        spawner.run();
        clock.inner.advance(Duration::from_secs(3600));
        spawner.run();
        assert!(block_on(pool.get(&addr("a:1"))).unwrap().is_reused());
    }
}

#[test]
fn the_reaper_sleeps_once_the_pools_time_is_past_what_it_counts() {
    // A pool whose nanoseconds have run out (or all but run out) can plan no wake-up after its
    // time: the reaper must still sleep between looks, not look again at once.
    let almost_all = Duration::from_nanos(u64::MAX - 2);
    for (idle_timeout, advance) in [
        (Duration::from_secs(10), Duration::MAX),
        (Duration::from_nanos(5), almost_all),
        (Duration::from_nanos(5), Duration::MAX),
    ] {
        let clock = ManualClock::new();
        let spawner = TestSpawner::default();
        let pool = Pool::builder(TestDialer::new())
            .idle_timeout(idle_timeout)
            .clock(clock.clone())
            .spawner(spawner.clone())
            .build()
            .unwrap();
        spawner.run();
        clock.advance(advance);
        drop(block_on(pool.get(&addr("a:1"))).unwrap());
        let polls = spawner.run();
        assert!(
            polls <= 3,
            "{idle_timeout:?}: the reaper looked {polls} times"
        );
        assert!(clock.pending_sleeps() <= 1, "{idle_timeout:?}");
        clock.advance(Duration::from_secs(1));
        let polls = spawner.run();
        assert!(
            polls <= 3,
            "{idle_timeout:?}: the reaper looked {polls} times"
        );
        assert_eq!(
            pool.stats().idle(),
            1,
            "{idle_timeout:?}: time no longer moves"
        );
    }
}

#[test]
fn no_reaper_is_spawned_for_a_pool_where_nothing_can_expire() {
    // Nothing is kept idle: nothing for a reaper to close.
    for configure in [
        (|b: Builder<TestDialer>| b.capacity(0)) as fn(_) -> _,
        |b| b.max_idle_total(0),
        // Kept idle, but for longer than the pool's time can count, and no lifetime.
        |b| b.idle_timeout(Duration::MAX),
        |b| b.idle_timeout(Duration::MAX).max_lifetime(Duration::MAX),
    ] {
        let (pool, _dialer, _clock, spawner) = pool_with(configure);
        assert_eq!(spawner.pending(), 0, "no task spawned");
        drop(pool);
    }
    // A lifetime the pool's time counts does start one.
    let (_pool, _dialer, _clock, spawner) =
        pool_with(|b| b.idle_timeout(Duration::MAX).max_lifetime(TIMEOUT));
    assert_eq!(spawner.pending(), 1);
}

#[test]
fn a_nap_that_ends_costs_the_reaper_one_poll() {
    let (pool, _dialer, clock, spawner) = pool();
    spawner.run();
    drop(block_on(pool.get(&addr("a:1"))).unwrap());
    assert_eq!(spawner.run(), 1, "woken from its park, it looks and naps");
    assert_eq!(clock.pending_sleeps(), 1);
    clock.advance(TIMEOUT);
    assert_eq!(
        spawner.run(),
        1,
        "at the nap's end one poll reaps and parks"
    );
    assert_eq!(pool.stats().idle(), 0);
}

#[test]
fn a_lifetime_still_cuts_short_a_nap_planned_at_the_end_of_the_pools_time() {
    // A lifetime that, for a connection dialed at 2^63 ns, ends at u64::MAX - 1 ns: the reaper's
    // plan for it is the highest it can make, just below its marks.
    let lifetime = Duration::from_nanos((1 << 63) - 2);
    let granularity = lifetime / 16;
    let (pool, _dialer, clock, spawner) =
        pool_with(|b| b.idle_timeout(Duration::MAX).max_lifetime(lifetime));
    spawner.run();
    clock.advance(Duration::from_nanos(64));
    let early = block_on(pool.get(&addr("a:1"))).unwrap(); // its lifetime ends at 2^63 + 62
    clock.advance(Duration::from_nanos((1 << 63) - 64));
    drop(block_on(pool.get(&addr("a:1"))).unwrap()); // dialed at 2^63: ends at u64::MAX - 1
    spawner.run();
    drop(early); // goes idle with its lifetime ending long before the reaper's plan
    spawner.run();
    clock.advance(granularity + Duration::from_secs(1));
    spawner.run();
    let c = pool.stats().counters;
    assert_eq!(
        c.closed_lifetime, 1,
        "the reaper woke for the early lifetime: {c:?}"
    );
    assert_eq!(pool.stats().idle(), 1);
}
