//! What a Rust user writes today to keep idle connections per destination, around the same
//! no-op [`Conn`]: a map from address to a deadpool pool or to a bb8 pool, hyper-util's legacy
//! client pool, and a naive mutex-guarded map of vectors.
//!
//! Neither deadpool nor bb8 knows about destinations: a pool of theirs holds connections to one
//! place. Per-host pooling with them means a map of pools. [`LockedMap`] is the map a user writes
//! when destinations come and go (a load balancer hands out addresses): a `RwLock<HashMap>` read
//! on every get, written when a new destination shows up. [`FixedMap`] is the best case for the
//! peers: every destination known up front, a read-only map with no lock at all.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hyper_util::client::legacy::pool as hyper_pool;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::Conn;

/// The hasher connpool's tables use (hashbrown's default, foldhash), for maps that hash as fast
/// as connpool does. The maps below take std's `RandomState` (SipHash) unless told otherwise: a
/// map written with the defaults.
pub type FastHash = hashbrown::DefaultHashBuilder;

/// The deadpool manager of [`Conn`]: creating one and recycling one (deadpool's check before
/// every reuse) cost nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadpoolManager;

impl deadpool::managed::Manager for DeadpoolManager {
    type Type = Conn;
    type Error = Infallible;

    async fn create(&self) -> Result<Conn, Infallible> {
        Ok(Conn)
    }

    async fn recycle(
        &self,
        _conn: &mut Conn,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

/// A deadpool pool of [`Conn`] to one destination.
pub type DeadpoolPool = deadpool::managed::Pool<DeadpoolManager>;

/// A deadpool pool for one destination, as a user builds it: the defaults, but room for as many
/// connections as connpool keeps idle by default.
pub fn deadpool_pool() -> DeadpoolPool {
    match DeadpoolPool::builder(DeadpoolManager).max_size(32).build() {
        Ok(pool) => pool,
        Err(err) => panic!("deadpool refused its settings: {err}"),
    }
}

/// The bb8 manager of [`Conn`]: connecting, validating (bb8's test on check-out) and the broken
/// check on return cost nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bb8Manager;

impl bb8::ManageConnection for Bb8Manager {
    type Connection = Conn;
    type Error = io::Error;

    async fn connect(&self) -> io::Result<Conn> {
        Ok(Conn)
    }

    async fn is_valid(&self, _conn: &mut Conn) -> io::Result<()> {
        Ok(())
    }

    fn has_broken(&self, _conn: &mut Conn) -> bool {
        false
    }
}

/// A bb8 pool of [`Conn`] to one destination.
pub type Bb8Pool = bb8::Pool<Bb8Manager>;

/// A bb8 pool for one destination, as a user builds it: the defaults (test on check-out, a
/// connection timeout, an idle timeout and its reaper task), but room for as many connections as
/// connpool keeps idle by default.
///
/// bb8 needs a Tokio runtime: build it, and call `get`, inside one (`Runtime::enter`).
pub fn bb8_pool() -> Bb8Pool {
    bb8::Pool::builder()
        .max_size(32)
        .build_unchecked(Bb8Manager)
}

/// A map from destination to a pool of its own, read-locked on every lookup and write-locked
/// when a destination is new: what per-host pooling with deadpool or bb8 looks like when
/// destinations are not known up front.
#[derive(Debug)]
pub struct LockedMap<P> {
    pools: RwLock<HashMap<String, P>>,
    new_pool: fn() -> P,
}

impl<P: Clone> LockedMap<P> {
    /// An empty map that builds a destination's pool with `new_pool` on first use.
    pub fn new(new_pool: fn() -> P) -> Self {
        LockedMap {
            pools: RwLock::new(HashMap::new()),
            new_pool,
        }
    }

    /// The pool of `addr` (a cheap handle: both peers' pools are an `Arc` inside), made on first
    /// use.
    pub fn pool(&self, addr: &str) -> P {
        let read = self.pools.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(pool) = read.get(addr) {
            return pool.clone();
        }
        drop(read);
        let mut write = self.pools.write().unwrap_or_else(PoisonError::into_inner);
        write
            .entry(addr.to_owned())
            .or_insert_with(self.new_pool)
            .clone()
    }
}

/// A read-only map from destination to its pool, built up front: the cheapest per-host map there
/// is, for destinations all known in advance.
#[derive(Debug)]
pub struct FixedMap<P, S = RandomState> {
    pools: HashMap<String, P, S>,
}

impl<P> FixedMap<P> {
    /// One pool per address in `addrs`, each made by `new_pool`, hashed with std's `RandomState`.
    pub fn new(addrs: &[String], new_pool: impl Fn() -> P) -> Self {
        FixedMap::hashed_with(addrs, new_pool)
    }
}

impl<P, S: BuildHasher + Default> FixedMap<P, S> {
    /// One pool per address in `addrs`, each made by `new_pool`, hashed with `S`.
    pub fn hashed_with(addrs: &[String], new_pool: impl Fn() -> P) -> Self {
        FixedMap {
            pools: addrs
                .iter()
                .map(|addr| (addr.clone(), new_pool()))
                .collect(),
        }
    }

    /// The pool of `addr`.
    ///
    /// # Panics
    ///
    /// When `addr` was not among the addresses the map was built with.
    pub fn pool(&self, addr: &str) -> &P {
        match self.pools.get(addr) {
            Some(pool) => pool,
            None => panic!("{addr} is not in the map"),
        }
    }
}

impl hyper_pool::Poolable for Conn {
    fn is_open(&self) -> bool {
        true
    }

    fn reserve(self) -> hyper_pool::Reservation<Self> {
        hyper_pool::Reservation::Unique(self)
    }

    fn can_share(&self) -> bool {
        false
    }
}

/// The key of hyper-util's pool. hyper keys it by `(Scheme, Authority)`, which clone by bumping a
/// reference count; an `Arc<str>` clones the same way.
pub type HyperKey = Arc<str>;

/// hyper-util's legacy client pool over [`Conn`].
pub type HyperPool = hyper_pool::Pool<Conn, HyperKey>;

/// hyper-util's legacy client pool, set up as its `Client` sets it up by default: 90 s idle
/// timeout, no timer (expired connections are dropped lazily, at checkout), and a per-host idle
/// capacity of 32 like connpool's default.
///
/// The module is public but hidden from the docs ("publicly available, but just for legacy
/// purposes"); it is driven here the way `Client` drives it: `checkout` for an idle connection,
/// `connecting` + `pooled` for a new one, and dropping the `Pooled` guard to return it.
pub fn hyper_pool() -> HyperPool {
    let config = hyper_pool::Config {
        idle_timeout: Some(Duration::from_secs(90)),
        max_idle_per_host: 32,
    };
    HyperPool::new(config, TokioExecutor::new(), None::<TokioTimer>)
}

/// Puts a new [`Conn`] for `key` into hyper-util's pool the way its `Client` does after a
/// connect, handing back the guard that returns it when dropped.
pub fn hyper_pooled(pool: &HyperPool, key: &HyperKey) -> hyper_pool::Pooled<Conn, HyperKey> {
    match pool.connecting(key, hyper_pool::Ver::Auto) {
        Some(connecting) => pool.pooled(connecting, Conn),
        None => panic!("hyper-util's pool refused an HTTP/1 connection"),
    }
}

/// The naive baseline: one mutex around a map from address to a vector of idle connections. A
/// get looks the address up under the lock and pops; the guard's drop looks it up again and
/// pushes. No idle timeout, no per-host cap, no check, no counters.
#[derive(Debug, Default)]
pub struct NaiveMap<S = RandomState> {
    idle: Mutex<HashMap<String, Vec<Conn>, S>>,
}

/// A connection out of a [`NaiveMap`]; dropping it puts it back.
#[derive(Debug)]
pub struct NaiveGuard<'a, S: BuildHasher = RandomState> {
    map: &'a NaiveMap<S>,
    addr: &'a str,
    conn: Conn,
}

impl<S: BuildHasher> NaiveMap<S> {
    /// Idle connections per destination, for the benchmarks' check that no get made one.
    pub fn sizes(&self) -> Vec<usize> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.values().map(Vec::len).collect()
    }

    /// An idle connection to `addr`, or a new one.
    pub fn get<'a>(&'a self, addr: &'a str) -> NaiveGuard<'a, S> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(addr)
            .and_then(Vec::pop);
        NaiveGuard {
            map: self,
            addr,
            conn: idle.unwrap_or(Conn),
        }
    }
}

impl<S: BuildHasher> std::ops::Deref for NaiveGuard<'_, S> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl<S: BuildHasher> Drop for NaiveGuard<'_, S> {
    fn drop(&mut self) {
        let mut idle = self.map.idle.lock().unwrap_or_else(PoisonError::into_inner);
        match idle.get_mut(self.addr) {
            Some(conns) => conns.push(self.conn),
            None => {
                idle.insert(self.addr.to_owned(), vec![self.conn]);
            }
        }
    }
}
