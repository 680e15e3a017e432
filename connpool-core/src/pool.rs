//! The pool: [`Pool`], its [`Builder`], and the path of a connection through them.

use std::fmt;
use std::future::poll_fn;
use std::panic::AssertUnwindSafe;
use std::task::Poll;
use std::time::Duration;

use futures_core::future::BoxFuture;

use crate::clock::{nanos, Clock, Nanos, Spawner, Timebase};
use crate::error::{BuildError, Error};
use crate::pooled::Pooled;
use crate::reaper::{self, ReaperSignal};
use crate::stats::Stats;
use crate::store::{
    Checkout, Destination, DialOutcome, Grant, Leave, Left, Lent, Limits, Reason, Store, Waiter,
    Want,
};
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
    /// `check_on_get` and `check_on_return` both: whether a returned connection is checked.
    check_on_return: bool,
    wait_timeout: Option<Duration>,
    dial_timeout: Option<Duration>,
    pub(crate) reaper: Arc<ReaperSignal>,
}

impl<D: Dialer> PoolInner<D> {
    fn close(&self) {
        /// Stops the reaper when dropped: after the store closes, even should closing a
        /// connection panic.
        struct StopReaper<'a>(&'a ReaperSignal);
        impl Drop for StopReaper<'_> {
            fn drop(&mut self) {
                self.0.stop();
            }
        }
        let _stop = StopReaper(&self.reaper);
        self.store.close()
    }

    /// A sleep on the pool's clock, when it has one that can sleep.
    fn sleep(&self, dur: Option<Duration>) -> Option<BoxFuture<'static, ()>> {
        Some(self.time.clock()?.sleep(dur?))
    }
}

/// Where a dropped guard's connection goes: closed if the thread is panicking (the caller may have
/// left it half-used), else as [`give_back`] decides. `unsettled`: the guard left its stream in a
/// state the next caller must not inherit (shut down, or I/O left unfinished).
#[inline]
pub(crate) fn check_in<D: Dialer>(dest: &Lent<D>, conn: D::Conn, born: Nanos, unsettled: bool) {
    if std::thread::panicking() {
        let _ending = dest.ending(Reason::Panicking);
        drop(conn);
        return;
    }
    let back = if unsettled {
        Back::Unsettled
    } else {
        Back::Checked
    };
    give_back(dest, conn, born, back);
}

/// How [`give_back`] treats a connection before it keeps it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Back {
    /// Asks [`Dialer::is_open`] first (with `check_on_return`).
    Checked,
    /// Keeps it without asking: while a panic unwinds, where a panic of `is_open`'s own would
    /// abort the process, and the get that takes the connection next checks it anyway.
    Unchecked,
    /// Closes it, as by [`Pooled::release`](crate::Pooled::release): its guard left the stream in
    /// a state the next caller must not inherit.
    Unsettled,
}

/// Where a connection coming back goes: to a waiter or back into the store, or closed (first of
/// all if the pool is closed). Called directly for a connection no caller has used (one handed to
/// a waiter that went away), which a panic in flight says nothing about.
///
/// A free function reaching the pool through `dest`, not a method on it: once the connection is
/// idle another thread may take it, return it and let the pool go, and a `&self` would claim the
/// pool for the whole call ([`Store::put_fresh`] says more).
#[inline]
pub(crate) fn give_back<D: Dialer>(dest: &Lent<D>, conn: D::Conn, born: Nanos, back: Back) {
    let pool = &*dest.pool;
    if pool.store.is_closed() {
        let _ending = dest.ending(Reason::PoolClosed);
        drop(conn);
        return;
    }
    if back == Back::Unsettled {
        return release(dest, conn);
    }
    let conn = if back == Back::Checked && pool.check_on_return {
        // Also ends the count if `is_open` panics: after the connection, which is declared
        // after it and so dropped first as the panic unwinds.
        let ending = dest.ending(Reason::NotOpen);
        let conn = conn;
        if !pool.dialer.is_open(&conn) {
            drop(conn);
            return;
        }
        ending.disarm();
        conn
    } else {
        conn
    };
    let (conn, now) = match pool.time.system_now() {
        Some(now) => (conn, now),
        None => match user_time(dest, conn) {
            Some(read) => read,
            None => return,
        },
    };
    let Err(conn) = Store::put_fresh(dest, conn, born, now) else {
        return;
    };
    // Still held: the bucket and the pool are there, and the counted copy keeps them until the
    // end of the slow path.
    let dest = dest.counted();
    let pool = &*dest.pool;
    if pool.store.check_in(&dest, conn, born, now)
        && pool.reaper.claim(pool.store.lifetime_end(born))
    {
        pool.reaper.notify();
    }
}

/// Closes a held connection for good, counted as released: [`Pooled::release`](crate::Pooled::release),
/// and a guard dropped unsettled, off the return's usual path.
#[cold]
pub(crate) fn release<D: Dialer>(dest: &Lent<D>, conn: D::Conn) {
    let _ending = dest.ending(Reason::Released);
    drop(conn);
}

/// The pool's time on the clock the builder was given, for a connection coming back through
/// `dest`: should the clock panic, the connection is dropped, then its count ends. The system's
/// clock, which cannot panic, is read without this.
///
/// While a panic unwinds already (a cancelled waiter handing back its connection), a second one
/// from the clock would abort the process: it is caught, the connection closed, and `None`
/// returned.
#[inline]
fn user_time<D: Dialer>(dest: &Lent<D>, conn: D::Conn) -> Option<(D::Conn, Nanos)> {
    let ending = dest.ending(Reason::Panicking);
    let conn = conn;
    let now = if std::thread::panicking() {
        let read = std::panic::catch_unwind(AssertUnwindSafe(|| dest.pool.time.now()));
        read.ok()?
    } else {
        dest.pool.time.now()
    };
    ending.disarm();
    Some((conn, now))
}

impl<D: Dialer> Pool<D> {
    /// A pool keeping at most `capacity` idle connections per destination, each for at most
    /// `idle_timeout`, on the system clock with no background task (idle connections expire lazily).
    ///
    /// # Errors
    ///
    /// [`BuildError`] when `idle_timeout` is zero.
    pub fn new(dialer: D, capacity: usize, idle_timeout: Duration) -> Result<Self, BuildError> {
        Pool::builder(dialer)
            .capacity(capacity)
            .idle_timeout(idle_timeout)
            .build()
    }

    /// A [`Builder`] with the defaults: capacity 32, idle timeout 90 s, the system clock, no
    /// background reaper, `check_on_get` and `check_on_return` on, and no limits.
    pub fn builder(dialer: D) -> Builder<D> {
        Builder {
            dialer,
            limits: Limits {
                capacity: 32,
                idle_timeout: Duration::from_secs(90),
                max_open_per_host: usize::MAX,
                max_idle_total: None,
                max_lifetime: None,
                lanes: None,
                queue: true,
            },
            clock: None,
            spawner: None,
            check_on_get: true,
            check_on_return: true,
            wait_timeout: None,
            dial_timeout: None,
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
    /// "Most recently returned first" holds exactly for the connections one thread both got and
    /// returned. A connection goes back to the lane it was handed out from (a lane per core, up
    /// to 16, each thread given one and more threads than lanes sharing them: see the crate
    /// overview's "Threads"), and threads get first from their own lane, then from the other
    /// lanes, so a get dials only when no usable connection is idle anywhere. A connection a thread returns to another lane therefore comes, at that thread's
    /// next get, after those idle in its own lane.
    ///
    /// Idle connections whose idle time or lifetime is up are closed on the way, and with
    /// `check_on_get` (the default) so are those [`Dialer::is_open`] turns down, so a restarted
    /// backend's dead connections are skipped without an error. When the destination is at
    /// `max_open_per_host`, waits in line for a returned connection or a free slot, up to
    /// `wait_timeout`.
    ///
    /// Dropping the returned future at any point leaks nothing.
    ///
    /// # Errors
    ///
    /// - [`Error::Dial`]: there was no usable idle connection and the dialer failed.
    /// - [`Error::Closed`]: the pool is closed, before the call, or while it waited in line or
    ///   dialed (the new connection is then closed).
    /// - [`Error::Timeout`]: the wait in line took longer than `wait_timeout`, or the dial longer
    ///   than `dial_timeout`; [`Counters::wait_timeouts`](crate::Counters::wait_timeouts) and
    ///   [`dial_timeouts`](crate::Counters::dial_timeouts) tell which.
    ///
    /// A panic in the dialer or the clock reaches the caller; the pool's counts stay exact.
    pub async fn get(&self, addr: &D::Addr) -> Result<Pooled<D>, Error> {
        // The common case, a usable idle connection, is served in this future's first step; the
        // rest of the path (and its future) is entered only when that fails.
        let inner = self.inner();
        let hash = inner.store.hash(addr);
        let lane = inner.store.lane();
        let now = inner.time.now();
        if let Some((dest, conn, born)) = inner.store.take_fresh(lane, addr, hash, now) {
            if let Some(pooled) = self.hand_out(dest, conn, born) {
                return Ok(pooled);
            }
        }
        self.checkout(lane, addr, hash, false).await
    }

    /// Always a new connection (go-connpool's `Pool.New`): the retry after a dead connection.
    ///
    /// The new connection joins the pool like any other: dropping it puts it back if there is
    /// room. At `max_open_per_host` it closes the destination's oldest idle connection to make
    /// room, or waits in line for a slot when there is none.
    ///
    /// # Errors
    ///
    /// As [`get`](Pool::get)'s: [`Error::Dial`] from the dialer, [`Error::Closed`], and
    /// [`Error::Timeout`] after `wait_timeout` in line or `dial_timeout` in the dial.
    pub async fn dial(&self, addr: &D::Addr) -> Result<Pooled<D>, Error> {
        let store = &self.inner().store;
        self.checkout(store.lane(), addr, store.hash(addr), true)
            .await
    }

    /// An idle connection the store handed over, as a guard; `None` (and closed) when
    /// `check_on_get` finds it no longer open.
    #[inline]
    fn hand_out(&self, dest: Lent<D>, conn: D::Conn, born: Nanos) -> Option<Pooled<D>> {
        match self.may_reuse(&dest, conn) {
            Ok(conn) => Some(Pooled::new(dest, conn, born, true)),
            Err(conn) => {
                let _ending = dest.ending(Reason::NotOpenOnGet);
                drop(conn);
                None
            }
        }
    }

    /// A connection out of the idle store, held through `dest`, back if it may be handed out
    /// (`check_on_get` off, or [`Dialer::is_open`] says so), or back as `Err`, still counted as
    /// held. Should `is_open` panic, the connection is dropped, then the holder's count ends.
    #[inline]
    fn may_reuse(&self, dest: &Lent<D>, conn: D::Conn) -> Result<D::Conn, D::Conn> {
        let inner = self.inner();
        if !inner.check_on_get {
            return Ok(conn);
        }
        let ending = dest.ending(Reason::NotOpenOnGet);
        // Declared after the guard, so dropped before it as a panic unwinds.
        let conn = conn;
        let open = inner.dialer.is_open(&conn);
        ending.disarm();
        if open {
            Ok(conn)
        } else {
            Err(conn)
        }
    }

    /// The whole path of a get (`fresh` false) or a dial from the calling thread's `lane`: reuse
    /// (from this lane, else from another), dial, or wait in line.
    async fn checkout(
        &self,
        lane: usize,
        addr: &D::Addr,
        hash: u64,
        fresh: bool,
    ) -> Result<Pooled<D>, Error> {
        let inner = self.inner();
        let store = &inner.store;
        // A get looks through its own lane, then the others, and only then dials.
        let want = match (fresh, store.has_lanes()) {
            (true, _) => Want::Fresh,
            (false, true) => Want::ReuseHere,
            (false, false) => Want::Reuse,
        };
        loop {
            let begun = self.begin(lane, addr, hash, want)?;
            let (dest, grant) = match begun {
                Begin::Reuse(dest, conn, born) => (dest, Grant::Conn(conn, born)),
                Begin::Dial(ticket) => return self.connect(ticket).await,
                Begin::Wait(queued) => {
                    let dest = queued.dest.clone();
                    match self.wait(queued).await? {
                        // Handed a connection in line. The pool may have closed, or the connection
                        // grown too old or died, since it was handed over: a connection turned down
                        // leaves its slot to the waiter, who keeps its turn and dials in it, unless
                        // the pool is closed.
                        Grant::Conn(conn, born) => {
                            let lent = Lent::new(&dest);
                            if store.is_closed() {
                                let _ending = lent.ending(Reason::PoolClosedOnGet);
                                drop(conn);
                                return Err(Error::Closed);
                            }
                            // Should the clock panic, the connection is dropped, then its count
                            // ends.
                            let ending = lent.ending(Reason::PanickingOnGet);
                            let conn = conn;
                            let too_old = store.too_old(born, inner.time.now());
                            ending.disarm();
                            let (conn, refused) = if too_old {
                                (conn, Reason::LifetimeOnGet)
                            } else {
                                match self.may_reuse(&lent, conn) {
                                    Ok(conn) => return Ok(Pooled::new(lent, conn, born, true)),
                                    Err(conn) => (conn, Reason::NotOpenOnGet),
                                }
                            };
                            // Should the connection's own drop panic, its count ends all the same.
                            let ending = lent.ending(refused);
                            drop(conn);
                            ending.disarm();
                            store.dial_instead(&dest, refused);
                            (dest, Grant::Slot)
                        }
                        // A slot given before the pool closed: no dial after it.
                        Grant::Slot if store.is_closed() => {
                            store.finish_dial(&dest, DialOutcome::Cancelled);
                            return Err(Error::Closed);
                        }
                        grant => (dest, grant),
                    }
                }
            };
            match grant {
                Grant::Conn(conn, born) => {
                    if let Some(pooled) = self.hand_out(Lent::new(&dest), conn, born) {
                        return Ok(pooled);
                    }
                }
                Grant::Slot => return self.connect(DialTicket::new(dest)).await,
                Grant::Closed => return Err(Error::Closed),
            }
        }
    }

    /// One look at the store for [`Pool::checkout`], from the calling thread's `lane`: what it
    /// counted for this call (a connection handed out, a slot to dial, a place in line), each in
    /// its guard before what the look closed on the way is closed, since a connection's own drop
    /// may panic: the guard then gives back what it holds.
    fn begin(&self, lane: usize, addr: &D::Addr, hash: u64, want: Want) -> Result<Begin<D>, Error> {
        let inner = self.inner();
        let store = &inner.store;
        let now = inner.time.now();
        let mut after = store.aftermath();
        // A destination with no bucket in this lane is made between two looks, with no lock
        // held (it clones the address), and let go afterwards if the second look did not use it.
        let mut made = None;
        let checkout = loop {
            let checkout = match store.checkout(lane, addr, hash, now, want, &mut made, &mut after)
            {
                Checkout::Miss => match store.steal(lane, addr, hash, now, &mut made, &mut after) {
                    Some(checkout) => checkout,
                    None => {
                        let want = Want::Reuse;
                        store.checkout(lane, addr, hash, now, want, &mut made, &mut after)
                    }
                },
                checkout => checkout,
            };
            match checkout {
                Checkout::Make => made = Some(store.destination(inner, lane, addr, hash)),
                checkout => break checkout,
            }
        };
        if let Some(dest) = made {
            after.let_go(dest);
        }
        let begun = match checkout {
            Checkout::Reuse(dest, conn, born) => {
                // Should a close panic, this connection is closed, then its count ends.
                let lent = Lent::new(&dest);
                let ending = lent.ending(Reason::PanickingOnGet);
                let conn = conn;
                drop(after);
                ending.disarm();
                return Ok(Begin::Reuse(dest, conn, born));
            }
            Checkout::Dial(dest) => Begin::Dial(DialTicket::new(dest)),
            Checkout::Wait(dest, waiter) => Begin::Wait(Queued {
                dest,
                waiter,
                done: false,
            }),
            Checkout::Full => return Err(Error::Timeout),
            Checkout::Closed => return Err(Error::Closed),
            Checkout::Miss | Checkout::Make => {
                unreachable!("a checkout that may dial never misses, and one that made goes on")
            }
        };
        // Here, while `begun` is a local, not as the function returns: a value on its way out is
        // not dropped should a local's drop panic.
        drop(after);
        Ok(begun)
    }

    /// Waits in line, where `queued` holds a place, for a connection or a slot, up to the wait
    /// timeout.
    async fn wait(&self, mut queued: Queued<D>) -> Result<Grant<D::Conn>, Error> {
        let inner = self.inner();
        let mut timeout = inner.sleep(inner.wait_timeout);
        poll_fn(|cx| {
            if let Poll::Ready(grant) = queued.waiter.poll_grant(cx) {
                queued.done = true;
                return Poll::Ready(Ok(grant));
            }
            if let Some(timeout) = timeout.as_mut() {
                if timeout.as_mut().poll(cx).is_ready() {
                    queued.done = true;
                    return Poll::Ready(
                        match inner
                            .store
                            .leave_queue(&queued.dest, &queued.waiter, Leave::TimedOut)
                        {
                            Left::Grant(grant) => Ok(grant),
                            Left::Nothing => Err(Error::Timeout),
                        },
                    );
                }
            }
            Poll::Pending
        })
        .await
    }

    async fn connect(&self, mut ticket: DialTicket<D>) -> Result<Pooled<D>, Error> {
        let inner = self.inner();
        let mut dial = inner.dialer.dial(&ticket.dest.addr);
        let mut timeout = inner.sleep(inner.dial_timeout);
        let result = poll_fn(|cx| {
            if let Poll::Ready(result) = dial.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            match timeout.as_mut().map(|timeout| timeout.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await;
        drop(dial);
        // The dial time, read while the ticket still ends the dial should the clock panic.
        let born = inner.time.now();
        ticket.settled = true;
        let store = &inner.store;
        match result {
            Some(Ok(conn)) => match store.finish_connected(&ticket.dest, conn) {
                Some(conn) => Ok(Pooled::new(Lent::new(&ticket.dest), conn, born, false)),
                None => Err(Error::Closed),
            },
            Some(Err(err)) => {
                store.finish_dial(&ticket.dest, DialOutcome::Failed);
                Err(Error::Dial(err))
            }
            None => {
                store.finish_dial(&ticket.dest, DialOutcome::TimedOut);
                Err(Error::Timeout)
            }
        }
    }

    /// A snapshot of the connections per destination and of the counters.
    #[must_use = "stats() copies every destination's counts; read them or do not ask"]
    pub fn stats(&self) -> Stats<D::Addr> {
        self.inner().store.stats()
    }

    /// Closes the idle connections whose idle time, or lifetime (`max_lifetime`), is up; returns
    /// how many.
    ///
    /// With a clock and a spawner the background reaper does this by itself; without, expired
    /// connections are closed lazily as their destination is used
    /// ([`Builder::spawner`] says when), or by this call.
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

    /// Closes the pool, then waits up to `grace` for the connections held by callers to come back
    /// (they are closed as they do). Returns `true` if all did, `false` if some were still out
    /// when the grace period ended. `true` means closed: every connection of the pool has been
    /// dropped by then, those the pool closes itself (idle ones, a dial that ends after the close)
    /// included. So a `shutdown` called from inside a connection's own drop, while the pool is
    /// closing that connection, cannot be `true` before that drop ends: it waits out `grace`.
    ///
    /// The grace period is timed on the pool's clock; a pool without a clock that can sleep does
    /// not wait, and answers at once whether everything is already back. With everything back
    /// and closed at its first poll, it answers `true` without starting a timer: tokio's clock
    /// cannot sleep on a thread outside its runtime, and a shutdown there with nothing out still
    /// works. With something out it sleeps on the clock, as above.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.close();
        let inner = self.inner();
        let store = &inner.store;
        // Made only once something is out: with nothing held, shutdown needs no timer, so it
        // also works where the clock cannot sleep (tokio's, on a thread outside its runtime).
        let mut deadline = None;
        poll_fn(|cx| {
            store.drain_signal().register(cx.waker());
            if store.is_drained() {
                return Poll::Ready(true);
            }
            let deadline = deadline.get_or_insert_with(|| inner.sleep(Some(grace)));
            match deadline.as_mut().map(|deadline| deadline.as_mut().poll(cx)) {
                Some(Poll::Pending) => Poll::Pending,
                Some(Poll::Ready(())) | None => Poll::Ready(store.is_drained()),
            }
        })
        .await
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
            .field("limits", store.limits())
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
            self.dest
                .pool
                .store
                .finish_dial(&self.dest, DialOutcome::Cancelled);
        }
    }
}

/// What one look at the store began for a [`Pool::checkout`], each in its guard.
enum Begin<D: Dialer> {
    /// An idle connection, counted as held (and as a hit).
    Reuse(Arc<Destination<D>>, D::Conn, Nanos),
    /// A slot to dial in.
    Dial(DialTicket<D>),
    /// A place in line.
    Wait(Queued<D>),
}

/// A place in a destination's queue; dropped before its grant is collected (a cancelled `get`),
/// it leaves the queue and hands on whatever it was given: a connection comes back as a dropped
/// guard's does, checked and to the next waiter, idle or closed.
struct Queued<D: Dialer> {
    dest: Arc<Destination<D>>,
    waiter: Arc<Waiter<D::Conn>>,
    done: bool,
}

impl<D: Dialer> Drop for Queued<D> {
    fn drop(&mut self) {
        if !self.done {
            let pool = &self.dest.pool;
            if let Left::Grant(Grant::Conn(conn, born)) =
                pool.store
                    .leave_queue(&self.dest, &self.waiter, Leave::Cancelled)
            {
                // Still held, so the bucket, and the destination lent through it, stay. Unused,
                // so a panic unwinding through this drop does not condemn it.
                let back = if std::thread::panicking() {
                    Back::Unchecked
                } else {
                    Back::Checked
                };
                give_back(&Lent::new(&self.dest), conn, born, back);
            }
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
#[must_use = "a Builder does nothing until build() is called"]
pub struct Builder<D: Dialer> {
    dialer: D,
    limits: Limits,
    clock: Option<std::sync::Arc<dyn Clock>>,
    spawner: Option<std::sync::Arc<dyn Spawner>>,
    check_on_get: bool,
    check_on_return: bool,
    wait_timeout: Option<Duration>,
    dial_timeout: Option<Duration>,
}

impl<D: Dialer> Builder<D> {
    /// How many lanes the pool keeps when no per-destination limit asks for one (by default one
    /// per core; one under loom), so that tests and loom's models have several on any machine.
    #[cfg(any(test, connpool_loom))]
    #[doc(hidden)]
    pub fn lanes(mut self, n: usize) -> Self {
        self.limits.lanes = Some(n);
        self
    }

    /// The most idle connections kept per destination (default 32); 0 keeps nothing idle, and
    /// then a returned connection is closed without asking [`Dialer::is_open`] (or, to a caller
    /// waiting in line at `max_open_per_host`, handed on unasked: that caller's get asks).
    pub fn capacity(mut self, n: usize) -> Self {
        self.limits.capacity = n;
        self
    }

    /// How long a connection may stay idle before it is closed (default 90 s); zero is a
    /// [`BuildError`].
    ///
    /// Keep it below the time after which the servers close idle connections themselves (Redis'
    /// `timeout`, a proxy's idle timeout): a connection a server closed still counts as idle in
    /// [`Stats`] until a get's check turns it down or its own idle time is up, and with the checks
    /// off a get hands it out.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.limits.idle_timeout = d;
        self
    }

    /// The clock idle times and timeouts are measured on (default: the system's monotonic clock,
    /// which cannot sleep, read at its coarse resolution of a few milliseconds when the timeouts
    /// span 256 of its ticks: [`Clock::is_system_time`] says more). A clock that says
    /// [`Clock::is_system_time`] is slept on, and the pool reads the time as with the default.
    pub fn clock(mut self, c: impl Clock) -> Self {
        self.clock = Some(shared(c, |c| {
            std::sync::Arc::new(c) as std::sync::Arc<dyn Clock>
        }));
        self
    }

    /// Where to run the background reaper, which closes idle connections soon after their time is
    /// up. Needs a [`clock`](Builder::clock) to sleep on. Without a spawner, expired connections
    /// are closed lazily, and none is handed out either way:
    /// - those whose idle time is up, at the next get or return for their destination in their
    ///   lane (whether the connection returned goes idle or is closed, unless its thread is
    ///   panicking), or when a get that finds nothing usable in its own lane, or a return that
    ///   finds no room there, looks in theirs. A pool with one lane (see "Threads" in the crate
    ///   overview) has them closed at the next get or return for their destination; with several,
    ///   a lane whose threads no longer use a destination keeps its expired connections to it
    ///   until then (they count against its capacity, so they are never more than that);
    /// - those past `max_lifetime`, once a get or a return reaches them;
    /// - all of them at [`Pool::reap`].
    pub fn spawner(mut self, s: impl Spawner) -> Self {
        self.spawner = Some(shared(s, |s| {
            std::sync::Arc::new(s) as std::sync::Arc<dyn Spawner>
        }));
        self
    }

    /// Whether to ask [`Dialer::is_open`] before reusing an idle connection and before keeping a
    /// returned one (default `true`; the second unless [`check_on_return`](Builder::check_on_return)
    /// is off).
    pub fn check_on_get(mut self, yes: bool) -> Self {
        self.check_on_get = yes;
        self
    }

    /// Whether, with [`check_on_get`](Builder::check_on_get) on, [`Dialer::is_open`] is also
    /// asked when a connection comes back, before it is kept idle (default `true`). No effect
    /// with `check_on_get` off, which turns both checks off.
    ///
    /// Off, a returned connection is kept without asking; one that died while it was held then
    /// waits idle (counted in [`Stats`], and taking a place within `capacity` that a
    /// live connection returned after it may then not find) until a get that reaches it checks it
    /// and closes it, or until it expires, is evicted or purged (and is counted as closed for that
    /// reason). It is never handed out: the get's check still runs. When callers are waiting in
    /// line, it goes to the first of them, whose check turns it down; that caller then dials in
    /// its place, keeping its turn.
    /// What it saves is one check per request; with the adapters' `TcpDialer` that is a system
    /// call. On Tokio, when the previous answer's read filled its buffer, the get's check then
    /// also takes the place of the read that would have failed first on a connection used back to
    /// back, so a pooled request makes the system calls of a request on a connection of its own
    /// (BENCHMARKS.md in the repository has the figures); after a read that came back short it is
    /// one call more on epoll and kqueue platforms, where such a read takes the mark off itself.
    pub fn check_on_return(mut self, yes: bool) -> Self {
        self.check_on_return = yes;
        self
    }

    /// The most connections open to one destination at once: held, idle and being dialed
    /// (default unlimited; 0 is a [`BuildError`]).
    ///
    /// Callers beyond it wait in a first-in first-out queue per destination: a returned
    /// connection goes straight to the oldest waiter, and a closed or released one frees a slot
    /// for the oldest waiter to dial. When the oldest waiter is a [`Pool::dial`], which wants a
    /// new connection, a returned one is closed instead to free its slot (counted in
    /// [`closed_evicted`](crate::Counters::closed_evicted)). A waiter that is dropped leaves the
    /// queue at once.
    ///
    /// A connection handed to a waiter is that caller's from then on, counted as held, not idle:
    /// its idle time does not run while the caller's task is slow to take it (only its
    /// `max_lifetime` and, with `check_on_get`, [`Dialer::is_open`] are asked when it does), and a
    /// caller dropped before taking it gives it back as any holder does, its idle time starting
    /// then.
    ///
    /// A connection the pool closes itself (past its idle time or lifetime, evicted, purged, or
    /// beyond `capacity` as it comes back) leaves the count when the pool takes it out, and is
    /// closed just after, outside the destination's lock, so that no other caller waits on that
    /// close: a get that dials in between may open a connection beside it for as long as the
    /// close takes. Callers waiting in line are woken only once such closes are done. A backend
    /// that counts its connections sees any close only when it reads the end of the stream, so
    /// its count runs behind the pool's in any case.
    pub fn max_open_per_host(mut self, n: usize) -> Self {
        self.limits.max_open_per_host = n;
        self
    }

    /// How long [`Pool::get`] and [`Pool::dial`] wait in line for a free slot before they answer
    /// [`Error::Timeout`] (default: as long as it takes). Needs a [`clock`](Builder::clock) that
    /// can sleep.
    ///
    /// Zero is not at all: a caller that finds its destination at `max_open_per_host` answers
    /// [`Error::Timeout`] at once, without queueing, so it is never handed a connection another
    /// caller returns, and the answer does not wait for a timer of the clock's (counted in
    /// [`Counters::waits`](crate::Counters::waits) and
    /// [`wait_timeouts`](crate::Counters::wait_timeouts), as a wait that timed out).
    pub fn wait_timeout(mut self, d: Duration) -> Self {
        self.wait_timeout = Some(d);
        self
    }

    /// How long a dial may take before it is abandoned with [`Error::Timeout`] (default: as long
    /// as the dialer takes; zero is a [`BuildError`]). Needs a [`clock`](Builder::clock) that can
    /// sleep.
    pub fn dial_timeout(mut self, d: Duration) -> Self {
        self.dial_timeout = Some(d);
        self
    }

    /// The most idle connections kept across all destinations (default unlimited). When it is
    /// reached, the least recently used idle connection anywhere is closed to make room. Zero
    /// keeps nothing idle: as with [`capacity(0)`](Builder::capacity), a returned connection is
    /// then closed without asking [`Dialer::is_open`].
    ///
    /// With this limit the pool keeps all destinations under one lock, so that the order of use
    /// is exact; each operation stays O(1).
    pub fn max_idle_total(mut self, n: usize) -> Self {
        self.limits.max_idle_total = Some(n);
        self
    }

    /// How old a connection may grow, counted from its dial (default: no limit; zero is a
    /// [`BuildError`]). Older ones are closed when they come back, instead of being handed out
    /// (a queued get that finds the one it was handed too old by the time it takes it dials
    /// instead), and by the reaper, which wakes for them at their end (within a sixteenth of the
    /// shorter of the lifetime and the idle timeout).
    pub fn max_lifetime(mut self, d: Duration) -> Self {
        self.limits.max_lifetime = Some(d);
        self
    }

    /// Builds the pool, and starts its reaper when a clock and a spawner are set.
    ///
    /// # Errors
    ///
    /// [`BuildError`], naming the setting, when `idle_timeout`, `max_lifetime` or `dial_timeout`
    /// is zero, when `max_open_per_host` is zero, or when a `spawner`, a `wait_timeout` or a
    /// `dial_timeout` is set without a [`clock`](Builder::clock) to sleep on.
    pub fn build(self) -> Result<Pool<D>, BuildError> {
        self.check()?;
        let limits = Limits {
            queue: self.wait_timeout != Some(Duration::ZERO),
            ..self.limits
        };
        // Nothing ever expires with no room to keep anything, or with an idle timeout of centuries.
        let keeps_idle = limits.capacity > 0 && limits.max_idle_total != Some(0);
        let reaper_useful = keeps_idle
            && (nanos(limits.idle_timeout) < Nanos::MAX
                || limits.max_lifetime.is_some_and(|d| nanos(d) < Nanos::MAX));
        let shortest = limits.max_lifetime.map_or(limits.idle_timeout, |lifetime| {
            lifetime.min(limits.idle_timeout)
        });
        let time = Timebase::new(self.clock, shortest);
        let reaper_clock = match (&self.spawner, time.clock(), reaper_useful) {
            (Some(_), Some(clock), true) => Some(clock.clone()),
            _ => None,
        };
        let reaper = Arc::new(ReaperSignal::new(
            limits.idle_timeout,
            limits.max_lifetime,
            reaper_clock.is_some(),
        ));
        let inner = Arc::new(PoolInner {
            dialer: self.dialer,
            store: Store::new(limits, time.is_coarse()),
            time,
            check_on_get: self.check_on_get,
            // With nothing kept idle, a returned connection is closed, or handed to a waiter
            // whose get checks it: a check at the return would only cost a call.
            check_on_return: self.check_on_get && self.check_on_return && keeps_idle,
            wait_timeout: self.wait_timeout,
            dial_timeout: self.dial_timeout,
            reaper,
        });
        if let (Some(spawner), Some(clock)) = (self.spawner, reaper_clock) {
            reaper::spawn(&inner, clock, spawner.as_ref());
        }
        Ok(Pool {
            handle: Arc::new(Handle { inner }),
        })
    }

    fn check(&self) -> Result<(), BuildError> {
        let needs_clock = "needs a clock that can sleep; set clock() too";
        if self.limits.idle_timeout.is_zero() {
            return Err(BuildError::new(
                "idle_timeout",
                "must be greater than zero; use capacity(0) to keep nothing idle",
            ));
        }
        if self.limits.max_open_per_host == 0 {
            return Err(BuildError::new(
                "max_open_per_host",
                "must be at least 1, or no connection could ever open",
            ));
        }
        if self.limits.max_lifetime.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::new("max_lifetime", "must be greater than zero"));
        }
        if self.dial_timeout.is_some_and(|d| d.is_zero()) {
            return Err(BuildError::new("dial_timeout", "must be greater than zero"));
        }
        if self.clock.is_none() {
            if self.spawner.is_some() {
                return Err(BuildError::new(
                    "spawner",
                    "the background reaper needs a clock to sleep on; set clock() too",
                ));
            }
            if self.wait_timeout.is_some() {
                return Err(BuildError::new("wait_timeout", needs_clock));
            }
            if self.dial_timeout.is_some() {
                return Err(BuildError::new("dial_timeout", needs_clock));
            }
        }
        Ok(())
    }
}

/// `value` as an `Arc<T>`, by `wrap`; a `value` that is already an `Arc<T>` (a library's
/// `Arc<dyn Clock>`) or a `Box<T>` is taken as it is, not put in a second pointer that each
/// reading of a clock would go through too.
fn shared<T: ?Sized + 'static, V: 'static>(
    value: V,
    wrap: impl FnOnce(V) -> std::sync::Arc<T>,
) -> std::sync::Arc<T> {
    let mut value = Some(value);
    let any = &mut value as &mut dyn std::any::Any;
    if let Some(arc) = any.downcast_mut::<Option<std::sync::Arc<T>>>() {
        return arc.take().expect("taken once");
    }
    if let Some(boxed) = any.downcast_mut::<Option<Box<T>>>() {
        return boxed.take().expect("taken once").into();
    }
    wrap(value.expect("taken once"))
}

impl<D: Dialer> fmt::Debug for Builder<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("limits", &self.limits)
            .field("clock", &self.clock.is_some())
            .field("spawner", &self.spawner.is_some())
            .field("check_on_get", &self.check_on_get)
            .field("check_on_return", &self.check_on_return)
            .field("wait_timeout", &self.wait_timeout)
            .field("dial_timeout", &self.dial_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoSpawner;

    impl Spawner for NoSpawner {
        fn spawn(&self, _: BoxFuture<'static, ()>) {}
    }

    /// A library's `Arc<dyn Clock>` and `Arc<dyn Spawner>` are kept as they are, not put in a
    /// second `Arc` that each reading of the clock would go through too.
    #[test]
    fn a_shared_clock_or_spawner_is_kept_as_it_is() {
        let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(crate::ManualClock::new());
        let spawner: std::sync::Arc<dyn Spawner> = std::sync::Arc::new(NoSpawner);
        let dialer = crate::dial_fn(|n: u8| async move { Ok::<_, std::io::Error>(n) });
        let builder = Pool::builder(dialer)
            .clock(clock.clone())
            .spawner(spawner.clone());
        assert!(std::sync::Arc::ptr_eq(
            builder.clock.as_ref().unwrap(),
            &clock
        ));
        assert!(std::sync::Arc::ptr_eq(
            builder.spawner.as_ref().unwrap(),
            &spawner
        ));
    }
}
