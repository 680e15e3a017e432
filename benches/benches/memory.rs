//! Memory: the bytes of bookkeeping a pool spends per idle connection, and what stays allocated
//! after many short-lived destinations have come and gone.
//!
//! A counting allocator wraps the system one and reports the bytes (and blocks) live at any
//! moment, as requested by the program: the allocator's own per-block overhead is not in it. The
//! connection is the zero-sized no-op one, so everything measured is the pool's.
//!
//! Run with `cargo bench --bench memory`; it prints a table and checks nothing about the figures.

use std::alloc::System;
use std::time::Duration;

use connpool_benches::{addresses, ready, NoopDialer};
use connpool_core::{ManualClock, Pool};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Bytes and blocks live right now.
#[derive(Debug, Clone, Copy)]
struct Live {
    bytes: isize,
    blocks: isize,
}

impl Live {
    fn now() -> Self {
        let stats = ALLOCATOR.stats();
        Live {
            bytes: stats.bytes_allocated as isize - stats.bytes_deallocated as isize,
            blocks: stats.allocations as isize - stats.deallocations as isize,
        }
    }

    fn since(self, before: Live) -> Live {
        Live {
            bytes: self.bytes - before.bytes,
            blocks: self.blocks - before.blocks,
        }
    }
}

fn pool(capacity: usize, clock: &ManualClock) -> Pool<NoopDialer> {
    Pool::builder(NoopDialer)
        .capacity(capacity)
        .idle_timeout(IDLE_TIMEOUT)
        .clock(clock.clone())
        .check_on_get(false)
        .build()
        .expect("valid settings")
}

/// Gives each of `addrs` `per_dest` idle connections.
fn fill(pool: &Pool<NoopDialer>, addrs: &[String], per_dest: usize) {
    for addr in addrs {
        let held: Vec<_> = (0..per_dest)
            .map(|_| ready(pool.get(addr)).expect("the no-op dialer never fails"))
            .collect();
        drop(held);
    }
}

/// Bytes per idle connection with `dests` destinations of `per_dest` idle connections each,
/// over an empty pool.
fn per_idle(dests: usize, per_dest: usize) {
    let addrs = addresses(dests);
    let clock = ManualClock::new();
    let pool = pool(per_dest, &clock);
    let empty = Live::now();
    fill(&pool, &addrs, per_dest);
    let filled = Live::now().since(empty);
    let idle = dests * per_dest;
    assert_eq!(pool.stats().idle(), idle);
    println!(
        "| {dests} | {per_dest} | {idle} | {} | {} | {:.1} | {:.2} |",
        filled.bytes,
        filled.blocks,
        filled.bytes as f64 / idle as f64,
        filled.blocks as f64 / idle as f64,
    );
}

/// `dests` destinations each used once and left to expire: what the pool holds at its peak,
/// and what is left once the idle timeout has passed and `reap` has run.
fn churn(dests: usize) {
    let addrs = addresses(dests);
    let clock = ManualClock::new();
    let pool = pool(32, &clock);
    let empty = Live::now();
    fill(&pool, &addrs, 1);
    let peak = Live::now().since(empty);
    let peak_dests = pool.stats().destinations.len();
    clock.advance(IDLE_TIMEOUT);
    let reaped = pool.reap();
    let left_dests = pool.stats().destinations.len();
    let left = Live::now().since(empty);
    println!("| destinations used once | {dests} |");
    println!("| destinations in stats before expiry | {peak_dests} |");
    println!(
        "| bytes (blocks) over the empty pool before expiry | {} ({}) |",
        peak.bytes, peak.blocks
    );
    println!("| connections reaped | {reaped} |");
    println!("| destinations in stats after reap | {left_dests} |");
    println!(
        "| bytes (blocks) over the empty pool after reap | {} ({}) |",
        left.bytes, left.blocks
    );
    let empty_pool = {
        let before = Live::now();
        let fresh = self::pool(32, &clock);
        let size = Live::now().since(before);
        drop(fresh);
        size
    };
    println!(
        "| an empty pool, for scale: bytes (blocks) | {} ({}) |",
        empty_pool.bytes, empty_pool.blocks
    );
}

/// `dests` destinations each used once, then purged one by one (a backend list replaced):
/// what is left with no reap to come, since nothing is idle.
fn churn_purged(dests: usize) {
    let addrs = addresses(dests);
    let clock = ManualClock::new();
    let pool = pool(32, &clock);
    let empty = Live::now();
    fill(&pool, &addrs, 1);
    let purged: usize = addrs.iter().map(|addr| pool.purge(addr)).sum();
    assert_eq!(purged, dests);
    let left = Live::now().since(empty);
    println!("| destinations used once, then purged | {dests} |");
    println!(
        "| bytes (blocks) over the empty pool after the purges, before any reap | {} ({}) |",
        left.bytes, left.blocks
    );
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter); this program measures one fixed set.
    println!("Bookkeeping per idle connection (bytes and blocks over an empty pool):\n");
    println!("| destinations | idle per destination | idle | bytes | blocks | bytes per idle | blocks per idle |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (dests, per_dest) in [
        (1, 1),
        (1, 32),
        (1, 1000),
        (16, 32),
        (1000, 1),
        (1000, 8),
        (100_000, 1),
    ] {
        per_idle(dests, per_dest);
    }
    println!("\nChurn: each destination used once, then the idle timeout passes and reap runs:\n");
    println!("| | |");
    println!("|---|---:|");
    churn(100_000);
    churn_purged(100_000);
}
