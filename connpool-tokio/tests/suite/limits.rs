//! Limits, waiting and shutdown over real loopback sockets: what a counting backend sees of
//! `max_open_per_host`, and how `wait_timeout`, `dial_timeout`, `shutdown` and `max_lifetime` end.
//!
//! Timeouts run on tokio's paused clock where no socket is in flight meanwhile (a paused clock
//! moves on by itself whenever the runtime would wait, I/O included), and on short real durations
//! on smol.

use std::future::{poll_fn, Future};
use std::io::ErrorKind;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use connpool_core::{Error, Pool};
use futures::future::{join, join_all};

use super::backend::{block_until, Backend};
use super::faults::{frame, settle, within};
use super::{eventually, Runtime, Stream};

const LIMIT: usize = 4;
const BURST: usize = 64;
/// Short enough for real time on smol; on tokio's paused clock it passes at once.
const SHORT: Duration = Duration::from_millis(150);

/// `fut`'s output; fails the test if it takes ten seconds (of the runtime's clock, so at once on
/// a paused clock with nothing else to do): a lost wake-up or an ignored timeout ends the test
/// instead of hanging it.
async fn bounded<R: Runtime, T>(what: &str, fut: impl Future<Output = T>) -> T {
    match within::<R, _>(Duration::from_secs(10), fut).await {
        Some(output) => output,
        None => panic!("{what} never ended"),
    }
}

/// One poll of `fut`.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

async fn echo_ok<C: Stream>(conn: &mut C, task: usize, seq: usize) {
    let request = frame(task, seq);
    assert_eq!(conn.echo(&request).await.unwrap(), request);
}

fn limited_pool<R: Runtime>() -> Pool<R::Tcp> {
    R::builder(R::tcp())
        .max_open_per_host(LIMIT)
        .build()
        .unwrap()
}

/// 64 tasks, 4 requests each, against a limit of 4: the backend never sees more than 4
/// connections open at once, every task completes, and connections released along the way free
/// their slot for a waiter to dial.
pub fn limit_holds_a_burst_of_64_tasks_to_4_open_connections<R: Runtime>() {
    const ROUNDS: usize = 4;
    R::block_on(async {
        let backend = Backend::start();
        let addr = backend.addr();
        let pool = limited_pool::<R>();
        let most_waiting = std::cell::Cell::new(0);
        let burst = join_all((0..BURST).map(|task| {
            let (pool, addr, backend, most_waiting) = (&pool, &addr, &backend, &most_waiting);
            async move {
                for round in 0..ROUNDS {
                    let mut conn = pool.get(addr).await.unwrap();
                    echo_ok(&mut *conn, task, round).await;
                    let dest = pool.stats().destinations.pop().unwrap();
                    assert!(dest.total <= LIMIT, "{dest:?}");
                    most_waiting.set(most_waiting.get().max(dest.waiting));
                    assert!(backend.open() <= LIMIT, "{} open", backend.open());
                    if (task + round) % 5 == 0 {
                        // The freed slot goes to a waiter, which dials once this task yields.
                        // Until the backend has seen the close, the runtime waits here (it runs
                        // every task on this thread), so that its count is exact when that dial
                        // arrives.
                        let closed = backend.closed();
                        conn.release();
                        block_until("the backend sees the released connection closed", || {
                            backend.closed() > closed
                        });
                    }
                }
            }
        }));
        bounded::<R, _>("the burst", burst).await;
        assert_eq!(backend.max_open(), LIMIT);
        assert!(most_waiting.get() > 0);
        let counters = pool.stats().counters;
        assert_eq!(counters.hits + counters.dials, (BURST * ROUNDS) as u64);
        assert!(counters.released > 0);
        assert!(counters.waits > 0);
        assert_eq!(counters.wait_timeouts, 0);
        assert_eq!(pool.stats().destinations[0].waiting, 0);
        settle::<R>(&pool, &backend).await;
    });
}

/// With all 4 held, a get or a dial waits `wait_timeout` and ends in `Error::Timeout`, counted; a
/// queued get is handed the next connection that comes back.
pub fn limit_wait_timeout_when_all_are_held<R: Runtime>() {
    R::block_on_test_clock(async {
        let backend = Backend::start();
        let addr = backend.addr();
        let pool = R::builder(R::tcp())
            .max_open_per_host(LIMIT)
            .wait_timeout(SHORT)
            .build()
            .unwrap();
        let mut held = Vec::new();
        for task in 0..LIMIT {
            let mut conn = pool.get(&addr).await.unwrap();
            echo_ok(&mut *conn, task, 0).await;
            held.push(conn);
        }

        let started = R::now();
        let get = bounded::<R, _>("a get at the limit", pool.get(&addr)).await;
        assert!(matches!(get, Err(Error::Timeout)), "{get:?}");
        assert!(R::now() - started >= SHORT);
        let dial = bounded::<R, _>("a dial at the limit", pool.dial(&addr)).await;
        assert!(matches!(dial, Err(Error::Timeout)), "{dial:?}");
        let stats = pool.stats();
        assert_eq!((stats.counters.waits, stats.counters.wait_timeouts), (2, 2));
        let dest = stats.destination(&addr).unwrap();
        assert_eq!((dest.total, dest.waiting), (LIMIT, 0));

        let mut waiter = pin!(pool.get(&addr));
        assert!(poll_once(&mut waiter).await.is_pending());
        assert_eq!(pool.stats().destination(&addr).unwrap().waiting, 1);
        let returned = R::local_addr(&held[0]);
        drop(held.remove(0));
        let mut conn = bounded::<R, _>("the queued get", waiter).await.unwrap();
        assert!(conn.is_reused());
        assert_eq!(R::local_addr(&conn), returned);
        echo_ok(&mut *conn, 0, 1).await;
        assert_eq!((backend.accepted(), backend.max_open()), (LIMIT, LIMIT));
        drop((conn, held));
        settle::<R>(&pool, &backend).await;
    });
}

/// A zero `wait_timeout` turns a get or a dial at the limit away in its first poll, on the
/// runtime's real clock (whose zero sleep ends at a timer tick, not at once), without queueing it.
pub fn limit_zero_wait_turns_away_at_once<R: Runtime>() {
    R::block_on(async {
        let backend = Backend::start();
        let addr = backend.addr();
        let pool = R::builder(R::tcp())
            .max_open_per_host(1)
            .wait_timeout(Duration::ZERO)
            .build()
            .unwrap();
        let mut held = pool.get(&addr).await.unwrap();
        echo_ok(&mut *held, 0, 0).await;
        let mut get = pin!(pool.get(&addr));
        assert!(matches!(
            poll_once(&mut get).await,
            Poll::Ready(Err(Error::Timeout))
        ));
        let mut dial = pin!(pool.dial(&addr));
        assert!(matches!(
            poll_once(&mut dial).await,
            Poll::Ready(Err(Error::Timeout))
        ));
        let stats = pool.stats();
        assert_eq!((stats.counters.waits, stats.counters.wait_timeouts), (2, 2));
        assert_eq!(stats.destination(&addr).unwrap().waiting, 0);
        drop(held);
        let mut conn = pool.get(&addr).await.unwrap();
        assert!(conn.is_reused());
        echo_ok(&mut *conn, 0, 1).await;
        drop(conn);
        settle::<R>(&pool, &backend).await;
    });
}

/// A dial the backend never answers is abandoned after `dial_timeout`: `Error::Timeout`, counted,
/// and nothing left behind.
#[cfg(target_os = "linux")]
pub fn limit_dial_timeout_against_a_silent_listener<R: Runtime>() {
    let silent = super::backend::SilentListener::new().unwrap();
    let addr = silent.addr();
    R::block_on_test_clock(async {
        let pool = R::builder(R::tcp())
            .max_open_per_host(1)
            .dial_timeout(SHORT)
            .build()
            .unwrap();
        let mut connected = Vec::new();
        // Bounded even if the setting were ignored: a hanging dial fails the test, not CI.
        while connected.len() < 8 {
            let started = R::now();
            match within::<R, _>(Duration::from_secs(5), pool.get(&addr)).await {
                Some(Ok(conn)) => {
                    // The backlog had room after all; the pool must now wait for that slot.
                    connected.push(conn.detach());
                }
                Some(Err(Error::Timeout)) => {
                    assert!(R::now() - started >= SHORT);
                    let stats = pool.stats();
                    assert_eq!(stats.counters.dial_timeouts, 1);
                    assert_eq!(stats.counters.dial_errors, 0);
                    assert_eq!(stats.total(), 0, "{stats:?}");
                    // The abandoned dial gave its slot back: the next one times out too.
                    let next = within::<R, _>(Duration::from_secs(5), pool.get(&addr)).await;
                    assert!(matches!(next, Some(Err(Error::Timeout))), "{next:?}");
                    assert_eq!(pool.stats().counters.dial_timeouts, 2);
                    return;
                }
                Some(Err(err)) => panic!("{err}"),
                None => panic!("dial_timeout({SHORT:?}) did not end the dial"),
            }
        }
        panic!("{} dials to a full backlog all connected", connected.len());
    });
}

/// A backend that refuses fails fast under a limit: 64 queued gets each receive their own dial
/// error, never a timeout, long before the wait timeout; once it listens, the burst is served
/// within the limit.
pub fn limit_refusing_backend_fails_fast<R: Runtime>() {
    let wait = Duration::from_secs(5);
    R::block_on(async {
        let mut backend = Backend::refusing();
        let addr = backend.addr();
        let pool = R::builder(R::tcp())
            .max_open_per_host(LIMIT)
            .wait_timeout(wait)
            .build()
            .unwrap();
        let started = Instant::now();
        let burst = join_all((0..BURST).map(|_| pool.get(&addr)));
        for outcome in bounded::<R, _>("the refused burst", burst).await {
            match outcome {
                Err(Error::Dial(err)) => assert_eq!(err.kind(), ErrorKind::ConnectionRefused),
                other => panic!("expected a refused dial, got {other:?}"),
            }
        }
        // Well short of the wait timeout, which nobody sat out.
        assert!(started.elapsed() < wait / 2, "{:?}", started.elapsed());
        let stats = pool.stats();
        assert_eq!(stats.counters.dial_errors, BURST as u64);
        assert_eq!(stats.counters.wait_timeouts, 0);
        assert!(stats.counters.waits > 0);
        assert!(stats.destinations.is_empty(), "{stats:?}");

        backend.listen();
        let burst = join_all((0..BURST).map(|task| {
            let (pool, addr) = (&pool, &addr);
            async move { echo_ok(&mut *pool.get(addr).await.unwrap(), task, 0).await }
        }));
        bounded::<R, _>("the burst", burst).await;
        assert_eq!(backend.max_open(), LIMIT);
        settle::<R>(&pool, &backend).await;
    });
}

/// `shutdown(grace)` returns `true` as soon as the held connections come back, which they may
/// still use meanwhile; idle ones are closed at once, held ones as they return.
pub fn limit_shutdown_waits_for_held_connections<R: Runtime>() {
    R::block_on(async {
        let backend = Backend::start();
        let addr = backend.addr();
        let pool = limited_pool::<R>();
        let mut held = join_all((0..LIMIT).map(|_| pool.get(&addr))).await;
        for (task, conn) in held.iter_mut().enumerate() {
            echo_ok(&mut **conn.as_mut().unwrap(), task, 0).await;
        }
        drop(held.pop());
        assert_eq!(backend.open(), LIMIT);

        let grace = Duration::from_secs(5);
        let started = Instant::now();
        let (drained, ()) = join(pool.shutdown(grace), async {
            for (task, conn) in held.into_iter().enumerate() {
                let mut conn = conn.unwrap();
                assert!(pool.is_closed());
                echo_ok(&mut *conn, task, 1).await;
            }
        })
        .await;
        assert!(drained);
        assert!(started.elapsed() < grace);
        assert!(matches!(pool.get(&addr).await, Err(Error::Closed)));
        assert_eq!(pool.stats().counters.closed_pool_closed, LIMIT as u64);
        eventually::<R>("the backend sees every connection closed", || {
            backend.open() == 0
        })
        .await;
    });
}

/// `shutdown(grace)` returns `false` when a connection is kept past the grace period; the
/// connection is closed when it does come back.
pub fn limit_shutdown_gives_up_after_grace<R: Runtime>() {
    R::block_on_test_clock(async {
        let backend = Backend::start();
        let addr = backend.addr();
        let pool = limited_pool::<R>();
        let mut conn = pool.get(&addr).await.unwrap();
        echo_ok(&mut *conn, 0, 0).await;

        let started = R::now();
        assert!(!bounded::<R, _>("shutdown", pool.shutdown(SHORT)).await);
        assert!(R::now() - started >= SHORT);
        assert_eq!(backend.open(), 1);
        drop(conn);
        eventually::<R>("the backend sees the connection closed", || {
            backend.open() == 0
        })
        .await;
        assert!(bounded::<R, _>("shutdown", pool.shutdown(SHORT)).await);
        assert_eq!(pool.stats().counters.closed_pool_closed, 1);
    });
}

/// A connection older than `max_lifetime` is closed when it comes back, instead of being kept:
/// the backend sees it closed. The pool has the runtime's clock but no reaper, so only the return
/// can close it.
pub fn limit_max_lifetime_closes_old_connections_at_return<R: Runtime>() {
    R::block_on_test_clock(async {
        let backend = Backend::start();
        let addr = backend.addr();
        let pool = Pool::builder(R::tcp())
            .clock(R::clock())
            .max_lifetime(SHORT)
            .max_open_per_host(LIMIT)
            .build()
            .unwrap();
        echo_ok(&mut *pool.get(&addr).await.unwrap(), 0, 0).await;
        let mut conn = pool.get(&addr).await.unwrap();
        assert!(conn.is_reused());
        echo_ok(&mut *conn, 0, 1).await;
        R::sleep(SHORT).await;
        drop(conn);
        let stats = pool.stats();
        assert_eq!(stats.counters.closed_lifetime, 1);
        assert_eq!(stats.total(), 0);
        eventually::<R>("the backend sees the old connection closed", || {
            backend.open() == 0
        })
        .await;

        let mut conn = pool.get(&addr).await.unwrap();
        assert!(!conn.is_reused());
        echo_ok(&mut *conn, 0, 2).await;
        drop(conn);
        assert_eq!(backend.accepted(), 2);
        settle::<R>(&pool, &backend).await;
    });
}

/// A connection left idle past `max_lifetime` is closed by the reaper, with no call on the pool:
/// the backend sees it closed.
pub fn limit_max_lifetime_reaper_closes_old_idle_connections<R: Runtime>() {
    R::block_on_test_clock(async {
        let backend = Backend::start();
        let addr = backend.addr();
        let pool = R::builder(R::tcp())
            .max_lifetime(SHORT)
            .max_open_per_host(LIMIT)
            .build()
            .unwrap();
        echo_ok(&mut *pool.get(&addr).await.unwrap(), 0, 0).await;
        assert_eq!(pool.stats().idle(), 1);
        R::sleep(SHORT).await;
        eventually::<R>("the backend sees the idle connection closed", || {
            backend.open() == 0
        })
        .await;
        let counters = pool.stats().counters;
        assert_eq!((counters.closed_lifetime, counters.closed_expired), (1, 0));
        settle::<R>(&pool, &backend).await;
    });
}
