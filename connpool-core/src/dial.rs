//! How the pool opens connections: the [`Dialer`] trait and [`dial_fn`].

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::io;
use std::marker::PhantomData;

use async_trait::async_trait;

/// Opens connections to destinations, and says whether an idle one may be reused.
///
/// A pool is built around one dialer. The pool keys its idle connections by [`Dialer::Addr`], so
/// anything a load balancer hands out works as an address: `"10.0.0.1:80"`, a `SocketAddr`, a
/// `(scheme, host, port)` tuple, a socket path.
///
/// # Example
///
/// A dialer for an in-memory "connection" that counts what it opened:
///
/// ```
/// use std::io;
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// struct Counting(AtomicUsize);
///
/// #[connpool_core::async_trait]
/// impl connpool_core::Dialer for Counting {
///     type Addr = String;
///     type Conn = usize;
///
///     async fn dial(&self, addr: &String) -> io::Result<usize> {
///         if addr.is_empty() {
///             return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty address"));
///         }
///         Ok(self.0.fetch_add(1, Ordering::Relaxed))
///     }
/// }
///
/// let pool = connpool_core::Pool::new(Counting(AtomicUsize::new(0)), 4, std::time::Duration::from_secs(30))?;
/// futures::executor::block_on(async {
///     let conn = pool.get(&"10.0.0.1:80".to_string()).await?;
///     assert_eq!(*conn, 0);
///     Ok::<_, connpool_core::Error>(())
/// })?;
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[async_trait]
pub trait Dialer: Send + Sync + 'static {
    /// The destination key: `"10.0.0.1:80"`, a `SocketAddr`, `(scheme, host, port)`, a path...
    ///
    /// The pool compares addresses (`==`) while it holds one of its internal locks, which a
    /// thread cannot take twice: `==` must not call into the pool, nor wait for anything a
    /// thread calling into the pool may hold. It hashes, clones and drops addresses with no lock
    /// held, so those may (an address interned in a registry of the application's, say). Should
    /// any of them panic, the panic reaches the caller, and the pool's counts stay exact.
    type Addr: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static;
    /// The connection the dialer opens.
    type Conn: Send + 'static;

    /// Opens a new connection to `addr`.
    ///
    /// Do the protocol's opening here too (a TLS handshake, an `AUTH`, a server's greeting): a
    /// server that accepts the connection and then turns the client away, or never answers, is
    /// then a dial error (or, with `dial_timeout` set, a timed-out dial) rather than the first
    /// request's odd answer.
    async fn dial(&self, addr: &Self::Addr) -> io::Result<Self::Conn>;

    /// Cheap, synchronous, non-blocking: may this idle connection be handed out again?
    ///
    /// `false` when the peer closed it, it errored, or unread bytes are waiting. The pool asks
    /// before it hands out an idle connection and before it keeps a returned one, unless
    /// [`Builder::check_on_get`](crate::Builder::check_on_get) is off (and, for the return,
    /// unless [`Builder::check_on_return`](crate::Builder::check_on_return) is). Default: `true`.
    ///
    /// The return's question comes as the guard drops, often the instant its caller has what it
    /// wanted: answer whether the connection can carry another request at all, not whether it is
    /// ready for one this instant. A connection whose own task is still winding up the last
    /// exchange (hyper's `SendRequest` says `is_ready() == false` then) is open; a `false` here
    /// closes it for good.
    ///
    /// A connection that wraps its stream must also answer for what the wrapper holds, which no
    /// look at the socket sees: bytes a buffered reader fetched ahead and nobody read, writes a
    /// buffered writer has not sent, and for TLS, plaintext the session decrypted and nobody read,
    /// the peer's close it has already read, records it has not sent (rustls: `wants_read()` is
    /// false on the first two, `wants_write()` true on the third). A TLS 1.3 connection that only
    /// writes also leaves the session tickets most servers send unread in the socket, where a
    /// peek finds bytes waiting: unless this lets the session process them (behind a lock: it
    /// gets only `&Self::Conn`), such a connection is never reused. The README has more on TLS.
    fn is_open(&self, conn: &Self::Conn) -> bool {
        let _ = conn;
        true
    }
}

/// A [`Dialer`] made from an async function, built by [`dial_fn`].
pub struct DialFn<A, C, F> {
    f: F,
    _types: PhantomData<fn(A) -> C>,
}

/// Makes a [`Dialer`] from an async function of the address.
///
/// Connections made this way are always considered open; implement [`Dialer`] directly to check
/// them.
///
/// ```
/// use std::time::Duration;
///
/// let dialer = connpool_core::dial_fn(|addr: String| async move {
///     Ok::<_, std::io::Error>(format!("connection to {addr}"))
/// });
/// let pool = connpool_core::Pool::new(dialer, 8, Duration::from_secs(60))?;
/// let conn = futures::executor::block_on(pool.get(&"db:5432".to_string()))?;
/// assert_eq!(*conn, "connection to db:5432");
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub fn dial_fn<A, C, F, Fut>(f: F) -> DialFn<A, C, F>
where
    F: Fn(A) -> Fut,
    Fut: Future<Output = io::Result<C>> + Send,
{
    DialFn {
        f,
        _types: PhantomData,
    }
}

#[async_trait]
impl<A, C, F, Fut> Dialer for DialFn<A, C, F>
where
    A: Clone + Eq + Hash + fmt::Debug + Send + Sync + 'static,
    C: Send + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<C>> + Send,
{
    type Addr = A;
    type Conn = C;

    async fn dial(&self, addr: &A) -> io::Result<C> {
        (self.f)(addr.clone()).await
    }
}

/// A copy with a copy of the function: one dialer for two pools, say.
impl<A, C, F: Clone> Clone for DialFn<A, C, F> {
    fn clone(&self) -> Self {
        DialFn {
            f: self.f.clone(),
            _types: PhantomData,
        }
    }
}

impl<A, C, F> fmt::Debug for DialFn<A, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialFn").finish_non_exhaustive()
    }
}
