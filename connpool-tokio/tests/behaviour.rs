//! The behaviour suite (`suite/mod.rs`) on tokio, and what only tokio streams do.

mod suite;

use std::future::Future;
use std::io;
use std::time::Duration;

#[cfg(unix)]
use connpool_tokio::UnixDialer;
use connpool_tokio::{Builder, Clock, Dialer, TcpDialer};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::codec::{Framed, LinesCodec};

use suite::{EchoServer, Runtime, Stream};

struct Tokio;

impl Runtime for Tokio {
    type Tcp = TcpDialer;
    #[cfg(unix)]
    type Unix = UnixDialer;
    type Buffered = Buffered;

    // Tokio's paused clock makes the default idle timeout pass at once.
    const REAPER_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

    fn block_on<F: Future>(test: F) -> F::Output {
        runtime(false).block_on(test)
    }

    fn block_on_test_clock<F: Future>(test: F) -> F::Output {
        runtime(true).block_on(test)
    }

    fn sleep(dur: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(dur)
    }

    async fn pause_real(dur: Duration) {
        // A blocking task holds a paused clock still while it runs.
        tokio::task::spawn_blocking(move || std::thread::sleep(dur))
            .await
            .unwrap();
    }

    fn clock() -> impl Clock {
        connpool_tokio::TokioClock
    }

    fn now() -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }

    fn builder<D: Dialer>(dialer: D) -> Builder<D> {
        connpool_tokio::builder(dialer)
    }

    fn tcp() -> TcpDialer {
        TcpDialer::new()
    }

    fn tcp_nodelay(yes: bool) -> TcpDialer {
        TcpDialer::new().nodelay(yes)
    }

    fn tcp_connect_timeout(limit: Duration) -> TcpDialer {
        TcpDialer::new().connect_timeout(limit)
    }

    fn nodelay(conn: &tokio::net::TcpStream) -> bool {
        conn.nodelay().unwrap()
    }

    fn local_addr(conn: &tokio::net::TcpStream) -> std::net::SocketAddr {
        conn.local_addr().unwrap()
    }

    async fn shut_down(conn: &mut connpool_tokio::Pooled) -> io::Result<()> {
        conn.shutdown().await
    }

    async fn guarded_echo(conn: &mut connpool_tokio::Pooled, msg: &[u8]) -> io::Result<Vec<u8>> {
        echo(conn, msg).await
    }

    fn buffered() -> Buffered {
        Buffered(TcpDialer::new())
    }

    async fn guarded_line(
        conn: &mut connpool_tokio::Pooled<Buffered>,
        msg: &[u8],
    ) -> io::Result<String> {
        conn.write_all(msg).await?;
        conn.flush().await?;
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        Ok(line)
    }

    async fn guarded_exact(
        conn: &mut connpool_tokio::Pooled<Buffered>,
        msg: &[u8],
        len: usize,
    ) -> io::Result<Vec<u8>> {
        conn.write_all(msg).await?;
        conn.flush().await?;
        let mut bytes = vec![0; len];
        conn.read_exact(&mut bytes).await?;
        Ok(bytes)
    }

    #[cfg(unix)]
    fn unix() -> UnixDialer {
        UnixDialer::new()
    }

    #[cfg(unix)]
    fn unix_connect_timeout(limit: Duration) -> UnixDialer {
        UnixDialer::new().connect_timeout(limit)
    }
}

fn runtime(paused: bool) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .unwrap()
}

/// A multi-thread runtime with one worker, whose clock cannot be paused.
fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    msg: &[u8],
) -> io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    let mut reply = vec![0; msg.len()];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

impl Stream for tokio::net::TcpStream {
    async fn echo(&mut self, msg: &[u8]) -> io::Result<Vec<u8>> {
        echo(self, msg).await
    }
}

#[cfg(unix)]
impl Stream for tokio::net::UnixStream {
    async fn echo(&mut self, msg: &[u8]) -> io::Result<Vec<u8>> {
        echo(self, msg).await
    }
}

/// TCP streams behind tokio's `BufReader`, open as `TcpDialer` says and with nothing read ahead.
#[derive(Debug)]
struct Buffered(TcpDialer);

#[connpool_tokio::async_trait]
impl Dialer for Buffered {
    type Addr = String;
    type Conn = BufReader<tokio::net::TcpStream>;

    async fn dial(&self, addr: &String) -> io::Result<Self::Conn> {
        Ok(BufReader::new(self.0.dial(addr).await?))
    }

    /// Nothing the stream read ahead on its own is left in its buffer, where the guard cannot see.
    fn is_open(&self, conn: &Self::Conn) -> bool {
        conn.buffer().is_empty() && self.0.is_open(conn.get_ref())
    }
}

suite!(Tokio);

#[tokio::test]
async fn pooled_stream_works_with_split_and_framed() {
    let server = EchoServer::tcp();
    let addr = server.addr();
    let pool = connpool_tokio::builder(TcpDialer::new()).build().unwrap();

    let conn = pool.get(&addr).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(conn);
    writer.write_all(b"split").await.unwrap();
    let mut reply = [0; 5];
    reader.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"split");
    drop(reader.unsplit(writer));
    assert_eq!(pool.stats().idle(), 1);

    let conn = pool.get(&addr).await.unwrap();
    assert!(conn.is_reused());
    let mut lines = Framed::new(conn, LinesCodec::new());
    lines.send("framed").await.unwrap();
    assert_eq!(lines.next().await.unwrap().unwrap(), "framed");
    drop(lines.into_inner());
    assert_eq!(pool.stats().idle(), 1);
    assert_eq!(server.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_is_shared_across_tasks_of_a_multi_thread_runtime() {
    let server = EchoServer::tcp();
    let addr = server.addr();
    let pool = connpool_tokio::builder(TcpDialer::new())
        .capacity(4)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|task| {
            let (pool, addr) = (pool.clone(), addr.clone());
            tokio::spawn(async move {
                for round in 0..10 {
                    let mut conn = pool.get(&addr).await.unwrap();
                    let msg = format!("{task}/{round}");
                    assert_eq!(
                        echo(&mut *conn, msg.as_bytes()).await.unwrap(),
                        msg.as_bytes()
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(server.accepted() <= 4);
    let stats = pool.stats();
    assert_eq!(
        (stats.total(), stats.idle()),
        (server.accepted(), server.accepted())
    );
}

#[test]
fn spawner_outside_a_runtime_is_none_or_a_clear_panic() {
    assert!(connpool_tokio::TokioSpawner::try_current().is_none());
    let panic = std::panic::catch_unwind(|| connpool_tokio::builder(TcpDialer::new())).unwrap_err();
    let message = panic.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(message.contains("TokioSpawner::on"), "{message:?}");
}

/// From a plain thread: the pool's one idle connection is there, and the reaper closes it within
/// 5 s (the server sees it go), as expired.
fn wait_until_reaped(pool: &connpool_tokio::Pool, server: &EchoServer) {
    assert_eq!(pool.stats().idle(), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.open() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reaper never closed it"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(pool.stats().counters.closed_expired, 1);
}

#[test]
fn pool_built_on_a_handle_reaps_there_when_used_from_plain_threads() {
    let rt = multi_thread_runtime();
    let server = EchoServer::tcp();
    let addr = server.addr();
    let pool = connpool_tokio::Pool::builder(TcpDialer::new())
        .idle_timeout(Duration::from_millis(50))
        .clock(connpool_tokio::TokioClock)
        .spawner(connpool_tokio::TokioSpawner::on(rt.handle().clone()))
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = pool.get(&addr).await.unwrap();
        echo(&mut *conn, b"x").await.unwrap();
    });
    wait_until_reaped(&pool, &server);
}

/// A plain thread that entered the runtime dials there and times out on its timers (the crate's
/// "Pools and runtimes").
#[test]
fn a_plain_thread_that_entered_a_runtime_dials_and_waits_on_it() {
    let rt = multi_thread_runtime();
    let server = EchoServer::tcp();
    let addr = server.addr();
    let pool = rt.block_on(async {
        connpool_tokio::builder(TcpDialer::new())
            .max_open_per_host(1)
            .wait_timeout(Duration::from_millis(20))
            .build()
            .unwrap()
    });
    let handle = rt.handle().clone();
    std::thread::spawn(move || {
        let _entered = handle.enter();
        let mut conn = futures::executor::block_on(pool.get(&addr)).unwrap();
        futures::executor::block_on(echo(&mut *conn, b"x")).unwrap();
        let waited = futures::executor::block_on(pool.get(&addr));
        assert!(
            matches!(waited, Err(connpool_tokio::Error::Timeout)),
            "{waited:?}"
        );
        drop(conn);
        assert!(futures::executor::block_on(pool.get(&addr))
            .unwrap()
            .is_reused());
    })
    .join()
    .unwrap();
    assert_eq!(server.accepted(), 1);
}

#[test]
fn an_idle_connection_of_a_runtime_that_shut_down_is_not_handed_out() {
    let server = EchoServer::tcp();
    assert_a_dead_runtimes_connection_is_not_handed_out(TcpDialer::new(), server.addr());
}

/// Gets a connection to `addr` on a runtime, drops the runtime, and gets again on another: the
/// idle connection of the dead runtime is counted closed, not handed out.
fn assert_a_dead_runtimes_connection_is_not_handed_out<D>(dialer: D, addr: D::Addr)
where
    D: Dialer<Conn: AsyncRead + AsyncWrite + Unpin>,
{
    let pool = connpool_core::Pool::new(dialer, 4, Duration::from_secs(90)).unwrap();
    let first = runtime(false);
    first.block_on(async {
        let mut conn = pool.get(&addr).await.unwrap();
        echo(&mut *conn, b"on the first runtime").await.unwrap();
    });
    drop(first);
    assert_eq!(pool.stats().idle(), 1);

    runtime(false).block_on(async {
        let mut conn = pool.get(&addr).await.unwrap();
        assert!(
            !conn.is_reused(),
            "a connection of a dead runtime was handed out"
        );
        echo(&mut *conn, b"on the second").await.unwrap();
    });
    assert_eq!(pool.stats().counters.closed_not_open, 1);
}

/// `is_open` is public: a dialer of the caller's may ask it of a stream another task is reading
/// (a multiplexed protocol reading one half in the background). That reader keeps its wake-up.
#[test]
fn is_open_leaves_a_pending_readers_wake_up_alone() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    runtime(false).block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let (mut read_half, write_half) = stream.into_split();
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            read_half.read(&mut buf).await.unwrap()
        });
        // One turn of the current-thread runtime: the reader runs and waits for the stream.
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        assert!(TcpDialer::new().is_open(write_half.as_ref()));
        std::io::Write::write_all(&mut server, b"answer").unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), reader).await;
        assert_eq!(read.expect("the reader was never woken").unwrap(), 6);
    });
}

/// As for TCP: a Unix connection whose runtime has shut down is counted closed, not handed out.
#[cfg(unix)]
#[test]
fn a_unix_idle_connection_of_a_runtime_that_shut_down_is_not_handed_out() {
    let server = EchoServer::unix();
    assert_a_dead_runtimes_connection_is_not_handed_out(UnixDialer::new(), server.path());
}

/// While the backlog is full, the Unix dialer connects again after pauses that double from 1 ms
/// up to 64 ms: its tries fall near 0, 1, 3, 7, 15, 31, 63, 127, 191, 255 and 319 ms (on a clock
/// moved a millisecond at a time, each a step late or so), so room made at 300 ms is taken at the
/// try near 319 ms, not at once (pauses that do not grow) nor at 511 ms (pauses past 64 ms).
#[cfg(target_os = "linux")]
#[test]
fn unix_dial_pauses_double_up_to_64_ms_while_the_backlog_is_full() {
    use socket2::{Domain, SockAddr, Socket, Type};

    let path = suite::socket_path();
    let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    listener.listen(0).unwrap();
    // One connection nobody accepted fills a backlog of zero.
    let _queued = std::os::unix::net::UnixStream::connect(&path).unwrap();
    runtime(true).block_on(async {
        let start = tokio::time::Instant::now();
        let dial = tokio::spawn({
            let path = path.clone();
            async move { UnixDialer::new().dial(&path).await }
        });
        // The test moves the clock itself, and keeps the runtime busy so that it never jumps.
        let step = || tokio::time::advance(Duration::from_millis(1));
        while start.elapsed() < Duration::from_millis(300) {
            step().await;
            assert!(
                !dial.is_finished(),
                "the dial ended while the backlog was full"
            );
        }
        // Room for one: the queued connection leaves the backlog.
        let _accepted = listener.accept().unwrap();
        while !dial.is_finished() {
            assert!(
                start.elapsed() < Duration::from_millis(500),
                "the dial did not connect once the backlog had room"
            );
            step().await;
        }
        let connected_at = start.elapsed();
        dial.await
            .unwrap()
            .expect("room in the backlog: the dial connects");
        assert!(
            (Duration::from_millis(310)..Duration::from_millis(400)).contains(&connected_at),
            "connected at {connected_at:?}, not at the try near 319 ms"
        );
    });
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn tokio_clock_is_system_time_only_where_tokio_cannot_pause_it() {
    let clock = connpool_tokio::TokioClock;
    assert!(!clock.is_system_time(), "outside a runtime");
    runtime(false).block_on(async { assert!(!clock.is_system_time(), "current-thread") });
    let multi = multi_thread_runtime();
    multi.block_on(async { assert!(clock.is_system_time(), "multi-thread") });
}

/// Built by `builder()` inside a multi-thread runtime, the pool reads the system's clock itself and
/// still reaps on tokio's timers.
#[test]
fn pool_built_in_a_multi_thread_runtime_reaps_on_the_system_clock() {
    let rt = multi_thread_runtime();
    let server = EchoServer::tcp();
    let addr = server.addr();
    let pool = {
        let _context = rt.enter();
        connpool_tokio::builder(TcpDialer::new())
            .idle_timeout(Duration::from_millis(50))
            .build()
            .unwrap()
    };
    rt.block_on(async {
        let mut conn = pool.get(&addr).await.unwrap();
        echo(&mut *conn, b"x").await.unwrap();
        drop(conn);
        let conn = pool.get(&addr).await.unwrap();
        assert!(conn.is_reused(), "not expired at once");
    });
    wait_until_reaped(&pool, &server);
}

/// The peer's end of a pooled connection, served by a plain thread's listener.
trait PeerEnd: std::io::Write {
    fn close(&mut self);
}

impl PeerEnd for std::net::TcpStream {
    fn close(&mut self) {
        self.shutdown(std::net::Shutdown::Both).unwrap();
    }
}

#[cfg(unix)]
impl PeerEnd for std::os::unix::net::UnixStream {
    fn close(&mut self) {
        self.shutdown(std::net::Shutdown::Both).unwrap();
    }
}

/// A tokio stream whose reactor readiness the test can look at.
trait Marked {
    /// Whether tokio's reactor holds the stream readable right now (no waiting).
    fn marked_readable(&self) -> bool;
}

impl Marked for tokio::net::TcpStream {
    fn marked_readable(&self) -> bool {
        readable_now(self.ready(tokio::io::Interest::READABLE))
    }
}

#[cfg(unix)]
impl Marked for tokio::net::UnixStream {
    fn marked_readable(&self) -> bool {
        readable_now(self.ready(tokio::io::Interest::READABLE))
    }
}

/// Whether a stream's `ready(READABLE)` answers readable at once.
fn readable_now(ready: impl Future<Output = io::Result<tokio::io::Ready>>) -> bool {
    use futures::FutureExt;
    ready
        .now_or_never()
        .is_some_and(|ready| ready.unwrap().is_readable())
}

/// The pool's first connection to `addr`, with the peer's end (`accept`) and the peer's "hello"
/// read off it: a read that filled its buffer, so tokio's reactor still holds the stream readable.
async fn greeted<D: Dialer, P: PeerEnd>(
    pool: &connpool_core::Pool<D>,
    addr: &D::Addr,
    accept: impl FnOnce() -> P,
) -> (connpool_core::Pooled<D>, P)
where
    D::Conn: AsyncRead + Unpin,
{
    let mut conn = pool.get(addr).await.unwrap();
    let mut peer = accept();
    peer.write_all(b"hello").unwrap();
    let mut hello = [0; 5];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut hello))
        .await
        .expect("the peer's hello within 5 s")
        .unwrap();
    (conn, peer)
}

/// The default check peeks every time, and takes off the readable mark a read left behind, so
/// that the next read waits for the reactor instead of failing first; it still sees a close the
/// reactor has not looked at (a current-thread runtime looks only when the test awaits something
/// that waits).
fn default_check_case<D: Dialer, P: PeerEnd>(dialer: D, addr: D::Addr, accept: impl FnOnce() -> P)
where
    D::Conn: AsyncRead + Unpin + Marked,
{
    runtime(false).block_on(async {
        let pool = connpool_tokio::builder(dialer).build().unwrap();
        let (conn, mut peer) = greeted(&pool, &addr, accept).await;
        // The read filled its buffer, so tokio kept the stream marked readable.
        assert!(conn.marked_readable(), "a full read keeps the mark");
        drop(conn);

        let conn = pool.get(&addr).await.unwrap();
        assert!(conn.is_reused());
        assert!(
            !conn.marked_readable(),
            "the return's peek took the mark off"
        );
        drop(conn);

        peer.close();
        let conn = pool.get(&addr).await.unwrap();
        assert!(!conn.is_reused(), "the close was seen without the reactor");
        let counters = pool.stats().counters;
        assert_eq!((counters.closed_not_open, counters.dials), (1, 2));
    });
}

#[test]
fn default_check_takes_off_the_stale_mark_and_still_sees_a_close() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    default_check_case(TcpDialer::new(), addr, || listener.accept().unwrap().0);
}

#[cfg(unix)]
#[test]
fn unix_default_check_takes_off_the_stale_mark_and_still_sees_a_close() {
    let path = suite::socket_path();
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    default_check_case(UnixDialer::new(), path.clone(), || {
        listener.accept().unwrap().0
    });
    std::fs::remove_file(&path).unwrap();
}

/// With `readiness_first`, `is_open` believes tokio's reactor: what the peer did to an idle
/// connection since the reactor last looked goes unseen (deterministic here: a current-thread
/// runtime looks only when the test awaits something that waits), and once the reactor has
/// looked, the connection is skipped as the plain peek would skip it. `close`: the peer closes;
/// otherwise it sends bytes nobody asked for. `accept` takes the pool's first connection.
fn readiness_first_case<D: Dialer, P: PeerEnd>(
    dialer: D,
    addr: D::Addr,
    accept: impl FnOnce() -> P,
    close: bool,
) where
    D::Conn: AsyncRead + Unpin,
{
    let what = if close { "close" } else { "unsolicited bytes" };
    runtime(false).block_on(async {
        let pool = connpool_tokio::builder(dialer).build().unwrap();
        let (conn, mut peer) = greeted(&pool, &addr, accept).await;
        drop(conn);
        assert_eq!(pool.stats().idle(), 1, "{what}");

        if close {
            peer.close();
        } else {
            peer.write_all(b"unasked").unwrap();
        }
        let unseen = pool.get(&addr).await.unwrap();
        assert!(unseen.is_reused(), "{what}: the reactor had not looked yet");
        drop(unseen);

        // Let the reactor look (the runtime parks in it), then the check sees the event.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let conn = pool.get(&addr).await.unwrap();
            if !conn.is_reused() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: never seen");
        }
        let counters = pool.stats().counters;
        assert_eq!((counters.closed_not_open, counters.dials), (1, 2), "{what}");
    });
}

#[test]
fn readiness_first_sees_what_the_reactor_saw_and_only_that() {
    for close in [true, false] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accept = || listener.accept().unwrap().0;
        readiness_first_case(TcpDialer::new().readiness_first(true), addr, accept, close);
    }
}

#[cfg(unix)]
#[test]
fn unix_readiness_first_sees_what_the_reactor_saw_and_only_that() {
    for close in [true, false] {
        let path = suite::socket_path();
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let accept = || listener.accept().unwrap().0;
        readiness_first_case(
            UnixDialer::new().readiness_first(true),
            path.clone(),
            accept,
            close,
        );
        std::fs::remove_file(&path).unwrap();
    }
}
