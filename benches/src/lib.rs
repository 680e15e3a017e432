//! Shared pieces of the connpool benchmarks (the files under `benches/`).
//!
//! - [`Conn`] and [`NoopDialer`]: a connection that costs nothing, so a benchmark measures the
//!   pool and nothing else;
//! - [`peers`]: what a Rust user writes today for per-host pooling, around the same connection;
//! - the harness: [`addresses`], [`Cycle`] (round robin over them), [`ready`] (drives a future
//!   that completes without waiting) and [`run_on_threads`] (aggregate wall time on N threads).

#![forbid(unsafe_code)]

pub mod peers;

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use connpool_core::Dialer;

/// A connection that is nothing: opening, checking and closing it cost nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn;

/// Opens [`Conn`]s at once; every connection is open.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopDialer;

#[connpool_core::async_trait]
impl Dialer for NoopDialer {
    type Addr = String;
    type Conn = Conn;

    async fn dial(&self, _addr: &String) -> io::Result<Conn> {
        Ok(Conn)
    }

    fn is_open(&self, _conn: &Conn) -> bool {
        true
    }
}

/// `n` distinct destination addresses, `"10.x.y.z:8080"`, computed once so that a benchmark's
/// loop formats nothing.
pub fn addresses(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "10.{}.{}.{}:8080",
                (i >> 16) & 0xff,
                (i >> 8) & 0xff,
                i & 0xff
            )
        })
        .collect()
}

/// Round robin over a slice, from a given start.
#[derive(Debug)]
pub struct Cycle<'a, T> {
    items: &'a [T],
    next: usize,
}

impl<'a, T> Cycle<'a, T> {
    /// A cycle over `items` (not empty) starting at `start % items.len()`.
    pub fn new(items: &'a [T], start: usize) -> Self {
        assert!(!items.is_empty(), "nothing to cycle over");
        Cycle {
            items,
            next: start % items.len(),
        }
    }

    /// The next item, wrapping around at the end.
    #[inline]
    pub fn next_item(&mut self) -> &'a T {
        let item = &self.items[self.next];
        self.next += 1;
        if self.next == self.items.len() {
            self.next = 0;
        }
        item
    }
}

/// Polls `fut` once and returns its output.
///
/// The hot path of every pool measured here (an idle connection is there) completes without
/// waiting, so one poll with a waker that does nothing is all it takes, and an executor's own
/// overhead stays out of the figures.
///
/// # Panics
///
/// When the future is not ready after one poll: the benchmark is not measuring what it says.
#[inline]
pub fn ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the future waited: no idle connection was there"),
    }
}

/// Part `part` of `total` split into `parts` near-equal parts (they add up to `total`).
pub fn share(total: u64, parts: usize, part: usize) -> u64 {
    let (whole, rest) = (total / parts as u64, total % parts as u64);
    whole + u64::from((part as u64) < rest)
}

/// Runs `work(thread, iterations)` on `threads` threads at once, splitting `iters` between them,
/// and returns the wall time from the first thread's start to the last thread's end: criterion's
/// time per iteration is then the aggregate time per operation.
///
/// Threads are spawned and joined outside the timed section; a barrier lines up their starts. One
/// thread runs on the caller's thread.
pub fn run_on_threads(threads: usize, iters: u64, work: impl Fn(usize, u64) + Sync) -> Duration {
    if threads == 1 {
        let start = Instant::now();
        work(0, iters);
        return start.elapsed();
    }
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (barrier, work, iters) = (&barrier, &work, share(iters, threads, thread));
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    work(thread, iters);
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| match handle.join() {
                Ok(span) => span,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let start = spans.iter().map(|span| span.0).min();
    let end = spans.iter().map(|span| span.1).max();
    match (start, end) {
        (Some(start), Some(end)) => end - start,
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::*;
    use std::sync::Arc;

    #[test]
    fn shares_add_up() {
        for total in [0, 1, 7, 1000] {
            let sum: u64 = (0..3).map(|part| share(total, 3, part)).sum();
            assert_eq!(sum, total);
        }
    }

    #[test]
    fn cycle_wraps_from_its_start() {
        let items = [1, 2, 3];
        let mut cycle = Cycle::new(&items, 4);
        let walked: Vec<i32> = (0..4).map(|_| *cycle.next_item()).collect();
        assert_eq!(walked, [2, 3, 1, 2]);
    }

    #[test]
    #[should_panic(expected = "the future waited")]
    fn ready_refuses_a_future_that_waits() {
        ready(std::future::pending::<()>());
    }

    #[test]
    fn connpool_reuses_without_waiting() {
        let pool = connpool_core::Pool::builder(NoopDialer)
            .build()
            .expect("valid settings");
        let addr = addresses(1).remove(0);
        drop(ready(pool.get(&addr)).expect("a dial"));
        assert!(ready(pool.get(&addr)).expect("a reuse").is_reused());
    }

    #[test]
    fn every_peer_reuses_without_waiting() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        let _context = runtime.enter();
        let addrs = addresses(2);

        let deadpool = LockedMap::new(deadpool_pool);
        drop(ready(deadpool.pool(&addrs[0]).get()).expect("a new connection"));
        drop(ready(deadpool.pool(&addrs[0]).get()).expect("the same one"));
        assert_eq!(deadpool.pool(&addrs[0]).status().size, 1);

        let bb8 = FixedMap::new(&addrs, bb8_pool);
        assert!(bb8.pool(&addrs[1]).add(Conn).is_ok());
        drop(ready(bb8.pool(&addrs[1]).get()).expect("the added one"));
        assert_eq!(bb8.pool(&addrs[1]).state().idle_connections, 1);

        let hyper = hyper_pool();
        let key: HyperKey = Arc::from(addrs[0].as_str());
        drop(hyper_pooled(&hyper, &key));
        let reused = ready(hyper.checkout(key.clone())).expect("the returned one");
        assert!(reused.is_reused());
    }
}
