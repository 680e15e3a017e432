//! Time and tasks: the [`Clock`] and [`Spawner`] traits the pool runs on, and [`ManualClock`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_core::future::BoxFuture;

// ManualClock is a test tool, not pool state: it keeps std's primitives even under loom.
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where the pool reads the time and how its reaper sleeps.
///
/// The pool stamps idle connections with [`Clock::now`] and compares those stamps with later
/// readings, so every reading must come from the same clock, and should never go back, as an
/// `Instant` never does: a reading earlier than one before it shortens the idle times the pool
/// measures (a connection could then be handed out past its idle timeout), and one earlier than
/// the pool's first reading, when it was built, counts as that moment. A runtime adapter
/// implements this with its runtime's timer (so a paused test clock moves the pool too); tests use
/// [`ManualClock`].
///
/// Neither method should panic. Should one panic in the background reaper, the reaper ends for
/// good (the panic goes to its task, which the spawner's executor reports or drops) and the pool
/// goes on without it, closing expired connections as it does with no reaper: at gets, returns
/// and [`Pool::reap`](crate::Pool::reap). A panic in a caller's get or return ends that call and
/// leaves the pool's counts exact.
///
/// # Example
///
/// ```
/// use std::time::{Duration, Instant};
/// use futures::future::BoxFuture;
///
/// /// The system clock, with sleeps on a helper thread (a runtime adapter does better).
/// struct ThreadClock;
///
/// impl connpool_core::Clock for ThreadClock {
///     fn now(&self) -> Instant {
///         Instant::now()
///     }
///     fn sleep(&self, dur: Duration) -> BoxFuture<'static, ()> {
///         let (tx, rx) = futures::channel::oneshot::channel::<()>();
///         std::thread::spawn(move || {
///             std::thread::sleep(dur);
///             let _ = tx.send(());
///         });
///         Box::pin(async move {
///             let _ = rx.await;
///         })
///     }
/// }
///
/// use connpool_core::Clock as _;
/// futures::executor::block_on(ThreadClock.sleep(Duration::from_millis(1)));
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Instant;
    /// A future that completes once `dur` has passed on this clock.
    fn sleep(&self, dur: Duration) -> BoxFuture<'static, ()>;

    /// Whether [`now`](Clock::now) reads the system's monotonic clock (what `Instant::now()`
    /// reads), and will for as long as the pool lives. Asked once, when the pool is built.
    ///
    /// A pool on such a clock reads the time itself, as a pool with no clock does, and sleeps on
    /// this clock. It reads the system's monotonic clock at its coarse resolution where the
    /// system offers one and the pool's timeouts span 256 of its ticks (Linux: 1.024 s at a 4 ms
    /// tick, 2.56 s at 10 ms; a few nanoseconds per reading instead of over twenty), else at its
    /// full resolution. A coarse reading lags the time, so the pool then counts `idle_timeout` and
    /// `max_lifetime` a 64th short: a connection is closed up to a 64th of its limit early (and
    /// up to the clock's lag more), and none is handed out past its limit unless the clock lags
    /// by more than that 64th. Default `false`: the pool asks [`now`](Clock::now) at every get
    /// and every return, as a clock that can be paused or moved by hand needs.
    fn is_system_time(&self) -> bool {
        false
    }
}

/// Runs the pool's background task (the idle reaper) on some executor.
///
/// # Example
///
/// ```
/// use futures::future::BoxFuture;
///
/// /// Runs each task to completion on a thread of its own.
/// struct ThreadSpawner;
///
/// impl connpool_core::Spawner for ThreadSpawner {
///     fn spawn(&self, task: BoxFuture<'static, ()>) {
///         std::thread::spawn(move || futures::executor::block_on(task));
///     }
/// }
/// # use connpool_core::Spawner as _;
/// # ThreadSpawner.spawn(Box::pin(async {}));
/// ```
pub trait Spawner: Send + Sync + 'static {
    /// Starts `task` in the background; it must be polled to completion.
    fn spawn(&self, task: BoxFuture<'static, ()>);
}

/// A shared clock is the clock it shares: a library that keeps its user's clock as an
/// `Arc<dyn Clock>` hands it to [`Builder::clock`](crate::Builder::clock) as it is.
impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn sleep(&self, dur: Duration) -> BoxFuture<'static, ()> {
        (**self).sleep(dur)
    }

    fn is_system_time(&self) -> bool {
        (**self).is_system_time()
    }
}

/// A boxed clock is the clock in the box.
impl<C: Clock + ?Sized> Clock for Box<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }

    fn sleep(&self, dur: Duration) -> BoxFuture<'static, ()> {
        (**self).sleep(dur)
    }

    fn is_system_time(&self) -> bool {
        (**self).is_system_time()
    }
}

/// A shared spawner spawns as the spawner it shares: an `Arc<dyn Spawner>` goes to
/// [`Builder::spawner`](crate::Builder::spawner) as it is.
impl<S: Spawner + ?Sized> Spawner for Arc<S> {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        (**self).spawn(task);
    }
}

/// A boxed spawner spawns as the spawner in the box.
impl<S: Spawner + ?Sized> Spawner for Box<S> {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        (**self).spawn(task);
    }
}

/// A reading of a pool's clock: nanoseconds since the pool was built.
///
/// The store compares and adds plain integers, which costs a fraction of `Instant` arithmetic on
/// the path every get and return takes.
pub(crate) type Nanos = u64;

/// Converts a duration to [`Nanos`], saturating: a duration past 584 years is "never".
pub(crate) fn nanos(dur: Duration) -> Nanos {
    u64::try_from(dur.as_nanos()).unwrap_or(Nanos::MAX)
}

/// The pool's clock, read as [`Nanos`] since the pool was built.
pub(crate) struct Timebase {
    source: Source,
}

enum Source {
    /// The system's monotonic clock, read by the pool; and the clock the builder was given, if
    /// any, to sleep on (one that reads the system's clock too: [`Clock::is_system_time`]).
    System(SystemClock, Option<Arc<dyn Clock>>),
    /// A clock the builder was given, and its reading when the pool was built.
    Custom(Arc<dyn Clock>, Instant),
}

impl Timebase {
    /// The time of a pool given `clock`, if any, whose shortest timeout (idle or lifetime) is
    /// `shortest`.
    pub(crate) fn new(clock: Option<Arc<dyn Clock>>, shortest: Duration) -> Self {
        let source = match clock {
            Some(clock) if !clock.is_system_time() => {
                let epoch = clock.now();
                Source::Custom(clock, epoch)
            }
            clock => Source::System(SystemClock::new(nanos(shortest)), clock),
        };
        Timebase { source }
    }

    /// Whether [`Timebase::now`] reads a coarse clock. Its readings lag the time, by up to a
    /// tick as a rule and by more when the system's ticks come late, so an interval it measures
    /// may come out short; the store then counts its limits a 64th short, so that no connection
    /// is handed out past them unless the clock lags by more than that 64th (four ticks at
    /// least, by the rule that picks the coarse clock).
    pub(crate) fn is_coarse(&self) -> bool {
        match &self.source {
            Source::System(system, _) => system.is_coarse(),
            Source::Custom(..) => false,
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> Nanos {
        match &self.source {
            Source::System(system, _) => system.now(),
            // One short of `Nanos::MAX`, which limits read as "never": a clock moved past what
            // the pool's time counts (584 years) must not take a connection of the pool's first
            // instant past a limit of never.
            Source::Custom(clock, epoch) => {
                nanos(clock.now().saturating_duration_since(*epoch)).min(Nanos::MAX - 1)
            }
        }
    }

    /// [`Timebase::now`] when it reads the system's clock, which cannot panic; `None` on a clock
    /// the builder was given, which may.
    #[inline]
    pub(crate) fn system_now(&self) -> Option<Nanos> {
        match &self.source {
            Source::System(system, _) => Some(system.now()),
            Source::Custom(..) => None,
        }
    }

    /// The clock the builder was given, which the reaper sleeps on.
    pub(crate) fn clock(&self) -> Option<&Arc<dyn Clock>> {
        match &self.source {
            Source::System(_, clock) => clock.as_ref(),
            Source::Custom(clock, _) => Some(clock),
        }
    }
}

/// The clock a pool uses when none is set: the system's monotonic clock, read at its coarse
/// resolution where the system offers one (Linux: `CLOCK_MONOTONIC_COARSE`, a few milliseconds)
/// and the pool's timeouts are long enough for it (256 of its ticks: 1.024 s at a 4 ms tick),
/// else at its full resolution. Under Miri, which cannot read a clock's resolution, it reads
/// std's `Instant`, so that a library's tests run there with a pool on the default clock.
///
/// A coarse reading costs a few nanoseconds where a precise one costs over twenty, and the pool
/// reads the clock on every get and every return. It lags the time, so the pool counts its limits
/// a 64th short on it ([`Timebase::is_coarse`]). A pool that needs finer timing sets its own
/// [`Clock`] (one that does not say [`Clock::is_system_time`]). It cannot sleep, so a pool on it
/// alone expires idle connections lazily (on get, return and [`Pool::reap`](crate::Pool::reap));
/// a pool given a clock that reads the system's time sleeps on that clock.
struct SystemClock {
    #[cfg(all(any(target_os = "linux", target_os = "android"), not(miri)))]
    epoch: Nanos,
    #[cfg(all(any(target_os = "linux", target_os = "android"), not(miri)))]
    coarse: bool,
    #[cfg(not(all(any(target_os = "linux", target_os = "android"), not(miri))))]
    epoch: Instant,
}

#[cfg(all(any(target_os = "linux", target_os = "android"), not(miri)))]
impl SystemClock {
    /// How many of its ticks the shortest timeout must span for the pool to read the coarse
    /// clock: the store's margin, a 64th of the timeout, is then four ticks or more.
    const TICKS: Nanos = 256;

    /// The clock for a pool whose shortest timeout is `shortest`.
    fn new(shortest: Nanos) -> Self {
        use rustix::time::{clock_getres, ClockId};
        let tick = nanos_of(clock_getres(ClockId::MonotonicCoarse));
        let coarse = tick > 0 && shortest / Self::TICKS >= tick;
        let id = if coarse {
            ClockId::MonotonicCoarse
        } else {
            ClockId::Monotonic
        };
        SystemClock {
            epoch: monotonic(id),
            coarse,
        }
    }

    #[inline]
    fn now(&self) -> Nanos {
        // Each call with its clock as a constant: passing the id from memory cost about 1 ns a
        // get and return (measured), the branch nothing.
        if self.coarse {
            monotonic(rustix::time::ClockId::MonotonicCoarse).saturating_sub(self.epoch)
        } else {
            self.exact()
        }
    }

    /// A precise reading, from the same epoch: never below a coarse one taken before it.
    #[inline]
    fn exact(&self) -> Nanos {
        monotonic(rustix::time::ClockId::Monotonic).saturating_sub(self.epoch)
    }

    fn is_coarse(&self) -> bool {
        self.coarse
    }
}

#[cfg(all(any(target_os = "linux", target_os = "android"), not(miri)))]
#[inline]
fn monotonic(id: rustix::time::ClockId) -> Nanos {
    nanos_of(rustix::time::clock_gettime(id))
}

#[cfg(all(any(target_os = "linux", target_os = "android"), not(miri)))]
#[inline]
fn nanos_of(ts: rustix::time::Timespec) -> Nanos {
    // The monotonic clock counts from boot, so neither field is negative, and it reaches 2^64
    // nanoseconds after 584 years of uptime.
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

#[cfg(not(all(any(target_os = "linux", target_os = "android"), not(miri))))]
impl SystemClock {
    fn new(_shortest: Nanos) -> Self {
        SystemClock {
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> Nanos {
        nanos(self.epoch.elapsed())
    }

    fn is_coarse(&self) -> bool {
        false
    }
}

/// A clock that moves only when told: [`advance`](ManualClock::advance) moves it and wakes the
/// sleeps that are due.
///
/// Clones share one time, so a test keeps a clone and hands another to the pool.
///
/// ```
/// use std::time::Duration;
/// use connpool_core::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// let mut sleep = clock.sleep(Duration::from_secs(5));
/// assert!(futures::FutureExt::now_or_never(&mut sleep).is_none());
/// clock.advance(Duration::from_secs(5));
/// assert!(futures::FutureExt::now_or_never(&mut sleep).is_some());
/// assert_eq!(clock.now() - start, Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    state: Arc<Mutex<ManualState>>,
}

struct ManualState {
    now: Instant,
    sleepers: Vec<Weak<Sleeper>>,
}

struct Sleeper {
    deadline: Option<Instant>,
    woken: Mutex<(bool, Option<Waker>)>,
}

impl Sleeper {
    fn wake(&self) {
        let waker = {
            let mut state = lock(&self.woken);
            state.0 = true;
            state.1.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl ManualClock {
    /// A clock that reads the system time once and then stands still.
    pub fn new() -> Self {
        ManualClock {
            state: Arc::new(Mutex::new(ManualState {
                now: Instant::now(),
                sleepers: Vec::new(),
            })),
        }
    }

    /// Moves the clock forward by `dur` and wakes every sleep whose time has come. A `dur` past
    /// the latest time the system's `Instant` can hold moves the clock as near to it as it can
    /// (within 1 ns).
    pub fn advance(&self, dur: Duration) {
        let due: Vec<Arc<Sleeper>> = {
            let mut state = lock(&self.state);
            state.now = latest_within(state.now, dur);
            let now = state.now;
            let mut due = Vec::new();
            state.sleepers.retain(|weak| match weak.upgrade() {
                Some(sleeper) if sleeper.deadline.is_some_and(|d| d <= now) => {
                    due.push(sleeper);
                    false
                }
                Some(_) => true,
                None => false,
            });
            due
        };
        for sleeper in due {
            sleeper.wake();
        }
    }

    /// How many sleeps on this clock are waiting for it to move.
    ///
    /// Tests use it to know that a background task has gone to sleep before they advance time.
    pub fn pending_sleeps(&self) -> usize {
        let state = lock(&self.state);
        state
            .sleepers
            .iter()
            .filter(|weak| weak.upgrade().is_some_and(|s| !lock(&s.woken).0))
            .count()
    }
}

/// `from + dur`, or, when that overflows, the latest instant after `from` that does not: found by
/// halving steps, at most about a hundred of them.
fn latest_within(from: Instant, dur: Duration) -> Instant {
    if let Some(to) = from.checked_add(dur) {
        return to;
    }
    let (mut at, mut step) = (from, dur);
    while !step.is_zero() {
        match at.checked_add(step) {
            Some(next) => at = next,
            None => step /= 2,
        }
    }
    at
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("ManualClock")
            .field("now", &state.now)
            .field("sleepers", &state.sleepers.len())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        lock(&self.state).now
    }

    fn sleep(&self, dur: Duration) -> BoxFuture<'static, ()> {
        let mut state = lock(&self.state);
        // A deadline past the end of representable time never comes.
        let deadline = state.now.checked_add(dur);
        let sleeper = Arc::new(Sleeper {
            deadline,
            woken: Mutex::new((dur.is_zero(), None)),
        });
        if !dur.is_zero() {
            // Sleeps dropped before their time are forgotten before the list grows, so a test
            // that sleeps often without moving the clock keeps it as long as its live sleeps.
            if state.sleepers.len() == state.sleepers.capacity() {
                state.sleepers.retain(|weak| weak.strong_count() > 0);
                // Room for as many again as are live: the next look is as many sleeps away, so
                // each sleep pays for one entry looked at, however many stay live.
                let live = state.sleepers.len();
                state.sleepers.reserve(live);
            }
            state.sleepers.push(Arc::downgrade(&sleeper));
        }
        Box::pin(ManualSleep { sleeper })
    }
}

struct ManualSleep {
    sleeper: Arc<Sleeper>,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.sleeper.woken);
        if state.0 {
            return Poll::Ready(());
        }
        match &state.1 {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.1 = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android"), not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_coarse_only_for_timeouts_of_many_of_its_ticks() {
        let tick = nanos_of(rustix::time::clock_getres(
            rustix::time::ClockId::MonotonicCoarse,
        ));
        assert!(tick > 0);
        let long = SystemClock::new(SystemClock::TICKS * tick);
        assert!(long.is_coarse());
        let short = SystemClock::new(SystemClock::TICKS * tick - 1);
        assert!(!short.is_coarse());
        for clock in [long, short] {
            let (now, exact) = (clock.now(), clock.exact());
            assert!(
                now <= exact,
                "never ahead of the precise clock: {now} {exact}"
            );
        }
    }
}
