//! What a library can do with the pool's types whatever its dialer: share the pool across
//! threads, spawn a task that gets a connection, move a guard to another thread. Checked at
//! compile time, for any `Dialer`, so that no change takes `Send` or `Sync` away unnoticed.

use std::panic::{RefUnwindSafe, UnwindSafe};
use std::time::Duration;

use connpool_core::{BuildError, Dialer, Error, Pool, Pooled, Stats};

fn send<T: Send>(_: &T) {}
fn send_sync<T: Send + Sync>(_: &T) {}
fn send_sync_static<T: Send + Sync + 'static>() {}

/// Compiled, never called: each line fails to compile if the bound it asks for is missing.
#[allow(dead_code)]
async fn for_any_dialer<D: Dialer>(pool: Pool<D>, addr: D::Addr) {
    send_sync(&pool);
    send_sync(&pool.clone());
    let get = pool.get(&addr);
    send(&get);
    let dial = pool.dial(&addr);
    send(&dial);
    let shutdown = pool.shutdown(Duration::from_secs(1));
    send(&shutdown);
    let stats: Stats<D::Addr> = pool.stats();
    send_sync(&stats);
    if let Ok(guard) = get.await {
        send(&guard);
    }
    drop((dial, shutdown));
}

/// A guard is `Sync` when its connection is.
#[allow(dead_code)]
fn a_guard_is_sync_with_its_connection<D: Dialer>(guard: &Pooled<D>)
where
    D::Conn: Sync,
{
    send_sync(guard);
}

#[test]
fn errors_cross_threads_and_unwinding() {
    send_sync_static::<Error>();
    send_sync_static::<BuildError>();
    fn unwind_safe<T: UnwindSafe + RefUnwindSafe>() {}
    unwind_safe::<BuildError>();
}
