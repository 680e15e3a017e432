//! TCP on smol: [`TcpDialer`].

use std::io;
use std::time::Duration;

use connpool_core::Dialer;
use smol::net::TcpStream;
use smol::Timer;
use socket2::SockRef;

use crate::socket::{dial_error, is_open, timed_out};

/// Dials TCP connections on smol: the [`Dialer`] of [`Pool`](crate::Pool).
///
/// Addresses are `"host:port"` strings: `"127.0.0.1:6379"`, `"[::1]:80"`, `"db.internal:5432"`.
/// Names are resolved by smol (on its blocking thread pool), and each address a name resolves to is
/// tried in turn. A failed dial's [`io::Error`] keeps its kind and names the address, as in
/// `connecting to 127.0.0.1:9: Connection refused (os error 111)`.
///
/// An idle connection is reused only while [`is_open`](Dialer::is_open) says so: a peek that does
/// not wait finds the connection neither closed nor reset by the peer, with no unread bytes. It is
/// a system call at every get and every return: smol's streams expose no readiness that would let
/// it be skipped, as connpool-tokio's `readiness_first` does. A pool built with
/// [`check_on_return(false)`](connpool_core::Builder::check_on_return) peeks at the get only.
#[derive(Debug, Clone)]
pub struct TcpDialer {
    nodelay: bool,
    connect_timeout: Option<Duration>,
}

impl TcpDialer {
    /// A dialer with `TCP_NODELAY` on and no connect timeout of its own.
    pub fn new() -> Self {
        TcpDialer {
            nodelay: true,
            connect_timeout: None,
        }
    }

    /// Whether to set `TCP_NODELAY` on new connections (default `true`: requests and answers go
    /// out at once instead of waiting to fill a segment).
    pub fn nodelay(mut self, yes: bool) -> Self {
        self.nodelay = yes;
        self
    }

    /// How long one dial, name resolution included, may take before it fails with
    /// [`io::ErrorKind::TimedOut`] (default: as long as the system's connect takes).
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = Some(limit);
        self
    }

    async fn connect(&self, addr: &str) -> io::Result<TcpStream> {
        let connect = TcpStream::connect(addr);
        let stream = match self.connect_timeout {
            Some(limit) => {
                let give_up = async {
                    Timer::after(limit).await;
                    Err(timed_out(limit))
                };
                smol::future::or(connect, give_up).await?
            }
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
        is_open(SockRef::from(conn))
    }
}
