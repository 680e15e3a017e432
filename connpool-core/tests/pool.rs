//! go-connpool's behaviour and DESIGN.md's semantics, on the core with no runtime.

mod support;

use std::io;
use std::time::Duration;

use connpool_core::{Clock, Error, ManualClock, Pool, Pooled};
use futures::executor::block_on;
use support::{addr, poll_once, TestDialer};

const MINUTE: Duration = Duration::from_secs(60);

fn pool(capacity: usize) -> (Pool<TestDialer>, TestDialer, ManualClock) {
    let dialer = TestDialer::new();
    let clock = ManualClock::new();
    let pool = Pool::builder(dialer.clone())
        .capacity(capacity)
        .idle_timeout(MINUTE)
        .clock(clock.clone())
        .build()
        .unwrap();
    (pool, dialer, clock)
}

fn get(pool: &Pool<TestDialer>, a: &str) -> Pooled<TestDialer> {
    block_on(pool.get(&addr(a))).unwrap()
}

/// (total, idle) for `a`, or (0, 0) when the pool has nothing there.
fn counts(pool: &Pool<TestDialer>, a: &str) -> (usize, usize) {
    pool.stats()
        .destination(&addr(a))
        .map_or((0, 0), |d| (d.total, d.idle))
}

#[test]
fn sequential_gets_reuse_one_connection() {
    let (pool, dialer, _) = pool(2);
    for i in 0..10 {
        let conn = get(&pool, "a:1");
        assert_eq!(conn.id, 0);
        assert_eq!(conn.is_reused(), i > 0);
        assert_eq!(conn.addr(), "a:1");
    }
    assert_eq!(dialer.dials(), 1);
    let c = pool.stats().counters;
    assert_eq!((c.dials, c.hits), (1, 9));
    assert_eq!(counts(&pool, "a:1"), (1, 1));
}

#[test]
fn capacity_zero_keeps_nothing() {
    let (pool, dialer, _) = pool(0);
    for _ in 0..3 {
        drop(get(&pool, "a:1"));
        assert_eq!(counts(&pool, "a:1"), (0, 0));
    }
    assert_eq!(dialer.dials(), 3);
    assert_eq!(dialer.live(), 0);
    assert_eq!(pool.stats().counters.closed_over_capacity, 3);
    assert!(pool.stats().destinations.is_empty());
    // Nothing is kept, so nothing is checked before it is closed (a system call per request
    // with the adapters' dialers).
    assert_eq!(dialer.checks(), 0);
}

#[test]
fn capacity_bounds_idle_per_host_and_closes_the_rest() {
    let (pool, dialer, _) = pool(2);
    let held: Vec<_> = (0..5).map(|_| get(&pool, "a:1")).collect();
    let other: Vec<_> = (0..3).map(|_| get(&pool, "b:1")).collect();
    assert_eq!(counts(&pool, "a:1"), (5, 0));
    drop(held);
    drop(other);
    assert_eq!(counts(&pool, "a:1"), (2, 2));
    assert_eq!(counts(&pool, "b:1"), (2, 2));
    assert_eq!(dialer.live(), 4);
    assert_eq!(pool.stats().counters.closed_over_capacity, 4);
}

#[test]
fn idle_connections_go_out_last_in_first_out() {
    let (pool, _, _) = pool(4);
    let (c0, c1, c2) = (get(&pool, "a:1"), get(&pool, "a:1"), get(&pool, "a:1"));
    drop(c1);
    drop(c0);
    drop(c2);
    assert_eq!(get(&pool, "a:1").id, 2);
    let (x, y, z) = (get(&pool, "a:1"), get(&pool, "a:1"), get(&pool, "a:1"));
    assert_eq!((x.id, y.id, z.id), (2, 0, 1));
}

/// A returning connection goes back to the bucket it came from even when the table has moved that
/// bucket while it was out (the return first tries the slot the get found the bucket in).
#[test]
fn connections_held_while_the_table_grows_return_to_their_own_destination() {
    // A per-host limit keeps one lane, where every bucket may keep `capacity` idle connections:
    // a bucket of another destination would take the connection in, not send it the slow way.
    let dialer = TestDialer::new();
    let pool = Pool::builder(dialer.clone())
        .max_open_per_host(1 << 20)
        .build()
        .unwrap();
    let held_addrs: Vec<String> = (0..64).map(|i| format!("held:{i}")).collect();
    for a in &held_addrs {
        drop(get(&pool, a));
    }
    // Reused, so each guard knows where its bucket was.
    let held: Vec<_> = held_addrs.iter().map(|a| get(&pool, a)).collect();
    assert!(held.iter().all(|c| c.is_reused()));
    let others: Vec<_> = (0..4000)
        .map(|i| get(&pool, &format!("other:{i}")))
        .collect();
    drop(held);
    for a in &held_addrs {
        assert_eq!(counts(&pool, a), (1, 1), "{a}");
    }
    drop(others);
    let stats = pool.stats();
    assert_eq!(stats.destinations.len(), 4064);
    assert!(stats
        .destinations
        .iter()
        .all(|d| (d.total, d.idle) == (1, 1)));
    assert_eq!(dialer.dials(), 4064);
}

#[test]
fn reuse_is_per_address() {
    let (pool, dialer, _) = pool(4);
    drop(get(&pool, "a:1"));
    let b = get(&pool, "b:1");
    assert_eq!(b.addr, "b:1");
    assert!(!b.is_reused());
    drop(b);
    for _ in 0..5 {
        let a = get(&pool, "a:1");
        let b = get(&pool, "b:1");
        assert_eq!((a.addr.as_str(), b.addr.as_str()), ("a:1", "b:1"));
    }
    assert_eq!(dialer.dials(), 2);
}

#[test]
fn release_closes_and_never_returns() {
    let (pool, dialer, _) = pool(4);
    let conn = get(&pool, "a:1");
    conn.release();
    assert_eq!(dialer.live(), 0);
    assert_eq!(counts(&pool, "a:1"), (0, 0));
    assert!(pool.stats().destinations.is_empty());
    assert_eq!(pool.stats().counters.released, 1);
    assert!(!get(&pool, "a:1").is_reused());
}

#[test]
fn dial_bypasses_idle_connections() {
    let (pool, dialer, _) = pool(4);
    drop(get(&pool, "a:1"));
    let fresh = block_on(pool.dial(&addr("a:1"))).unwrap();
    assert!(!fresh.is_reused());
    assert_eq!(fresh.id, 1);
    assert_eq!(counts(&pool, "a:1"), (2, 1));
    drop(fresh);
    assert_eq!(counts(&pool, "a:1"), (2, 2));
    assert_eq!(dialer.dials(), 2);
}

/// go-connpool's README: a dead connection is released and the retry dials afresh.
#[test]
fn dead_connection_release_then_dial_works() {
    let (pool, dialer, _) = pool(4);
    let conns: Vec<_> = (0..3).map(|_| get(&pool, "a:1")).collect();
    drop(conns);
    dialer.kill_all(); // the backend crashed: every idle connection is dead
    let conn = block_on(pool.get(&addr("a:1"))).unwrap();
    // With check_on_get the dead ones are skipped without an error.
    assert!(!conn.is_reused());
    assert_eq!(pool.stats().counters.closed_not_open, 3);
    conn.release();

    let (unchecked, dialer, _) = {
        let dialer = TestDialer::new();
        let pool = Pool::builder(dialer.clone())
            .check_on_get(false)
            .build()
            .unwrap();
        (pool, dialer, ())
    };
    drop(get(&unchecked, "a:1"));
    dialer.kill_all();
    let dead = get(&unchecked, "a:1");
    assert!(dead.is_reused() && !dead.open.load(std::sync::atomic::Ordering::SeqCst));
    dead.release(); // known dead
    let retry = block_on(unchecked.dial(&addr("a:1"))).unwrap();
    assert!(retry.open.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(dialer.dials(), 2);
}

#[test]
fn a_connection_found_closed_on_return_is_not_kept() {
    let (pool, dialer, _) = pool(4);
    let conn = get(&pool, "a:1");
    conn.kill();
    drop(conn);
    assert_eq!(counts(&pool, "a:1"), (0, 0));
    assert_eq!(dialer.live(), 0);
    assert_eq!(pool.stats().counters.closed_not_open, 1);
}

/// `check_on_return(false)`: a return keeps the connection without asking `is_open`; the get
/// still asks, so one that died while held waits idle and is closed by the next get, never handed
/// out.
#[test]
fn without_the_return_check_a_connection_dead_on_return_waits_idle_and_the_get_closes_it() {
    let dialer = TestDialer::new();
    let pool = Pool::builder(dialer.clone())
        .capacity(4)
        .idle_timeout(MINUTE)
        .clock(ManualClock::new())
        .check_on_return(false)
        .build()
        .unwrap();
    drop(get(&pool, "a:1"));
    assert_eq!(dialer.checks(), 0, "a return does not ask");
    let conn = get(&pool, "a:1");
    assert!(conn.is_reused());
    assert_eq!(dialer.checks(), 1, "a get does");
    conn.kill();
    drop(conn);
    assert_eq!(dialer.checks(), 1);
    assert_eq!(counts(&pool, "a:1"), (1, 1), "kept idle without the check");
    assert_eq!(dialer.live(), 1);

    let fresh = get(&pool, "a:1");
    assert!(!fresh.is_reused(), "the dead connection was handed out");
    assert!(fresh.open.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(dialer.checks(), 2);
    let counters = pool.stats().counters;
    assert_eq!(
        (counters.closed_not_open, counters.hits, counters.dials),
        (1, 1, 2)
    );
    assert_eq!(dialer.live(), 1);
    drop(fresh);
    assert_eq!(counts(&pool, "a:1"), (1, 1));
}

/// `check_on_get(false)` turns off both checks, whatever `check_on_return` says; with the
/// defaults, both run.
#[test]
fn check_on_get_off_turns_the_return_check_off_too() {
    let cycles = |builder: fn(TestDialer) -> Pool<TestDialer>| {
        let dialer = TestDialer::new();
        let pool = builder(dialer.clone());
        for _ in 0..3 {
            drop(get(&pool, "a:1"));
        }
        dialer.checks()
    };
    let unchecked = |dialer| {
        Pool::builder(dialer)
            .check_on_get(false)
            .check_on_return(true)
            .build()
            .unwrap()
    };
    let defaults = |dialer| Pool::builder(dialer).build().unwrap();
    let get_only = |dialer| {
        Pool::builder(dialer)
            .check_on_return(false)
            .build()
            .unwrap()
    };
    assert_eq!(cycles(unchecked), 0);
    // Three returns and the two gets that reuse.
    assert_eq!(cycles(defaults), 5);
    assert_eq!(cycles(get_only), 2);
}

#[test]
fn detach_takes_the_connection_out_of_the_accounting() {
    let (pool, dialer, _) = pool(4);
    let conn = get(&pool, "a:1").detach();
    assert_eq!(conn.addr, "a:1");
    assert_eq!(counts(&pool, "a:1"), (0, 0));
    assert_eq!(dialer.live(), 1);
    assert_eq!(pool.stats().counters.detached, 1);
    drop(conn);
    assert_eq!(dialer.live(), 0);
}

#[test]
fn purge_closes_the_idle_connections_of_one_destination() {
    let (pool, dialer, _) = pool(4);
    let a: Vec<_> = (0..3).map(|_| get(&pool, "a:1")).collect();
    let b = get(&pool, "b:1");
    let held = get(&pool, "a:1");
    drop(a);
    drop(b);
    assert_eq!(pool.purge(&addr("a:1")), 3);
    assert_eq!(pool.purge(&addr("nowhere:1")), 0);
    assert_eq!(counts(&pool, "a:1"), (1, 0));
    assert_eq!(counts(&pool, "b:1"), (1, 1));
    assert_eq!(dialer.live(), 2);
    drop(held);
    assert_eq!(counts(&pool, "a:1"), (1, 1));
    assert_eq!(pool.stats().counters.closed_purged, 3);
}

#[test]
fn close_is_idempotent_frees_idle_and_closes_later_returns() {
    let (pool, dialer, _) = pool(4);
    let held = get(&pool, "a:1");
    drop(get(&pool, "b:1"));
    drop(get(&pool, "c:1"));
    assert!(!pool.is_closed());
    pool.close();
    pool.close();
    assert!(pool.is_closed());
    assert_eq!(dialer.live(), 1);
    assert_eq!(counts(&pool, "a:1"), (1, 0));
    assert!(matches!(
        block_on(pool.get(&addr("a:1"))),
        Err(Error::Closed)
    ));
    assert!(matches!(
        block_on(pool.dial(&addr("z:1"))),
        Err(Error::Closed)
    ));
    drop(held);
    assert_eq!(dialer.live(), 0);
    assert!(pool.stats().destinations.is_empty());
    let c = pool.stats().counters;
    assert_eq!(c.closed_pool_closed, 3);
    assert_eq!(c.dials, 3);
}

#[test]
fn a_dial_that_finishes_after_close_is_closed() {
    let (pool, dialer, _) = pool(4);
    let gate = dialer.hold();
    let a = addr("a:1");
    let mut fut = Box::pin(pool.get(&a));
    assert!(poll_once(&mut fut).is_pending());
    pool.close();
    gate.open();
    assert!(matches!(block_on(fut), Err(Error::Closed)));
    assert_eq!(dialer.live(), 0);
    let c = pool.stats().counters;
    assert_eq!((c.dials, c.closed_pool_closed), (1, 1));
    assert!(pool.stats().destinations.is_empty());
}

#[test]
fn dropping_the_last_handle_closes_the_pool() {
    let (pool, dialer, _) = pool(4);
    let other = pool.clone();
    let held = get(&pool, "a:1");
    drop(get(&pool, "b:1"));
    drop(pool);
    assert!(!other.is_closed());
    assert_eq!(dialer.live(), 2);
    drop(other);
    assert_eq!(dialer.live(), 1);
    drop(held);
    assert_eq!(dialer.live(), 0);
}

#[test]
fn stats_count_total_and_idle_per_destination() {
    let (pool, _, _) = pool(8);
    let a: Vec<_> = (0..3).map(|_| get(&pool, "a:1")).collect();
    let mut b: Vec<_> = (0..2).map(|_| get(&pool, "b:1")).collect();
    b.pop();
    let stats = pool.stats();
    assert_eq!(stats.destinations.len(), 2);
    assert_eq!(counts(&pool, "a:1"), (3, 0));
    assert_eq!(counts(&pool, "b:1"), (2, 1));
    assert_eq!((stats.total(), stats.idle()), (5, 1));
    drop(a);
    assert_eq!(counts(&pool, "a:1"), (3, 3));
}

#[test]
fn idle_connections_expire_lazily_on_get() {
    let (pool, dialer, clock) = pool(4);
    drop(get(&pool, "a:1"));
    clock.advance(MINUTE - Duration::from_nanos(1));
    assert!(get(&pool, "a:1").is_reused());
    clock.advance(MINUTE);
    let conn = get(&pool, "a:1");
    assert!(
        !conn.is_reused(),
        "an expired connection must not be handed out"
    );
    assert_eq!(conn.id, 1);
    assert_eq!(dialer.live(), 1);
    assert_eq!(pool.stats().counters.closed_expired, 1);
}

#[test]
fn idle_connections_expire_lazily_on_return_and_reap() {
    let (pool, dialer, clock) = pool(4);
    let (c0, c1) = (get(&pool, "a:1"), get(&pool, "a:1"));
    drop(c0);
    clock.advance(MINUTE);
    drop(c1); // closes c0 on the way in
    assert_eq!(counts(&pool, "a:1"), (1, 1));
    assert_eq!(dialer.live(), 1);
    drop(get(&pool, "b:1"));
    assert_eq!(pool.reap(), 0);
    clock.advance(MINUTE);
    assert_eq!(pool.reap(), 2);
    assert!(pool.stats().destinations.is_empty());
    assert_eq!(dialer.live(), 0);
    assert_eq!(pool.stats().counters.closed_expired, 3);
}

#[test]
fn a_dial_error_reaches_the_caller_with_its_io_error() {
    let (pool, dialer, _) = pool(4);
    dialer.fail("down:1", io::ErrorKind::ConnectionRefused);
    let err = block_on(pool.get(&addr("down:1"))).unwrap_err();
    let Error::Dial(ref io_err) = err else {
        panic!("expected a dial error, got {err:?}")
    };
    assert_eq!(io_err.kind(), io::ErrorKind::ConnectionRefused);
    assert!(err.to_string().contains("cannot reach down:1"), "{err}");
    // A reporter that walks the chain prints the io error's message once.
    assert_eq!(
        chain(&err).matches("cannot reach down:1").count(),
        1,
        "{}",
        chain(&err)
    );
    assert_eq!(
        io::Error::from(err).kind(),
        io::ErrorKind::ConnectionRefused
    );
    assert_eq!(pool.stats().counters.dial_errors, 1);
    assert!(pool.stats().destinations.is_empty());
    dialer.heal("down:1");
    assert!(block_on(pool.get(&addr("down:1"))).is_ok());
}

/// Every message of `err`'s chain, as an error reporter prints them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text += &format!("\ncaused by: {cause}");
        next = cause.source();
    }
    text
}

#[test]
fn a_dial_error_chain_names_each_cause_once() {
    #[derive(Debug)]
    struct Handshake(io::Error);
    impl std::fmt::Display for Handshake {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("handshake failed")
        }
    }
    impl std::error::Error for Handshake {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let reset = io::Error::new(io::ErrorKind::ConnectionReset, "peer reset");
    let err = Error::Dial(io::Error::other(Handshake(reset)));
    assert_eq!(
        chain(&err),
        "could not connect: handshake failed\ncaused by: peer reset"
    );
}

#[test]
fn errors_convert_to_io_errors_of_the_right_kind() {
    assert_eq!(
        io::Error::from(Error::Closed).kind(),
        io::ErrorKind::NotConnected
    );
    assert_eq!(
        io::Error::from(Error::Timeout).kind(),
        io::ErrorKind::TimedOut
    );
    assert!(Error::Closed.to_string().contains("closed"));
}

#[test]
fn bad_settings_are_build_errors_that_name_the_setting() {
    let err = Pool::new(TestDialer::new(), 4, Duration::ZERO).unwrap_err();
    assert_eq!(err.setting(), "idle_timeout");
    assert!(err.to_string().contains("idle_timeout"), "{err}");
    let err = Pool::builder(TestDialer::new())
        .spawner(support::TestSpawner::default())
        .build()
        .unwrap_err();
    assert_eq!(err.setting(), "spawner");
    assert!(err.to_string().contains("clock"), "{err}");
    // `?` in a constructor that answers `io::Result`.
    let io = std::io::Error::from(err);
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
    assert!(io.to_string().contains("spawner"), "{io}");
}

/// Settings print as given: no limit is `None`, not `usize::MAX`.
#[test]
fn settings_print_as_given() {
    let builder = Pool::builder(TestDialer::new()).capacity(3);
    let shown = format!("{builder:?}");
    assert!(shown.contains("capacity: 3"), "{shown}");
    assert!(shown.contains("max_open_per_host: None"), "{shown}");
    let shown = format!("{:?}", builder.max_open_per_host(7).build().unwrap());
    assert!(shown.contains("max_open_per_host: Some(7)"), "{shown}");
}

#[test]
fn extreme_settings_work() {
    let dialer = TestDialer::new();
    let pool = Pool::builder(dialer.clone())
        .capacity(usize::MAX)
        .idle_timeout(Duration::MAX)
        .clock(ManualClock::new())
        .spawner(support::TestSpawner::default())
        .build()
        .unwrap();
    drop(get(&pool, "a:1"));
    assert_eq!(pool.reap(), 0);
    assert!(get(&pool, "a:1").is_reused());
    let clock = ManualClock::new();
    let tiny = Pool::builder(TestDialer::new())
        .idle_timeout(Duration::from_nanos(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    drop(get(&tiny, ""));
    assert!(get(&tiny, "").is_reused(), "no time has passed");
    clock.advance(Duration::from_nanos(1));
    assert!(!get(&tiny, "").is_reused());
}

#[test]
fn a_connection_dropped_while_panicking_is_closed() {
    let (pool, dialer, _) = pool(4);
    let conn = get(&pool, "a:1");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _conn = conn;
        panic!("handler failed mid-request");
    }));
    assert!(result.is_err());
    assert_eq!(dialer.live(), 0);
    assert_eq!(counts(&pool, "a:1"), (0, 0));
    assert_eq!(pool.stats().counters.closed_panicking, 1);
    assert!(!get(&pool, "a:1").is_reused());
}

#[test]
fn a_cancelled_get_leaves_every_count_as_it_was() {
    let (pool, dialer, _) = pool(4);
    drop(get(&pool, "b:1"));
    let before = pool.stats();
    let gate = dialer.hold();
    let a = addr("a:1");
    let mut fut = Box::pin(pool.get(&a));
    assert!(poll_once(&mut fut).is_pending());
    drop(fut);
    let b = addr("b:1");
    let mut fut = Box::pin(pool.dial(&b));
    assert!(poll_once(&mut fut).is_pending());
    drop(fut);
    gate.open();
    assert_eq!(pool.stats(), before);
    assert_eq!(dialer.live(), 1);
    // The store took the reservation back: a later get still works and the map is clean.
    dialer.release_hold();
    drop(get(&pool, "a:1"));
    assert_eq!(counts(&pool, "a:1"), (1, 1));
}

#[test]
fn guards_dropped_on_plain_threads_return() {
    let (pool, dialer, _) = pool(4);
    let conns: Vec<_> = (0..3).map(|_| get(&pool, "a:1")).collect();
    std::thread::spawn(move || drop(conns)).join().unwrap();
    assert_eq!(counts(&pool, "a:1"), (3, 3));
    assert_eq!(dialer.live(), 3);
}

#[test]
fn dial_fn_makes_a_dialer() {
    let pool = Pool::new(
        connpool_core::dial_fn(|port: u16| async move {
            if port == 0 {
                Err(io::Error::new(io::ErrorKind::InvalidInput, "port 0"))
            } else {
                Ok(port * 2)
            }
        }),
        1,
        MINUTE,
    )
    .unwrap();
    assert_eq!(*block_on(pool.get(&21)).unwrap(), 42);
    assert!(matches!(block_on(pool.get(&0)), Err(Error::Dial(_))));
    assert!(pool.dialer().is_open(&1));
    assert!(format!("{pool:?}").contains("capacity: 1"));
}

#[test]
fn a_dial_fn_prints_its_name_and_not_its_function() {
    let dialer = connpool_core::dial_fn(|port: u16| async move { Ok::<_, io::Error>(port) });
    assert_eq!(format!("{dialer:?}"), "DialFn { .. }");
}

/// A connection that cannot be cloned: a `DialFn` clones with its function alone.
struct Port(u16);

#[test]
fn a_dial_fn_clones_with_its_function() {
    let dialed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = dialed.clone();
    let dialer = connpool_core::dial_fn(move |port: u16| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { Ok::<_, io::Error>(Port(port)) }
    });
    let first = Pool::new(dialer.clone(), 1, MINUTE).unwrap();
    let second = Pool::new(dialer, 1, MINUTE).unwrap();
    assert_eq!(block_on(first.get(&1)).unwrap().0, 1);
    assert_eq!(block_on(second.get(&2)).unwrap().0, 2);
    assert_eq!(
        dialed.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one function, shared"
    );
}

use connpool_core::Dialer as _;

/// A connection whose drop, once armed, stops until the test lets it go: it holds `close` halfway
/// through the pool's shards.
struct GatedConn(std::sync::Arc<Gate>);

#[derive(Default)]
struct Gate {
    armed: std::sync::atomic::AtomicBool,
    /// (entered, open), each behind the mutex.
    state: std::sync::Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
}

impl Gate {
    fn wait(&self, until: impl Fn(&(bool, bool)) -> bool) {
        let mut state = self.state.lock().unwrap();
        while !until(&state) {
            let (next, timeout) = self
                .changed
                .wait_timeout(state, Duration::from_secs(5))
                .unwrap();
            assert!(!timeout.timed_out(), "the gate was never reached");
            state = next;
        }
    }

    fn set(&self, change: impl FnOnce(&mut (bool, bool))) {
        change(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }
}

impl Drop for GatedConn {
    fn drop(&mut self) {
        if self
            .0
            .armed
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.0.set(|state| state.0 = true);
            self.0.wait(|state| state.1);
        }
    }
}

/// Once `is_closed` says so, every get answers `Closed`, even while `close` is still emptying the
/// shards it has not reached (their idle connections are still there).
#[test]
fn no_get_succeeds_once_the_pool_says_it_is_closed() {
    let gate = std::sync::Arc::new(Gate::default());
    let dialer = {
        let gate = gate.clone();
        connpool_core::dial_fn(move |_: u32| {
            let gate = gate.clone();
            async move { Ok::<_, io::Error>(GatedConn(gate)) }
        })
    };
    let pool = Pool::builder(dialer).build().unwrap();
    let addrs = 0..256u32;
    for a in addrs.clone() {
        drop(block_on(pool.get(&a)).unwrap());
    }
    gate.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let closer = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.close())
    };
    // `close` now sits in its first shard's aftermath, the other shards not yet emptied.
    gate.wait(|state| state.0);
    assert!(pool.is_closed());
    let handed_out = addrs
        .clone()
        .filter(|a| !matches!(block_on(pool.get(a)), Err(Error::Closed)))
        .count();
    gate.set(|state| state.1 = true);
    closer.join().unwrap();
    assert_eq!(handed_out, 0, "gets that did not answer Closed");
    assert!(pool.stats().destinations.is_empty());
}

#[test]
fn a_manual_clock_moved_past_what_an_instant_holds_goes_as_far_as_it_can() {
    let clock = ManualClock::new();
    let pool = Pool::builder(TestDialer::new())
        .idle_timeout(Duration::from_secs(10))
        .clock(clock.clone())
        .build()
        .unwrap();
    drop(block_on(pool.get(&addr("a:1"))).unwrap());
    let before = clock.now();
    clock.advance(Duration::MAX);
    let after = clock.now();
    assert!(after > before);
    assert!(
        after.checked_add(Duration::from_nanos(2)).is_none(),
        "as far as an Instant goes, within a nanosecond"
    );
    assert_eq!(pool.reap(), 1, "the idle connection expired");
    clock.advance(Duration::from_secs(1)); // stays where it is
    assert_eq!(clock.now(), after);
}

#[test]
fn a_pool_running_for_centuries_still_keeps_young_connections() {
    let clock = ManualClock::new();
    let pool = Pool::builder(TestDialer::new())
        .max_lifetime(Duration::from_secs(3600))
        .clock(clock.clone())
        .build()
        .unwrap();
    clock.advance(Duration::from_secs(150 * 365 * 24 * 3600));
    drop(block_on(pool.get(&addr("a:1"))).unwrap());
    let stats = pool.stats();
    assert_eq!(stats.counters.closed_lifetime, 0, "{stats:?}");
    assert_eq!(stats.idle(), 1, "{stats:?}");
    clock.advance(Duration::from_secs(3600));
    assert_eq!(pool.reap(), 1, "and closes them once their lifetime is up");
}

#[test]
fn a_connection_lives_its_whole_lifetime_to_the_nanosecond() {
    let clock = ManualClock::new();
    let pool = Pool::builder(TestDialer::new())
        .max_lifetime(Duration::from_secs(1))
        .clock(clock.clone())
        .build()
        .unwrap();
    clock.advance(Duration::from_nanos(3));
    let conn = block_on(pool.get(&addr("a:1"))).unwrap();
    clock.advance(Duration::from_nanos(999_999_999));
    drop(conn);
    let stats = pool.stats();
    assert_eq!(stats.counters.closed_lifetime, 0, "{stats:?}");
    assert_eq!(
        stats.idle(),
        1,
        "1 ns short of its lifetime, it goes back idle"
    );
    clock.advance(Duration::from_nanos(1));
    assert_eq!(pool.reap(), 1, "and is closed when its lifetime is up");
}

#[test]
fn a_get_closes_the_idle_connections_whose_time_is_up_behind_the_one_it_takes() {
    let (dialer, clock) = (TestDialer::new(), ManualClock::new());
    let pool = Pool::builder(dialer.clone())
        .capacity(4)
        .idle_timeout(Duration::from_secs(60))
        .clock(clock.clone())
        .build()
        .unwrap();
    let a = addr("a:1");
    let old = block_on(pool.get(&a)).unwrap();
    let young = block_on(pool.get(&a)).unwrap();
    drop(old);
    clock.advance(Duration::from_secs(30));
    drop(young);
    // The first idle for 70 s of 60, the second for 40.
    clock.advance(Duration::from_secs(40));
    let conn = block_on(pool.get(&a)).unwrap();
    assert_eq!(conn.id, 1, "the newest is handed out");
    let stats = pool.stats();
    assert_eq!(stats.counters.closed_expired, 1, "{stats:?}");
    assert_eq!(
        stats.destination(&a).map(|d| (d.total, d.idle)),
        Some((1, 0))
    );
    assert_eq!(dialer.live(), 1, "only the connection in hand is open");
}

/// A return closes the idle connections whose time is up at its destination whatever becomes of
/// the connection it brings: kept, turned down by `is_open`, past its lifetime, released or
/// detached (DESIGN.md's semantic 2: at the next drop for that destination).
#[test]
fn every_kind_of_return_closes_the_idle_connections_whose_time_is_up() {
    type End = fn(Pooled<TestDialer>);
    let ends: [(&str, End); 5] = [
        ("kept", drop),
        ("turned down by is_open", |conn| {
            conn.kill();
            drop(conn);
        }),
        ("past its lifetime", |conn| drop(conn)),
        ("released", Pooled::release),
        ("detached", |conn| drop(conn.detach())),
    ];
    for (how, end) in ends {
        let (dialer, clock) = (TestDialer::new(), ManualClock::new());
        let lifetime = if how == "past its lifetime" {
            Duration::from_secs(65)
        } else {
            Duration::from_secs(3600)
        };
        let pool = Pool::builder(dialer.clone())
            .capacity(4)
            .idle_timeout(Duration::from_secs(60))
            .max_lifetime(lifetime)
            .clock(clock.clone())
            .build()
            .unwrap();
        let a = addr("a:1");
        let idle = block_on(pool.get(&a)).unwrap();
        let held = block_on(pool.get(&a)).unwrap();
        drop(idle);
        // Idle for 70 s of 60; the held one 70 s old.
        clock.advance(Duration::from_secs(70));
        end(held);
        let stats = pool.stats();
        assert_eq!(stats.counters.closed_expired, 1, "{how}: {stats:?}");
        let kept = usize::from(how == "kept");
        assert_eq!(
            stats.destination(&a).map_or((0, 0), |d| (d.total, d.idle)),
            (kept, kept),
            "{how}"
        );
        assert_eq!(dialer.live(), kept, "{how}: only what is kept is open");
    }
}

#[test]
fn on_the_system_clock_a_connection_idle_past_its_timeout_is_never_handed_out() {
    // Real time, and no race: each get comes when its connection has been idle for at least the
    // timeout, so none may come back. 20 ms is read on the precise clock; 1100.1 ms on the coarse
    // one where its tick is 4 ms or less (Linux), whose readings lag the time and would show most
    // of these idle times short, and which the pool must allow for. The returns are spread over
    // about 80 ms, so that they and their gets fall at every point of a tick.
    for timeout in [Duration::from_millis(20), Duration::from_micros(1_100_100)] {
        // The pool allows for a lag of a 64th of the timeout on the coarse clock, and says so; a
        // get during a longer one (a stalled tick on a loaded machine) proves nothing.
        let allowed = coarse_clock_tick()
            .filter(|tick| timeout >= *tick * 256)
            .map(|_| timeout / 64);
        let dialer = TestDialer::new();
        let pool = Pool::builder(dialer.clone())
            .idle_timeout(timeout)
            .build()
            .unwrap();
        let addrs: Vec<String> = (0..64).map(|n| format!("a:{n}")).collect();
        let held: Vec<_> = addrs
            .iter()
            .map(|a| block_on(pool.get(a)).unwrap())
            .collect();
        let get_again = |a: &String| {
            let (lag, started) = (coarse_clock_lag(), std::time::Instant::now());
            let reused = block_on(pool.get(a)).unwrap().is_reused();
            let lag = (lag + started.elapsed()).max(coarse_clock_lag());
            let excused = allowed.is_some_and(|allowed| lag >= allowed);
            assert!(
                !reused || excused,
                "{a}: idle for {timeout:?} or more, yet handed out"
            );
        };
        let mut due = std::collections::VecDeque::new();
        for (n, (a, conn)) in addrs.iter().zip(held).enumerate() {
            drop(conn);
            due.push_back((std::time::Instant::now() + timeout, a));
            // 0.3 to 2.3 ms, in a fixed pseudo-random order.
            let pause = 300 + (n as u64 * 7919) % 2000;
            std::thread::sleep(Duration::from_micros(pause));
            while due
                .front()
                .is_some_and(|(at, _)| *at <= std::time::Instant::now())
            {
                get_again(due.pop_front().unwrap().1);
            }
        }
        for (at, a) in due {
            std::thread::sleep(at.saturating_duration_since(std::time::Instant::now()));
            get_again(a);
        }
        assert_eq!(dialer.dials(), 128);
    }
}

/// The tick of the system's coarse monotonic clock, where there is one.
fn coarse_clock_tick() -> Option<Duration> {
    #[cfg(all(any(target_os = "linux", target_os = "android"), not(miri)))]
    {
        let res = rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse);
        Some(Duration::new(res.tv_sec as u64, res.tv_nsec as u32))
    }
    #[cfg(not(all(any(target_os = "linux", target_os = "android"), not(miri))))]
    None
}

/// How far the coarse monotonic clock is behind the precise one now (zero without one).
fn coarse_clock_lag() -> Duration {
    #[cfg(all(any(target_os = "linux", target_os = "android"), not(miri)))]
    {
        use rustix::time::{clock_gettime, ClockId, Timespec};
        let nanos = |t: Timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
        let coarse = nanos(clock_gettime(ClockId::MonotonicCoarse));
        let precise = nanos(clock_gettime(ClockId::Monotonic));
        Duration::from_nanos((precise - coarse).max(0) as u64)
    }
    #[cfg(not(all(any(target_os = "linux", target_os = "android"), not(miri))))]
    Duration::ZERO
}

#[test]
fn a_connection_dialed_after_years_of_pool_time_still_ends_at_its_lifetime() {
    let clock = ManualClock::new();
    let pool = Pool::builder(TestDialer::new())
        .idle_timeout(Duration::from_secs(7200)) // longer than the lifetime: only it can end it
        .max_lifetime(Duration::from_secs(3600))
        .clock(clock.clone())
        .build()
        .unwrap();
    // Past 2^58 ns (9 years), the guard keeps the dial time in units of 64 ns.
    clock.advance(Duration::from_secs(150 * 365 * 24 * 3600));
    let conn = block_on(pool.get(&addr("a:1"))).unwrap();
    clock.advance(Duration::from_secs(1800));
    drop(conn); // back idle with half its lifetime left
    assert_eq!(pool.stats().idle(), 1);
    clock.advance(Duration::from_secs(1800));
    let conn = block_on(pool.get(&addr("a:1"))).unwrap();
    assert!(!conn.is_reused(), "the first one reached its lifetime");
    let c = pool.stats().counters;
    assert_eq!((c.closed_lifetime, c.closed_expired, c.dials), (1, 0, 2));
}

#[test]
fn a_guard_prints_its_destination_whether_reused_and_its_connection() {
    let (pool, _dialer, _) = pool(2);
    let conn = get(&pool, "a:1");
    let printed = format!("{conn:?}");
    assert!(printed.starts_with("Pooled {"), "{printed}");
    assert!(printed.contains(r#"addr: "a:1""#), "{printed}");
    assert!(printed.contains("reused: false"), "{printed}");
    assert!(printed.contains("conn: Conn {"), "{printed}");
    drop(conn);
    assert!(format!("{:?}", get(&pool, "a:1")).contains("reused: true"));
}

#[test]
fn a_manual_sleep_polled_from_another_task_wakes_that_task() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let clock = ManualClock::new();
    let mut sleep = clock.sleep(MINUTE);
    let (first, second) = (
        Arc::new(Count(AtomicUsize::new(0))),
        Arc::new(Count(AtomicUsize::new(0))),
    );
    for task in [&first, &second] {
        let waker = Waker::from(task.clone());
        assert!(sleep
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
    }
    clock.advance(MINUTE);
    assert_eq!(
        second.0.load(Ordering::SeqCst),
        1,
        "the task that polled last is woken"
    );
    assert_eq!(first.0.load(Ordering::SeqCst), 0);
}

#[test]
fn a_manual_clock_prints_its_time_and_its_sleeps() {
    let clock = ManualClock::new();
    let printed = format!("{clock:?}");
    assert!(printed.starts_with("ManualClock {"), "{printed}");
    assert!(
        printed.contains("now: ") && printed.contains("sleepers: 0"),
        "{printed}"
    );
    let _sleep = clock.sleep(MINUTE);
    assert!(format!("{clock:?}").contains("sleepers: 1"));
}

#[test]
fn a_manual_clock_forgets_sleeps_dropped_before_their_time() {
    // A test that sleeps often (a wait_timeout per get, say) without moving the clock.
    let clock = ManualClock::new();
    let live = clock.sleep(MINUTE);
    for _ in 0..10_000 {
        drop(clock.sleep(MINUTE));
    }
    let printed = format!("{clock:?}");
    let kept: usize = printed
        .split("sleepers: ")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches(" }").parse().ok())
        .unwrap_or_else(|| panic!("{printed}"));
    // As many as the live ones, give or take the list's spare room; not one per sleep.
    assert!(kept < 16, "{kept} sleeps kept, one of them live");
    assert_eq!(clock.pending_sleeps(), 1);
    clock.advance(MINUTE);
    assert!(futures::FutureExt::now_or_never(live).is_some());
}
