//! connpool on tokio: a connection pool that keeps idle connections per destination address, with
//! tokio's clock, spawner and sockets.
//!
//! A load balancer (or a config file) picks the address; the pool reuses a connection to it, or
//! dials one. Dropping the connection puts it back for the next caller.
//!
//! ```
//! use connpool_tokio::TcpDialer;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // A loopback echo server to talk to.
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?.to_string();
//!     tokio::spawn(async move {
//!         while let Ok((mut socket, _)) = listener.accept().await {
//!             tokio::spawn(async move {
//!                 let (mut reader, mut writer) = socket.split();
//!                 let _ = tokio::io::copy(&mut reader, &mut writer).await;
//!             });
//!         }
//!     });
//!
//!     let pool = connpool_tokio::builder(TcpDialer::new()).capacity(8).build()?;
//!
//!     let mut conn = pool.get(&addr).await?;
//!     conn.write_all(b"ping").await?;
//!     let mut reply = [0; 4];
//!     conn.read_exact(&mut reply).await?;
//!     assert_eq!(&reply, b"ping");
//!     drop(conn); // back to the pool, idle
//!
//!     let conn = pool.get(&addr).await?;
//!     assert!(conn.is_reused());
//!     Ok(())
//! }
//! ```
//!
//! # What is here
//!
//! - [`builder`]: a [`connpool_core::Builder`] with tokio's clock and spawner set, so a background
//!   reaper closes idle connections once their idle timeout is up.
//! - [`TcpDialer`] (`"host:port"` addresses) and, on unix, [`UnixDialer`] (socket paths). Both skip
//!   idle connections the peer has closed: after a backend restarts, the next `get` dials afresh
//!   instead of handing out a dead connection.
//! - [`TokioClock`] and [`TokioSpawner`], to set by hand on [`connpool_core::Pool::builder`] (with a
//!   runtime [`Handle`](tokio::runtime::Handle) from elsewhere, say).
//! - [`Pool`] and [`Pooled`], with the TCP dialer as their default, and the core's traits,
//!   [`Builder`], errors and statistics types, and [`connpool_core`] itself for the rest (such as
//!   `ManualClock` and `dial_fn`), so that one dependency is enough.
//!
//! A [`Pooled`] connection implements tokio's `AsyncRead` and `AsyncWrite` (and `AsyncBufRead`
//! over a buffered stream, such as a dialer's `BufReader<TcpStream>`), so it works with
//! `AsyncReadExt`, `tokio::io::split` and `tokio_util::codec::Framed` like the stream it holds. A
//! codec's read buffer is a buffer around the guard: frames it read ahead and was dropped with
//! are not seen, so read every answer out of it before the guard goes back.
//!
//! A dialer of buffered streams says in `is_open` whether the buffer is empty: the guard sees what
//! it hands out, not what the stream read ahead on its own (see [`Pooled`]).
//!
//! ```
//! use connpool_tokio::{async_trait, Dialer, TcpDialer};
//! use tokio::io::BufReader;
//! use tokio::net::TcpStream;
//!
//! /// TCP streams behind a read buffer, for line-based protocols.
//! struct BufferedDialer(TcpDialer);
//!
//! #[async_trait]
//! impl Dialer for BufferedDialer {
//!     type Addr = String;
//!     type Conn = BufReader<TcpStream>;
//!
//!     async fn dial(&self, addr: &String) -> std::io::Result<Self::Conn> {
//!         Ok(BufReader::new(self.0.dial(addr).await?))
//!     }
//!
//!     fn is_open(&self, conn: &Self::Conn) -> bool {
//!         conn.buffer().is_empty() && self.0.is_open(conn.get_ref())
//!     }
//! }
//! # let _ = BufferedDialer(TcpDialer::new());
//! ```
//!
//! # Pools and runtimes
//!
//! A connection is registered with the reactor of the runtime it was dialed on, and its reads and
//! writes make progress only while that runtime runs: a multi-thread runtime all along, a
//! current-thread one only inside its `block_on`. A pool used from several runtimes hands a
//! connection dialed on one to a caller on another, so share a pool only among runtimes that all
//! keep running (a caller on another thread would otherwise wait on a runtime nobody drives), or
//! keep one pool per runtime. A connection whose runtime has shut down is never handed out (with
//! `check_on_get`, the default): [`TcpDialer`] and [`UnixDialer`] count it as closed.
//!
//! Dials and timers belong to the runtime of the thread that makes them: [`TcpDialer`] and
//! [`UnixDialer`] register their sockets with its reactor, and the pool's timeouts
//! (`wait_timeout`, `dial_timeout`, a dialer's `connect_timeout`, and
//! [`Pool::shutdown`](connpool_core::Pool::shutdown)'s grace while connections are out) sleep on
//! its timers. Outside a runtime (a plain thread's `futures::executor::block_on`, another
//! executor) tokio panics there: "there is no reactor running". The rest needs no runtime: a get
//! that finds an idle connection, dropping or releasing a guard, the stats, `reap`, `purge`,
//! `close`, and a `shutdown` with nothing out. So a pool used from such a thread works while it
//! has idle connections and panics at its first dial or wait. Enter the runtime there first, with
//! a [`Handle`](tokio::runtime::Handle) kept from it: `let _entered = handle.enter();`. Its
//! sockets and timers then run on that runtime, which must keep running: a multi-thread one, or a
//! current-thread one whose `block_on` runs on another thread all along (otherwise the dial and
//! its timeout wait for ever). The guard `enter` returns cannot go into a `Send` future (it must
//! be dropped on the thread that made it), so on another executor enter on each of its threads,
//! or run the calls through an adapter such as `async-compat`, or use connpool-smol, whose
//! sockets and timers need no runtime of their own.
//!
//! # Time in tests
//!
//! The pool reads tokio's clock, so under `#[tokio::test(start_paused = true)]` idle timeouts pass
//! as fast as the test moves time. The guard may be dropped anywhere, a thread with no runtime
//! included; but with a paused clock, drop it inside the runtime. On a thread with no runtime
//! the pool reads the system's time, which a paused clock has fallen behind or run ahead of, so
//! the connection's idle time would start off by the difference (it could expire at once, or
//! outlast its timeout by that much).
//!
//! A paused clock jumps to the next timer whenever the runtime has no task to run, sockets still
//! waiting on the network included. A `wait_timeout`, `dial_timeout` or `connect_timeout` then
//! runs out at once, while a real connection or request is still on its way, and so does
//! [`Pool::shutdown`](connpool_core::Pool::shutdown)'s grace; the reaper's sleep jumps too, so
//! idle connections expire while the test waits on real I/O. A test that needs time to wait for
//! real sockets belongs on a runtime whose clock runs.

#![forbid(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: items behind a feature or a platform say so.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod socket;
mod spawn;
mod tcp;
#[cfg(unix)]
mod unix;

/// The runtime-free core, for what is not re-exported below.
pub use connpool_core;
pub use connpool_core::{
    async_trait, BuildError, Builder, Clock, Counters, DestinationStats, Dialer, Error, Spawner,
    Stats,
};

pub use clock::TokioClock;
pub use spawn::TokioSpawner;
pub use tcp::TcpDialer;
#[cfg(unix)]
pub use unix::UnixDialer;

/// A pool of connections kept idle per destination; TCP on tokio by default.
///
/// Build it with [`builder`], which sets tokio's clock and spawner; `Pool::new` and `Pool::builder`
/// build a pool without them, which closes expired idle connections only lazily.
pub type Pool<D = TcpDialer> = connpool_core::Pool<D>;

/// A connection handed out by a [`Pool`]: dropping it puts it back.
pub type Pooled<D = TcpDialer> = connpool_core::Pooled<D>;

/// A pool [`Builder`] for `dialer` with [`TokioClock`] and [`TokioSpawner::current`] set: its
/// reaper runs on the caller's runtime, and ends with it. A pool that outlives the runtime it was
/// built on (one in a `static`, shared by tests that each run a runtime of their own) then closes
/// expired idle connections only lazily, at gets, returns and
/// [`Pool::reap`](connpool_core::Pool::reap); give it [`TokioSpawner::on`] a runtime that lives
/// as long.
///
/// The rest are the core's defaults (capacity 32 idle per destination, idle timeout 90 s), to
/// change on the builder.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), connpool_tokio::BuildError> {
/// use std::time::Duration;
/// use connpool_tokio::TcpDialer;
///
/// let pool = connpool_tokio::builder(TcpDialer::new().connect_timeout(Duration::from_secs(2)))
///     .capacity(4)
///     .idle_timeout(Duration::from_secs(30))
///     .build()?;
/// # drop(pool);
/// # Ok(())
/// # }
/// ```
///
/// # Panics
///
/// When called outside a tokio runtime. There, set a spawner on the runtime you mean:
/// `connpool_core::Pool::builder(dialer).clock(TokioClock).spawner(TokioSpawner::on(handle))`.
///
/// The runtime needs its timers (`enable_time` or `enable_all`): the reaper sleeps on them, and
/// on a runtime without them it panics at its first sleep, leaving idle connections to expire
/// lazily (at the next get, return or [`Pool::reap`](connpool_core::Pool::reap)).
pub fn builder<D: Dialer>(dialer: D) -> Builder<D> {
    connpool_core::Pool::builder(dialer)
        .clock(TokioClock)
        .spawner(TokioSpawner::current())
}
