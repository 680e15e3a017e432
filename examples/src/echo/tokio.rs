//! The echo client on tokio (feature `tokio`).
//!
//! Tokio's sockets implement tokio's io traits, not futures-io's, so this module's dialer wraps
//! `connpool-tokio`'s [`TcpDialer`](connpool_tokio::TcpDialer) and hands out its streams through
//! tokio-util's [`Compat`]. Everything else is the runtime-agnostic [`EchoClient`].

use std::io;

use connpool_core::Dialer;
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use super::EchoClient;

/// The echo client on tokio.
pub type Client = EchoClient<TcpDialer>;

/// An echo client on the current tokio runtime, sending to `servers` (`"host:port"`) in turn.
///
/// Its pool has `connpool-tokio`'s clock and spawner, so idle connections are reaped in the
/// background. Call it inside a runtime.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let addr = listener.local_addr()?.to_string();
/// # std::thread::spawn(move || {
/// #     for stream in listener.incoming().flatten() {
/// #         std::thread::spawn(move || std::io::copy(&mut &stream, &mut &stream));
/// #     }
/// # });
/// tokio::runtime::Runtime::new()?.block_on(async {
///     let client = connpool_examples::echo::tokio::client(vec![addr])?;
///     assert_eq!(client.echo(b"hello").await?, b"hello");
///     assert_eq!(client.echo(b"again").await?, b"again");
///     assert_eq!(client.pool().stats().counters.dials, 1);
///     Ok(())
/// })
/// # }
/// ```
pub fn client(servers: Vec<String>) -> io::Result<Client> {
    let pool = connpool_tokio::builder(TcpDialer::new()).build()?;
    EchoClient::new(pool, servers)
}

/// Dials TCP on tokio and hands out the streams as futures-io streams.
#[derive(Debug, Clone, Default)]
pub struct TcpDialer {
    inner: connpool_tokio::TcpDialer,
}

impl TcpDialer {
    /// A dialer with `connpool-tokio`'s defaults.
    pub fn new() -> Self {
        TcpDialer::default()
    }
}

#[connpool_core::async_trait]
impl Dialer for TcpDialer {
    type Addr = String;
    type Conn = Compat<TcpStream>;

    async fn dial(&self, addr: &String) -> io::Result<Compat<TcpStream>> {
        Ok(self.inner.dial(addr).await?.compat())
    }

    fn is_open(&self, conn: &Compat<TcpStream>) -> bool {
        self.inner.is_open(conn.get_ref())
    }
}
