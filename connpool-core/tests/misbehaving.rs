//! User code that misbehaves, and user code that watches closely: a dialer whose `is_open`
//! panics, a connection whose own drop asks `shutdown` whether everything came back, a clock
//! whose sleeps end at once, and a clock that panics. The counts stay exact, `shutdown` answers
//! only once the last connection is closed, and the reaper never holds its executor's thread.
mod support;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use connpool_core::{Clock, Error, ManualClock, Pool, Pooled, Spawner};
use futures::executor::block_on;
use futures::future::{BoxFuture, FutureExt, LocalBoxFuture};
use support::{addr, poll_once, TestDialer, TestSpawner};

// A panicking `Dialer::is_open` ends the holder's count as the panic unwinds.
#[derive(Clone, Default)]
struct PanicOpen {
    inner: TestDialer,
    panic: Arc<AtomicBool>,
}
#[connpool_core::async_trait]
impl connpool_core::Dialer for PanicOpen {
    type Addr = String;
    type Conn = support::Conn;
    async fn dial(&self, a: &String) -> io::Result<support::Conn> {
        connpool_core::Dialer::dial(&self.inner, a).await
    }
    fn is_open(&self, _: &support::Conn) -> bool {
        assert!(!self.panic.load(Ordering::SeqCst), "is_open panicked");
        true
    }
}

#[test]
fn a_panicking_is_open_at_a_get_leaves_the_counts_exact() {
    let dialer = PanicOpen::default();
    let pool = Pool::builder(dialer.clone())
        .clock(ManualClock::new())
        .max_open_per_host(1)
        .build()
        .unwrap();
    let a = addr("a:1");
    drop(block_on(pool.get(&a)).unwrap()); // one idle connection
    dialer.panic.store(true, Ordering::SeqCst);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = block_on(pool.get(&a));
    }));
    assert!(r.is_err());
    dialer.panic.store(false, Ordering::SeqCst);
    assert_eq!(dialer.inner.live(), 0, "the connection itself was dropped");
    assert_eq!(pool.stats().total(), 0, "{:?}", pool.stats());
    let mut next = Box::pin(pool.get(&a));
    assert!(
        poll_once(&mut next).is_ready(),
        "waits forever for a slot held by nobody"
    );
}

#[test]
fn a_panicking_is_open_at_a_return_leaves_the_counts_exact() {
    let dialer = PanicOpen::default();
    let pool = Pool::builder(dialer.clone())
        .clock(ManualClock::new())
        .max_open_per_host(1)
        .build()
        .unwrap();
    let held = block_on(pool.get(&addr("a:1"))).unwrap();
    dialer.panic.store(true, Ordering::SeqCst);
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(held))).is_err());
    dialer.panic.store(false, Ordering::SeqCst);
    assert_eq!(dialer.inner.live(), 0);
    let mut sd = Box::pin(pool.shutdown(Duration::ZERO));
    assert_eq!(poll_once(&mut sd), Poll::Ready(true), "{:?}", pool.stats());
}

/// Waits until `open` says so, looking again whenever it is polled: a dial the test lets through.
async fn through_gate(open: impl Fn() -> bool) {
    std::future::poll_fn(|_| {
        if open() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

// `shutdown` hears that everything came back only once the last connection is closed.
thread_local! {
    static PROBE: RefCell<Option<Pool<Probe>>> = const { RefCell::new(None) };
    static SEEN: Cell<Option<bool>> = const { Cell::new(None) };
    static GATE: Cell<bool> = const { Cell::new(true) };
}
struct ProbeConn;
impl Drop for ProbeConn {
    // While this connection is being closed: would a shutdown already answer "all came back"?
    fn drop(&mut self) {
        PROBE.with(|p| {
            if let Some(pool) = p.borrow().as_ref() {
                let mut sd = Box::pin(pool.shutdown(Duration::ZERO));
                SEEN.with(|s| s.set(Some(poll_once(&mut sd) == Poll::Ready(true))));
            }
        });
    }
}
struct Probe;
#[connpool_core::async_trait]
impl connpool_core::Dialer for Probe {
    type Addr = u8;
    type Conn = ProbeConn;
    async fn dial(&self, _: &u8) -> io::Result<ProbeConn> {
        through_gate(|| GATE.with(Cell::get)).await;
        Ok(ProbeConn)
    }
}
fn probe_pool() -> Pool<Probe> {
    SEEN.with(|s| s.set(None));
    Pool::builder(Probe)
        .clock(ManualClock::new())
        .build()
        .unwrap()
}

#[test]
fn shutdown_is_not_true_before_a_returned_connection_is_closed() {
    let pool = probe_pool();
    let held = block_on(pool.get(&1)).unwrap();
    pool.close();
    PROBE.with(|p| *p.borrow_mut() = Some(pool.clone()));
    drop(held);
    PROBE.with(|p| p.borrow_mut().take());
    assert_eq!(SEEN.with(Cell::get), Some(false));
}

#[test]
fn shutdown_is_not_true_before_a_released_connection_is_closed() {
    let pool = probe_pool();
    let held = block_on(pool.get(&1)).unwrap();
    pool.close();
    PROBE.with(|p| *p.borrow_mut() = Some(pool.clone()));
    held.release();
    PROBE.with(|p| p.borrow_mut().take());
    assert_eq!(SEEN.with(Cell::get), Some(false));
}

/// A waker that notes that it was woken.
struct Flag(AtomicBool);

impl futures::task::ArcWake for Flag {
    fn wake_by_ref(flag: &Arc<Self>) {
        flag.0.store(true, Ordering::SeqCst);
    }
}

thread_local! {
    static WOKEN: RefCell<Option<Arc<Flag>>> = const { RefCell::new(None) };
}

/// A connection that notes, as it is closed, whether `shutdown` had been woken already.
struct WatchedConn;
impl Drop for WatchedConn {
    fn drop(&mut self) {
        WOKEN.with(|w| {
            if let Some(flag) = w.borrow().as_ref() {
                SEEN.with(|s| s.set(Some(flag.0.load(Ordering::SeqCst))));
            }
        });
    }
}
struct Watched;
#[connpool_core::async_trait]
impl connpool_core::Dialer for Watched {
    type Addr = u8;
    type Conn = WatchedConn;
    async fn dial(&self, _: &u8) -> io::Result<WatchedConn> {
        through_gate(|| GATE.with(Cell::get)).await;
        Ok(WatchedConn)
    }
}

/// A dial that ends after `close` closes its connection before it wakes `shutdown`.
#[test]
fn shutdown_is_woken_only_after_a_dial_finished_after_close_is_closed() {
    SEEN.with(|s| s.set(None));
    let pool = Pool::builder(Watched)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    GATE.with(|g| g.set(false));
    let mut get = Box::pin(pool.get(&1));
    assert!(poll_once(&mut get).is_pending());
    pool.close();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let mut shutdown = Box::pin(pool.shutdown(Duration::from_secs(60)));
    let waker = futures::task::waker(flag.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(
        shutdown.as_mut().poll(&mut cx).is_pending(),
        "a dial is in flight"
    );
    WOKEN.with(|w| *w.borrow_mut() = Some(flag.clone()));
    GATE.with(|g| g.set(true));
    assert!(matches!(
        poll_once(&mut get),
        Poll::Ready(Err(connpool_core::Error::Closed))
    ));
    WOKEN.with(|w| w.borrow_mut().take());
    assert_eq!(SEEN.with(Cell::get), Some(false), "woken before the close");
    assert!(flag.0.load(Ordering::SeqCst), "woken after it");
    assert_eq!(shutdown.as_mut().poll(&mut cx), Poll::Ready(true));
}

// The reaper returns from its poll on a clock whose sleeps end at once.
struct InstantClock(Instant);
impl Clock for InstantClock {
    fn now(&self) -> Instant {
        self.0
    }
    fn sleep(&self, _: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
struct Keep(Arc<Mutex<Option<BoxFuture<'static, ()>>>>);
impl Spawner for Keep {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        *self.0.lock().unwrap() = Some(task);
    }
}

#[test]
fn the_reaper_returns_from_poll_on_a_clock_whose_sleeps_are_instant() {
    let slot = Arc::new(Mutex::new(None));
    let pool = Pool::builder(TestDialer::new())
        .clock(InstantClock(Instant::now()))
        .spawner(Keep(slot.clone()))
        .build()
        .unwrap();
    drop(block_on(pool.get(&addr("a:1"))).unwrap()); // something idle: the reaper naps
    let mut task = slot.lock().unwrap().take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = poll_once(&mut task);
        let _ = tx.send(());
    });
    // One poll of the reaper's task returns.
    assert!(rx.recv_timeout(Duration::from_secs(3)).is_ok());
}

// A connection whose own drop panics still ends its count, and a `shutdown` waiting for it still
// hears of it.

/// Connections that say open while `open` holds and panic in their drop while `panic` holds.
#[derive(Clone, Default)]
struct Fragile {
    open: Arc<AtomicBool>,
    panic: Arc<AtomicBool>,
    gate: Arc<AtomicBool>,
}

struct FragileConn(Arc<AtomicBool>);

impl Drop for FragileConn {
    fn drop(&mut self) {
        if self.0.load(Ordering::SeqCst) {
            std::panic::resume_unwind(Box::new("a connection's drop failed"));
        }
    }
}

#[connpool_core::async_trait]
impl connpool_core::Dialer for Fragile {
    type Addr = u8;
    type Conn = FragileConn;
    async fn dial(&self, _: &u8) -> io::Result<FragileConn> {
        let gate = self.gate.clone();
        through_gate(move || gate.load(Ordering::SeqCst)).await;
        Ok(FragileConn(self.panic.clone()))
    }
    fn is_open(&self, _: &FragileConn) -> bool {
        self.open.load(Ordering::SeqCst)
    }
}

fn fragile() -> (Fragile, Pool<Fragile>) {
    let dialer = Fragile::default();
    dialer.open.store(true, Ordering::SeqCst);
    dialer.gate.store(true, Ordering::SeqCst);
    let pool = Pool::builder(dialer.clone())
        .clock(ManualClock::new())
        .max_open_per_host(1)
        .build()
        .unwrap();
    (dialer, pool)
}

#[test]
fn a_waiter_turning_down_a_connection_whose_drop_panics_leaves_the_counts_exact() {
    let (dialer, pool) = fragile();
    let held = block_on(pool.get(&1)).unwrap();
    let mut waiter = Box::pin(pool.get(&1));
    assert!(poll_once(&mut waiter).is_pending());
    drop(held); // handed to the waiter
    dialer.open.store(false, Ordering::SeqCst);
    dialer.panic.store(true, Ordering::SeqCst);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = poll_once(&mut waiter);
    }));
    assert!(unwound.is_err());
    dialer.panic.store(false, Ordering::SeqCst);
    drop(waiter);
    let stats = pool.stats();
    let c = &stats.counters;
    assert_eq!(stats.total(), 0, "{stats:?}");
    assert_eq!(c.dials, c.closed() + c.detached, "{c:?}");
    let mut shutdown = Box::pin(pool.shutdown(Duration::ZERO));
    assert_eq!(poll_once(&mut shutdown), Poll::Ready(true));
}

#[test]
fn shutdown_is_woken_although_closing_a_late_dial_panics() {
    let (dialer, pool) = fragile();
    dialer.gate.store(false, Ordering::SeqCst);
    let mut get = Box::pin(pool.get(&1));
    assert!(poll_once(&mut get).is_pending());
    pool.close();
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let mut shutdown = Box::pin(pool.shutdown(Duration::from_secs(60)));
    let waker = futures::task::waker(flag.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(
        shutdown.as_mut().poll(&mut cx).is_pending(),
        "a dial is in flight"
    );
    dialer.gate.store(true, Ordering::SeqCst);
    dialer.panic.store(true, Ordering::SeqCst);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = poll_once(&mut get);
    }));
    assert!(unwound.is_err());
    dialer.panic.store(false, Ordering::SeqCst);
    assert!(flag.0.load(Ordering::SeqCst), "shutdown was never woken");
    assert_eq!(shutdown.as_mut().poll(&mut cx), Poll::Ready(true));
    drop(get);
}

// The store's own closes (at `close`, at expiry) count until the connection is closed: `shutdown`
// does not answer "all closed" while one is still being closed, and is woken when it is.
thread_local! {
    static ON_CLOSE: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
}
/// A connection that runs the test's `ON_CLOSE`, if any, as it is closed.
struct HookConn;
impl Drop for HookConn {
    fn drop(&mut self) {
        if let Some(hook) = ON_CLOSE.with(|h| h.borrow_mut().take()) {
            hook();
        }
    }
}
struct Hooked;
#[connpool_core::async_trait]
impl connpool_core::Dialer for Hooked {
    type Addr = u8;
    type Conn = HookConn;
    async fn dial(&self, _: &u8) -> io::Result<HookConn> {
        Ok(HookConn)
    }
}

/// A pool holding one idle connection, on `clock`, with a 10 s idle timeout.
fn one_idle(clock: &ManualClock) -> Pool<Hooked> {
    let pool = Pool::builder(Hooked)
        .clock(clock.clone())
        .idle_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    drop(block_on(pool.get(&1)).unwrap());
    pool
}

/// Notes in the returned cell, as the next connection is closed, whether a `shutdown` polled
/// then answers that everything is closed.
fn probe_shutdown_on_close<D: connpool_core::Dialer>(
    pool: &Pool<D>,
) -> std::rc::Rc<Cell<Option<bool>>> {
    let seen = std::rc::Rc::new(Cell::new(None));
    let (pool, note) = (pool.clone(), seen.clone());
    ON_CLOSE.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            let mut sd = Box::pin(pool.shutdown(Duration::ZERO));
            note.set(Some(poll_once(&mut sd) == Poll::Ready(true)));
        }));
    });
    seen
}

#[test]
fn shutdown_is_not_true_while_close_is_still_closing_an_idle_connection() {
    let clock = ManualClock::new();
    let pool = one_idle(&clock);
    let seen = probe_shutdown_on_close(&pool);
    pool.close();
    assert_eq!(seen.get(), Some(false), "answered before the close");
    let mut sd = Box::pin(pool.shutdown(Duration::ZERO));
    assert_eq!(poll_once(&mut sd), Poll::Ready(true));
}

#[test]
fn shutdown_is_not_true_while_an_expired_connection_is_still_being_closed() {
    let clock = ManualClock::new();
    let pool = one_idle(&clock);
    clock.advance(Duration::from_secs(11));
    let seen = probe_shutdown_on_close(&pool);
    assert_eq!(pool.reap(), 1);
    assert_eq!(seen.get(), Some(false), "answered before the close");
    let mut sd = Box::pin(pool.shutdown(Duration::ZERO));
    assert_eq!(poll_once(&mut sd), Poll::Ready(true));
}

/// A `shutdown` that begins while an open pool's expiry is closing a connection waits for that
/// close alone, and is woken when it ends. The expiry is a return's, which touches one shard: no
/// later shard's work wakes the `shutdown` instead.
#[test]
fn a_shutdown_waiting_for_an_expiry_in_progress_is_woken_when_it_ends() {
    let clock = ManualClock::new();
    let pool = Pool::builder(Hooked)
        .clock(clock.clone())
        .idle_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (first, second) = (
        block_on(pool.get(&1)).unwrap(),
        block_on(pool.get(&1)).unwrap(),
    );
    drop(first);
    clock.advance(Duration::from_secs(11));
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = futures::task::waker(flag.clone());
    type Shutdown = std::pin::Pin<Box<dyn Future<Output = bool>>>;
    let shutdown: std::rc::Rc<RefCell<Option<Shutdown>>> = Default::default();
    let (probe, slot, hook_waker) = (pool.clone(), shutdown.clone(), waker.clone());
    ON_CLOSE.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            let mut sd: Shutdown =
                Box::pin(async move { probe.shutdown(Duration::from_secs(60)).await });
            let mut cx = std::task::Context::from_waker(&hook_waker);
            assert!(
                sd.as_mut().poll(&mut cx).is_pending(),
                "a close in progress"
            );
            *slot.borrow_mut() = Some(sd);
        }));
    });
    drop(second); // goes idle, and closes the first, expired, on the way
    let mut sd = shutdown.borrow_mut().take().expect("the hook ran");
    assert!(flag.0.load(Ordering::SeqCst), "shutdown was never woken");
    let mut cx = std::task::Context::from_waker(&waker);
    assert_eq!(sd.as_mut().poll(&mut cx), Poll::Ready(true));
}

// A connection whose `is_open` panics is dropped before its holder's count ends, so `shutdown`
// does not answer "all closed" while it is still open.
#[derive(Clone, Default)]
struct HookedPanicOpen(Arc<AtomicBool>);
#[connpool_core::async_trait]
impl connpool_core::Dialer for HookedPanicOpen {
    type Addr = u8;
    type Conn = HookConn;
    async fn dial(&self, _: &u8) -> io::Result<HookConn> {
        Ok(HookConn)
    }
    fn is_open(&self, _: &HookConn) -> bool {
        assert!(!self.0.load(Ordering::SeqCst), "is_open panicked");
        true
    }
}

/// Runs `f`, which must panic in `is_open`.
fn panics_in_is_open(dialer: &HookedPanicOpen, f: impl FnOnce()) {
    dialer.0.store(true, Ordering::SeqCst);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    dialer.0.store(false, Ordering::SeqCst);
    assert!(unwound.is_err(), "is_open was not asked");
}

#[test]
fn shutdown_is_not_true_before_a_connection_whose_is_open_panicked_at_a_return_is_dropped() {
    let dialer = HookedPanicOpen::default();
    let pool = Pool::builder(dialer.clone())
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let held = block_on(pool.get(&1)).unwrap();
    let seen = probe_shutdown_on_close(&pool);
    panics_in_is_open(&dialer, || drop(held));
    assert_eq!(seen.get(), Some(false), "answered before the close");
}

#[test]
fn shutdown_is_not_true_before_a_connection_whose_is_open_panicked_at_a_get_is_dropped() {
    let dialer = HookedPanicOpen::default();
    let pool = Pool::builder(dialer.clone())
        .clock(ManualClock::new())
        .build()
        .unwrap();
    drop(block_on(pool.get(&1)).unwrap());
    let seen = probe_shutdown_on_close(&pool);
    panics_in_is_open(&dialer, || drop(block_on(pool.get(&1))));
    assert_eq!(seen.get(), Some(false), "answered before the close");
}

#[test]
fn shutdown_is_not_true_before_a_connection_whose_is_open_panicked_in_line_is_dropped() {
    let dialer = HookedPanicOpen::default();
    let pool = Pool::builder(dialer.clone())
        .clock(ManualClock::new())
        .max_open_per_host(1)
        .check_on_return(false)
        .build()
        .unwrap();
    let held = block_on(pool.get(&1)).unwrap();
    let mut waiter = Box::pin(pool.get(&1));
    assert!(poll_once(&mut waiter).is_pending());
    drop(held); // handed to the waiter, unchecked
    let seen = probe_shutdown_on_close(&pool);
    panics_in_is_open(&dialer, || drop(poll_once(&mut waiter)));
    assert_eq!(seen.get(), Some(false), "answered before the close");
}

// A clock that panics once, at the first read after it is tripped: a connection held at that
// moment is closed and leaves the books as the panic unwinds, so the counts stay exact and
// `shutdown` hears that everything came back.
#[derive(Clone, Default)]
struct TrippingClock {
    time: ManualClock,
    tripped: Arc<AtomicBool>,
}
impl Clock for TrippingClock {
    fn now(&self) -> Instant {
        assert!(
            !self.tripped.swap(false, Ordering::SeqCst),
            "the clock failed"
        );
        self.time.now()
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.time.sleep(d)
    }
}

/// Trips the clock, then runs `f`, which must meet it.
fn meets_the_failing_clock(clock: &TrippingClock, f: impl FnOnce()) {
    clock.tripped.store(true, Ordering::SeqCst);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    assert!(unwound.is_err(), "the clock was not read");
    assert!(!clock.tripped.load(Ordering::SeqCst));
}

fn all_back(pool: &Pool<TestDialer>, dialer: &TestDialer) {
    let stats = pool.stats();
    assert!(stats.destinations.is_empty(), "{stats:?}");
    assert_eq!(dialer.live(), 0, "every connection closed");
    assert!(
        block_on(pool.shutdown(Duration::ZERO)),
        "shutdown hears all came back"
    );
}

#[test]
fn a_clock_that_panics_at_a_return_release_or_detach_leaves_the_counts_exact() {
    type End = fn(Pooled<TestDialer>);
    let ends: [(&str, End); 4] = [
        ("kept", drop),
        ("turned down by is_open", |conn| {
            conn.kill();
            drop(conn);
        }),
        ("released", Pooled::release),
        ("detached", |conn| drop(conn.detach())),
    ];
    for (how, end) in ends {
        let (dialer, clock) = (TestDialer::new(), TrippingClock::default());
        let pool = Pool::builder(dialer.clone())
            .clock(clock.clone())
            .build()
            .unwrap();
        let conn = block_on(pool.get(&addr("a:1"))).unwrap();
        meets_the_failing_clock(&clock, || end(conn));
        all_back(&pool, &dialer);
        let counters = pool.stats().counters;
        let ended = counters.closed_panicking
            + counters.closed_not_open
            + counters.released
            + counters.detached;
        assert_eq!(ended, 1, "{how}: {counters:?}");
    }
}

/// A pool of `dialer`'s connections on `clock`, at most one open per destination.
fn one_open<D: connpool_core::Dialer>(dialer: D, clock: &TrippingClock) -> Pool<D> {
    Pool::builder(dialer)
        .clock(clock.clone())
        .max_open_per_host(1)
        .build()
        .unwrap()
}

/// A get in line at `a` for `pool`'s one connection, which has just been handed to it: the get
/// has not collected it yet.
fn handed_to_a_waiter<'p, D: connpool_core::Dialer>(
    pool: &'p Pool<D>,
    a: &'p D::Addr,
) -> LocalBoxFuture<'p, Result<Pooled<D>, Error>> {
    let held = block_on(pool.get(a)).unwrap();
    let mut waiter = pool.get(a).boxed_local();
    assert!(poll_once(&mut waiter).is_pending());
    drop(held);
    waiter
}

#[test]
fn a_clock_that_panics_as_a_waiter_collects_its_connection_leaves_the_counts_exact() {
    let (dialer, clock) = (TestDialer::new(), TrippingClock::default());
    let pool = one_open(dialer.clone(), &clock);
    let a = addr("a:1");
    // It reads the clock as it collects the connection.
    let mut waiter = handed_to_a_waiter(&pool, &a);
    meets_the_failing_clock(&clock, || drop(poll_once(&mut waiter)));
    drop(waiter);
    all_back(&pool, &dialer);
    let counters = pool.stats().counters;
    assert_eq!(counters.closed_panicking, 1);
    assert_eq!(counters.hits, 0, "the get never had it");
}

#[test]
fn a_clock_that_panics_while_a_panic_unwinds_through_a_waiter_closes_its_connection() {
    let (dialer, clock) = (TestDialer::new(), TrippingClock::default());
    let pool = one_open(dialer.clone(), &clock);
    let a = addr("a:1");
    // It never collects the connection.
    let waiter = handed_to_a_waiter(&pool, &a);
    let tripped = clock.tripped.clone();
    // The waiter is dropped by another panic, and hands its connection back, reading the clock:
    // a second panic there would abort the process.
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _waiter = waiter;
        tripped.store(true, Ordering::SeqCst);
        panic!("a handler failed");
    }));
    assert!(unwound.is_err());
    assert!(
        !clock.tripped.load(Ordering::SeqCst),
        "the clock was not read"
    );
    all_back(&pool, &dialer);
    assert_eq!(pool.stats().counters.closed_panicking, 1);
}

#[test]
fn a_clock_that_panics_at_a_return_closes_the_connection_before_its_count_ends() {
    let clock = TrippingClock::default();
    let pool = one_open(Hooked, &clock);
    let held = block_on(pool.get(&1)).unwrap();
    let seen = probe_shutdown_on_close(&pool);
    meets_the_failing_clock(&clock, || drop(held));
    assert_eq!(seen.get(), Some(false), "answered before the close");
}

#[test]
fn a_clock_that_panics_as_a_waiter_collects_closes_the_connection_before_its_count_ends() {
    let clock = TrippingClock::default();
    let pool = one_open(Hooked, &clock);
    let mut waiter = handed_to_a_waiter(&pool, &1);
    let seen = probe_shutdown_on_close(&pool);
    meets_the_failing_clock(&clock, || drop(poll_once(&mut waiter)));
    assert_eq!(seen.get(), Some(false), "answered before the close");
}

#[test]
fn a_clock_that_panics_as_a_dial_ends_leaves_the_counts_exact() {
    let (dialer, clock) = (TestDialer::new(), TrippingClock::default());
    let pool = Pool::builder(dialer.clone())
        .clock(clock.clone())
        .build()
        .unwrap();
    let gate = dialer.hold();
    let a = addr("a:1");
    let mut get = Box::pin(pool.get(&a));
    assert!(poll_once(&mut get).is_pending(), "dialing");
    gate.open();
    // The dial is done; the next read of the clock stamps the new connection's dial time.
    meets_the_failing_clock(&clock, || drop(poll_once(&mut get)));
    drop(get);
    all_back(&pool, &dialer);
    assert_eq!(
        pool.stats().counters.dials,
        0,
        "the dial ended as cancelled"
    );
}

// A connection whose own drop panics as the pool closes it on the way (expired, evicted, the pool
// closing, the reaper) leaves no count behind, neither for the caller the pool was serving nor for
// anything else the pool was about to close or tell.

/// Numbered connections, each with its own switch: connection `n`'s drop panics once `arm(n)`.
#[derive(Clone, Default)]
struct Brittle {
    armed: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    live: Arc<std::sync::atomic::AtomicUsize>,
}

struct BrittleConn {
    armed: Arc<AtomicBool>,
    live: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for BrittleConn {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
        if self.armed.load(Ordering::SeqCst) {
            std::panic::resume_unwind(Box::new("a connection's drop failed"));
        }
    }
}

#[connpool_core::async_trait]
impl connpool_core::Dialer for Brittle {
    type Addr = u8;
    type Conn = BrittleConn;
    async fn dial(&self, _: &u8) -> io::Result<BrittleConn> {
        let armed = Arc::new(AtomicBool::new(false));
        self.armed.lock().unwrap().push(armed.clone());
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(BrittleConn {
            armed,
            live: self.live.clone(),
        })
    }
}

impl Brittle {
    fn arm(&self, n: usize) {
        self.armed.lock().unwrap()[n].store(true, Ordering::SeqCst);
    }

    fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

/// A pool of two connections to 1, idle since 0 s (connection 0) and 6 s (connection 1), with a
/// 10 s idle timeout, at 11 s (connection 0's idle time is up) or, not `expired`, at 8 s;
/// connection 0's drop panics.
fn two_idle(max_open: usize, expired: bool) -> (Brittle, Pool<Brittle>) {
    let (dialer, clock) = (Brittle::default(), ManualClock::new());
    let pool = Pool::builder(dialer.clone())
        .idle_timeout(Duration::from_secs(10))
        .max_open_per_host(max_open)
        .clock(clock.clone())
        .build()
        .unwrap();
    let (first, second) = (block_on(pool.get(&1)), block_on(pool.get(&1)));
    drop(first);
    clock.advance(Duration::from_secs(6));
    drop(second);
    clock.advance(Duration::from_secs(if expired { 5 } else { 2 }));
    dialer.arm(0);
    (dialer, pool)
}

/// Runs `f`, which must panic.
fn panics(f: impl FnOnce()) {
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    assert!(unwound.is_err(), "a connection's drop panicked");
}

#[test]
fn a_get_whose_close_of_an_expired_connection_panics_leaves_the_counts_exact() {
    let (dialer, pool) = two_idle(usize::MAX, true);
    // Closes connection 0 on the way to handing out connection 1.
    panics(|| drop(block_on(pool.get(&1))));
    let stats = pool.stats();
    let c = &stats.counters;
    assert!(stats.destinations.is_empty(), "{stats:?}");
    assert_eq!(
        dialer.live(),
        0,
        "connection 1 is closed too, handed to no one"
    );
    assert_eq!(c.dials, c.closed() + c.detached, "{c:?}");
    assert_eq!(c.hits, 0, "no hit: nothing was handed out");
    assert!(block_on(pool.shutdown(Duration::ZERO)));
}

#[test]
fn a_dial_whose_eviction_panics_gives_its_slot_back() {
    let (dialer, pool) = two_idle(2, false);
    // At the limit: closes connection 0 (the oldest) to make room, then would dial.
    panics(|| drop(block_on(pool.dial(&1))));
    let stats = pool.stats();
    assert_eq!((stats.total(), stats.idle()), (1, 1), "{stats:?}");
    assert_eq!(stats.counters.closed_evicted, 1, "{stats:?}");
    // Connection 1 held and one dial beside it: the limit's two.
    let held = block_on(pool.get(&1)).unwrap();
    let mut dial = Box::pin(pool.dial(&1));
    assert!(poll_once(&mut dial).is_ready(), "{:?}", pool.stats());
    drop((held, dial));
    assert_eq!(dialer.live(), 2);
    assert!(block_on(pool.shutdown(Duration::ZERO)));
    assert_eq!(dialer.live(), 0);
}

#[test]
fn a_close_whose_first_close_panics_empties_the_whole_pool() {
    let dialer = Brittle::default();
    // One lane, many shards: the connection whose drop panics sits in one of them.
    let pool = Pool::builder(dialer.clone())
        .clock(ManualClock::new())
        .max_open_per_host(1)
        .build()
        .unwrap();
    drop(block_on(pool.get(&0)));
    dialer.arm(0);
    let busy: Vec<u8> = (1..=64).collect();
    let mut held = Vec::new();
    let mut waiting = Vec::new();
    for a in &busy {
        held.push(block_on(pool.get(a)).unwrap());
        let mut waiter = Box::pin(pool.get(a));
        assert!(poll_once(&mut waiter).is_pending());
        waiting.push(waiter);
    }
    for a in 65..=128 {
        drop(block_on(pool.get(&a)));
    }
    panics(|| pool.close());
    assert_eq!(pool.stats().idle(), 0, "every idle connection closed");
    assert_eq!(dialer.live(), 64, "only the held ones are left");
    for waiter in &mut waiting {
        assert!(
            matches!(poll_once(waiter), Poll::Ready(Err(Error::Closed))),
            "every waiter told"
        );
    }
    drop(held);
    assert_eq!(dialer.live(), 0);
    assert!(block_on(pool.shutdown(Duration::ZERO)));
}

/// An address whose drop panics once, the first after [`ADDRESS_DROP_PANICS`] is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FragileAddr(u8);

static ADDRESS_DROP_PANICS: AtomicBool = AtomicBool::new(false);

impl Drop for FragileAddr {
    fn drop(&mut self) {
        if ADDRESS_DROP_PANICS.swap(false, Ordering::SeqCst) {
            std::panic::resume_unwind(Box::new("an address's drop failed"));
        }
    }
}

/// A connection that counts itself while it lives.
struct Counted(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A destination's address drops once its bucket is gone (with no guard or waiter holding it),
/// after every shard is emptied and every waiter told: should that drop panic, the close has
/// done all it does anyway.
#[test]
fn a_close_whose_first_address_drop_panics_empties_the_whole_pool() {
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = live.clone();
    let dialer = connpool_core::dial_fn(move |_: FragileAddr| {
        counter.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(Ok::<_, io::Error>(Counted(counter.clone())))
    });
    // One lane, many shards: the destination whose address panics sits in one of them.
    let pool = Pool::builder(dialer)
        .clock(ManualClock::new())
        .max_open_per_host(1)
        .build()
        .unwrap();
    let busy: Vec<FragileAddr> = (1..=64).map(FragileAddr).collect();
    let mut held = Vec::new();
    let mut waiting = Vec::new();
    for a in &busy {
        held.push(block_on(pool.get(a)).unwrap());
        let mut waiter = Box::pin(pool.get(a));
        assert!(poll_once(&mut waiter).is_pending());
        waiting.push(waiter);
    }
    for a in 65..=128 {
        drop(block_on(pool.get(&FragileAddr(a))));
    }
    ADDRESS_DROP_PANICS.store(true, Ordering::SeqCst);
    panics(|| pool.close());
    assert!(
        !ADDRESS_DROP_PANICS.load(Ordering::SeqCst),
        "an address's drop panicked"
    );
    assert_eq!(pool.stats().idle(), 0, "every idle connection closed");
    assert_eq!(
        live.load(Ordering::SeqCst),
        64,
        "only the held ones are left"
    );
    for waiter in &mut waiting {
        assert!(
            matches!(poll_once(waiter), Poll::Ready(Err(Error::Closed))),
            "every waiter told"
        );
    }
    drop(held);
    assert_eq!(live.load(Ordering::SeqCst), 0);
    assert!(block_on(pool.shutdown(Duration::ZERO)));
}

#[test]
fn a_reap_whose_first_close_panics_closes_every_expired_connection() {
    let (dialer, clock) = (Brittle::default(), ManualClock::new());
    // One lane, many shards: the connection whose drop panics sits in one of them.
    let pool = Pool::builder(dialer.clone())
        .idle_timeout(Duration::from_secs(10))
        .max_open_per_host(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    for a in 0..64 {
        drop(block_on(pool.get(&a)));
    }
    dialer.arm(0);
    clock.advance(Duration::from_secs(10));
    panics(|| {
        pool.reap();
    });
    assert_eq!(pool.stats().idle(), 0, "every expired connection closed");
    assert_eq!(dialer.live(), 0);
    assert_eq!(pool.stats().counters.closed_expired, 64);
}

#[test]
fn a_close_whose_connection_panics_still_stops_the_reaper() {
    let (dialer, clock, spawner) = (
        Brittle::default(),
        ManualClock::new(),
        TestSpawner::default(),
    );
    let pool = Pool::builder(dialer.clone())
        .clock(clock)
        .spawner(spawner.clone())
        .build()
        .unwrap();
    drop(block_on(pool.get(&1)));
    spawner.run();
    assert_eq!(
        spawner.pending(),
        1,
        "the reaper waits for the idle connection's time"
    );
    dialer.arm(0);
    panics(|| pool.close());
    spawner.run();
    assert_eq!(spawner.pending(), 0, "the reaper ended");
}

#[test]
fn the_reaper_outlives_a_connection_whose_drop_panics() {
    let (dialer, clock, spawner) = (
        Brittle::default(),
        ManualClock::new(),
        TestSpawner::default(),
    );
    let pool = Pool::builder(dialer.clone())
        .idle_timeout(Duration::from_secs(10))
        .clock(clock.clone())
        .spawner(spawner.clone())
        .build()
        .unwrap();
    let (first, second) = (block_on(pool.get(&1)), block_on(pool.get(&2)));
    drop((first, second));
    dialer.arm(0);
    clock.advance(Duration::from_secs(10));
    spawner.run();
    assert_eq!(dialer.live(), 0, "both closed, the panic notwithstanding");
    assert_eq!(spawner.pending(), 1, "the reaper goes on");
    drop(block_on(pool.get(&3)));
    clock.advance(Duration::from_secs(10));
    spawner.run();
    assert_eq!(dialer.live(), 0, "and closes what expires next");
}

/// Two idle connections to 1, both expired, whose drops both panic: one operation closes both.
/// Each close's panic is caught, the first goes on to the caller once all are closed; a second
/// panic while the first unwound through the list aborted the process.
#[test]
fn two_connections_whose_drops_panic_closed_at_once_are_both_closed() {
    for how in ["close", "purge", "reap", "get", "pool dropped"] {
        let (dialer, clock) = (Brittle::default(), ManualClock::new());
        let pool = Pool::builder(dialer.clone())
            .idle_timeout(Duration::from_secs(10))
            .clock(clock.clone())
            .build()
            .unwrap();
        let (first, second) = (block_on(pool.get(&1)), block_on(pool.get(&1)));
        drop((first, second));
        assert_eq!(pool.stats().idle(), 2);
        dialer.arm(0);
        dialer.arm(1);
        clock.advance(Duration::from_secs(10));
        if how == "pool dropped" {
            // The last handle closes the pool.
            panics(move || drop(pool));
            assert_eq!(dialer.live(), 0, "{how}: both closed");
            continue;
        }
        panics(|| match how {
            "close" => pool.close(),
            "purge" => assert_eq!(pool.purge(&1), 2),
            "reap" => assert_eq!(pool.reap(), 2),
            _ => drop(block_on(pool.get(&1))),
        });
        assert_eq!(dialer.live(), 0, "{how}: both closed");
        let stats = pool.stats();
        assert!(stats.destinations.is_empty(), "{how}: {stats:?}");
        assert_eq!(
            (stats.counters.dials, stats.counters.closed()),
            (2, 2),
            "{how}"
        );
    }
}

/// A waiter dropped by a panic gives back the connection handed to it, and the return closes
/// the destination's other idle connection, expired, whose drop panics: that panic, while the
/// first unwinds, aborted the process. It is dropped; the first panic goes on.
#[test]
fn a_waiter_dropped_by_a_panic_outlives_a_close_that_panics() {
    let (dialer, clock) = (Brittle::default(), ManualClock::new());
    let pool = Pool::builder(dialer.clone())
        .idle_timeout(Duration::from_secs(10))
        .max_open_per_host(2)
        .clock(clock.clone())
        .build()
        .unwrap();
    let (first, second) = (block_on(pool.get(&1)), block_on(pool.get(&1)));
    let mut waiter = Box::pin(pool.get(&1));
    assert!(poll_once(&mut waiter).is_pending());
    // The first goes to the waiter, which never collects it; the second goes idle and expires.
    drop(first);
    drop(second);
    clock.advance(Duration::from_secs(10));
    dialer.arm(1);
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _waiter = waiter;
        panic!("a handler failed");
    }));
    let message = unwound.unwrap_err();
    assert_eq!(
        message.downcast_ref(),
        Some(&"a handler failed"),
        "the first panic goes on"
    );
    let stats = pool.stats();
    assert_eq!(stats.total(), dialer.live(), "{stats:?}");
    assert_eq!(
        stats.counters.dials,
        stats.counters.closed() + stats.total() as u64
    );
    drop(pool);
    assert_eq!(dialer.live(), 0);
}

/// A guard released or detached by a drop that runs while a panic unwinds: its count ends without
/// a look at the clock (a user's, better left alone then), so the destination's expired idle
/// connection stays until something reads the time.
#[test]
fn a_release_or_detach_while_a_panic_unwinds_leaves_the_clock_alone() {
    /// How a guard's count ends.
    type End = fn(Pooled<TestDialer>);
    struct EndOnDrop(Option<Pooled<TestDialer>>, End);
    impl Drop for EndOnDrop {
        fn drop(&mut self) {
            if let Some(conn) = self.0.take() {
                (self.1)(conn);
            }
        }
    }
    let ends: [(&str, End); 2] = [
        ("released", Pooled::release),
        ("detached", |conn| drop(conn.detach())),
    ];
    for (how, end) in ends {
        let (dialer, clock) = (TestDialer::new(), ManualClock::new());
        let pool = Pool::builder(dialer.clone())
            .idle_timeout(Duration::from_secs(1))
            .clock(clock.clone())
            .build()
            .unwrap();
        let a = addr("a:1");
        let held = block_on(pool.get(&a)).unwrap();
        drop(block_on(pool.get(&a)).unwrap());
        clock.advance(Duration::from_secs(2));
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _ending = EndOnDrop(Some(held), end);
            panic!("a handler failed");
        }));
        assert!(unwound.is_err());
        let stats = pool.stats();
        assert_eq!(stats.counters.closed_expired, 0, "{how}: {stats:?}");
        assert_eq!(stats.idle(), 1, "{how}: the expired one waits for a read");
        assert_eq!(pool.reap(), 1, "{how}");
    }
}
