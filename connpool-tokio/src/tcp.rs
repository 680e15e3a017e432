//! TCP on tokio: [`TcpDialer`].

use std::io;
use std::time::Duration;

use connpool_core::Dialer;
use tokio::net::TcpStream;

use crate::socket::{dial_error, is_open, timed_out};

/// Dials TCP connections on tokio: the [`Dialer`] of [`Pool`](crate::Pool).
///
/// Addresses are `"host:port"` strings: `"127.0.0.1:6379"`, `"[::1]:80"`, `"db.internal:5432"`.
/// Names are resolved by tokio (on its blocking pool), and each address a name resolves to is tried
/// in turn. A failed dial's [`io::Error`] keeps its kind and names the address, as in
/// `connecting to 127.0.0.1:9: Connection refused (os error 111)`.
///
/// An idle connection is reused only while [`is_open`](Dialer::is_open) says so: a peek that does
/// not wait finds the connection neither closed nor reset by the peer, with no unread bytes. That
/// peek is a system call at every get and every return. Where tokio's reactor holds the stream
/// readable (a read that filled its buffer leaves that mark), the peek goes through the reactor, so
/// that finding nothing also takes the mark off and the next read waits at once instead of first
/// failing; the answer is the same. [`readiness_first`](Self::readiness_first) trades the peek's
/// exactness for speed. To keep the exact peek at the get and skip the one at the return, build the
/// pool with [`check_on_return(false)`](connpool_core::Builder::check_on_return): on a connection
/// used back to back whose answers are read to the end of the buffer (`read_exact`), the get's
/// peek then takes the place of the read that would fail first, so a request makes no more system
/// calls than on a connection of its own. On epoll and kqueue platforms a read that comes back
/// short takes the mark off itself, and then the get's peek is one call more.
#[derive(Debug, Clone)]
pub struct TcpDialer {
    nodelay: bool,
    connect_timeout: Option<Duration>,
    readiness_first: bool,
}

impl TcpDialer {
    /// A dialer with `TCP_NODELAY` on and no connect timeout of its own.
    pub fn new() -> Self {
        TcpDialer {
            nodelay: true,
            connect_timeout: None,
            readiness_first: false,
        }
    }

    /// Whether to set `TCP_NODELAY` on new connections (default `true`: requests and answers go
    /// out at once instead of waiting to fill a segment).
    pub fn nodelay(mut self, yes: bool) -> Self {
        self.nodelay = yes;
        self
    }

    /// How long one dial, name resolution included, may take before it fails with
    /// [`io::ErrorKind::TimedOut`] (default: as long as the system's connect takes). Timing out
    /// needs a runtime with time enabled.
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = Some(limit);
        self
    }

    /// Whether [`is_open`](Dialer::is_open) asks tokio's reactor before it peeks (default `false`:
    /// it always peeks).
    ///
    /// The reactor marks a stream readable when bytes, the end of the stream or an error arrive.
    /// A mark for bytes stays until a read finds nothing or, on epoll and kqueue platforms (Linux,
    /// Android, macOS, the BSDs), comes back short of its buffer; one for the end of the stream or
    /// an error stays for good. With `true`, a stream the reactor has not marked counts as
    /// open without a system call, and only a marked one is peeked at. On a connection that
    /// carries requests and answers back to back, that takes the get's system call off each
    /// request. The return still peeks when the answer's read filled its buffer (`read_exact` of
    /// a known size), which leaves the stream marked (the peek clears the mark); after a read that
    /// came back short, neither end peeks unless the reactor has seen something arrive since. In
    /// `echo_tokio` (BENCHMARKS.md, exact reads) that is one call of the two between the pool and
    /// a dedicated connection.
    ///
    /// The price: the mark is as fresh as the reactor's last look at the sockets. A peer that
    /// closed or reset an idle connection since the runtime last polled its reactor (a backend
    /// that died a moment ago, or a runtime busy running tasks) is not seen, and the connection is
    /// handed out as open; the request on it fails, and the retry belongs on
    /// [`Pool::dial`](connpool_core::Pool::dial). The default peek sees what the kernel knows when
    /// it asks.
    pub fn readiness_first(mut self, yes: bool) -> Self {
        self.readiness_first = yes;
        self
    }

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        let connect = TcpStream::connect(addr);
        let stream = match self.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, connect)
                .await
                .unwrap_or_else(|_| Err(timed_out(limit)))?,
            None => connect.await?,
        };
        stream.set_nodelay(self.nodelay)?;
        Ok(stream)
    }
}

impl Default for TcpDialer {
    fn default() -> Self {
        TcpDialer::new()
    }
}

#[connpool_core::async_trait]
impl Dialer for TcpDialer {
    type Addr = String;
    type Conn = TcpStream;

    async fn dial(&self, addr: &String) -> io::Result<TcpStream> {
        self.connect(addr)
            .await
            .map_err(|err| dial_error(addr, err))
    }

    fn is_open(&self, conn: &TcpStream) -> bool {
        is_open(conn, self.readiness_first)
    }
}
