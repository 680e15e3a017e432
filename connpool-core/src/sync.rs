//! The one place the core takes its synchronisation primitives from, so that a model checker
//! (loom) can replace them under `cfg(loom)` without touching the pool's logic.
//!
//! Only the primitives that carry the store's state are swapped: its mutexes and atomic flags.
//! Reference counts stay `std`'s (loom has no `Weak`, and the reaper, which needs one, is not part
//! of the models).

pub(crate) use std::sync::{Arc, Weak};

#[cfg(not(loom))]
pub(crate) use parking_lot::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, Ordering},
    Mutex, MutexGuard,
};

/// Locks `mutex`, ignoring poison: the pool's state is updated only by code that cannot panic
/// half-way, so a panic elsewhere (say in a user's `Hash` impl) leaves it consistent.
#[cfg(loom)]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(not(loom))]
#[inline]
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock()
}
