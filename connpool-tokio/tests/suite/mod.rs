//! The behaviour suite both adapters run: written once here, run by `tests/behaviour.rs` of
//! connpool-tokio and of connpool-smol through [`suite!`], each with a [`Runtime`] of its own.
//!
//! The servers are real loopback sockets served by plain threads, so they behave the same under
//! every runtime (a paused tokio clock cannot stall them) and count what they accept and what is
//! still open. Waits are bounded loops on real time, never a sleep that hopes.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
#[cfg(unix)]
use std::path::PathBuf;
use std::time::{Duration, Instant};

use connpool_core::{Builder, Clock, Dialer, Error, Pool, Pooled};
use futures::future::join_all;

mod backend;
mod faults;
mod limits;
mod server;

pub use faults::*;
pub use limits::*;
#[cfg(unix)]
pub use server::socket_path;
pub use server::EchoServer;

/// What the suite needs from an adapter and its runtime.
pub trait Runtime: 'static {
    /// The adapter's `TcpDialer`.
    type Tcp: Dialer<Addr = String, Conn: Stream> + Clone;
    /// The adapter's `UnixDialer`.
    #[cfg(unix)]
    type Unix: Dialer<Addr = PathBuf, Conn: Stream> + Clone;
    /// [`Runtime::buffered`]'s dialer.
    type Buffered: Dialer<Addr = String, Conn: Debug>;

    /// The idle timeout the reaper test waits out: long where the test clock can be moved (tokio's
    /// paused clock), short where it is real time.
    const REAPER_IDLE_TIMEOUT: Duration;

    /// Runs a test to completion on a fresh runtime.
    fn block_on<F: Future>(test: F) -> F::Output;
    /// Runs a test on a runtime whose clock the test moves with [`Runtime::sleep`] (tokio's paused
    /// clock); where there is no such clock, on real time.
    fn block_on_test_clock<F: Future>(test: F) -> F::Output;
    /// Sleeps on the runtime's clock.
    fn sleep(dur: Duration) -> impl Future<Output = ()>;
    /// Lets `dur` of real time pass without blocking the runtime and without moving a paused clock.
    fn pause_real(dur: Duration) -> impl Future<Output = ()>;
    /// The time on the runtime's clock (tokio's paused clock included).
    fn now() -> Instant;

    /// The adapter's clock, for a pool built by hand.
    fn clock() -> impl Clock;
    /// `builder` of the adapter.
    fn builder<D: Dialer>(dialer: D) -> Builder<D>;
    /// `TcpDialer::new()`.
    fn tcp() -> Self::Tcp;
    /// `TcpDialer::new().nodelay(yes)`.
    fn tcp_nodelay(yes: bool) -> Self::Tcp;
    /// `TcpDialer::new().connect_timeout(limit)`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // Its tests need Linux's backlog.
    fn tcp_connect_timeout(limit: Duration) -> Self::Tcp;
    /// Whether `TCP_NODELAY` is set on `conn`.
    fn nodelay(conn: &<Self::Tcp as Dialer>::Conn) -> bool;
    /// The local address of `conn`, which tells it apart from the other connections to its peer.
    fn local_addr(conn: &<Self::Tcp as Dialer>::Conn) -> SocketAddr;
    /// Shuts the guard's stream down for writing through the guard (tokio's `shutdown`,
    /// futures-io's `close`).
    fn shut_down(conn: &mut Pooled<Self::Tcp>) -> impl Future<Output = io::Result<()>>;
    /// Writes `msg` and reads back as many bytes through the guard's own I/O (not through the
    /// stream it dereferences to), with the runtime's extension traits.
    fn guarded_echo(
        conn: &mut Pooled<Self::Tcp>,
        msg: &[u8],
    ) -> impl Future<Output = io::Result<Vec<u8>>>;
    /// The adapter's TCP streams behind a `BufReader`, whose guard reads through its
    /// `AsyncBufRead`; open as the adapter's `TcpDialer` says and with nothing left in the
    /// buffer.
    fn buffered() -> Self::Buffered;
    /// Writes `msg` through the guard (nothing when it is empty), then reads one line through it.
    fn guarded_line(
        conn: &mut Pooled<Self::Buffered>,
        msg: &[u8],
    ) -> impl Future<Output = io::Result<String>>;
    /// Writes `msg` through the guard (nothing when it is empty), then reads exactly `len` bytes
    /// through it.
    fn guarded_exact(
        conn: &mut Pooled<Self::Buffered>,
        msg: &[u8],
        len: usize,
    ) -> impl Future<Output = io::Result<Vec<u8>>>;
    /// `UnixDialer::new()`.
    #[cfg(unix)]
    fn unix() -> Self::Unix;
    /// `UnixDialer::new().connect_timeout(limit)`.
    #[cfg(unix)]
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))] // Its test needs Linux's backlog.
    fn unix_connect_timeout(limit: Duration) -> Self::Unix;
}

/// A connection of an adapter, as the suite talks over it.
pub trait Stream: Debug + Send + 'static {
    /// Writes `msg` and reads back as many bytes.
    #[allow(async_fn_in_trait)]
    async fn echo(&mut self, msg: &[u8]) -> io::Result<Vec<u8>>;
}

/// Expands to one `#[test]` per behaviour, run on `$rt`.
#[macro_export]
macro_rules! suite {
    (@tests $rt:ty; $($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                suite::$name::<$rt>();
            }
        )+
    };
    ($rt:ty) => {
        $crate::suite!(@tests $rt;
            sequential_gets_reuse_one_connection,
            concurrent_gets_dial_only_what_the_load_needs,
            idle_connections_stay_within_capacity_per_address,
            restarted_backend_dead_idle_connections_are_skipped,
            without_the_return_check_the_get_skips_a_connection_closed_while_held,
            a_connection_shut_down_through_its_guard_is_not_reused,
            release_then_dial_recovers_from_a_dead_connection,
            with_the_checks_off_a_connection_whose_stream_ended_under_its_guard_is_not_reused,
            reaper_closes_idle_connections_on_its_own,
            close_closes_every_idle_socket,
            refused_connection_is_a_dial_error,
            unresolvable_name_is_a_dial_error,
            malformed_addresses_are_dial_errors,
            guard_dropped_on_a_plain_thread_is_fine,
            nodelay_is_on_unless_turned_off,
        );
        $crate::suite!(@tests $rt;
            faults_refused_until_the_backend_listens,
            faults_stopped_backend_refuses_without_handing_out_dead_connections,
            faults_accept_then_close,
            faults_reset_with_linger_zero,
            faults_stalled_backend,
            faults_unsolicited_bytes_on_idle_connections,
            faults_restart_on_the_same_port,
            faults_request_cut_off_through_its_guard,
            bytes_left_in_a_buffered_guard_are_not_handed_to_the_next_caller,
            limit_holds_a_burst_of_64_tasks_to_4_open_connections,
            limit_wait_timeout_when_all_are_held,
            limit_zero_wait_turns_away_at_once,
            limit_refusing_backend_fails_fast,
            limit_shutdown_waits_for_held_connections,
            limit_shutdown_gives_up_after_grace,
            limit_max_lifetime_closes_old_connections_at_return,
            limit_max_lifetime_reaper_closes_old_idle_connections,
        );
        #[cfg(target_os = "linux")]
        $crate::suite!(@tests $rt;
            connect_timeout_gives_up_on_a_silent_listener,
            faults_close_after_n_requests,
            limit_dial_timeout_against_a_silent_listener,
            unix_dial_waits_for_room_in_a_full_backlog,
            unix_connect_timeout_gives_up_on_a_full_backlog,
            unix_path_with_an_inner_nul_is_a_dial_error,
            unix_paths_mean_the_same_on_both_runtimes,
            unix_paths_too_long_for_a_socket_address_are_a_dial_error,
        );
        #[cfg(unix)]
        $crate::suite!(@tests $rt;
            unix_sequential_gets_reuse_one_connection,
            unix_dead_idle_connection_is_skipped,
            unix_missing_socket_is_a_dial_error,
        );
    };
}

/// Waits until `done` holds, looking again every few milliseconds of real time for at most five
/// seconds; fails the test with `what` if it never does.
pub async fn eventually<R: Runtime>(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        R::pause_real(Duration::from_millis(2)).await;
    }
}

fn tcp_pool<R: Runtime>(capacity: usize) -> Pool<R::Tcp> {
    R::builder(R::tcp()).capacity(capacity).build().unwrap()
}

/// (total, idle) for `addr`, or (0, 0) when the pool has nothing there.
fn counts<D: Dialer>(pool: &Pool<D>, addr: &D::Addr) -> (usize, usize) {
    pool.stats()
        .destination(addr)
        .map_or((0, 0), |d| (d.total, d.idle))
}

async fn echo_ok<C: Stream>(conn: &mut C, msg: &str) {
    let reply = conn.echo(msg.as_bytes()).await.unwrap();
    assert_eq!(reply, msg.as_bytes());
}

/// The dial error of a `get` that must fail.
async fn dial_error<R: Runtime, D: Dialer<Conn: Debug>>(
    pool: &Pool<D>,
    addr: &D::Addr,
) -> io::Error {
    use futures::future::{select, Either};
    use std::pin::pin;

    // Bounded, with room for a slow resolver: a dial that never ends fails the test, not CI.
    let get = pin!(pool.get(addr));
    match select(get, pin!(R::sleep(Duration::from_secs(30)))).await {
        Either::Left((Err(Error::Dial(err)), _)) => err,
        Either::Left((other, _)) => panic!("expected a dial error for {addr:?}, got {other:?}"),
        Either::Right(_) => panic!("the dial to {addr:?} did not end"),
    }
}

pub fn sequential_gets_reuse_one_connection<R: Runtime>() {
    R::block_on(async {
        let server = EchoServer::tcp();
        let addr = server.addr();
        let pool = tcp_pool::<R>(4);
        for round in 0..5 {
            let mut conn = pool.get(&addr).await.unwrap();
            assert_eq!(conn.is_reused(), round > 0);
            echo_ok(&mut *conn, &format!("round {round}")).await;
        }
        assert_eq!(server.accepted(), 1);
        let counters = pool.stats().counters;
        assert_eq!((counters.dials, counters.hits), (1, 4));
        assert_eq!(counts(&pool, &addr), (1, 1));
    });
}

const WORKERS: usize = 4;
const ROUNDS: usize = 5;

/// `WORKERS` callers per server, each doing `ROUNDS` of get, echo, drop; checks the pool after every
/// step: never more connections to an address than callers, never more idle than `capacity`.
async fn load<R: Runtime>(pool: &Pool<R::Tcp>, servers: &[EchoServer], capacity: usize) {
    let callers = servers
        .iter()
        .flat_map(|server| (0..WORKERS).map(move |worker| (server.addr(), worker)))
        .map(|(addr, worker)| async move {
            for round in 0..ROUNDS {
                let mut conn = pool.get(&addr).await.unwrap();
                echo_ok(&mut *conn, &format!("{worker}/{round}")).await;
                drop(conn);
                for dest in pool.stats().destinations {
                    assert!(dest.total <= WORKERS, "{dest:?}: more than the load needs");
                    assert!(dest.idle <= capacity, "{dest:?}: more idle than capacity");
                }
            }
        });
    join_all(callers).await;
}

pub fn concurrent_gets_dial_only_what_the_load_needs<R: Runtime>() {
    R::block_on(async {
        let servers: Vec<EchoServer> = (0..3).map(|_| EchoServer::tcp()).collect();
        let pool = tcp_pool::<R>(WORKERS);
        load::<R>(&pool, &servers, WORKERS).await;
        for server in &servers {
            let accepted = server.accepted();
            assert!(
                (1..=WORKERS).contains(&accepted),
                "{accepted} connections for {WORKERS} callers"
            );
            let (total, idle) = counts(&pool, &server.addr());
            assert_eq!((total, idle), (accepted, accepted));
        }
        let counters = pool.stats().counters;
        assert_eq!(
            counters.dials + counters.hits,
            (servers.len() * WORKERS * ROUNDS) as u64
        );
        assert_eq!(counters.closed(), 0);
    });
}

pub fn idle_connections_stay_within_capacity_per_address<R: Runtime>() {
    const CAPACITY: usize = 2;
    R::block_on(async {
        let servers: Vec<EchoServer> = (0..3).map(|_| EchoServer::tcp()).collect();
        let pool = tcp_pool::<R>(CAPACITY);
        load::<R>(&pool, &servers, CAPACITY).await;
        for server in &servers {
            let (total, idle) = counts(&pool, &server.addr());
            assert_eq!(total, idle);
            assert!((1..=CAPACITY).contains(&idle), "{idle} idle");
            eventually::<R>("the server sees only the idle connections open", || {
                server.open() == idle
            })
            .await;
        }
    });
}

pub fn restarted_backend_dead_idle_connections_are_skipped<R: Runtime>() {
    R::block_on(async {
        let mut server = EchoServer::tcp();
        let addr = server.addr();
        let pool = tcp_pool::<R>(4);
        let mut conns = join_all((0..3).map(|_| pool.get(&addr))).await;
        for conn in &mut conns {
            echo_ok(&mut **conn.as_mut().unwrap(), "before").await;
        }
        drop(conns);
        assert_eq!(counts(&pool, &addr), (3, 3));

        stop_and_see_the_close::<R>(&mut server, &addr).await;
        restart_and_get_afresh(&pool, &addr, 3).await;
    });
}

/// Stops `server` and waits until its close has reached this side of every connection it
/// accepted: a connection outside the pool, accepted last, sees it last.
async fn stop_and_see_the_close<R: Runtime>(server: &mut EchoServer, addr: &String) {
    let dialer = R::tcp();
    let mut probe = dialer.dial(addr).await.unwrap();
    echo_ok(&mut probe, "probe").await;
    server.stop();
    eventually::<R>("the probe sees the server close it", || {
        !dialer.is_open(&probe)
    })
    .await;
}

/// Restarts the stopped server on `addr`; the next get must skip the `dead` connections the pool
/// holds idle, without an error, and dial one that works.
async fn restart_and_get_afresh<D: Dialer<Addr = String, Conn: Stream>>(
    pool: &Pool<D>,
    addr: &String,
    dead: u64,
) {
    let server = EchoServer::tcp_on(addr);
    let mut conn = pool
        .get(addr)
        .await
        .expect("a working connection, no error");
    assert!(!conn.is_reused(), "a closed connection was handed out");
    echo_ok(&mut *conn, "after").await;
    assert_eq!(server.accepted(), 1);
    let counters = pool.stats().counters;
    assert_eq!((counters.closed_not_open, counters.hits), (dead, 0));
    assert_eq!(counts(pool, addr), (1, 0));
}

/// With `check_on_return(false)` a connection the backend closed while it was held goes back
/// idle unchecked, and the next get's check (the dialer's default) closes it instead of handing
/// it out.
pub fn without_the_return_check_the_get_skips_a_connection_closed_while_held<R: Runtime>() {
    R::block_on(async {
        let mut server = EchoServer::tcp();
        let addr = server.addr();
        let pool = R::builder(R::tcp()).check_on_return(false).build().unwrap();
        let mut held = pool.get(&addr).await.unwrap();
        echo_ok(&mut *held, "before").await;

        stop_and_see_the_close::<R>(&mut server, &addr).await;
        drop(held);
        assert_eq!(counts(&pool, &addr), (1, 1), "kept idle without a check");
        restart_and_get_afresh(&pool, &addr, 1).await;
    });
}

/// A stream shut down for writing through its guard is closed on drop. The backend here holds
/// its connections without reading or closing them, so no check could tell: the guard must.
pub fn a_connection_shut_down_through_its_guard_is_not_reused<R: Runtime>() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let backend = std::thread::spawn(move || {
        (0..2)
            .map(|_| listener.accept().unwrap().0)
            .collect::<Vec<_>>()
    });
    R::block_on(async {
        let pool = R::builder(R::tcp()).build().unwrap();
        let mut conn = pool.get(&addr).await.unwrap();
        R::shut_down(&mut conn).await.unwrap();
        drop(conn);
        assert_eq!(counts(&pool, &addr), (0, 0), "kept idle after its shutdown");
        assert_eq!(pool.stats().counters.released, 1);

        let conn = pool.get(&addr).await.unwrap();
        assert!(!conn.is_reused());
    });
    drop(backend.join().unwrap());
}

pub fn release_then_dial_recovers_from_a_dead_connection<R: Runtime>() {
    R::block_on(async {
        let mut server = EchoServer::tcp();
        let addr = server.addr();
        // Without the check on get the pool hands out a dead connection, as go-connpool's did.
        let pool = R::builder(R::tcp()).check_on_get(false).build().unwrap();
        echo_ok(&mut *pool.get(&addr).await.unwrap(), "first").await;
        server.stop();
        let _server = EchoServer::tcp_on(&addr);

        let mut conn = pool.get(&addr).await.unwrap();
        assert!(conn.is_reused());
        if conn.echo(b"lost").await.is_err() {
            conn.release();
            conn = pool.dial(&addr).await.unwrap();
        }
        assert!(!conn.is_reused());
        echo_ok(&mut *conn, "retried").await;
        let counters = pool.stats().counters;
        assert_eq!((counters.dials, counters.released), (2, 1));
        assert_eq!(counts(&pool, &addr), (1, 0));
    });
}

/// A request whose read meets the end of the stream through the guard ends that stream for the
/// pool: with every check off (as with a dialer that cannot check), the caller drops the guard on
/// the error, as `?` does, and the dead connection is not handed to the next caller.
pub fn with_the_checks_off_a_connection_whose_stream_ended_under_its_guard_is_not_reused<
    R: Runtime,
>() {
    R::block_on(async {
        let mut server = EchoServer::tcp();
        let addr = server.addr();
        let pool = R::builder(R::tcp()).check_on_get(false).build().unwrap();
        let mut conn = pool.get(&addr).await.unwrap();
        assert_eq!(
            R::guarded_echo(&mut conn, b"first").await.unwrap(),
            b"first"
        );
        drop(conn);
        stop_and_see_the_close::<R>(&mut server, &addr).await;
        let _server = EchoServer::tcp_on(&addr);

        let mut conn = pool.get(&addr).await.unwrap();
        assert!(
            conn.is_reused(),
            "no check: the dead connection is handed out"
        );
        let failed = R::guarded_echo(&mut conn, b"lost").await;
        assert!(
            failed.is_err(),
            "the closed connection answered: {failed:?}"
        );
        drop(conn);
        assert_eq!(
            counts(&pool, &addr),
            (0, 0),
            "kept idle after its stream ended"
        );
        assert_eq!(pool.stats().counters.released, 1);

        let mut conn = pool.get(&addr).await.unwrap();
        assert!(
            !conn.is_reused(),
            "the dead connection was handed out again"
        );
        assert_eq!(
            R::guarded_echo(&mut conn, b"again").await.unwrap(),
            b"again"
        );
    });
}

pub fn reaper_closes_idle_connections_on_its_own<R: Runtime>() {
    R::block_on_test_clock(async {
        let server = EchoServer::tcp();
        let addr = server.addr();
        let idle_timeout = R::REAPER_IDLE_TIMEOUT;
        let pool = R::builder(R::tcp())
            .idle_timeout(idle_timeout)
            .build()
            .unwrap();
        let mut conns = join_all((0..2).map(|_| pool.get(&addr))).await;
        for conn in &mut conns {
            echo_ok(&mut **conn.as_mut().unwrap(), "soon idle").await;
        }
        drop(conns);
        assert_eq!(server.open(), 2);

        // No call on the pool from here on: only the reaper can close them.
        R::sleep(idle_timeout * 2).await;
        eventually::<R>("the server sees the idle connections closed", || {
            server.open() == 0
        })
        .await;
        assert_eq!(pool.stats().counters.closed_expired, 2);
        assert_eq!(counts(&pool, &addr), (0, 0));
    });
}

pub fn close_closes_every_idle_socket<R: Runtime>() {
    R::block_on(async {
        let server = EchoServer::tcp();
        let addr = server.addr();
        let pool = tcp_pool::<R>(4);
        let mut conns = join_all((0..4).map(|_| pool.get(&addr))).await;
        for conn in &mut conns {
            echo_ok(&mut **conn.as_mut().unwrap(), "hello").await;
        }
        let held = conns.pop().unwrap().unwrap();
        drop(conns);
        assert_eq!(counts(&pool, &addr), (4, 3));

        pool.close();
        eventually::<R>("the server sees the idle connections closed", || {
            server.open() == 1
        })
        .await;
        assert!(matches!(pool.get(&addr).await, Err(Error::Closed)));
        drop(held);
        eventually::<R>("the server sees the held connection closed", || {
            server.open() == 0
        })
        .await;
        assert_eq!(pool.stats().counters.closed_pool_closed, 4);
        assert_eq!(counts(&pool, &addr), (0, 0));
    });
}

pub fn refused_connection_is_a_dial_error<R: Runtime>() {
    let addr = closed_port();
    R::block_on(async {
        let pool = tcp_pool::<R>(4);
        let err = dial_error::<R, _>(&pool, &addr).await;
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        assert!(err.to_string().contains(&addr), "{err}");
        assert_eq!(pool.stats().counters.dial_errors, 1);
        assert_eq!(pool.stats().total(), 0);
    });
}

pub fn unresolvable_name_is_a_dial_error<R: Runtime>() {
    R::block_on(async {
        let pool = tcp_pool::<R>(4);
        let addr = "no-such-host.invalid:80".to_string();
        let err = dial_error::<R, _>(&pool, &addr).await;
        assert!(err.to_string().contains(&addr), "{err}");
        assert_eq!(pool.stats().total(), 0);
    });
}

pub fn malformed_addresses_are_dial_errors<R: Runtime>() {
    R::block_on(async {
        let pool = tcp_pool::<R>(4);
        for addr in ["not an address", "127.0.0.1", "127.0.0.1:99999", ""] {
            let err = dial_error::<R, _>(&pool, &addr.to_string()).await;
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{addr:?}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("connecting to {addr}: ")),
                "{err}"
            );
        }
        assert_eq!(pool.stats().counters.dial_errors, 4);
        assert_eq!(pool.stats().total(), 0);
    });
}

pub fn guard_dropped_on_a_plain_thread_is_fine<R: Runtime>() {
    R::block_on(async {
        let server = EchoServer::tcp();
        let addr = server.addr();
        let pool = tcp_pool::<R>(4);
        let mut conn = pool.get(&addr).await.unwrap();
        echo_ok(&mut *conn, "there").await;
        std::thread::spawn(move || drop(conn)).join().unwrap();
        assert_eq!(counts(&pool, &addr), (1, 1));

        let mut conn = pool.get(&addr).await.unwrap();
        assert!(conn.is_reused());
        echo_ok(&mut *conn, "and back").await;
        // Releasing, and dropping the last handle of the pool, need no runtime either.
        std::thread::spawn(move || {
            conn.release();
            drop(pool);
        })
        .join()
        .unwrap();
        eventually::<R>("the server sees the connection closed", || {
            server.open() == 0
        })
        .await;
        assert_eq!(server.accepted(), 1);

        // Nor do a get that finds an idle connection and a shutdown with nothing out (tokio's
        // timers need a runtime; shutdown starts none when all is back).
        let pool = tcp_pool::<R>(4);
        drop(pool.get(&addr).await.unwrap());
        let plain = pool.clone();
        std::thread::spawn(move || {
            let conn = futures::executor::block_on(plain.get(&addr)).unwrap();
            assert!(conn.is_reused());
            drop(conn);
            assert!(futures::executor::block_on(
                plain.shutdown(Duration::from_secs(5))
            ));
        })
        .join()
        .unwrap();
        assert_eq!(server.accepted(), 2);
        eventually::<R>("the server sees the connection closed", || {
            server.open() == 0
        })
        .await;
    });
}

pub fn nodelay_is_on_unless_turned_off<R: Runtime>() {
    R::block_on(async {
        let server = EchoServer::tcp();
        let addr = server.addr();
        let pool = tcp_pool::<R>(4);
        assert!(R::nodelay(&pool.get(&addr).await.unwrap()));
        let pool = R::builder(R::tcp_nodelay(false)).build().unwrap();
        assert!(!R::nodelay(&pool.get(&addr).await.unwrap()));
    });
}

/// A listener that never accepts, its backlog full: the connects hang until the client gives up.
#[cfg(target_os = "linux")]
pub fn connect_timeout_gives_up_on_a_silent_listener<R: Runtime>() {
    use futures::future::{select, Either};
    use std::pin::pin;

    let silent = backend::SilentListener::new().unwrap();
    let addr = silent.addr();
    R::block_on(async {
        let limit = Duration::from_millis(200);
        let pool = R::builder(R::tcp_connect_timeout(limit)).build().unwrap();
        let mut queued = Vec::new();
        for _ in 0..8 {
            let started = Instant::now();
            // Bounded even if the setting were ignored: a hanging connect fails the test, not CI.
            let dial = pin!(pool.dial(&addr));
            let outcome = match select(dial, pin!(R::sleep(Duration::from_secs(5)))).await {
                Either::Left((outcome, _)) => outcome,
                Either::Right(_) => panic!("connect_timeout({limit:?}) did not end the dial"),
            };
            match outcome {
                Ok(conn) => queued.push(conn),
                Err(Error::Dial(err)) => {
                    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
                    assert!(err.to_string().contains(&addr), "{err}");
                    assert!(started.elapsed() >= limit);
                    assert!(started.elapsed() < Duration::from_secs(5));
                    return;
                }
                Err(err) => panic!("{err}"),
            }
        }
        panic!("{} dials to a full backlog all connected", queued.len());
    });
}

#[cfg(unix)]
fn unix_pool<R: Runtime>() -> Pool<R::Unix> {
    R::builder(R::unix()).capacity(4).build().unwrap()
}

#[cfg(unix)]
pub fn unix_sequential_gets_reuse_one_connection<R: Runtime>() {
    R::block_on(async {
        let server = EchoServer::unix();
        let path = server.path();
        let pool = unix_pool::<R>();
        for round in 0..3 {
            let mut conn = pool.get(&path).await.unwrap();
            assert_eq!(conn.is_reused(), round > 0);
            echo_ok(&mut *conn, "over unix").await;
        }
        assert_eq!(server.accepted(), 1);
    });
}

#[cfg(unix)]
pub fn unix_dead_idle_connection_is_skipped<R: Runtime>() {
    R::block_on(async {
        let mut server = EchoServer::unix();
        let path = server.path();
        let pool = unix_pool::<R>();
        echo_ok(&mut *pool.get(&path).await.unwrap(), "before").await;
        let dialer = R::unix();
        let mut probe = dialer.dial(&path).await.unwrap();
        echo_ok(&mut probe, "probe").await;
        server.stop();
        eventually::<R>("the probe sees the server close it", || {
            !dialer.is_open(&probe)
        })
        .await;
        let _server = EchoServer::unix_on(&path);

        let mut conn = pool
            .get(&path)
            .await
            .expect("a working connection, no error");
        assert!(!conn.is_reused());
        echo_ok(&mut *conn, "after").await;
        assert_eq!(pool.stats().counters.closed_not_open, 1);
    });
}

/// A guard over a buffered stream whose caller took only part of what arrived (one line of two, or
/// a header and a body shorter than the bytes that came with it) leaves the rest in the stream's
/// buffer, where the next caller would read it as its own answer: it is closed, not put back. The
/// guard sees what it handed out; what the stream read ahead on its own, the dialer's `is_open`.
pub fn bytes_left_in_a_buffered_guard_are_not_handed_to_the_next_caller<R: Runtime>() {
    let server = EchoServer::tcp();
    let addr = server.addr();
    R::block_on(async {
        // The guard alone: nothing asks `is_open` at the return.
        let pool = R::builder(R::buffered())
            .check_on_return(false)
            .build()
            .unwrap();
        // Each message is written at once and echoed at once: it lands in the buffer whole.
        let mut conn = pool.get(&addr).await.unwrap();
        let line = R::guarded_line(&mut conn, b"first\nsecond\n")
            .await
            .unwrap();
        assert_eq!(line, "first\n");
        drop(conn);
        let mut conn = pool.get(&addr).await.unwrap();
        assert!(!conn.is_reused(), "a line was left for the next caller");
        assert_eq!(
            R::guarded_line(&mut conn, b"3\nabcEXTRA").await.unwrap(),
            "3\n"
        );
        assert_eq!(R::guarded_exact(&mut conn, b"", 3).await.unwrap(), b"abc");
        drop(conn);
        let stats = pool.stats();
        assert_eq!((stats.total(), stats.counters.released), (0, 2));

        // All taken, the connection goes back and serves the next caller.
        let mut conn = pool.get(&addr).await.unwrap();
        assert!(
            !conn.is_reused(),
            "the rest of a body was left for the next caller"
        );
        let line = R::guarded_line(&mut conn, b"first\nsecond\n")
            .await
            .unwrap();
        assert_eq!(line, "first\n");
        assert_eq!(R::guarded_line(&mut conn, b"").await.unwrap(), "second\n");
        assert_eq!(R::guarded_line(&mut conn, b"3\nabc").await.unwrap(), "3\n");
        assert_eq!(R::guarded_exact(&mut conn, b"", 3).await.unwrap(), b"abc");
        drop(conn);
        let mut conn = pool.get(&addr).await.unwrap();
        assert!(conn.is_reused());
        assert_eq!(
            R::guarded_line(&mut conn, b"again\n").await.unwrap(),
            "again\n"
        );
        drop(conn);

        // A body that came after its header, with more behind it: the stream's own read filled
        // its buffer and took three bytes, where the guard could not see. `is_open` at the
        // return does.
        let pool = R::builder(R::buffered()).build().unwrap();
        let mut conn = pool.get(&addr).await.unwrap();
        assert_eq!(R::guarded_line(&mut conn, b"3\n").await.unwrap(), "3\n");
        let body = R::guarded_exact(&mut conn, b"abcEXTRA", 3).await.unwrap();
        assert_eq!(body, b"abc");
        drop(conn);
        let stats = pool.stats();
        assert_eq!((stats.total(), stats.counters.closed_not_open), (0, 1));
    });
}

#[cfg(unix)]
pub fn unix_missing_socket_is_a_dial_error<R: Runtime>() {
    R::block_on(async {
        let pool = unix_pool::<R>();
        let path = socket_path();
        let err = dial_error::<R, _>(&pool, &path).await;
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    });
}

/// Polls `fut` once, as the runtime's task, without waiting.
#[cfg(target_os = "linux")]
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx))).await
}

#[cfg(target_os = "linux")]
pub fn unix_dial_waits_for_room_in_a_full_backlog<R: Runtime>() {
    use futures::future::{select, Either};
    use std::pin::pin;

    let backlog = backend::FullUnixBacklog::new().unwrap();
    let path = backlog.path();
    R::block_on(async {
        let pool = unix_pool::<R>();
        let mut get = Box::pin(pool.get(&path));
        // The system turns each connect away while the backlog is full (on smol, the connect then
        // ended in `NotConnected`; on tokio, in `WouldBlock` at once): the dial waits instead.
        for _ in 0..3 {
            if let std::task::Poll::Ready(outcome) = poll_once(&mut get).await {
                let outcome = outcome.map(|conn| conn.is_reused());
                panic!("the dial ended while the backlog was full: {outcome:?}");
            }
            R::pause_real(Duration::from_millis(10)).await;
        }
        let accepted = backlog.accept_all(2);
        // Bounded even if the dial never connected: it fails the test, not CI.
        let conn = match select(get, pin!(R::sleep(Duration::from_secs(5)))).await {
            Either::Left((outcome, _)) => outcome.expect("room in the backlog: the dial connects"),
            Either::Right(_) => panic!("the dial did not connect once the backlog had room"),
        };
        assert!(!conn.is_reused());
        assert_eq!(accepted.join().unwrap().len(), 2);
        assert_eq!(pool.stats().counters.dial_errors, 0);
    });
}

#[cfg(target_os = "linux")]
pub fn unix_connect_timeout_gives_up_on_a_full_backlog<R: Runtime>() {
    use futures::future::{select, Either};
    use std::pin::pin;

    let backlog = backend::FullUnixBacklog::new().unwrap();
    let path = backlog.path();
    R::block_on(async {
        let limit = Duration::from_millis(100);
        let pool = R::builder(R::unix_connect_timeout(limit)).build().unwrap();
        let started = Instant::now();
        let outcome = match select(
            pin!(pool.get(&path)),
            pin!(R::sleep(Duration::from_secs(5))),
        )
        .await
        {
            Either::Left((outcome, _)) => outcome,
            Either::Right(_) => panic!("connect_timeout({limit:?}) did not end the dial"),
        };
        match outcome {
            Err(Error::Dial(err)) => {
                assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
                assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
                assert!(started.elapsed() >= limit);
            }
            other => panic!(
                "expected a timed-out dial, got {:?}",
                other.map(|c| c.is_reused())
            ),
        }
    });
}

/// A path with a NUL byte inside: the system would read it only up to that byte, and connect to
/// another socket than the one named.
#[cfg(target_os = "linux")]
pub fn unix_path_with_an_inner_nul_is_a_dial_error<R: Runtime>() {
    let server = EchoServer::unix();
    let mut bogus = server.path().into_os_string();
    bogus.push("\0junk");
    let bogus = PathBuf::from(bogus);
    R::block_on(async {
        let pool = unix_pool::<R>();
        let err = dial_error::<R, _>(&pool, &bogus).await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    });
    assert_eq!(server.accepted(), 0, "the prefix of the path was dialed");
}

/// An empty path is a dial error; one that starts with a NUL byte names an abstract socket (Linux),
/// on both runtimes alike. On smol, whose connect reads the empty path as the abstract socket of
/// no name, the first needs the dialer's own check.
#[cfg(target_os = "linux")]
pub fn unix_paths_mean_the_same_on_both_runtimes<R: Runtime>() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};

    let listen = |name: &[u8]| {
        let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name).ok()?).ok()?;
        listener.set_nonblocking(true).unwrap();
        Some(listener)
    };
    // Where another test or process holds the empty name, the dial's kind alone tells.
    let nameless = listen(b"");
    let name = format!(
        "connpool-suite-{}-{}",
        std::process::id(),
        std::any::type_name::<R>()
    );
    let named = listen(name.as_bytes()).unwrap();
    R::block_on(async {
        let pool = unix_pool::<R>();
        let err = dial_error::<R, _>(&pool, &PathBuf::new()).await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
        let conn = pool.get(&PathBuf::from(format!("\0{name}"))).await;
        assert!(conn.is_ok(), "{conn:?}");
    });
    if let Some(nameless) = nameless {
        let accepted = nameless.accept();
        assert!(
            matches!(&accepted, Err(err) if err.kind() == io::ErrorKind::WouldBlock),
            "the empty path was dialed: {accepted:?}"
        );
    }
    assert!(named.accept().is_ok(), "the abstract socket was not dialed");
}

/// A path or abstract name too long for a socket address (on Linux, 108 bytes or more of path,
/// or of name after the abstract name's NUL byte) is the same dial error on both runtimes. smol's connect handed such paths to the
/// system, which took one of exactly 108 bytes and failed longer ones with another kind.
#[cfg(target_os = "linux")]
pub fn unix_paths_too_long_for_a_socket_address_are_a_dial_error<R: Runtime>() {
    // Under the root, where nothing of that name is.
    let long = |len: usize| PathBuf::from(format!("/{}", "c".repeat(len - 1)));
    R::block_on(async {
        let pool = unix_pool::<R>();
        let abstract_name = PathBuf::from(format!("\0{}", "c".repeat(108)));
        for path in [long(108), long(200), abstract_name] {
            let err = dial_error::<R, _>(&pool, &path).await;
            let len = path.as_os_str().len();
            assert_eq!(
                err.kind(),
                io::ErrorKind::InvalidInput,
                "{len} bytes: {err}"
            );
        }
        // The longest that fit are dialed (and missing).
        let err = dial_error::<R, _>(&pool, &long(107)).await;
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        let longest_name = PathBuf::from(format!("\0{}", "c".repeat(107)));
        let err = dial_error::<R, _>(&pool, &longest_name).await;
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    });
}

/// A loopback address nothing listens on: a port the system handed out, then let go.
fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}
