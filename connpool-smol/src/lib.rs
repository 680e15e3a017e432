//! connpool on smol: a connection pool that keeps idle connections per destination address, with
//! smol's timers, executor and sockets.
//!
//! A load balancer (or a config file) picks the address; the pool reuses a connection to it, or
//! dials one. Dropping the connection puts it back for the next caller.
//!
//! ```
//! use connpool_smol::TcpDialer;
//! use smol::io::{AsyncReadExt, AsyncWriteExt};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     smol::block_on(async {
//!         // A loopback echo server to talk to.
//!         let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
//!         let addr = listener.local_addr()?.to_string();
//!         smol::spawn(async move {
//!             while let Ok((socket, _)) = listener.accept().await {
//!                 smol::spawn(async move {
//!                     let (reader, mut writer) = (socket.clone(), socket);
//!                     let _ = smol::io::copy(reader, &mut writer).await;
//!                 })
//!                 .detach();
//!             }
//!         })
//!         .detach();
//!
//!         let pool = connpool_smol::builder(TcpDialer::new()).capacity(8).build()?;
//!
//!         let mut conn = pool.get(&addr).await?;
//!         conn.write_all(b"ping").await?;
//!         let mut reply = [0; 4];
//!         conn.read_exact(&mut reply).await?;
//!         assert_eq!(&reply, b"ping");
//!         drop(conn); // back to the pool, idle
//!
//!         let conn = pool.get(&addr).await?;
//!         assert!(conn.is_reused());
//!         Ok(())
//!     })
//! }
//! ```
//!
//! # What is here
//!
//! - [`builder`]: a [`connpool_core::Builder`] with smol's clock and spawner set, so a background
//!   reaper closes idle connections once their idle timeout is up.
//! - [`TcpDialer`] (`"host:port"` addresses) and, on unix, [`UnixDialer`] (socket paths). Both skip
//!   idle connections the peer has closed: after a backend restarts, the next `get` dials afresh
//!   instead of handing out a dead connection.
//! - [`SmolClock`] and [`SmolSpawner`], to set by hand on [`connpool_core::Pool::builder`] (with an
//!   [`Executor`](smol::Executor) of your own, say).
//! - [`Pool`] and [`Pooled`], with the TCP dialer as their default, and the core's traits,
//!   [`Builder`], errors and statistics types, and [`connpool_core`] itself for the rest (such as
//!   `ManualClock` and `dial_fn`), so that one dependency is enough.
//!
//! A [`Pooled`] connection implements futures-io's `AsyncRead` and `AsyncWrite` (and
//! `AsyncBufRead` over a buffered stream), so it works with `smol::io`'s extension traits,
//! `BufReader` and `split` like the stream it holds (what a `BufReader` around the guard reads
//! ahead goes with it, unseen by the guard: see [`Pooled`]). Split it that
//! way rather than by cloning the stream it dereferences to: smol's streams are shared handles, so
//! a clone kept past the guard's drop or [`release`](Pooled::release) still reads and writes the
//! socket, whichever caller the pool has handed it to since, and the guard does not see I/O done
//! on the clone (see [`Pooled`] for what it does with I/O left unfinished through it).
//!
//! A dialer of buffered streams says in `is_open` whether the buffer is empty: the guard sees what
//! it hands out, not what the stream read ahead on its own (see [`Pooled`]).
//!
//! ```
//! use connpool_smol::{async_trait, Dialer, TcpDialer};
//! use smol::io::BufReader;
//! use smol::net::TcpStream;
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
//! # Runtimes
//!
//! The pool needs no particular executor: [`SmolClock`] sleeps on async-io timers, and the reaper
//! runs on smol's global executor unless told otherwise. The guard may be dropped anywhere, a
//! thread with no runtime included.

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

pub use clock::SmolClock;
pub use spawn::SmolSpawner;
pub use tcp::TcpDialer;
#[cfg(unix)]
pub use unix::UnixDialer;

/// A pool of connections kept idle per destination; TCP on smol by default.
///
/// Build it with [`builder`], which sets smol's clock and spawner; `Pool::new` and `Pool::builder`
/// build a pool without them, which closes expired idle connections only lazily.
pub type Pool<D = TcpDialer> = connpool_core::Pool<D>;

/// A connection handed out by a [`Pool`]: dropping it puts it back.
pub type Pooled<D = TcpDialer> = connpool_core::Pooled<D>;

/// A pool [`Builder`] for `dialer` with [`SmolClock`] and [`SmolSpawner::global`] set: its reaper
/// runs on smol's global executor.
///
/// The rest are the core's defaults (capacity 32 idle per destination, idle timeout 90 s), to
/// change on the builder.
///
/// ```
/// use std::time::Duration;
/// use connpool_smol::TcpDialer;
///
/// let pool = connpool_smol::builder(TcpDialer::new().connect_timeout(Duration::from_secs(2)))
///     .capacity(4)
///     .idle_timeout(Duration::from_secs(30))
///     .build()?;
/// # drop(pool);
/// # Ok::<_, connpool_smol::BuildError>(())
/// ```
///
/// To run the reaper on an executor of your own, set the spawner by hand:
/// `connpool_core::Pool::builder(dialer).clock(SmolClock).spawner(SmolSpawner::on(executor))`.
pub fn builder<D: Dialer>(dialer: D) -> Builder<D> {
    connpool_core::Pool::builder(dialer)
        .clock(SmolClock)
        .spawner(SmolSpawner::global())
}
