//! The behaviour suite (connpool-tokio's `tests/suite/mod.rs`, written once for both adapters) on
//! smol, and what only smol streams do.

#[path = "../../connpool-tokio/tests/suite/mod.rs"]
mod suite;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

#[cfg(unix)]
use connpool_smol::UnixDialer;
use connpool_smol::{Builder, Clock, Dialer, TcpDialer};
use smol::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use smol::stream::StreamExt;
use smol::Timer;

use suite::{EchoServer, Runtime, Stream};

struct Smol;

impl Runtime for Smol {
    type Tcp = TcpDialer;
    #[cfg(unix)]
    type Unix = UnixDialer;
    type Buffered = Buffered;

    // smol has no test clock: a short timeout in real time.
    const REAPER_IDLE_TIMEOUT: Duration = Duration::from_millis(100);

    fn block_on<F: Future>(test: F) -> F::Output {
        smol::block_on(test)
    }

    fn block_on_test_clock<F: Future>(test: F) -> F::Output {
        smol::block_on(test)
    }

    async fn sleep(dur: Duration) {
        Timer::after(dur).await;
    }

    async fn pause_real(dur: Duration) {
        Timer::after(dur).await;
    }

    fn clock() -> impl Clock {
        connpool_smol::SmolClock
    }

    fn now() -> std::time::Instant {
        std::time::Instant::now()
    }

    fn builder<D: Dialer>(dialer: D) -> Builder<D> {
        connpool_smol::builder(dialer)
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

    fn nodelay(conn: &smol::net::TcpStream) -> bool {
        conn.nodelay().unwrap()
    }

    fn local_addr(conn: &smol::net::TcpStream) -> std::net::SocketAddr {
        conn.local_addr().unwrap()
    }

    async fn shut_down(conn: &mut connpool_smol::Pooled) -> io::Result<()> {
        conn.close().await
    }

    async fn guarded_echo(conn: &mut connpool_smol::Pooled, msg: &[u8]) -> io::Result<Vec<u8>> {
        echo(conn, msg).await
    }

    fn buffered() -> Buffered {
        Buffered(TcpDialer::new())
    }

    async fn guarded_line(
        conn: &mut connpool_smol::Pooled<Buffered>,
        msg: &[u8],
    ) -> io::Result<String> {
        conn.write_all(msg).await?;
        conn.flush().await?;
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        Ok(line)
    }

    async fn guarded_exact(
        conn: &mut connpool_smol::Pooled<Buffered>,
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

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    msg: &[u8],
) -> io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    let mut reply = vec![0; msg.len()];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

impl Stream for smol::net::TcpStream {
    async fn echo(&mut self, msg: &[u8]) -> io::Result<Vec<u8>> {
        echo(self, msg).await
    }
}

#[cfg(unix)]
impl Stream for smol::net::unix::UnixStream {
    async fn echo(&mut self, msg: &[u8]) -> io::Result<Vec<u8>> {
        echo(self, msg).await
    }
}

/// TCP streams behind smol's `BufReader`, open as `TcpDialer` says and with nothing read ahead.
#[derive(Debug)]
struct Buffered(TcpDialer);

#[connpool_smol::async_trait]
impl Dialer for Buffered {
    type Addr = String;
    type Conn = BufReader<smol::net::TcpStream>;

    async fn dial(&self, addr: &String) -> io::Result<Self::Conn> {
        Ok(BufReader::new(self.0.dial(addr).await?))
    }

    /// Nothing the stream read ahead on its own is left in its buffer, where the guard cannot see.
    fn is_open(&self, conn: &Self::Conn) -> bool {
        conn.buffer().is_empty() && self.0.is_open(conn.get_ref())
    }
}

suite!(Smol);

#[test]
fn pooled_stream_works_with_futures_io() {
    smol::block_on(async {
        let server = EchoServer::tcp();
        let addr = server.addr();
        let pool = connpool_smol::builder(TcpDialer::new()).build().unwrap();

        let conn = pool.get(&addr).await.unwrap();
        let (reader, mut writer) = smol::io::split(conn);
        writer
            .write_all(b"first line\nsecond line\n")
            .await
            .unwrap();
        writer.flush().await.unwrap();
        let mut lines = BufReader::new(reader).lines();
        assert_eq!(lines.next().await.unwrap().unwrap(), "first line");
        assert_eq!(lines.next().await.unwrap().unwrap(), "second line");
        drop((lines, writer));
        assert_eq!(pool.stats().idle(), 1);

        let mut conn = pool.get(&addr).await.unwrap();
        assert!(conn.is_reused());
        assert_eq!(echo(&mut conn, b"again").await.unwrap(), b"again");
        assert_eq!(server.accepted(), 1);
    });
}

#[test]
fn reaper_runs_on_an_executor_of_the_application() {
    let executor = Arc::new(smol::Executor::new());
    assert!(executor.is_empty());
    let server = EchoServer::tcp();
    let addr = server.addr();
    let pool = connpool_smol::Pool::builder(TcpDialer::new())
        .idle_timeout(Duration::from_millis(50))
        .clock(connpool_smol::SmolClock)
        .spawner(connpool_smol::SmolSpawner::on(executor.clone()))
        .build()
        .unwrap();
    // On that executor, not smol's global one, from the build on: the global one would reap too.
    assert!(!executor.is_empty(), "the reaper is not on the executor");
    smol::block_on(executor.run(async {
        let mut conn = pool.get(&addr).await.unwrap();
        echo(&mut conn, b"x").await.unwrap();
        drop(conn);
        assert_eq!(pool.stats().idle(), 1);
        suite::eventually::<Smol>("the reaper closed it", || server.open() == 0).await;
    }));
    assert_eq!(pool.stats().counters.closed_expired, 1);
}
