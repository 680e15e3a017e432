//! A pool that outlives the runtime it was built on keeps nothing of that runtime.
//!
//! A file of its own: it counts the process's open descriptors, which tests running beside it in
//! the same process would move.

#![cfg(target_os = "linux")]

use std::io;
use std::time::Duration;

use connpool_core::dial_fn;
use tokio::io::DuplexStream;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An in-memory connection, so that the only descriptors in play are the runtimes'.
async fn dial(_addr: &'static str) -> io::Result<DuplexStream> {
    let (near, far) = tokio::io::duplex(64);
    // The far end stays open, so the near one is never seen closed.
    std::mem::forget(far);
    Ok(near)
}

/// Each runtime's driver holds descriptors (epoll, an eventfd). The reaper's task is dropped when
/// its runtime shuts down; its waker, which holds the runtime, must go with it, or every pool
/// keeps a dead runtime's driver open for as long as the pool lives.
#[test]
fn a_pool_outliving_its_runtime_keeps_none_of_its_descriptors() {
    // A first runtime, for what a process keeps open once it has had one (none today; a signal
    // driver's pipe, were Tokio's `signal` feature on).
    drop(runtime());
    let before = open_descriptors();
    let mut pools = Vec::new();
    for round in 0..10 {
        let runtime = runtime();
        let pool = runtime.block_on(async {
            let pool = connpool_tokio::builder(dial_fn(dial))
                .idle_timeout(Duration::from_secs(60))
                .build()
                .unwrap();
            if round % 2 == 1 {
                // An idle connection: the reaper sleeps on a timer instead of parking.
                drop(pool.get(&"a").await.unwrap());
            }
            // The reaper runs once, and waits.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            pool
        });
        drop(runtime);
        pools.push(pool);
    }
    let with_pools = open_descriptors();
    // Still usable, lazily, from another runtime.
    let later = runtime();
    later.block_on(async {
        drop(pools[0].get(&"a").await.unwrap());
    });
    drop(later);
    drop(pools);
    assert_eq!(
        with_pools, before,
        "descriptors open with 10 pools whose runtimes are gone: {with_pools}, before: {before}"
    );
}
