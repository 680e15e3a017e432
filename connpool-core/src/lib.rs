//! connpool-core: a concurrency-safe, runtime-agnostic async connection pool that keeps idle
//! connections **per destination address**.
//!
//! A load balancer picks the address; the pool reuses connections to it. The model is
//! go-connpool's:
//!
//! - a pool is built from a [`Dialer`], a per-host idle **capacity** and an **idle timeout**;
//! - [`Pool::get`] returns an idle connection to the address if there is a usable one (most
//!   recently returned first), else dials a new one;
//! - [`Pool::dial`] always dials: the retry after a dead connection, so a crashed backend whose
//!   idle connections are all dead costs one retry, not many;
//! - dropping the [`Pooled`] guard puts the connection back if there is room;
//!   [`Pooled::release`] closes it for good; [`Pool::close`] frees everything;
//! - [`Pool::stats`] counts total and idle connections per destination, and what the pool did.
//!
//! Beyond go-connpool, the [`Builder`] can cap the connections open to one destination
//! ([`max_open_per_host`](Builder::max_open_per_host), with a fair first-in first-out queue and a
//! [`wait_timeout`](Builder::wait_timeout)), bound dials
//! ([`dial_timeout`](Builder::dial_timeout)), cap idle connections across all destinations
//! ([`max_idle_total`](Builder::max_idle_total), least recently used first out), retire old
//! connections ([`max_lifetime`](Builder::max_lifetime)), and [`Pool::shutdown`] waits for held
//! connections to come back.
//!
//! This crate has no runtime in it. Time and background work come through two small traits,
//! [`Clock`] and [`Spawner`]; the adapter crates `connpool-tokio` and `connpool-smol` implement them
//! (and TCP and Unix dialers) for their runtimes. Without them a pool still works, on the system
//! clock, closing expired idle connections lazily. Tests drive time with [`ManualClock`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use connpool_core::{dial_fn, Pool};
//!
//! # futures::executor::block_on(async {
//! let dialer = dial_fn(|addr: String| async move { Ok::<_, std::io::Error>(addr.len()) });
//! let pool = Pool::new(dialer, 8, Duration::from_secs(90))?;
//!
//! let conn = pool.get(&"10.0.0.7:6379".to_string()).await?;
//! assert_eq!(*conn, 13);
//! drop(conn); // idle again, ready for the next get to 10.0.0.7:6379
//! assert_eq!(pool.stats().idle(), 1);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Threads
//!
//! The pool is built for many threads getting connections to the same destinations at once. It
//! keeps a few *lanes*, as many as the machine has cores (rounded up to a power of two, at most
//! 16), and each thread is given one, in the order threads first use a pool, so threads beyond
//! that number share them. A thread gets from its lane first and a connection goes back to the
//! lane that handed it out, so two threads working on the same destinations do not pass the
//! same memory back and forth (sending one cache line to another core and back takes about as
//! long as two whole gets and returns). A get that finds nothing in its lane takes a
//! connection from another lane before it dials, and the lanes share each destination's
//! capacity, so the idle connections to a destination never exceed it. With
//! [`max_open_per_host`](Builder::max_open_per_host) or
//! [`max_idle_total`](Builder::max_idle_total), which count connections in one place, the pool
//! keeps a single lane, as it does with [`capacity(0)`](Builder::capacity), which keeps nothing
//! idle for lanes to hold.
//!
//! # Guarantees
//!
//! - A connection is handed out only for the address it was dialed for, to one holder at a time,
//!   and never once its idle time is up, as the pool's clock tells it (on the system's coarse
//!   clock, the pool counts the limit a 64th short to cover the clock's lag: see
//!   [`Clock::is_system_time`]).
//! - Dropping a guard never waits on I/O, a timer or a runtime (it takes one of the pool's short
//!   internal locks), never spawns, and works on a thread with no runtime; a guard dropped while
//!   its thread panics closes its connection rather than reuse it.
//! - Dropping a `get` or `dial` future at any await point leaks nothing.
//! - Every dialed connection ends exactly once (idle, held, closed or detached), so
//!   [`Counters`] add up; a destination with nothing held or idle takes no memory.
//! - Bad input is an error, not a panic.
//!
//! # Cargo features
//!
//! - `tokio` (off by default): [`Pooled`] implements tokio's `AsyncRead`, `AsyncWrite` and
//!   `AsyncBufRead` when its connection does (and is `Unpin`), as it implements futures-io's
//!   whenever the connection does. `connpool-tokio` turns it on. A crate that does tokio I/O through guards
//!   should turn it on itself rather than count on another crate in the build to: without it,
//!   tokio's `AsyncReadExt` and `AsyncWriteExt` calls on a guard over a tokio stream still
//!   compile, and reach the stream through `DerefMut`, where the guard does not see them (a
//!   request cut off midway then goes back to the pool; see [`Pooled`]).

// Two items need `unsafe`, each measured on the hot path and explained where it is: the store's
// lock (sync.rs) and the destination a guard borrows from its bucket (store.rs, `Lent`).
#![deny(unsafe_code)]
// docs.rs builds with `--cfg docsrs` on nightly: items behind a feature or a platform say so.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod dial;
mod error;
#[cfg(all(test, connpool_loom))]
mod loom_models;
// loom is a dev-dependency: under its cfg, only the library's own unit tests build.
#[cfg(all(connpool_loom, not(test)))]
compile_error!(
    "cfg(connpool_loom) runs the loom models, the library's unit tests: \
     cargo test -p connpool-core --lib --release loom_models"
);
mod lru;
mod pool;
mod pooled;
mod reaper;
mod stats;
mod store;
mod sync;

pub use async_trait::async_trait;

pub use clock::{Clock, ManualClock, Spawner};
pub use dial::{dial_fn, DialFn, Dialer};
pub use error::{BuildError, Error};
pub use pool::{Builder, Pool};
pub use pooled::Pooled;
pub use stats::{Counters, DestinationStats, Stats};
