//! A tiny echo client, written once against `connpool-core` and usable from any runtime.
//!
//! [`EchoClient`] is generic over the pool's [`Dialer`]: anything whose connections implement
//! futures-io's `AsyncRead` and `AsyncWrite` will do. It picks a server round-robin for each
//! request, reuses pooled connections, and retries once on a fresh connection when a reused one
//! turns out to have been closed by the server (go-connpool's `Release` + `New`).
//!
//! The runtime-specific parts are one constructor each, behind cargo features: `tokio::client`
//! (feature `tokio`) and `smol::client` (feature `smol`). A user enables the one their
//! application runs on; the client itself does not change.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use connpool_core::{Dialer, Pool};
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::future::try_join;
use futures_util::io::{AsyncReadExt, AsyncWriteExt};

#[cfg(feature = "smol")]
pub mod smol;
#[cfg(feature = "tokio")]
pub mod tokio;

/// A client for echo servers: sends bytes, expects the same bytes back.
///
/// Build one on a pool of your own with [`EchoClient::new`], or with the ready-made constructors
/// `tokio::client` and `smol::client`, whose documentation shows it at work.
pub struct EchoClient<D: Dialer> {
    pool: Pool<D>,
    servers: Vec<D::Addr>,
    next: AtomicUsize,
}

impl<D> EchoClient<D>
where
    D: Dialer,
    D::Conn: AsyncRead + AsyncWrite + Unpin,
{
    /// A client sending its requests through `pool` to `servers`, in turn.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] when `servers` is empty.
    pub fn new(pool: Pool<D>, servers: Vec<D::Addr>) -> io::Result<Self> {
        if servers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an echo client needs at least one server address",
            ));
        }
        Ok(EchoClient {
            pool,
            servers,
            next: AtomicUsize::new(0),
        })
    }

    /// Sends `payload` to the next server and returns its answer.
    ///
    /// A reused connection that the server closed while it sat idle is released and the request
    /// is sent again once, on a connection dialed for it.
    pub async fn echo(&self, payload: &[u8]) -> io::Result<Vec<u8>> {
        let addr = self.pick();
        let mut conn = self.pool.get(addr).await?;
        // Through the guard, not the stream it dereferences to: a request cut off half-way (the
        // caller's timeout, say) then closes the connection instead of leaving its answer to
        // the next caller.
        match exchange(&mut conn, payload).await {
            Ok(reply) => Ok(reply),
            Err(err) if conn.is_reused() && is_closed(&err) => {
                // A stale connection: free it for good (dropping would offer it to the pool
                // again) and retry on a new one, which cannot be stale.
                conn.release();
                let mut conn = self.pool.dial(addr).await?;
                let reply = exchange(&mut conn, payload).await;
                if reply.is_err() {
                    conn.release();
                }
                reply
            }
            Err(err) => {
                // Cut off half-way, the connection is out of step with the server.
                conn.release();
                Err(err)
            }
        }
    }

    /// The pool the client sends through, for its stats.
    pub fn pool(&self) -> &Pool<D> {
        &self.pool
    }

    /// The servers the client sends to.
    pub fn servers(&self) -> &[D::Addr] {
        &self.servers
    }

    fn pick(&self) -> &D::Addr {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.servers[turn % self.servers.len()]
    }
}

/// One request and its answer on `conn`.
///
/// Reads while it writes: an echo server sends back what it has read while the rest arrives, and
/// a payload larger than what the sockets buffer would otherwise stall both ends, each waiting
/// for the other to read. Both halves still go through `conn` (the guard), which sees a request
/// cut off in either.
async fn exchange<C>(conn: &mut C, payload: &[u8]) -> io::Result<Vec<u8>>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = conn.split();
    let send = async {
        writer.write_all(payload).await?;
        writer.flush().await
    };
    let mut reply = vec![0; payload.len()];
    try_join(send, reader.read_exact(&mut reply)).await?;
    Ok(reply)
}

/// Whether `err` says the peer had closed the connection.
fn is_closed(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}
