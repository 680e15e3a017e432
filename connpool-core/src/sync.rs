//! The one place the core takes its synchronisation primitives from, so that a model checker (loom)
//! can replace them under `cfg(loom)` without touching the pool's logic.

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex, MutexGuard, Weak,
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Mutex, MutexGuard, Weak,
};

/// Locks `mutex`, ignoring poison: the pool's state is updated only by code that cannot panic
/// half-way, so a panic elsewhere (say in a user's `Hash` impl) leaves it consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
