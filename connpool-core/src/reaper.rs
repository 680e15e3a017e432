//! The background reaper: a thin async loop around [`Store::reap`](crate::store::Store::reap).
//!
//! It sleeps until the next idle deadline, parks while nothing is idle (a returned connection wakes
//! it), and ends when the pool is closed or gone. A connection that goes idle with a lifetime
//! ending before the reaper's next look wakes it too. It holds only a `Weak` to the pool, so it
//! never keeps a pool alive. A connection whose own drop panics as the reaper closes it does not
//! end the reaper.

use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Poll;
use std::time::Duration;

use futures_core::future::BoxFuture;
use futures_util::task::AtomicWaker;

use crate::clock::{nanos, Clock, Nanos, Spawner};
use crate::pool::PoolInner;
use crate::sync::{Arc, AtomicBool, AtomicU64, Ordering, Weak};
use crate::Dialer;

/// [`ReaperSignal::wake_at`] while the reaper looks at the store. A connection going idle then
/// lowers it without waking the reaper: the look either sees the connection, or ends with a plan
/// no later than the end the connection left there.
const LOOKING: Nanos = Nanos::MAX - 1;

/// How the pool talks to its reaper.
pub(crate) struct ReaperSignal {
    /// Set by the reaper before it parks; a connection turning idle clears it and wakes the reaper.
    parked: AtomicBool,
    /// When (pool time) the reaper will look next: [`LOOKING`] while it looks, `Nanos::MAX`
    /// while it parks. A connection going idle whose lifetime ends sooner lowers it, and wakes
    /// the reaper unless it is looking.
    wake_at: AtomicU64,
    /// The shortest nap (pool time), a sixteenth of the shorter of the idle timeout and the
    /// lifetime: a look that finds nothing due sleeps at least this long, and a lifetime that ends
    /// sooner than this before the next look wakes the reaper early (so connections returned one
    /// by one, each with a lifetime ending before the last's, can add a look each).
    granularity: Nanos,
    /// Whether a reaper listens: without one, a connection going idle has no one to tell.
    listening: bool,
    notified: AtomicBool,
    waker: AtomicWaker,
}

impl ReaperSignal {
    /// The signal of a pool whose connections idle for `idle_timeout` at most, and live for
    /// `max_lifetime` when set; `listening` when a reaper is started for it.
    pub(crate) fn new(
        idle_timeout: Duration,
        max_lifetime: Option<Duration>,
        listening: bool,
    ) -> Self {
        // Naps of at least a sixteenth of the idle timeout bound the work of a pool whose
        // connections come back at scattered times; none is handed out late meanwhile, since a
        // get checks the idle time itself.
        let shortest = max_lifetime.map_or(idle_timeout, |lifetime| lifetime.min(idle_timeout));
        ReaperSignal {
            parked: AtomicBool::new(false),
            wake_at: AtomicU64::new(Nanos::MAX),
            granularity: nanos(shortest / 16),
            listening,
            notified: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// A connection went idle that reaches its lifetime at `lifetime_end` (`Nanos::MAX`: never):
    /// `true` when the reaper must hear of it, and the caller must
    /// [`notify`](ReaperSignal::notify) it: when it parked for want of an idle connection
    /// ([`ReaperSignal::claim_parked`]), or when the lifetime ends before its planned look
    /// ([`ReaperSignal::claim_early`]). Read after the connection went idle, under its shard lock
    /// or after it; the caller notifies once the lock is released.
    #[inline]
    pub(crate) fn claim(&self, lifetime_end: Nanos) -> bool {
        self.listening
            && (self.claim_parked()
                || (lifetime_end < Nanos::MAX && self.claim_early(lifetime_end)))
    }

    /// Whether the reaper parked for want of an idle connection, taking the wake-up on the way.
    /// The reaper sets `parked` before it looks at the store, and the connection went idle under
    /// a shard lock before this load, so either the reaper saw it or this sees `parked`.
    #[inline]
    fn claim_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst)
    }

    /// A connection went idle whose lifetime ends at `deadline` (pool time): `true` when that is
    /// more than the reaper's granularity before its planned look, and the caller must
    /// [`notify`](ReaperSignal::notify) it. Like [`ReaperSignal::claim_parked`], read after the
    /// connection went idle under its shard lock: a reaper that has not yet looked at that shard
    /// set [`LOOKING`] before it did, so either its look sees the connection, or this lowers the
    /// mark its plan will take into account, or this sees its plan.
    #[inline]
    fn claim_early(&self, deadline: Nanos) -> bool {
        let early = deadline.saturating_add(self.granularity);
        if early >= self.wake_at.load(Ordering::SeqCst) {
            return false;
        }
        let planned = self.wake_at.fetch_min(deadline, Ordering::SeqCst);
        planned != LOOKING && early < planned
    }

    /// The pool closed: wake the reaper so that it ends now.
    pub(crate) fn stop(&self) {
        self.notify();
    }

    /// Wakes the reaper to look at the store again.
    pub(crate) fn notify(&self) {
        self.notified.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Waits for `sleep` (or forever when `None`) or a notification, whichever comes first.
    ///
    /// A sleep that ends at its first poll, without waiting (a clock whose sleeps end at once),
    /// still gives the executor back once before the reaper goes on: otherwise the reaper's loop
    /// of looks and naps would never return from its poll and would hold the executor's thread.
    fn wait(&self, mut sleep: Option<BoxFuture<'static, ()>>) -> impl Future<Output = ()> + '_ {
        let mut first = true;
        let mut slept = false;
        poll_fn(move |cx| {
            self.waker.register(cx.waker());
            if self.notified.swap(false, Ordering::AcqRel) || slept {
                return Poll::Ready(());
            }
            let was_first = std::mem::replace(&mut first, false);
            match sleep.as_mut().map(|sleep| sleep.as_mut().poll(cx)) {
                Some(Poll::Ready(())) if was_first => {
                    slept = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Poll::Ready(())) => Poll::Ready(()),
                _ => Poll::Pending,
            }
        })
    }
}

/// Starts the reaper of `pool` on `spawner`.
pub(crate) fn spawn<D: Dialer>(
    pool: &Arc<PoolInner<D>>,
    clock: Arc<dyn Clock>,
    spawner: &dyn Spawner,
) {
    let task = run(Arc::downgrade(pool), clock, pool.reaper.clone());
    spawner.spawn(Box::pin(task));
}

async fn run<D: Dialer>(
    pool: Weak<PoolInner<D>>,
    clock: Arc<dyn Clock>,
    signal: Arc<ReaperSignal>,
) {
    let _forget = ForgetWaker(&signal);
    loop {
        let nap = {
            let Some(pool) = pool.upgrade() else { return };
            if pool.store.is_closed() {
                return;
            }
            match next_nap(&pool, &signal) {
                Some(nap) => nap,
                None => continue,
            }
        };
        signal.wait(nap.map(|d| clock.sleep(d))).await;
    }
}

/// Takes the reaper's waker out of its signal when the reaper ends, and above all when its
/// executor drops it unfinished (a runtime shut down while the pool lives on): a waker holds its
/// executor, and a runtime's waker its I/O and timer drivers, which the pool would otherwise keep
/// open for as long as it lives.
struct ForgetWaker<'a>(&'a ReaperSignal);

impl Drop for ForgetWaker<'_> {
    fn drop(&mut self) {
        drop(self.0.waker.take());
    }
}

/// Reaps, then says how long to sleep: `Some(Some(d))` until the next deadline, `Some(None)` parked
/// until something goes idle, `None` to look again at once (something went idle while parking).
fn next_nap<D: Dialer>(pool: &PoolInner<D>, signal: &ReaperSignal) -> Option<Option<Duration>> {
    // No plan while looking: a connection going idle in a shard already looked at leaves the end
    // of its lifetime here instead ([`ReaperSignal::claim_early`]).
    signal.wake_at.store(LOOKING, Ordering::SeqCst);
    let now = pool.time.now();
    // A connection whose own drop panicked: the look and the other closes went on regardless, the
    // panic hook has told of it, and the reaper looks again rather than end for good. (A clock
    // that panics still ends it: looking again would only panic again.)
    let Ok((_, next)) = catch_unwind(AssertUnwindSafe(|| pool.store.reap(now))) else {
        return None;
    };
    if let Some(deadline) = next {
        // Below the marks: a deadline past the pool's time (a timeout of centuries) is a long
        // sleep, as any other, that an early lifetime can still cut short.
        let plan = deadline
            .max(now.saturating_add(signal.granularity))
            .min(LOOKING - 1);
        // The earlier of the plan and what went idle during the look left.
        let left = signal.wake_at.fetch_min(plan, Ordering::SeqCst);
        let wake = plan.min(left).max(now.saturating_add(signal.granularity));
        // At least 1 ns, and the granularity: once the pool's time is all but past what it
        // counts, the wake-up above can be no later than now, and a sleep of nothing would have
        // the reaper look again and again.
        let nap = wake.saturating_sub(now).max(signal.granularity).max(1);
        return Some(Some(Duration::from_nanos(nap)));
    }
    // What went idle during the look is seen by the check below.
    signal.wake_at.store(Nanos::MAX, Ordering::SeqCst);
    signal.parked.store(true, Ordering::SeqCst);
    if pool.store.has_idle() {
        signal.parked.store(false, Ordering::SeqCst);
        return None;
    }
    Some(None)
}
