//! The background reaper: a thin async loop around [`Store::reap`](crate::store::Store::reap).
//!
//! It sleeps until the next idle deadline, parks while nothing is idle (a returned connection wakes
//! it), and ends when the pool is closed or gone. It holds only a `Weak` to the pool, so it never
//! keeps a pool alive.

use std::future::{poll_fn, Future};
use std::task::Poll;
use std::time::Duration;

use futures_core::future::BoxFuture;
use futures_util::task::AtomicWaker;

use crate::clock::{Clock, Spawner};
use crate::pool::PoolInner;
use crate::sync::{Arc, AtomicBool, Ordering, Weak};
use crate::Dialer;

/// How the pool talks to its reaper.
#[derive(Default)]
pub(crate) struct ReaperSignal {
    /// Set by the reaper before it parks; a connection turning idle clears it and wakes the reaper.
    parked: AtomicBool,
    notified: AtomicBool,
    waker: AtomicWaker,
}

impl ReaperSignal {
    /// A connection became idle: wake the reaper if it parked for want of one.
    ///
    /// The reaper sets `parked` before it looks at the store, and the connection went idle under
    /// a shard lock before this load, so either the reaper saw it or this sees `parked`.
    #[inline]
    pub(crate) fn idle_added(&self) {
        if self.claim_parked() {
            self.notify();
        }
    }

    /// [`ReaperSignal::idle_added`] in two steps, for a caller that must read the flag under the
    /// shard lock and wake the reaper after it: `true` when the reaper parked and this caller
    /// must [`notify`](ReaperSignal::notify) it. Reading under the lock keeps the argument above:
    /// a reaper that parks later takes this lock to look at the store, after the connection went
    /// idle.
    #[inline]
    pub(crate) fn claim_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst) && self.parked.swap(false, Ordering::SeqCst)
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
    fn wait(&self, mut sleep: Option<BoxFuture<'static, ()>>) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            self.waker.register(cx.waker());
            if self.notified.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            match sleep.as_mut() {
                Some(sleep) => sleep.as_mut().poll(cx),
                None => Poll::Pending,
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

/// Reaps, then says how long to sleep: `Some(Some(d))` until the next deadline, `Some(None)` parked
/// until something goes idle, `None` to look again at once (something went idle while parking).
fn next_nap<D: Dialer>(pool: &PoolInner<D>, signal: &ReaperSignal) -> Option<Option<Duration>> {
    let now = pool.time.now();
    let (_, next) = pool.store.reap(now);
    if let Some(deadline) = next {
        // Waking at most sixteen times per idle timeout bounds the work of a pool whose
        // connections come back at scattered times; none is handed out late meanwhile, since a
        // get checks the idle time itself.
        let limits = pool.store.limits();
        let shortest = limits.max_lifetime.map_or(limits.idle_timeout, |lifetime| {
            lifetime.min(limits.idle_timeout)
        });
        let granularity = shortest / 16;
        let until_deadline = Duration::from_nanos(deadline.saturating_sub(now));
        return Some(Some(until_deadline.max(granularity)));
    }
    signal.parked.store(true, Ordering::SeqCst);
    if pool.store.has_idle() {
        signal.parked.store(false, Ordering::SeqCst);
        return None;
    }
    Some(None)
}
