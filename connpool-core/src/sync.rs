//! The one place the core takes its synchronisation primitives from, so that a model checker
//! (loom) can replace them under `cfg(connpool_loom)` without touching the pool's logic.
//!
//! Only the primitives that carry the store's state are swapped: its mutexes and atomic flags.
//! Reference counts stay `std`'s (loom has no `Weak`, and the reaper, which needs one, is not part
//! of the models).

pub(crate) use std::sync::{Arc, Weak};

#[cfg(not(connpool_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

#[cfg(connpool_loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Mutex, MutexGuard,
};

/// Locks `mutex`, ignoring poison: the pool's state is updated only by code that cannot panic
/// half-way, so a panic elsewhere leaves it consistent. A user's `Hash` runs before any lock, and
/// an address's `Eq` and `Clone` run under one only where the books add up, or under a guard that
/// ends the count they would leave behind.
#[cfg(connpool_loom)]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(not(connpool_loom))]
pub(crate) use short::{lock, Mutex};

/// The store's lock: for critical sections of tens of nanoseconds, taken on every get and every
/// return.
///
/// Taking it is one compare-and-swap and releasing it one plain store. Locks that put waiters to
/// sleep (std's, parking_lot's) release with a second read-modify-write, to learn whether someone
/// sleeps and needs waking; on the hot path that release cost 1 to 2 ns of 29 (BENCHMARKS.md).
/// Here nobody is ever woken: a thread that finds the lock taken spins a little, then yields
/// (for 20 µs at least), then naps for growing spans (20 µs up to 250 µs), checking again after
/// each. Holds are short and, with a lane per core, rarely contended; the naps keep a long hold
/// (`close` walking a big shard) from costing its waiters a core each. A nap is longer than
/// asked: Linux lets a sleep run over by its timer slack (50 µs by default), and waking takes its
/// own time; a 20 µs nap measured 100 to 125 µs here. The yields cover the holds a nap would
/// overshoot by that much, such as `stats` reading a shard of a thousand destinations. A waiter
/// that sees the lock come free and loses it to another thread starts over with spinning, so only
/// a lock held without a break sends it napping. There is no strict fairness and no poisoning.
#[cfg(not(connpool_loom))]
mod short {
    use std::hint;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::thread;
    use std::time::{Duration, Instant};

    use lock_api::RawMutex;

    pub(crate) type Mutex<T> = lock_api::Mutex<RawLock, T>;
    pub(crate) type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawLock, T>;

    /// Locks `mutex`.
    #[inline]
    pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock()
    }

    /// `true` while held.
    pub(crate) struct RawLock(AtomicBool);

    /// Rounds of spinning (1, 2, 4 pause instructions), then of yielding, before naps: short, as a
    /// holder that is not running (preempted, with more threads than cores) cannot be waited out
    /// by spinning (measured in `hot_path_oversubscribed`). After their rounds, the yields go on
    /// until the first nap's span has passed.
    const SPIN_ROUNDS: u32 = 3;
    const YIELD_ROUNDS: u32 = 7;
    const FIRST_NAP: Duration = Duration::from_micros(20);
    const LONGEST_NAP: Duration = Duration::from_micros(250);

    // SAFETY: `lock` and `try_lock` succeed only by swapping `false` for `true` with `Acquire`,
    // so one holder at a time; `unlock`, called only by the holder (lock_api's contract), hands
    // over with a `Release` store, so the next holder sees everything the last one wrote.
    #[allow(unsafe_code)]
    unsafe impl RawMutex for RawLock {
        #[allow(
            clippy::declare_interior_mutable_const,
            reason = "lock_api's initialiser"
        )]
        const INIT: RawLock = RawLock(AtomicBool::new(false));

        type GuardMarker = lock_api::GuardSend;

        #[inline]
        fn lock(&self) {
            if !self.try_lock() {
                self.lock_contended();
            }
        }

        #[inline]
        fn try_lock(&self) -> bool {
            self.0
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        }

        #[inline]
        unsafe fn unlock(&self) {
            self.0.store(false, Ordering::Release);
        }

        #[inline]
        fn is_locked(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    impl RawLock {
        #[cold]
        fn lock_contended(&self) {
            let mut round: u32 = 0;
            let mut nap = FIRST_NAP;
            let mut yielding_since = None;
            loop {
                // Wait until it looks free before writing to it again, so waiters do not take
                // the line away from the holder.
                while self.0.load(Ordering::Relaxed) {
                    if round < SPIN_ROUNDS {
                        for _ in 0..1 << round {
                            hint::spin_loop();
                        }
                    } else if round < SPIN_ROUNDS + YIELD_ROUNDS
                        || yielding_since.get_or_insert_with(Instant::now).elapsed() < FIRST_NAP
                    {
                        thread::yield_now();
                    } else {
                        thread::sleep(nap);
                        nap = (nap * 2).min(LONGEST_NAP);
                    }
                    round = round.saturating_add(1);
                }
                if self.try_lock() {
                    return;
                }
                // It came free and another thread took it: the lock is moving, not held long, so
                // wait for it closely again rather than nap through the next release.
                round = 0;
                nap = FIRST_NAP;
                yielding_since = None;
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::sync::Arc;

        /// Threads adding to a plain counter under the lock lose no update, through every phase
        /// of waiting: the test holds the lock while they start.
        #[test]
        fn the_lock_excludes_through_spins_yields_and_naps() {
            let counter = Arc::new(Mutex::new(0_u64));
            let threads = 4;
            let rounds = 20_000;
            // Held while the workers start, long enough for them to reach their naps.
            let held = lock(&counter);
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let counter = counter.clone();
                    thread::spawn(move || {
                        for _ in 0..rounds {
                            let mut count = lock(&counter);
                            // A read and a write apart, so a second holder would lose updates.
                            let seen = *count;
                            hint::black_box(&mut *count);
                            *count = seen + 1;
                        }
                    })
                })
                .collect();
            thread::sleep(Duration::from_millis(20));
            drop(held);
            for worker in workers {
                worker.join().expect("a worker does not panic");
            }
            assert_eq!(*lock(&counter), threads * rounds);
            assert!(!counter.is_locked());
        }

        #[test]
        fn try_lock_fails_while_held_and_succeeds_after() {
            let mutex = Mutex::new(());
            let guard = lock(&mutex);
            assert!(mutex.try_lock().is_none());
            drop(guard);
            assert!(mutex.try_lock().is_some());
        }
    }
}
