//! The pool: [`Pool`], its [`Builder`], and the path of a connection through them.

use std::fmt;
use std::time::Duration;

use crate::clock::{nanos, Clock, Nanos, Spawner, Timebase};
use crate::error::{BuildError, Error};
use crate::pooled::Pooled;
use crate::reaper::{self, ReaperSignal};
use crate::stats::Stats;
use crate::store::{Checkout, Destination, DialOutcome, Reason, Store};
use crate::sync::Arc;
use crate::Dialer;

/// A concurrency-safe pool of connections, kept idle per destination address.
///
/// [`get`](Pool::get) hands out an idle connection to the address when there is a usable one (the
/// most recently returned first) and dials a new one otherwise; dropping the [`Pooled`] guard puts
/// the connection back if its destination has room. [`dial`](Pool::dial) always dials, for the
/// retry after a connection turned out dead.
///
/// A `Pool` is a cheap handle: clones share one pool. When the last handle is dropped the pool
/// closes, as if [`close`](Pool::close) had been called.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use connpool_core::{dial_fn, Pool};
///
/// # futures::executor::block_on(async {
/// // A dialer for an in-memory stand-in; a real one opens sockets (see the adapter crates).
/// let dialer = dial_fn(|addr: String| async move { Ok::<_, std::io::Error>(Vec::<u8>::new()) });
/// let pool = Pool::new(dialer, 2, Duration::from_secs(30))?;
///
/// let addr = "10.0.0.1:80".to_string(); // picked by your load balancer
/// let mut conn = pool.get(&addr).await?;
/// conn.extend_from_slice(b"hello");
/// assert!(!conn.is_reused());
/// drop(conn); // back to the pool
///
/// let conn = pool.get(&addr).await?;
/// assert!(conn.is_reused());
/// assert_eq!(&conn[..], b"hello");
///
/// // A connection known to be dead is released, and the retry dials afresh.
/// conn.release();
/// let conn = pool.dial(&addr).await?;
/// assert!(!conn.is_reused());
/// drop(conn);
///
/// let stats = pool.stats();
/// assert_eq!(stats.counters.dials, 2);
/// assert_eq!(stats.counters.hits, 1);
/// assert_eq!(stats.destination(&addr).map(|d| (d.total, d.idle)), Some((1, 1)));
///
/// pool.close();
/// assert!(matches!(pool.get(&addr).await, Err(connpool_core::Error::Closed)));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Pool<D: Dialer> {
    handle: Arc<Handle<D>>,
}

/// Closes the pool when the last [`Pool`] handle goes, while guards and the reaper may still hold
/// the shared state.
struct Handle<D: Dialer> {
    inner: Arc<PoolInner<D>>,
}

impl<D: Dialer> Drop for Handle<D> {
    fn drop(&mut self) {
        self.inner.close();
    }
}

/// The state every handle, guard and the reaper share.
pub(crate) struct PoolInner<D: Dialer> {
    pub(crate) dialer: D,
    pub(crate) store: Store<D>,
    pub(crate) time: Timebase,
    check_on_get: bool,
    pub(crate) reaper: Arc<ReaperSignal>,
}

impl<D: Dialer> PoolInner<D> {
    fn close(&self) -> usize {
        let closed = self.store.close();
        self.reaper.stop();
        closed
    }

    /// Where a dropped guard's connection goes: back into the store, or closed.
    pub(crate) fn check_in(&self, dest: &Arc<Destination<D>>, conn: D::Conn) {
        let reason = if std::thread::panicking() {
            Some(Reason::Panicking)
        } else if self.store.is_closed() {
            Some(Reason::PoolClosed)
        } else if self.check_on_get && self.store.capacity() > 0 && !self.dialer.is_open(&conn) {
            Some(Reason::NotOpen)
        } else {
            None
        };
        match reason {
            Some(reason) => {
                self.store.forget(dest, reason);
                drop(conn);
            }
            None => {
                if self.store.check_in(dest, conn, self.time.now()) {
                    self.reaper.idle_added();
                }
            }
        }
    }
}

impl<D: Dialer> Pool<D> {
    /// A pool keeping at most `capacity` idle connections per destination, each for at most
    /// `idle_timeout`, on the system clock with no background task (idle connections expire lazily).
    ///
    /// Fails when `idle_timeout` is zero.
    pub fn new(dialer: D, capacity: usize, idle_timeout: Duration) -> Result<Self, BuildError> {
        Pool::builder(dialer)
            .capacity(capacity)
            .idle_timeout(idle_timeout)
            .build()
    }

    /// A [`Builder`] with the defaults: capacity 32, idle timeout 90 s, the system clock, no
    /// background reaper, `check_on_get` on.
    pub fn builder(dialer: D) -> Builder<D> {
        Builder {
            dialer,
            capacity: 32,
            idle_timeout: Duration::from_secs(90),
            clock: None,
            spawner: None,
            check_on_get: true,
        }
    }

    fn inner(&self) -> &Arc<PoolInner<D>> {
        &self.handle.inner
    }

    #[cfg(test)]
    pub(crate) fn handle_inner(&self) -> &PoolInner<D> {
        self.inner()
    }

    /// An idle connection to `addr` if one is usable (most recently returned first), else a new
    /// one.
    ///
    /// Idle connections whose idle time is up are closed on the way, and with `check_on_get` (the
    /// default) so are those [`Dialer::is_open`] turns down, so a restarted backend's dead
    /// connections are skipped without an error.
    ///
    /// Dropping the returned future at any point leaks nothing.
    pub async fn get(&self, addr: &D::Addr) -> Result<Pooled<D>, Error> {
        let inner = self.inner();
        let hash = inner.store.hash(addr);
        loop {
            let now = inner.time.now();
            match inner.store.checkout(inner, addr, hash, now) {
                Checkout::Reuse(dest, conn) => {
                    if inner.check_on_get && !inner.dialer.is_open(&conn) {
                        inner.store.forget(&dest, Reason::NotOpenOnGet);
                        drop(conn);
                        continue;
                    }
                    return Ok(Pooled::new(dest, conn, true));
                }
                Checkout::Dial(dest) => return self.connect(DialTicket::new(dest)).await,
                Checkout::Closed => return Err(Error::Closed),
            }
        }
    }

    /// Always a new connection (go-connpool's `Pool.New`): the retry after a dead connection.
    ///
    /// The new connection joins the pool like any other: dropping it puts it back if there is
    /// room.
    pub async fn dial(&self, addr: &D::Addr) -> Result<Pooled<D>, Error> {
        let inner = self.inner();
        let hash = inner.store.hash(addr);
        match inner.store.reserve_dial(inner, addr, hash) {
            Some(dest) => self.connect(DialTicket::new(dest)).await,
            None => Err(Error::Closed),
        }
    }

    async fn connect(&self, mut ticket: DialTicket<D>) -> Result<Pooled<D>, Error> {
        let inner = self.inner();
        let result = inner.dialer.dial(&ticket.dest.addr).await;
        ticket.settled = true;
        match result {
            Ok(conn) => {
                if inner
                    .store
                    .finish_dial(&ticket.dest, DialOutcome::Connected)
                {
                    Ok(Pooled::new(ticket.dest.clone(), conn, false))
                } else {
                    drop(conn);
                    Err(Error::Closed)
                }
            }
            Err(err) => {
                inner.store.finish_dial(&ticket.dest, DialOutcome::Failed);
                Err(Error::Dial(err))
            }
        }
    }

    /// A snapshot of the connections per destination and of the counters.
    pub fn stats(&self) -> Stats<D::Addr> {
        self.inner().store.stats()
    }

    /// Closes the idle connections whose idle time is up; returns how many.
    ///
    /// With a clock and a spawner the background reaper does this by itself; without, expired
    /// connections are closed lazily when their destination is next used, or by this call.
    pub fn reap(&self) -> usize {
        let inner = self.inner();
        inner.store.reap(inner.time.now()).0
    }

    /// Closes every idle connection to `addr` (a backend known to be gone); returns how many.
    pub fn purge(&self, addr: &D::Addr) -> usize {
        let store = &self.inner().store;
        store.purge(addr, store.hash(addr))
    }

    /// Closes the pool. Idempotent.
    ///
    /// Closes all idle connections now; held ones are closed when dropped; [`get`](Pool::get) and
    /// [`dial`](Pool::dial) answer [`Error::Closed`]; the reaper stops.
    pub fn close(&self) {
        self.inner().close();
    }

    /// Whether [`close`](Pool::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.inner().store.is_closed()
    }

    /// The dialer the pool opens connections with.
    pub fn dialer(&self) -> &D {
        &self.inner().dialer
    }
}

impl<D: Dialer> Clone for Pool<D> {
    fn clone(&self) -> Self {
        Pool {
            handle: self.handle.clone(),
        }
    }
}

impl<D: Dialer> fmt::Debug for Pool<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let store = &self.inner().store;
        f.debug_struct("Pool")
            .field("capacity", &store.capacity())
            .field("idle_timeout", &store.idle_timeout())
            .field("closed", &store.is_closed())
            .finish_non_exhaustive()
    }
}

/// A dial the store has counted; dropped unsettled (a cancelled `get` or `dial`), it takes the
/// count back.
struct DialTicket<D: Dialer> {
    dest: Arc<Destination<D>>,
    settled: bool,
}

impl<D: Dialer> DialTicket<D> {
    fn new(dest: Arc<Destination<D>>) -> Self {
        DialTicket {
            dest,
            settled: false,
        }
    }
}

impl<D: Dialer> Drop for DialTicket<D> {
    fn drop(&mut self) {
        if !self.settled {
            self.dest.pool.store.cancel_dial(&self.dest);
        }
    }
}

/// Settings for a [`Pool`], from [`Pool::builder`].
///
/// ```
/// use std::time::Duration;
/// use connpool_core::{dial_fn, ManualClock, Pool};
///
/// let dialer = dial_fn(|_addr: u16| async { Ok::<_, std::io::Error>(()) });
/// let pool = Pool::builder(dialer)
///     .capacity(4)
///     .idle_timeout(Duration::from_secs(30))
///     .clock(ManualClock::new())
///     .check_on_get(false)
///     .build()?;
/// # drop(pool);
/// # Ok::<_, connpool_core::BuildError>(())
/// ```
pub struct Builder<D: Dialer> {
    dialer: D,
    capacity: usize,
    idle_timeout: Duration,
    clock: Option<Arc<dyn Clock>>,
    spawner: Option<Arc<dyn Spawner>>,
    check_on_get: bool,
}

impl<D: Dialer> Builder<D> {
    /// The most idle connections kept per destination (default 32); 0 keeps nothing idle.
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// How long a connection may stay idle before it is closed (default 90 s); zero is a
    /// [`BuildError`].
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// The clock idle times are measured on (default: the system's monotonic clock at its coarse
    /// resolution, a few milliseconds, which cannot sleep).
    pub fn clock(mut self, c: impl Clock) -> Self {
        self.clock = Some(Arc::new(c));
        self
    }

    /// Where to run the background reaper, which closes idle connections soon after their time is
    /// up. Needs a [`clock`](Builder::clock) to sleep on. Without a spawner, expired connections
    /// are closed lazily (on get, return and [`Pool::reap`]).
    pub fn spawner(mut self, s: impl Spawner) -> Self {
        self.spawner = Some(Arc::new(s));
        self
    }

    /// Whether to ask [`Dialer::is_open`] before reusing an idle connection and before keeping a
    /// returned one (default `true`).
    pub fn check_on_get(mut self, yes: bool) -> Self {
        self.check_on_get = yes;
        self
    }

    /// Builds the pool, and starts its reaper when a clock and a spawner are set.
    pub fn build(self) -> Result<Pool<D>, BuildError> {
        if self.idle_timeout.is_zero() {
            return Err(BuildError::new(
                "idle_timeout",
                "must be greater than zero; use capacity(0) to keep nothing idle",
            ));
        }
        if self.spawner.is_some() && self.clock.is_none() {
            return Err(BuildError::new(
                "spawner",
                "the background reaper needs a clock to sleep on; set clock() too",
            ));
        }
        let inner = Arc::new(PoolInner {
            dialer: self.dialer,
            store: Store::new(self.capacity, self.idle_timeout),
            time: Timebase::new(self.clock),
            check_on_get: self.check_on_get,
            reaper: Arc::new(ReaperSignal::default()),
        });
        // Nothing ever expires with no room to keep anything, or with an idle timeout of centuries.
        let reaper_useful = self.capacity > 0 && nanos(self.idle_timeout) < Nanos::MAX;
        if let (Some(spawner), Some(clock), true) =
            (self.spawner, inner.time.clock(), reaper_useful)
        {
            reaper::spawn(&inner, clock.clone(), spawner.as_ref());
        }
        Ok(Pool {
            handle: Arc::new(Handle { inner }),
        })
    }
}

impl<D: Dialer> fmt::Debug for Builder<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("capacity", &self.capacity)
            .field("idle_timeout", &self.idle_timeout)
            .field("clock", &self.clock.is_some())
            .field("spawner", &self.spawner.is_some())
            .field("check_on_get", &self.check_on_get)
            .finish_non_exhaustive()
    }
}
