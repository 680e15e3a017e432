//! The per-host idle store: the pool's state machine, with no async and no runtime in it.
//!
//! Destinations are spread over a few shards, each a mutex around a hash table of buckets, so that
//! threads working on different destinations rarely meet. Without limits that need one place to
//! count a destination's connections (`max_open_per_host`, `max_idle_total`), and unless nothing is
//! kept idle (`capacity` 0), the shards are grouped in *lanes*, one per core: a thread gets from
//! its own lane and a connection goes back to the lane that handed it out, so threads sharing
//! destinations do not share cache lines either (a line's trip to another core and back costs about
//! two whole gets and returns). A get that finds nothing in its lane takes an idle connection from
//! another lane before it dials, and a lane keeps idle connections only up to what it has
//! *reserved* of the destination's capacity; the reservations of all lanes add up to at most
//! `capacity`, so `idle(addr) <= capacity` holds across lanes. A bucket holds one destination's
//! idle connections (last in, first out, stamped with the time they came back), counts those held
//! by callers and being dialed, and queues the callers waiting for a free slot when the destination
//! is at `max_open_per_host`. Every operation is one short critical section: it takes `now` as an
//! argument, changes the counts, and leaves the connections to close and the waiters to wake in an
//! [`Aftermath`], which acts only after the lock is released (closing a socket is a system call
//! that others should not wait for).
//!
//! Whenever an operation leaves a bucket with room and waiters, the oldest waiters get the room
//! ([`Bucket::settle`]); a bucket that holds nothing leaves its table at once, so short-lived
//! destinations cost nothing once their connections are gone.

use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher;
use std::mem::{self, ManuallyDrop};
use std::ops::Deref;
use std::panic::{self, AssertUnwindSafe};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hashbrown::hash_table::{Entry, OccupiedEntry};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::clock::{nanos, Nanos};
use crate::lru::{self, Lru, LruKey};
use crate::pool::PoolInner;
use crate::stats::{Counters, DestinationStats, Stats};
use crate::sync::{lock, Arc, AtomicBool, AtomicUsize, Mutex, Ordering};
use crate::Dialer;

/// One destination: its address, the address's hash, and the pool it belongs to. Its bucket holds
/// one reference, every dial and every waiter for it another, and every guard a [`Lent`] one, so
/// a returning connection finds its bucket by the stored hash and a pointer comparison, without
/// hashing the address again.
pub(crate) struct Destination<D: Dialer> {
    pub(crate) addr: D::Addr,
    hash: u64,
    /// The shard (in the lane that handed the connection out) that holds the bucket.
    shard: usize,
    pub(crate) pool: Arc<PoolInner<D>>,
}

impl<D: Dialer> Destination<D> {
    /// Whether this is `addr`'s destination.
    #[inline(always)]
    fn is_for(&self, addr: &D::Addr) -> bool {
        same_addr(&self.addr, addr)
    }
}

/// `a == b`, with `String` addresses (the adapters' TCP addresses, and the usual kind) compared
/// in line where they are 8 to 16 bytes long ("10.0.0.7:8080"), as two overlapping words a side.
/// `String`'s `==` calls `memcmp`, a call out of line to compare two words, on the hot path's
/// longest chain of loads: 1.3 ns of the one-destination get and return here, 3 ns at 1000
/// destinations (BENCHMARKS.md, item 24). The type is told at compile time; other types, and
/// other lengths, compare with their own `==`.
#[inline(always)]
fn same_addr<A: Eq + 'static>(a: &A, b: &A) -> bool {
    use std::any::Any;
    match (
        (a as &dyn Any).downcast_ref::<String>(),
        (b as &dyn Any).downcast_ref::<String>(),
    ) {
        (Some(a), Some(b)) => same_text(a.as_bytes(), b.as_bytes()),
        _ => a == b,
    }
}

/// `a == b` for byte strings, in line for lengths of 8 to 16.
#[inline(always)]
fn same_text(a: &[u8], b: &[u8]) -> bool {
    let len = a.len();
    if len != b.len() {
        return false;
    }
    if (8..=16).contains(&len) {
        let word = |text: &[u8], at: usize| {
            u64::from_ne_bytes(text[at..at + 8].try_into().expect("8 bytes"))
        };
        return (word(a, 0) ^ word(b, 0)) | (word(a, len - 8) ^ word(b, len - 8)) == 0;
    }
    a == b
}

/// The destination a guard holds: its bucket's `Arc`, lent without a count, so that handing a
/// connection out and taking it back moves no reference count (two atomic read-modify-writes,
/// an eighth of the hot path: BENCHMARKS.md).
///
/// It is valid while its holder is counted as held in the bucket it came from: a bucket leaves its
/// table (dropping its `Arc`) only when nothing is held there, and the bucket's `Arc` keeps the
/// destination and, through it, the whole pool alive. Whatever may end the holder's count and
/// touch the pool afterwards works on a [`Lent::counted`] copy; the return's fast path, which
/// ends the count by making the connection idle, touches nothing of the pool once the shard is
/// unlocked ([`Store::put_fresh`]).
///
/// It also remembers where in its shard's table the bucket sat when the connection was handed out
/// (`slot`), so that the return goes straight there instead of probing the table. Only a hint: the
/// table moves its entries when it grows, so the return checks that the slot still holds this
/// destination's bucket and probes when it does not.
pub(crate) struct Lent<D: Dialer> {
    dest: ManuallyDrop<Arc<Destination<D>>>,
    slot: usize,
}

impl<D: Dialer> Lent<D> {
    /// Lends `dest`, the `Arc` of a bucket that counts the caller as holding a connection.
    #[inline]
    pub(crate) fn new(dest: &Arc<Destination<D>>) -> Self {
        Lent::at(dest, usize::MAX)
    }

    /// [`Lent::new`], for a bucket found at `slot` of its shard's table.
    #[inline]
    fn at(dest: &Arc<Destination<D>>, slot: usize) -> Self {
        #[allow(unsafe_code)]
        // SAFETY: the pointer comes from a live `Arc`, and the `Arc` made from it is never dropped
        // (`ManuallyDrop`, and `Lent` has no `Drop`), so it never gives up a count it did not
        // take. It is used only while the bucket counts its holder (see the type's comment).
        let lent = unsafe { Arc::from_raw(Arc::as_ptr(dest)) };
        Lent {
            dest: ManuallyDrop::new(lent),
            slot,
        }
    }

    /// Whether `dest` is the `Arc` this was lent from.
    #[inline]
    fn is(&self, dest: &Arc<Destination<D>>) -> bool {
        Arc::ptr_eq(&self.dest, dest)
    }

    /// A counted `Arc` of the destination, for paths that may end the holder's count and still
    /// reach the pool afterwards.
    pub(crate) fn counted(&self) -> Arc<Destination<D>> {
        Arc::clone(&self.dest)
    }

    /// Ends the holder's count for `reason` ([`Store::forget`]), through a counted copy: the
    /// bucket may leave its table under the lock, and the aftermath still reads the pool.
    ///
    /// A connection that ends as it comes back (turned down by `is_open`, released, detached) is
    /// a return for its destination all the same, and closes the idle connections there whose
    /// time is up, as a return that keeps its connection does. Not while a panic unwinds, when
    /// the clock (a user's, perhaps) is better left alone; and should the clock itself panic,
    /// the count ends all the same, through this call again as the panic unwinds.
    pub(crate) fn forget(&self, reason: Reason) {
        let dest = self.counted();
        let pool = &dest.pool;
        let returns = matches!(
            reason,
            Reason::NotOpen | Reason::Released | Reason::Detached
        );
        let now = (returns && !std::thread::panicking()).then(|| {
            let ending = self.ending(reason);
            let now = pool.time.now();
            ending.disarm();
            now
        });
        pool.store.forget(&dest, reason, now);
    }

    /// [`Lent::forget`] when the returned guard drops, unless [`Ending::disarm`]ed. Made before
    /// what may unwind (the dialer's `is_open`, a connection's own drop), so that the count ends
    /// whatever happens; dropped after the connection, so that by the time the count ends (and
    /// `shutdown` may hear that everything came back) the connection is closed. When the
    /// connection is a parameter or a caller's, rebind it after the guard (`let conn = conn;`):
    /// a panic unwinds a function's locals before its parameters and its caller's locals.
    pub(crate) fn ending(&self, reason: Reason) -> Ending<'_, D> {
        Ending { dest: self, reason }
    }
}

/// The end of a holder's count, when dropped: [`Lent::ending`].
pub(crate) struct Ending<'a, D: Dialer> {
    dest: &'a Lent<D>,
    reason: Reason,
}

impl<D: Dialer> Ending<'_, D> {
    /// The count goes on.
    #[inline]
    pub(crate) fn disarm(self) {
        std::mem::forget(self);
    }
}

impl<D: Dialer> Drop for Ending<'_, D> {
    fn drop(&mut self) {
        self.dest.forget(self.reason);
    }
}

impl<D: Dialer> Deref for Lent<D> {
    type Target = Destination<D>;

    #[inline]
    fn deref(&self) -> &Destination<D> {
        &self.dest
    }
}

/// Which destination an entry of the `max_idle_total` order belongs to: its hash and its address
/// in memory, compared, never dereferenced. Plain integers, so keeping the order costs no
/// reference-count traffic; the bucket, which owns the destination, outlives its idle entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DestinationId {
    hash: u64,
    ptr: usize,
}

impl DestinationId {
    fn of<D: Dialer>(dest: &Arc<Destination<D>>) -> Self {
        DestinationId {
            hash: dest.hash,
            ptr: Arc::as_ptr(dest) as usize,
        }
    }

    fn is<D: Dialer>(&self, dest: &Arc<Destination<D>>) -> bool {
        *self == DestinationId::of(dest)
    }
}

/// Why a connection left the pool's accounting; each reason has its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Expired,
    OverCapacity,
    /// `is_open` said no when the connection came back.
    NotOpen,
    /// `is_open` said no just after a get took it from the idle store (and counted a hit).
    NotOpenOnGet,
    /// A waiter found its connection past `max_lifetime` when it came to collect it (the grant
    /// counted a hit).
    LifetimeOnGet,
    /// A panic ended a hand-out the store had counted as a hit: the clock's as a waiter came to
    /// collect its connection, or a connection's own drop as the get closed others on the way.
    PanickingOnGet,
    /// A waiter found the pool closed when it came to collect its connection (the grant counted
    /// a hit).
    PoolClosedOnGet,
    Released,
    PoolClosed,
    Purged,
    Panicking,
    Detached,
    Lifetime,
    Evicted,
}

impl Counters {
    fn count(&mut self, reason: Reason, n: usize) {
        let n = n as u64;
        match reason {
            Reason::Expired => self.closed_expired += n,
            Reason::OverCapacity => self.closed_over_capacity += n,
            Reason::NotOpen => self.closed_not_open += n,
            Reason::NotOpenOnGet => {
                self.hits -= n;
                self.closed_not_open += n;
            }
            Reason::LifetimeOnGet => {
                self.hits -= n;
                self.closed_lifetime += n;
            }
            Reason::PanickingOnGet => {
                self.hits -= n;
                self.closed_panicking += n;
            }
            Reason::PoolClosedOnGet => {
                self.hits -= n;
                self.closed_pool_closed += n;
            }
            Reason::Released => self.released += n,
            Reason::PoolClosed => self.closed_pool_closed += n,
            Reason::Purged => self.closed_purged += n,
            Reason::Panicking => self.closed_panicking += n,
            Reason::Detached => self.detached += n,
            Reason::Lifetime => self.closed_lifetime += n,
            Reason::Evicted => self.closed_evicted += n,
        }
    }
}

/// The limits a store enforces, fixed when the pool is built.
#[derive(Clone)]
pub(crate) struct Limits {
    pub(crate) capacity: usize,
    pub(crate) idle_timeout: Duration,
    /// `usize::MAX` when unlimited.
    pub(crate) max_open_per_host: usize,
    pub(crate) max_idle_total: Option<usize>,
    pub(crate) max_lifetime: Option<Duration>,
    /// How many lanes; `None`: one per core. Set only by tests, to have lanes on any machine.
    pub(crate) lanes: Option<usize>,
    /// Whether callers that find their destination at `max_open_per_host` queue; `false` with a
    /// zero `wait_timeout`: they would time out the moment they queued.
    pub(crate) queue: bool,
}

/// The settings as a user gave them: `None` for no limit, and nothing of the test-only lanes or
/// of how a zero `wait_timeout` is carried out.
impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max_open = Some(self.max_open_per_host).filter(|&n| n != usize::MAX);
        f.debug_struct("Limits")
            .field("capacity", &self.capacity)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_open_per_host", &max_open)
            .field("max_idle_total", &self.max_idle_total)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

/// What a get or dial found in the store.
pub(crate) enum Checkout<D: Dialer> {
    /// An idle connection, now counted as held, and when it was dialed.
    Reuse(Arc<Destination<D>>, D::Conn, Nanos),
    /// Room to dial: the caller is counted as dialing and must end with [`Store::finish_dial`].
    Dial(Arc<Destination<D>>),
    /// The destination is full: the caller is queued and must end with [`Waiter::poll_grant`]
    /// or [`Store::leave_queue`].
    Wait(Arc<Destination<D>>, Arc<Waiter<D::Conn>>),
    /// Nothing usable in this lane, and the caller asked not to dial yet: it looks in the other
    /// lanes first ([`Store::steal`]).
    Miss,
    /// The destination is full and callers do not queue (a zero `wait_timeout`): counted as a
    /// wait that timed out.
    Full,
    /// The destination has no bucket in this lane and the caller needs one: it makes the
    /// destination ([`Store::destination`]) with no lock held, since that clones the address
    /// (the caller's code), and looks again with it.
    Make,
    /// The pool is closed.
    Closed,
}

/// What a checkout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// A get: an idle connection, else room to dial.
    Reuse,
    /// A get that looks in its own lane only: [`Checkout::Miss`] instead of room to dial.
    ReuseHere,
    /// A dial (`Pool::dial`): room to dial, made by closing the oldest idle connection if need be.
    Fresh,
}

/// What a waiter is given.
pub(crate) enum Grant<C> {
    /// A returned connection, counted as held by the waiter, and when it was dialed.
    Conn(C, Nanos),
    /// A free slot, counted as dialing for the waiter.
    Slot,
    /// The pool closed.
    Closed,
}

/// A caller queued for a full destination.
pub(crate) struct Waiter<C> {
    /// A `dial` wants a fresh connection, so it is given slots, never returned connections.
    fresh: bool,
    state: Mutex<WaitState<C>>,
}

enum WaitState<C> {
    Waiting(Option<Waker>),
    Granted(Grant<C>),
    Gone,
}

impl<C> Waiter<C> {
    fn new(fresh: bool) -> Self {
        Waiter {
            fresh,
            state: Mutex::new(WaitState::Waiting(None)),
        }
    }

    /// What the waiter was given, once it was; until then remembers whom to wake.
    pub(crate) fn poll_grant(&self, cx: &mut Context<'_>) -> Poll<Grant<C>> {
        let mut state = lock(&self.state);
        match mem::replace(&mut *state, WaitState::Gone) {
            WaitState::Granted(grant) => Poll::Ready(grant),
            WaitState::Waiting(_) => {
                *state = WaitState::Waiting(Some(cx.waker().clone()));
                Poll::Pending
            }
            WaitState::Gone => Poll::Pending,
        }
    }

    /// Under the shard lock: hands over `grant`; returns whom to wake once the lock is released.
    fn grant(&self, grant: Grant<C>) -> Option<Waker> {
        let mut state = lock(&self.state);
        match mem::replace(&mut *state, WaitState::Granted(grant)) {
            WaitState::Waiting(waker) => waker,
            WaitState::Granted(_) | WaitState::Gone => None,
        }
    }

    /// Under the shard lock: takes back what was granted and not yet collected, and marks the
    /// waiter gone.
    fn withdraw(&self) -> Option<Grant<C>> {
        match mem::replace(&mut *lock(&self.state), WaitState::Gone) {
            WaitState::Granted(grant) => Some(grant),
            WaitState::Waiting(_) | WaitState::Gone => None,
        }
    }
}

/// How a dial counted by the store ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialOutcome {
    Failed,
    TimedOut,
    /// The caller went away before the dial finished.
    Cancelled,
}

/// What a waiter leaving its queue comes away with.
pub(crate) enum Left<C> {
    /// What it was given before it left: the caller's to use when its wait timed out. A
    /// cancelled waiter gets only a connection, still held and no longer counted as a hit, for
    /// the caller to return as any other.
    Grant(Grant<C>),
    /// Nothing for the caller.
    Nothing,
}

/// Why a waiter leaves the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leave {
    /// Its wait timeout passed: what it was given in the meantime is handed to it.
    TimedOut,
    /// It was dropped: what it was given goes to the next waiter.
    Cancelled,
}

/// What to do once a shard's lock is released: close connections, wake waiters, tell `shutdown`
/// callers to look again, and let go of the destinations whose buckets left their tables.
///
/// The hot path has nothing to do afterwards, so the lists live in a box made only when needed.
///
/// An aftermath with connections to close is counted in [`DrainSignal`] from the moment its first
/// connection leaves the books (under the lock) until the last is closed, so `shutdown` does not
/// hear "all closed" while the store itself is still closing some.
///
/// A destination whose bucket leaves its table is let go here too, not under the lock: its last
/// reference may go with it, and with that the address, whose drop is the caller's code. Run
/// under the lock, an address that calls into the pool as it drops (or waits for a lock of the
/// application's that a thread calling into the pool holds) would wait for ever, and one whose
/// drop panics would leave the operation half done.
pub(crate) struct Aftermath<'a, D: Dialer> {
    work: Option<Box<Work<D>>>,
    /// The pool's closed flag, read after the lock to tell whether to wake `shutdown` callers.
    closed: &'a AtomicBool,
    /// The pool's `shutdown` signal and its count of aftermaths still closing.
    drain: &'a DrainSignal,
}

struct Work<D: Dialer> {
    closing: Vec<D::Conn>,
    wake: Vec<Waker>,
    letting_go: Vec<Arc<Destination<D>>>,
}

impl<D: Dialer> Aftermath<'_, D> {
    fn work(&mut self) -> &mut Work<D> {
        self.work.get_or_insert_with(|| {
            Box::new(Work {
                closing: Vec::new(),
                wake: Vec::new(),
                letting_go: Vec::new(),
            })
        })
    }

    /// Drops `dest`, a bucket's reference, once the lock is released.
    pub(crate) fn let_go(&mut self, dest: Arc<Destination<D>>) {
        self.work().letting_go.push(dest);
    }

    /// Closes `conn` once the lock is released.
    fn close(&mut self, conn: D::Conn) {
        let drain = self.drain;
        let closing = &mut self.work().closing;
        if closing.is_empty() {
            // Under the lock that took `conn` off the books: whoever reads the books after this
            // lock also sees the count.
            drain.closing.fetch_add(1, Ordering::Relaxed);
        }
        closing.push(conn);
    }

    /// Wakes `waker`, if any, once the lock is released.
    fn wake(&mut self, waker: Option<Waker>) {
        if let Some(waker) = waker {
            self.work().wake.push(waker);
        }
    }
}

impl<D: Dialer> Drop for Aftermath<'_, D> {
    #[inline(always)]
    fn drop(&mut self) {
        // The flag is read now, after the lock: `close()` may have run while this operation
        // waited for the lock, and the operation may have emptied the pool under it.
        let closed = self.closed.load(Ordering::Acquire);
        if self.work.is_some() || closed {
            self.act(closed);
        }
    }
}

impl<D: Dialer> Aftermath<'_, D> {
    #[cold]
    fn act(&mut self, closed: bool) {
        let (closing, wake, letting_go) = match self.work.take() {
            Some(work) => (work.closing, work.wake, work.letting_go),
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        // After the connections are closed, and even if closing one panics (in its own drop):
        // a waiter or a `shutdown` never waits for a wake-up that a panic skipped, nor for a
        // count that a panic left up.
        let then = Wake {
            wake,
            counted: !closing.is_empty(),
            closed_at_unlock: closed,
            closed: self.closed,
            drain: self.drain,
        };
        // One at a time, each drop's panic caught: dropping the list would drop the rest while
        // the first panic unwinds, and a second panic there aborts the process. The first panic
        // goes on to the caller once all are closed and the wake-ups done, unless another panic
        // is already unwinding (a waiter dropped by it): a second one would abort too.
        let mut first_panic = None;
        for conn in closing {
            if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| drop(conn))) {
                first_panic.get_or_insert(panic);
            }
        }
        drop(then);
        // Last, when every count is settled and every wake-up sent: an address's drop is the
        // caller's code, and may panic too. The caller holds a reference to the pool of its own
        // (a handle, or a destination counted for the call), so none of these is the pool's last.
        for dest in letting_go {
            if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| drop(dest))) {
                first_panic.get_or_insert(panic);
            }
        }
        if let Some(panic) = first_panic {
            if !std::thread::panicking() {
                panic::resume_unwind(panic);
            }
        }
    }
}

/// Ends an aftermath's count of closing (when `counted`), then wakes waiters, then `shutdown`
/// callers if the pool is closed, when dropped.
struct Wake<'a> {
    wake: Vec<Waker>,
    counted: bool,
    closed_at_unlock: bool,
    closed: &'a AtomicBool,
    drain: &'a DrainSignal,
}

impl Drop for Wake<'_> {
    fn drop(&mut self) {
        let mut closed = self.closed_at_unlock;
        if self.counted {
            // After the closes, so that `shutdown`'s read of the count sees what they did. Then
            // the flag again: a `shutdown` that began after the unlock may be waiting for this
            // count alone (both sequentially consistent, against its read of the count after the
            // flag was raised).
            self.drain.closing.fetch_sub(1, Ordering::SeqCst);
            closed = closed || self.closed.load(Ordering::SeqCst);
        }
        for waker in self.wake.drain(..) {
            waker.wake();
        }
        if closed {
            self.drain.notify();
        }
    }
}

/// Wakes `shutdown` callers whenever a closed pool's last connections come back, and counts the
/// aftermaths still closing connections the books no longer show.
#[derive(Default)]
pub(crate) struct DrainSignal {
    wakers: std::sync::Mutex<Vec<Waker>>,
    closing: AtomicUsize,
}

impl DrainSignal {
    pub(crate) fn register(&self, waker: &Waker) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    fn notify(&self) {
        let wakers = mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in wakers {
            waker.wake();
        }
    }
}

pub(crate) struct Store<D: Dialer> {
    /// Lane after lane, `1 << lane_bits` shards each.
    shards: Box<[Padded<Mutex<Shard<D>>>]>,
    /// How many lanes (a power of two; 1 with limits that count per destination).
    lanes: usize,
    lane_bits: u32,
    /// Picks a shard within a lane from an address's hash: shards per lane - 1.
    shard_mask: usize,
    hasher: DefaultHashBuilder,
    closed: AtomicBool,
    limits: Limits,
    /// The limits in the store's own unit of time (`Nanos::MAX`: never), a 64th short on a
    /// coarse clock ([`sure`]).
    idle_timeout: Nanos,
    max_lifetime: Nanos,
    drain: DrainSignal,
}

/// Keeps each shard on cache lines of its own, so two threads on two shards do not slow each
/// other down.
#[repr(align(128))]
struct Padded<T>(T);

struct Shard<D: Dialer> {
    buckets: HashTable<Bucket<D>>,
    books: Books,
}

/// A shard's accounts beside its buckets.
struct Books {
    counters: Counters,
    idle: usize,
    /// With `max_idle_total` (one shard then), every idle connection in the order it came back.
    lru: Option<Lru<DestinationId>>,
}

struct Bucket<D: Dialer> {
    dest: Arc<Destination<D>>,
    /// Oldest first, newest last: reuse pops the end, expiry drains the start. A `Vec`, not a
    /// `VecDeque`: its push is inlined and writes in place, where `VecDeque::push_back` copies
    /// the entry through the stack (measured: a store-forwarding stall on every return), and
    /// draining the start is rare and short (at most `capacity` entries).
    idle: Vec<Idle<D::Conn>>,
    held: usize,
    dialing: usize,
    /// How many idle connections this lane may keep for the destination: `capacity` with one lane;
    /// with several, the lane's share, which it takes from the others when it needs more
    /// ([`Store::check_in_with_room`]).
    reserved: usize,
    waiters: Queue<Arc<Waiter<D::Conn>>>,
}

/// A first-in first-out queue that takes one word until it is first used: only pools with
/// `max_open_per_host` ever queue, and a bucket is kept per destination.
#[expect(
    clippy::box_collection,
    reason = "one word in every bucket instead of a VecDeque's four"
)]
struct Queue<T>(Option<Box<VecDeque<T>>>);

impl<T> Queue<T> {
    fn new() -> Self {
        Queue(None)
    }

    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|queue| queue.is_empty())
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |queue| queue.len())
    }

    fn push_back(&mut self, item: T) {
        self.0.get_or_insert_default().push_back(item);
    }

    fn pop_front(&mut self) -> Option<T> {
        self.0.as_mut()?.pop_front()
    }

    fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        if let Some(queue) = self.0.as_mut() {
            queue.retain(keep);
        }
    }

    /// Empties the queue, oldest first.
    fn take_all(&mut self) -> impl Iterator<Item = T> {
        self.0.take().into_iter().flat_map(|queue| *queue)
    }
}

struct Idle<C> {
    conn: C,
    since: Nanos,
    born: Nanos,
    lru: LruKey,
}

/// What the store knows of time for one operation.
#[derive(Clone, Copy)]
struct Now {
    now: Nanos,
    idle_timeout: Nanos,
    max_lifetime: Nanos,
}

impl Now {
    fn idle_expired<C>(&self, idle: &Idle<C>) -> bool {
        self.now.saturating_sub(idle.since) >= self.idle_timeout
    }

    fn too_old(&self, born: Nanos) -> bool {
        self.now.saturating_sub(born) >= self.max_lifetime
    }
}

impl<D: Dialer> Bucket<D> {
    fn open(&self) -> usize {
        self.held + self.dialing + self.idle.len()
    }

    fn is_empty(&self) -> bool {
        self.idle.is_empty() && self.held == 0 && self.dialing == 0 && self.waiters.is_empty()
    }

    /// Takes the idle connection at `index` out of the books.
    #[inline]
    fn take_idle(&mut self, index: usize, books: &mut Books) -> Option<Idle<D::Conn>> {
        // The newest, the common case, leaves by `pop`: `remove` is an out-of-line call.
        let idle = if index + 1 == self.idle.len() {
            self.idle.pop()?
        } else if index < self.idle.len() {
            self.idle.remove(index)
        } else {
            return None;
        };
        books.idle -= 1;
        if let Some(lru) = books.lru.as_mut() {
            lru.remove(idle.lru);
        }
        Some(idle)
    }

    /// Takes the newest idle connection out of the books.
    #[inline]
    fn pop_newest(&mut self, books: &mut Books) -> Option<Idle<D::Conn>> {
        self.take_idle(self.idle.len().checked_sub(1)?, books)
    }

    /// Closes the idle connections `[..n]` (the oldest) for `reason`.
    fn close_oldest(
        &mut self,
        n: usize,
        reason: Reason,
        books: &mut Books,
        after: &mut Aftermath<'_, D>,
    ) {
        for _ in 0..n {
            if let Some(idle) = self.take_idle(0, books) {
                after.close(idle.conn);
            }
        }
        books.counters.count(reason, n);
    }

    /// Closes the idle connections whose idle time or lifetime is up. Off the hot paths
    /// (`take_fresh` and `put_fresh` read the ends alone), so it reads every stamp: they are in
    /// order of return only nearly (see `put_fresh`), and an expired one may sit anywhere.
    #[inline]
    fn expire(&mut self, now: Now, books: &mut Books, after: &mut Aftermath<'_, D>) {
        if now.max_lifetime < Nanos::MAX || self.idle.iter().any(|idle| now.idle_expired(idle)) {
            self.expire_some(now, books, after);
        }
    }

    /// Looks at every idle connection: a return that waited for the lock may have stamped one
    /// earlier than those before it.
    #[cold]
    fn expire_some(&mut self, now: Now, books: &mut Books, after: &mut Aftermath<'_, D>) {
        let mut index = 0;
        while index < self.idle.len() {
            let idle = &self.idle[index];
            let reason = if now.idle_expired(idle) {
                Reason::Expired
            } else if now.too_old(idle.born) {
                Reason::Lifetime
            } else {
                index += 1;
                continue;
            };
            if let Some(idle) = self.take_idle(index, books) {
                after.close(idle.conn);
                books.counters.count(reason, 1);
            }
        }
    }

    /// When the next idle connection's idle time or lifetime is up; `None` when nothing is idle,
    /// `Nanos::MAX` when that is past what the pool's time can count (a timeout of centuries).
    fn next_deadline(&self, now: Now) -> Option<Nanos> {
        // Every stamp, not the oldest's alone: they may be out of order (see `put_fresh`).
        let idle_deadline = self
            .idle
            .iter()
            .map(|idle| idle.since.saturating_add(now.idle_timeout))
            .min()
            .unwrap_or(Nanos::MAX);
        let lifetime_deadline = if now.max_lifetime < Nanos::MAX {
            self.idle
                .iter()
                .map(|idle| idle.born.saturating_add(now.max_lifetime))
                .min()
                .unwrap_or(Nanos::MAX)
        } else {
            Nanos::MAX
        };
        (!self.idle.is_empty()).then(|| idle_deadline.min(lifetime_deadline))
    }

    /// Gives the room this bucket has to its oldest waiters, as slots to dial.
    #[inline(always)]
    fn settle(&mut self, max_open: usize, after: &mut Aftermath<'_, D>) {
        if !self.waiters.is_empty() {
            self.settle_waiters(max_open, after);
        }
    }

    #[cold]
    fn settle_waiters(&mut self, max_open: usize, after: &mut Aftermath<'_, D>) {
        while !self.waiters.is_empty() && self.open() < max_open {
            if let Some(waiter) = self.waiters.pop_front() {
                self.dialing += 1;
                after.wake(waiter.grant(Grant::Slot));
            }
        }
    }

    /// A held connection comes back in good order: to the oldest waiter, or idle if the lane has
    /// room for it. The caller has already taken it off `held`. Returns whether it went idle, or
    /// the connection when there is no room.
    #[inline]
    fn check_in(
        &mut self,
        conn: D::Conn,
        born: Nanos,
        now: Now,
        books: &mut Books,
        after: &mut Aftermath<'_, D>,
    ) -> Result<bool, D::Conn> {
        if let Some(waiter) = self.waiters.pop_front() {
            if waiter.fresh {
                // A dial wants a new connection: this one makes room for it.
                books.counters.count(Reason::Evicted, 1);
                after.close(conn);
                self.dialing += 1;
                after.wake(waiter.grant(Grant::Slot));
            } else {
                books.counters.hits += 1;
                self.held += 1;
                after.wake(waiter.grant(Grant::Conn(conn, born)));
            }
            return Ok(false);
        }
        self.expire(now, books, after);
        if self.idle.len() >= self.reserved {
            return Err(conn);
        }
        let lru = match books.lru.as_mut() {
            Some(lru) => lru.push_back(DestinationId::of(&self.dest)),
            None => LruKey::MAX,
        };
        reserve_first(&mut self.idle);
        self.idle.push(Idle {
            conn,
            since: now.now,
            born,
            lru,
        });
        books.idle += 1;
        Ok(true)
    }
}

impl<D: Dialer> Store<D> {
    /// The store of a pool whose clock is `coarse` or not
    /// ([`Timebase::is_coarse`](crate::clock::Timebase::is_coarse)).
    pub(crate) fn new(limits: Limits, coarse: bool) -> Self {
        // An exact least-recently-used order across destinations needs them under one lock, and a
        // per-destination limit needs each destination's counts in one bucket. With nothing kept
        // idle, lanes would only send every get through the other lanes before it dials, and
        // every return to them for room it cannot get.
        let (lanes, shards_per_lane) = if limits.max_idle_total.is_some() {
            (1, 1)
        } else if limits.max_open_per_host < usize::MAX || limits.capacity == 0 {
            (1, shard_count())
        } else {
            let lanes = limits
                .lanes
                .map_or_else(lane_count, usize::next_power_of_two);
            (lanes, (shard_count() / lanes).max(1))
        };
        let lru = limits.max_idle_total.map(|_| ());
        Store {
            shards: (0..lanes * shards_per_lane)
                .map(|_| {
                    Padded(Mutex::new(Shard {
                        buckets: HashTable::new(),
                        books: Books {
                            counters: Counters::default(),
                            idle: 0,
                            lru: lru.map(|()| Lru::new()),
                        },
                    }))
                })
                .collect(),
            lanes,
            lane_bits: shards_per_lane.trailing_zeros(),
            shard_mask: shards_per_lane - 1,
            hasher: DefaultHashBuilder::default(),
            closed: AtomicBool::new(false),
            idle_timeout: sure(nanos(limits.idle_timeout), coarse),
            max_lifetime: limits
                .max_lifetime
                .map_or(Nanos::MAX, |lifetime| sure(nanos(lifetime), coarse)),
            limits,
            drain: DrainSignal::default(),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn hash(&self, addr: &D::Addr) -> u64 {
        self.hasher.hash_one(addr)
    }

    /// Whether the store keeps several lanes.
    pub(crate) fn has_lanes(&self) -> bool {
        self.lanes > 1
    }

    /// The lane of the calling thread.
    #[inline]
    pub(crate) fn lane(&self) -> usize {
        if self.lanes == 1 {
            0
        } else {
            thread_lane() & (self.lanes - 1)
        }
    }

    /// Where `hash`'s bucket is in `lane`.
    #[inline]
    fn shard_index(&self, lane: usize, hash: u64) -> usize {
        // The table inside a shard indexes by the low bits of the hash and tags by the top seven;
        // the shard takes bits from the middle (bits 32 and up; at most 7 of them) so the three
        // stay independent for any table below 2^32 entries.
        let in_lane = (hash >> 32) as usize & self.shard_mask;
        (lane << self.lane_bits) | in_lane
    }

    #[inline]
    fn shard(&self, lane: usize, hash: u64) -> &Mutex<Shard<D>> {
        &self.shards[self.shard_index(lane, hash)].0
    }

    /// How many idle connections a new bucket may keep before it asks the other lanes.
    fn first_reservation(&self) -> usize {
        if self.lanes == 1 {
            self.limits.capacity
        } else {
            0
        }
    }

    fn now(&self, now: Nanos) -> Now {
        Now {
            now,
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// When a connection dialed at `born` reaches `max_lifetime` (`Nanos::MAX`: never).
    pub(crate) fn lifetime_end(&self, born: Nanos) -> Nanos {
        born.saturating_add(self.max_lifetime)
    }

    /// Whether a connection dialed at `born` is past `max_lifetime` at `now`.
    pub(crate) fn too_old(&self, born: Nanos, now: Nanos) -> bool {
        self.now(now).too_old(born)
    }

    /// An aftermath that also wakes `shutdown` callers if the pool is closed by the time the
    /// operation's lock is released.
    pub(crate) fn aftermath(&self) -> Aftermath<'_, D> {
        Aftermath {
            work: None,
            closed: &self.closed,
            drain: &self.drain,
        }
    }

    /// The hot path of a get: the newest idle connection to `addr` when it is plainly fine to
    /// hand out. `None` sends the caller down [`Store::checkout`], which handles everything else.
    #[inline]
    pub(crate) fn take_fresh(
        &self,
        lane: usize,
        addr: &D::Addr,
        hash: u64,
        now: Nanos,
    ) -> Option<(Lent<D>, D::Conn, Nanos)> {
        let mut guard = lock(self.shard(lane, hash));
        let Shard { buckets, books } = &mut *guard;
        let mut entry = buckets.find_entry(hash, |b| b.dest.is_for(addr)).ok()?;
        let slot = entry.bucket_index();
        let bucket = entry.get_mut();
        let (oldest, newest) = (bucket.idle.first()?, bucket.idle.last()?);
        // The oldest too, so that a get closes the idle connections whose time is up (on the
        // slow path) rather than leaving them to the next return. The closed flag too: `close`
        // raises it before it empties the shards one by one, and a get must not take what a
        // shard it has not reached yet still holds.
        let fine = now.saturating_sub(oldest.since.min(newest.since)) < self.idle_timeout
            && now.saturating_sub(newest.born) < self.max_lifetime
            && !self.is_closed();
        if !fine {
            return None;
        }
        let idle = bucket.pop_newest(books)?;
        books.counters.hits += 1;
        bucket.held += 1;
        Some((Lent::at(&bucket.dest, slot), idle.conn, idle.born))
    }

    /// The hot path of a return: keeps the connection idle when that is plainly right (the pool
    /// open, no one waiting, room here and under `max_idle_total`, nothing expired). Hands the
    /// connection back otherwise, still held, for [`Store::check_in`].
    ///
    /// Once the connection is idle and the shard unlocked, another thread may take it, return it
    /// and let the last of the pool go, so this reaches the store through `dest` rather than
    /// taking `&self` (a reference that would last the whole call), and touches nothing of the
    /// pool after the unlock. A parked reaper is claimed under the lock and woken through a
    /// counted copy of its signal. The unlock's own store is the last touch: once it lands,
    /// another thread may free the pool while this thread's unlock call is still returning, and
    /// that call reads and writes nothing after the store (the pattern std's `Arc::drop` relies
    /// on too).
    #[inline]
    pub(crate) fn put_fresh(
        dest: &Lent<D>,
        conn: D::Conn,
        born: Nanos,
        now: Nanos,
    ) -> Result<(), D::Conn> {
        let pool = &*dest.pool;
        let store = &pool.store;
        let mut guard = lock(&store.shards[dest.shard].0);
        let Shard { buckets, books } = &mut *guard;
        // Straight to the slot the get found the bucket in, unless the table has moved it since.
        let bucket = match buckets.get_bucket_mut(dest.slot) {
            Some(bucket) if dest.is(&bucket.dest) => bucket,
            _ => match buckets.find_mut(dest.hash, |b| dest.is(&b.dest)) {
                Some(bucket) => bucket,
                None => return Err(conn),
            },
        };
        let oldest_fresh = bucket
            .idle
            .first()
            .is_none_or(|idle| now.saturating_sub(idle.since) < store.idle_timeout);
        let fine = oldest_fresh
            && bucket.idle.len() < bucket.reserved
            && bucket.waiters.is_empty()
            && now.saturating_sub(born) < store.max_lifetime
            && store
                .limits
                .max_idle_total
                .is_none_or(|max| books.idle < max)
            && !store.is_closed();
        if !fine {
            return Err(conn);
        }
        let lru = match books.lru.as_mut() {
            Some(lru) => lru.push_back(DestinationId::of(&bucket.dest)),
            None => LruKey::MAX,
        };
        bucket.held -= 1;
        reserve_first(&mut bucket.idle);
        // `now` was read before the lock, so a return that waited for the lock can stamp an
        // earlier time behind a later one, by at most its wait. Keeping the list in order cost
        // about 0.9 ns here, measured; instead, the hot paths read the ends and leave the rest
        // to the slow ones, which read every stamp (`expire`, `next_deadline`). `take_fresh`
        // takes the newest only when both ends are fresh, else the get's `checkout` expires
        // first; this path keeps a connection only when the oldest is fresh and the lane has
        // room, else `check_in` expires first, which frees the room an expired one held.
        bucket.idle.push(Idle {
            conn,
            since: now,
            born,
            lru,
        });
        books.idle += 1;
        let reaper = pool
            .reaper
            .claim(store.lifetime_end(born))
            .then(|| pool.reaper.clone());
        drop(guard);
        if let Some(reaper) = reaper {
            reaper.notify();
        }
        Ok(())
    }

    /// For a get (`fresh` false): the newest usable idle connection to `addr`. For a dial
    /// (`fresh` true): room to dial, made by closing the oldest idle connection if need be.
    /// Otherwise room to dial, or a place in the queue when the destination is full.
    ///
    /// What it closes on the way goes to `after`, which the caller drops only once it holds what
    /// the checkout counted for it in a guard: closing runs connections' own drops, and should
    /// one panic, the guard gives the count back.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn checkout(
        &self,
        lane: usize,
        addr: &D::Addr,
        hash: u64,
        now: Nanos,
        want: Want,
        made: &mut Option<Arc<Destination<D>>>,
        after: &mut Aftermath<'_, D>,
    ) -> Checkout<D> {
        let (fresh, may_dial) = (want == Want::Fresh, want != Want::ReuseHere);
        let now = self.now(now);
        let shard = self.shard_index(lane, hash);
        let mut guard = lock(&self.shards[shard].0);
        if self.is_closed() {
            return Checkout::Closed;
        }
        let Shard { buckets, books } = &mut *guard;
        let Ok(mut entry) = buckets.find_entry(hash, |b| b.dest.is_for(addr)) else {
            if !may_dial {
                return Checkout::Miss;
            }
            let Some(dest) = made.take() else {
                return Checkout::Make;
            };
            let bucket = self.new_bucket(dest.clone());
            let bucket = buckets.insert_unique(hash, bucket, |b| b.dest.hash);
            bucket.into_mut().dialing = 1;
            return Checkout::Dial(dest);
        };
        let bucket = entry.get_mut();
        // Those whose idle time or lifetime is up go first, whichever is handed out, and make
        // room for a dial as they go.
        bucket.expire(now, books, after);
        if !fresh {
            if let Some(idle) = bucket.pop_newest(books) {
                books.counters.hits += 1;
                bucket.held += 1;
                return Checkout::Reuse(bucket.dest.clone(), idle.conn, idle.born);
            }
        }
        let max_open = self.limits.max_open_per_host;
        if fresh && bucket.open() >= max_open && !bucket.idle.is_empty() {
            bucket.close_oldest(1, Reason::Evicted, books, after);
            // Room goes to whoever was in line first (returns go to waiters before they go idle,
            // so normally no one is).
            bucket.settle(max_open, after);
        }
        if bucket.open() < max_open && bucket.waiters.is_empty() {
            if !may_dial {
                if bucket.is_empty() {
                    // Its expired connections went above; it holds nothing now.
                    remove_bucket(entry, books, after);
                }
                return Checkout::Miss;
            }
            bucket.dialing += 1;
            return Checkout::Dial(bucket.dest.clone());
        }
        books.counters.waits += 1;
        if !self.limits.queue {
            books.counters.wait_timeouts += 1;
            return Checkout::Full;
        }
        let waiter = Arc::new(Waiter::new(fresh));
        bucket.waiters.push_back(waiter.clone());
        Checkout::Wait(bucket.dest.clone(), waiter)
    }

    /// A new destination for `addr` (whose hash is `hash`), for a bucket in `lane`, after a
    /// checkout answered [`Checkout::Make`]. Called with no lock held: it clones the address.
    pub(crate) fn destination(
        &self,
        pool: &Arc<PoolInner<D>>,
        lane: usize,
        addr: &D::Addr,
        hash: u64,
    ) -> Arc<Destination<D>> {
        Arc::new(Destination {
            addr: addr.clone(),
            hash,
            shard: self.shard_index(lane, hash),
            pool: pool.clone(),
        })
    }

    /// An empty bucket for `dest`.
    fn new_bucket(&self, dest: Arc<Destination<D>>) -> Bucket<D> {
        Bucket {
            dest,
            idle: Vec::new(),
            held: 0,
            dialing: 0,
            reserved: self.first_reservation(),
            waiters: Queue::new(),
        }
    }

    /// With several lanes, for a get that found nothing usable in its own lane: the newest usable
    /// idle connection to `addr` in another lane, moved into `lane`'s books as held (a hit) in
    /// one step, with both shards locked, so that no snapshot and no `shutdown` can find it in
    /// neither lane. `None` when no other lane has one. What it closes on the way goes to
    /// `after`, as in [`Store::checkout`].
    pub(crate) fn steal(
        &self,
        lane: usize,
        addr: &D::Addr,
        hash: u64,
        now: Nanos,
        made: &mut Option<Arc<Destination<D>>>,
        after: &mut Aftermath<'_, D>,
    ) -> Option<Checkout<D>> {
        let now = self.now(now);
        let own_shard = self.shard_index(lane, hash);
        for step in 1..self.lanes {
            let other = (lane + step) & (self.lanes - 1);
            let other_shard = self.shard_index(other, hash);
            // Two shards of one destination at once: in lane order, as check_in_with_room
            // takes them.
            let (mut own, mut theirs) = if lane < other {
                let own = lock(&self.shards[own_shard].0);
                (own, lock(&self.shards[other_shard].0))
            } else {
                let theirs = lock(&self.shards[other_shard].0);
                (lock(&self.shards[own_shard].0), theirs)
            };
            if self.is_closed() {
                return None;
            }
            let Shard { buckets, books } = &mut *theirs;
            let Ok(mut entry) = buckets.find_entry(hash, |b| b.dest.is_for(addr)) else {
                continue;
            };
            let bucket = entry.get_mut();
            // Every one whose time is up, the newest, which goes out, among them: stamps may be
            // out of order (see `put_fresh`).
            bucket.expire(now, books, after);
            if bucket.idle.is_empty() {
                if bucket.is_empty() {
                    remove_bucket(entry, books, after);
                }
                continue;
            }
            // This lane's bucket before the connection moves: finding it runs the address's
            // `Eq`, the caller's code, which may panic. Making it would clone the address under
            // both locks: the caller makes the destination with none held, and looks again.
            let Shard {
                buckets: own_buckets,
                books: own_books,
            } = &mut *own;
            let own_bucket = match own_buckets.entry(hash, |b| b.dest.is_for(addr), |b| b.dest.hash)
            {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => match made.take() {
                    Some(dest) => entry.insert(self.new_bucket(dest)).into_mut(),
                    None => return Some(Checkout::Make),
                },
            };
            let Some(idle) = bucket.pop_newest(books) else {
                continue;
            };
            if bucket.is_empty() {
                remove_bucket(entry, books, after);
            }
            own_books.counters.hits += 1;
            own_bucket.held += 1;
            return Some(Checkout::Reuse(
                own_bucket.dest.clone(),
                idle.conn,
                idle.born,
            ));
        }
        None
    }

    /// Runs `f` on `dest`'s bucket under its shard's lock, then gives any room to waiters and
    /// drops the bucket if it is left empty.
    ///
    /// A bucket stays while anything is held or dialing there, so a destination in hand always
    /// finds its bucket; were that ever broken, the operation is skipped rather than panicking
    /// inside a guard's drop.
    #[inline]
    fn with_bucket<R>(
        &self,
        dest: &Arc<Destination<D>>,
        now: Nanos,
        f: impl FnOnce(&mut Bucket<D>, Now, &mut Books, &mut Aftermath<'_, D>) -> R,
    ) -> Option<R> {
        let result = self.with_bucket_if_any(dest, now, f);
        debug_assert!(result.is_some(), "a destination in use has no bucket");
        result
    }

    /// [`Store::with_bucket`], for a caller that may legitimately find the bucket gone: a waiter
    /// that a closing pool turned away holds nothing that keeps the bucket.
    #[inline]
    fn with_bucket_if_any<R>(
        &self,
        dest: &Arc<Destination<D>>,
        now: Nanos,
        f: impl FnOnce(&mut Bucket<D>, Now, &mut Books, &mut Aftermath<'_, D>) -> R,
    ) -> Option<R> {
        let now = self.now(now);
        let mut after = self.aftermath();
        let mut guard = lock(&self.shards[dest.shard].0);
        let Shard { buckets, books } = &mut *guard;
        let mut entry = buckets
            .find_entry(dest.hash, |b| Arc::ptr_eq(&b.dest, dest))
            .ok()?;
        let bucket = entry.get_mut();
        let result = f(bucket, now, books, &mut after);
        bucket.settle(self.limits.max_open_per_host, &mut after);
        if bucket.is_empty() {
            remove_bucket(entry, books, &mut after);
        }
        self.evict_over_total(books, buckets, &mut after);
        drop(guard);
        Some(result)
    }

    /// With `max_idle_total`: closes the least recently returned idle connections, anywhere, until
    /// the total fits.
    #[inline]
    fn evict_over_total(
        &self,
        books: &mut Books,
        buckets: &mut HashTable<Bucket<D>>,
        after: &mut Aftermath<'_, D>,
    ) {
        match self.limits.max_idle_total {
            Some(max_idle_total) if books.idle > max_idle_total => {
                self.evict_lru(max_idle_total, books, buckets, after);
            }
            _ => {}
        }
    }

    #[cold]
    fn evict_lru(
        &self,
        max_idle_total: usize,
        books: &mut Books,
        buckets: &mut HashTable<Bucket<D>>,
        after: &mut Aftermath<'_, D>,
    ) {
        while books.idle > max_idle_total {
            let Some((key, id)) = books.lru.as_ref().and_then(|lru| lru.front()) else {
                return;
            };
            let id = *id;
            let Ok(mut entry) = buckets.find_entry(id.hash, |b| id.is(&b.dest)) else {
                debug_assert!(false, "an idle connection's bucket is gone");
                return;
            };
            let bucket = entry.get_mut();
            // The least recently returned connection anywhere is the oldest of its bucket.
            let index = bucket
                .idle
                .iter()
                .position(|idle| idle.lru == key)
                .unwrap_or(0);
            if let Some(idle) = bucket.take_idle(index, books) {
                after.close(idle.conn);
                books.counters.count(Reason::Evicted, 1);
            }
            bucket.settle(self.limits.max_open_per_host, after);
            if bucket.is_empty() {
                remove_bucket(entry, books, after);
            }
        }
    }

    /// Ends a dial counted by [`Store::checkout`]. A connection that arrives after the pool closed
    /// is counted and must be closed by the caller: `false`.
    pub(crate) fn finish_dial(&self, dest: &Arc<Destination<D>>, outcome: DialOutcome) {
        self.with_bucket(dest, 0, |bucket, _, books, _| {
            bucket.dialing -= 1;
            match outcome {
                DialOutcome::Failed => books.counters.dial_errors += 1,
                DialOutcome::TimedOut => books.counters.dial_timeouts += 1,
                DialOutcome::Cancelled => {}
            }
        });
    }

    /// Ends a dial counted by [`Store::checkout`] that connected: the connection, now counted as
    /// held, or `None` when the pool closed meanwhile. Then it is counted closed and closed here,
    /// before `shutdown` can hear that everything came back.
    pub(crate) fn finish_connected(
        &self,
        dest: &Arc<Destination<D>>,
        conn: D::Conn,
    ) -> Option<D::Conn> {
        self.with_bucket(dest, 0, |bucket, _, books, after| {
            // Read under the shard lock: close() sets the flag before it drains each shard, so
            // either this sees it or the drain sees the connection.
            let closed = self.is_closed();
            bucket.dialing -= 1;
            books.counters.dials += 1;
            if closed {
                books.counters.count(Reason::PoolClosed, 1);
                after.close(conn);
                return None;
            }
            bucket.held += 1;
            Some(conn)
        })
        .flatten()
    }

    /// Takes back a held connection: to the oldest waiter, else idle if the pool is open, the
    /// connection young enough and the destination has room. Returns `true` when it went idle.
    #[inline]
    pub(crate) fn check_in(
        &self,
        dest: &Arc<Destination<D>>,
        conn: D::Conn,
        born: Nanos,
        now: Nanos,
    ) -> bool {
        let no_room = self.with_bucket(dest, now, |bucket, now, books, after| {
            bucket.held -= 1;
            match self.keep_or_close(bucket, conn, born, now, books, after) {
                Ok(kept) => Ok(kept),
                Err(conn) if self.lanes == 1 => {
                    books.counters.count(Reason::OverCapacity, 1);
                    after.close(conn);
                    Ok(false)
                }
                Err(conn) => {
                    // Still held until the other lanes have been asked for room.
                    bucket.held += 1;
                    Err(conn)
                }
            }
        });
        match no_room {
            Some(Ok(kept)) => kept,
            Some(Err(conn)) => self.check_in_with_room(dest, conn, born, now),
            None => false,
        }
    }

    /// The end of a return under the shard lock, the connection already off `held`: closed when the
    /// pool is or the connection is too old, else to a waiter or idle. `Err` when the lane has no
    /// room for it.
    fn keep_or_close(
        &self,
        bucket: &mut Bucket<D>,
        conn: D::Conn,
        born: Nanos,
        now: Now,
        books: &mut Books,
        after: &mut Aftermath<'_, D>,
    ) -> Result<bool, D::Conn> {
        // Under the shard lock, as in finish_dial.
        if self.is_closed() {
            books.counters.count(Reason::PoolClosed, 1);
            after.close(conn);
            return Ok(false);
        }
        if now.too_old(born) {
            // The idle connections whose time is up go too, as at any return.
            bucket.expire(now, books, after);
            books.counters.count(Reason::Lifetime, 1);
            after.close(conn);
            return Ok(false);
        }
        bucket.check_in(conn, born, now, books, after)
    }

    /// A return to a lane that has no room left of what it reserved: with every lane's shard for
    /// the destination locked, the lane reserves
    /// one more when the reservations leave some of `capacity` free, or takes one over from a lane
    /// that has reserved more than it keeps idle. With neither, the destination holds `capacity`
    /// idle connections and this one is closed.
    #[cold]
    fn check_in_with_room(
        &self,
        dest: &Arc<Destination<D>>,
        conn: D::Conn,
        born: Nanos,
        now: Nanos,
    ) -> bool {
        let now = self.now(now);
        let mut after = self.aftermath();
        // The other lanes' buckets are found by the address's `Eq`, the caller's code: should it
        // panic, the locks go, then the connection, then its count.
        let lent = Lent::new(dest);
        let ending = lent.ending(Reason::Panicking);
        let conn = conn;
        let in_lane = dest.shard & self.shard_mask;
        let own = dest.shard >> self.lane_bits;
        // The only other place that holds two shard locks is `steal`, and both take a
        // destination's shards in lane order, so they cannot deadlock; everything else holds one
        // shard lock at a time. Keep it so.
        let mut guards: Vec<_> = (0..self.lanes)
            .map(|lane| lock(&self.shards[(lane << self.lane_bits) | in_lane].0))
            .collect();
        // Expired connections in the other lanes give their room back first.
        for (lane, shard) in guards.iter_mut().enumerate() {
            let Shard { buckets, books } = &mut **shard;
            if lane == own {
                continue;
            }
            if let Ok(mut entry) = buckets.find_entry(dest.hash, |b| b.dest.is_for(&dest.addr)) {
                entry.get_mut().expire(now, books, &mut after);
                if entry.get().is_empty() {
                    remove_bucket(entry, books, &mut after);
                }
            }
        }
        let reserved: usize = guards
            .iter()
            .filter_map(|shard| shard.buckets.find(dest.hash, |b| b.dest.is_for(&dest.addr)))
            .map(|bucket| bucket.reserved)
            .sum();
        let mut granted = reserved < self.limits.capacity;
        if !granted {
            for (lane, shard) in guards.iter_mut().enumerate() {
                if lane == own {
                    continue;
                }
                let spare = shard
                    .buckets
                    .find_mut(dest.hash, |b| b.dest.is_for(&dest.addr))
                    .filter(|bucket| bucket.reserved > bucket.idle.len());
                if let Some(bucket) = spare {
                    bucket.reserved -= 1;
                    granted = true;
                    break;
                }
            }
        }
        let Shard { buckets, books } = &mut *guards[own];
        let Ok(mut entry) = buckets.find_entry(dest.hash, |b| Arc::ptr_eq(&b.dest, dest)) else {
            ending.disarm();
            debug_assert!(false, "a destination in use has no bucket");
            return false;
        };
        ending.disarm();
        let bucket = entry.get_mut();
        bucket.held -= 1;
        if granted {
            bucket.reserved += 1;
        }
        let kept = match self.keep_or_close(bucket, conn, born, now, books, &mut after) {
            Ok(kept) => kept,
            Err(conn) => {
                books.counters.count(Reason::OverCapacity, 1);
                after.close(conn);
                false
            }
        };
        if bucket.is_empty() {
            remove_bucket(entry, books, &mut after);
        }
        drop(guards);
        kept
    }

    /// Takes a held connection out of the accounting, for `reason`; the caller closes or keeps it.
    /// With `now`, also closes the destination's idle connections whose time is up there.
    pub(crate) fn forget(&self, dest: &Arc<Destination<D>>, reason: Reason, now: Option<Nanos>) {
        self.with_bucket(dest, now.unwrap_or(0), |bucket, at, books, after| {
            bucket.held -= 1;
            books.counters.count(reason, 1);
            if now.is_some() {
                bucket.expire(at, books, after);
            }
        });
    }

    /// [`Store::forget`] for a connection a waiter was handed and turned down (`reason`), keeping
    /// its slot for the waiter to dial in: the waiter keeps its turn instead of going to the back
    /// of the queue while the slot goes to the next in line. The caller closes the connection and
    /// dials, as after a `Grant::Slot`.
    pub(crate) fn dial_instead(&self, dest: &Arc<Destination<D>>, reason: Reason) {
        self.with_bucket(dest, 0, |bucket, _, books, _| {
            bucket.held -= 1;
            bucket.dialing += 1;
            books.counters.count(reason, 1);
        });
    }

    /// Takes `waiter` out of `dest`'s queue. What it was given meanwhile goes to the caller: to
    /// use when its wait timed out; when it was cancelled, a connection to return (a slot goes
    /// back to the pool here).
    pub(crate) fn leave_queue(
        &self,
        dest: &Arc<Destination<D>>,
        waiter: &Arc<Waiter<D::Conn>>,
        leave: Leave,
    ) -> Left<D::Conn> {
        self.with_bucket_if_any(dest, 0, |bucket, _, books, _| {
            let Some(grant) = waiter.withdraw() else {
                bucket.waiters.retain(|w| !Arc::ptr_eq(w, waiter));
                if leave == Leave::TimedOut {
                    books.counters.wait_timeouts += 1;
                }
                return Left::Nothing;
            };
            match (leave, grant) {
                (Leave::TimedOut, grant) => Left::Grant(grant),
                (Leave::Cancelled, Grant::Conn(conn, born)) => {
                    // Counted as a hit for a get that never saw it. Still held: the caller
                    // returns it as any connection comes back, checked, outside the lock.
                    books.counters.hits -= 1;
                    Left::Grant(Grant::Conn(conn, born))
                }
                (Leave::Cancelled, Grant::Slot) => {
                    bucket.dialing -= 1;
                    Left::Nothing
                }
                (Leave::Cancelled, Grant::Closed) => Left::Nothing,
            }
        })
        // No bucket: the pool closed and turned this waiter away, which nothing can change.
        .unwrap_or_else(|| match waiter.withdraw() {
            Some(grant) if leave == Leave::TimedOut => Left::Grant(grant),
            _ => Left::Nothing,
        })
    }

    /// Closes the idle connections whose time is up. Returns how many, and when the next one's
    /// time will be up (`None` when nothing is idle).
    ///
    /// Every shard is looked at before any connection is closed, so a connection whose own drop
    /// panics stops neither the look nor the other closes (a panic unwinds through the rest of a
    /// list's drops); the panic goes on to the caller after them.
    pub(crate) fn reap(&self, now: Nanos) -> (usize, Option<Nanos>) {
        let now = self.now(now);
        let mut reaped = 0;
        let mut next: Option<Nanos> = None;
        let mut after = self.aftermath();
        for shard in self.shards.iter() {
            let mut guard = lock(&shard.0);
            if guard.books.idle == 0 {
                continue;
            }
            let Shard { buckets, books } = &mut *guard;
            let before = books.idle;
            let max_open = self.limits.max_open_per_host;
            buckets.retain(|bucket| {
                bucket.expire(now, books, &mut after);
                if let Some(deadline) = bucket.next_deadline(now) {
                    next = Some(next.map_or(deadline, |next| next.min(deadline)));
                }
                bucket.settle(max_open, &mut after);
                let keep = !bucket.is_empty();
                if !keep {
                    // The table drops its reference here, this one once the lock is released.
                    after.let_go(bucket.dest.clone());
                }
                keep
            });
            shrink_if_sparse(buckets, books);
            reaped += before - books.idle;
        }
        (reaped, next)
    }

    /// Closes every idle connection to `addr`, in every lane; returns how many. Every lane is
    /// emptied before any connection is closed, as in [`Store::reap`].
    pub(crate) fn purge(&self, addr: &D::Addr, hash: u64) -> usize {
        let mut after = self.aftermath();
        (0..self.lanes)
            .map(|lane| {
                let mut guard = lock(self.shard(lane, hash));
                let Shard { buckets, books } = &mut *guard;
                let Ok(mut entry) = buckets.find_entry(hash, |b| b.dest.is_for(addr)) else {
                    return 0;
                };
                let bucket = entry.get_mut();
                let purged = bucket.idle.len();
                bucket.close_oldest(purged, Reason::Purged, books, &mut after);
                bucket.settle(self.limits.max_open_per_host, &mut after);
                if bucket.is_empty() {
                    remove_bucket(entry, books, &mut after);
                }
                purged
            })
            .sum()
    }

    /// Marks the store closed, closes every idle connection and turns every waiter away.
    /// Idempotent.
    ///
    /// Every shard is emptied, and every waiter told, before any connection is closed, as in
    /// [`Store::reap`]: a connection whose own drop panics leaves nothing behind.
    pub(crate) fn close(&self) {
        // Sequentially consistent for the aftermaths still closing connections: one that ends
        // its count after a `shutdown` read it sees the flag, and wakes that `shutdown`.
        self.closed.store(true, Ordering::SeqCst);
        let mut after = self.aftermath();
        for shard in self.shards.iter() {
            let mut guard = lock(&shard.0);
            let Shard { buckets, books } = &mut *guard;
            buckets.retain(|bucket| {
                let idle = bucket.idle.len();
                bucket.close_oldest(idle, Reason::PoolClosed, books, &mut after);
                for waiter in bucket.waiters.take_all() {
                    after.wake(waiter.grant(Grant::Closed));
                }
                let keep = !bucket.is_empty();
                if !keep {
                    after.let_go(bucket.dest.clone());
                }
                keep
            });
            shrink_if_sparse(buckets, books);
        }
    }

    pub(crate) fn has_idle(&self) -> bool {
        self.shards
            .iter()
            .any(|shard| lock(&shard.0).books.idle > 0)
    }

    /// Nothing held, dialing or waiting anywhere, and nothing the store took off its books still
    /// being closed: a closed pool has nothing left to wait for.
    pub(crate) fn is_drained(&self) -> bool {
        // The count after the shards: a connection that left a shard's books before this looked
        // at the shard was counted under that shard's lock.
        self.shards
            .iter()
            .all(|shard| lock(&shard.0).buckets.is_empty())
            && self.drain.closing.load(Ordering::SeqCst) == 0
    }

    pub(crate) fn drain_signal(&self) -> &DrainSignal {
        &self.drain
    }

    pub(crate) fn stats(&self) -> Stats<D::Addr> {
        let mut seen = Vec::new();
        let mut counters = Counters::default();
        // A destination has a shard in each lane, at the same place in every lane, and a
        // connection moves between lanes only there (`steal`, `check_in_with_room`). Those shards
        // are read together, taken in lane order as those two take them, so a connection moving
        // lanes is counted once, never twice or not at all. Under the locks only the
        // destinations' records are taken: the addresses are cloned (the caller's code) after.
        let mut guards = Vec::with_capacity(self.lanes);
        for in_lane in 0..=self.shard_mask {
            guards.extend(
                (0..self.lanes)
                    .map(|lane| lock(&self.shards[(lane << self.lane_bits) | in_lane].0)),
            );
            for shard in &guards {
                counters.add(&shard.books.counters);
                seen.extend(shard.buckets.iter().filter_map(|bucket| {
                    let total = bucket.held + bucket.idle.len();
                    (total > 0).then(|| {
                        let counts = (total, bucket.idle.len(), bucket.waiters.len());
                        (bucket.dest.clone(), counts)
                    })
                }));
            }
            guards.clear();
        }
        let mut destinations: Vec<_> = seen
            .into_iter()
            .map(|(dest, (total, idle, waiting))| DestinationStats {
                addr: dest.addr.clone(),
                total,
                idle,
                waiting,
            })
            .collect();
        if self.lanes > 1 {
            destinations = merge_lanes(destinations);
        }
        Stats {
            destinations,
            counters,
        }
    }
}

/// A limit of `timeout` as the store counts it: on a `coarse` clock, a 64th of it less, since a
/// coarse reading lags the time and an interval it measures may come out short
/// ([`Timebase::is_coarse`](crate::clock::Timebase::is_coarse)). "Never" stays never.
fn sure(timeout: Nanos, coarse: bool) -> Nanos {
    if timeout == Nanos::MAX || !coarse {
        timeout
    } else {
        timeout - timeout / 64
    }
}

/// Takes a bucket that holds nothing out of its table, and gives the table's memory back if that
/// leaves it mostly empty: every path that empties a bucket ends here, so a burst of destinations
/// gone by a return, a purge, a steal or an eviction shrinks the table at once, without waiting
/// for a reap that a pool with nothing idle may never run.
///
/// The bucket's destination is let go once the lock is released (see [`Aftermath`]).
fn remove_bucket<D: Dialer>(
    entry: OccupiedEntry<'_, Bucket<D>>,
    books: &mut Books,
    after: &mut Aftermath<'_, D>,
) {
    let (bucket, rest) = entry.remove();
    after.let_go(bucket.dest);
    shrink_if_sparse(rest.into_table(), books);
}

/// Gives a table's memory back once it is mostly empty: a burst of destinations held at once grew
/// it, and they are gone. Shrinking only below a quarter full, to twice what is left, keeps it
/// rare: the table must lose three quarters again, or double, before it is resized again. The
/// `max_idle_total` order, which a burst of idle connections grew, goes by the same rule.
fn shrink_if_sparse<D: Dialer>(buckets: &mut HashTable<Bucket<D>>, books: &mut Books) {
    if lru::is_sparse(buckets.len(), buckets.capacity()) {
        buckets.shrink_to(buckets.len() * 2, |b| b.dest.hash);
    }
    let Some(lru) = books.lru.as_mut() else {
        return;
    };
    // Rewriting the keys walks the whole table: only when the table is no larger than the
    // order, so that the walk costs what the order's compaction does, paid for by the quarter of
    // it that left since the last one. With more destinations held than were ever idle at once,
    // the order's spare memory is below the table's own.
    if lru.is_sparse() && buckets.capacity() <= lru.capacity() {
        // One shard holds every destination under `max_idle_total`: every key is in this table.
        let moved = lru.compact();
        for idle in buckets.iter_mut().flat_map(|bucket| &mut bucket.idle) {
            idle.lru = moved[idle.lru];
        }
    }
}

/// One entry per destination out of the entries of several lanes.
fn merge_lanes<A: Clone + Eq + std::hash::Hash>(
    entries: Vec<DestinationStats<A>>,
) -> Vec<DestinationStats<A>> {
    let mut merged: Vec<DestinationStats<A>> = Vec::with_capacity(entries.len());
    let mut index = std::collections::HashMap::with_capacity(entries.len());
    for entry in entries {
        match index.get(&entry.addr) {
            Some(&at) => {
                let into: &mut DestinationStats<A> = &mut merged[at];
                into.total += entry.total;
                into.idle += entry.idle;
                into.waiting += entry.waiting;
            }
            None => {
                index.insert(entry.addr.clone(), merged.len());
                merged.push(entry);
            }
        }
    }
    merged
}

/// Most destinations hold one idle connection or a few: the first push allocates room for one
/// (a plain push would make room for four), and later ones grow as usual.
#[inline]
fn reserve_first<T>(idle: &mut Vec<T>) {
    if idle.capacity() == 0 {
        idle.reserve_exact(1);
    }
}

/// One lane per core (a power of two, at most 16); one under loom, unless a model asks for more
/// (`Builder::lanes`), so that each model explores only the shards it is about.
fn lane_count() -> usize {
    if cfg!(connpool_loom) {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.next_power_of_two().min(16)
}

#[cfg(not(connpool_loom))]
thread_local! {
    /// The calling thread's lane number, `usize::MAX` until it has one.
    static THREAD_LANE: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

// Loom runs a model's threads on one thread of the system: each needs a lane of its own.
#[cfg(connpool_loom)]
loom::thread_local! {
    static THREAD_LANE: std::cell::Cell<usize> = std::cell::Cell::new(usize::MAX);
}

/// The calling thread's lane number, before it is reduced to the pool's lanes: threads are
/// numbered in the order they first get a connection, so busy threads spread over the lanes.
#[inline]
fn thread_lane() -> usize {
    THREAD_LANE
        .try_with(|lane| {
            let mut number = lane.get();
            if number == usize::MAX {
                number = next_lane();
                lane.set(number);
            }
            number
        })
        // While the thread's locals are being torn down: any lane is correct.
        .unwrap_or(0)
}

/// The next thread's lane number.
#[cfg(not(connpool_loom))]
#[cold]
fn next_lane() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The next thread's lane number, counted afresh in each of loom's executions so that they all
/// number the threads alike.
#[cfg(connpool_loom)]
fn next_lane() -> usize {
    loom::lazy_static! {
        static ref NEXT: AtomicUsize = AtomicUsize::new(0);
    }
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Enough shards that a handful of threads seldom share one, as a power of two.
fn shard_count() -> usize {
    if cfg!(connpool_loom) {
        return 1;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    (threads * 8).next_power_of_two().clamp(8, 128)
}
/// Puts the calling thread in lane `number` (reduced to the pool's lanes), so that a test can play
/// several threads from one.
#[cfg(test)]
pub(crate) fn pin_thread_lane(number: usize) {
    THREAD_LANE.with(|lane| lane.set(number));
}

#[cfg(test)]
impl<D: Dialer> Store<D> {
    /// Buckets in the tables, including those that only count a dial in flight.
    fn buckets(&self) -> usize {
        self.shards.iter().map(|s| lock(&s.0).buckets.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use futures::executor::block_on;

    use crate::{dial_fn, ManualClock, Pool, Pooled};

    /// The in-line compare of `String` addresses agrees with `==` at every length around the
    /// words it loads, whichever byte differs.
    #[test]
    fn string_addresses_compare_as_their_eq_does() {
        for len in 0..=24 {
            let text: String = (0..len).map(|i| char::from(b'a' + i as u8)).collect();
            assert!(super::same_addr(&text, &text.clone()), "{len} bytes");
            for at in 0..len {
                let mut other = text.clone().into_bytes();
                other[at] = b'-';
                let other = String::from_utf8(other).unwrap();
                assert!(!super::same_addr(&text, &other), "{len} bytes, byte {at}");
            }
            let longer = format!("{text}z");
            assert!(
                !super::same_addr(&text, &longer),
                "{len} bytes and one more"
            );
            assert!(
                !super::same_addr(&longer, &text),
                "{len} bytes and one fewer"
            );
        }
        // Other types keep their own `==`.
        assert!(super::same_addr(&("a", 1), &("a", 1)));
        assert!(!super::same_addr(&("a", 1), &("a", 2)));
    }

    #[test]
    fn on_a_coarse_clock_the_limits_keep_a_margin_and_never_stays_never() {
        use super::{sure, Nanos};
        assert_eq!(sure(64_000_000_000, true), 63_000_000_000);
        assert_eq!(sure(64_000_000_000, false), 64_000_000_000);
        assert_eq!(sure(Nanos::MAX, true), Nanos::MAX);
    }

    /// Short-lived destinations: every way a connection can end leaves no bucket behind.
    #[test]
    fn empty_destinations_leave_the_map() {
        let clock = ManualClock::new();
        let dialer = dial_fn(|port: u32| async move {
            if port % 5 == 4 {
                Err(std::io::Error::other("refused"))
            } else {
                Ok(port)
            }
        });
        let pool = Pool::builder(dialer)
            .capacity(2)
            .idle_timeout(Duration::from_secs(1))
            .clock(clock.clone())
            .build()
            .unwrap();
        let store = &pool.handle_inner().store;
        for port in 0..100_000u32 {
            match port % 5 {
                0 => drop(block_on(pool.get(&port)).unwrap()),
                1 => block_on(pool.get(&port)).unwrap().release(),
                2 => drop(block_on(pool.dial(&port)).unwrap().detach()),
                // A get dropped before it ran (one dropped mid-dial is the next test).
                3 => drop(pool.get(&port)),
                _ => assert!(block_on(pool.get(&port)).is_err()),
            }
        }
        assert_eq!(store.buckets(), 20_000, "only the idle ones remain");
        clock.advance(Duration::from_secs(1));
        assert_eq!(pool.reap(), 20_000);
        assert_eq!(store.buckets(), 0);
        assert!(pool.stats().destinations.is_empty());
    }

    /// A dialer that panics: the panic is the caller's, the pool's books stay exact.
    #[test]
    fn a_panicking_dialer_leaves_nothing_behind() {
        let dialer = dial_fn(|port: u16| async move {
            if port == 13 {
                panic!("the dialer failed badly");
            }
            Ok::<_, std::io::Error>(port)
        });
        // An idle timeout no slow run (a backtrace printed under valgrind) can reach.
        let pool = Pool::new(dialer, 2, Duration::from_secs(3600)).unwrap();
        drop(block_on(pool.get(&1)).unwrap());
        let before = pool.stats();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = block_on(pool.get(&13));
        }));
        assert!(result.is_err());
        assert_eq!(pool.stats(), before);
        assert_eq!(pool.handle_inner().store.buckets(), 1);
        assert!(block_on(pool.get(&1)).unwrap().is_reused());
    }

    #[test]
    fn a_get_cancelled_while_dialing_leaves_no_bucket() {
        let dialer = dial_fn(|_: u8| std::future::pending::<std::io::Result<()>>());
        let pool = Pool::new(dialer, 2, Duration::from_secs(1)).unwrap();
        for _ in 0..3 {
            let mut fut = pin!(pool.get(&1));
            let poll = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            assert!(matches!(poll, Poll::Pending));
            assert_eq!(pool.handle_inner().store.buckets(), 1);
        }
        assert_eq!(pool.handle_inner().store.buckets(), 0);
    }

    /// How many destinations the memory tests hold at once: enough to grow every shard's table
    /// well past its smallest.
    const BURST: u32 = 20_000;

    /// A dialer of no-op connections to `u32` addresses.
    fn noop_dialer() -> impl crate::Dialer<Addr = u32, Conn = ()> {
        dial_fn(|_addr: u32| async { Ok::<_, std::io::Error>(()) })
    }

    /// A connection to each of [`BURST`] destinations, got (or, with `dial`, dialed) and held.
    fn burst<D: crate::Dialer<Addr = u32>>(pool: &Pool<D>, dial: bool) -> Vec<Pooled<D>> {
        (0..BURST)
            .map(|addr| {
                if dial {
                    block_on(pool.dial(&addr)).unwrap()
                } else {
                    block_on(pool.get(&addr)).unwrap()
                }
            })
            .collect()
    }

    /// The bytes of `shards`' tables.
    fn table_bytes<D: crate::Dialer>(
        shards: &[super::Padded<super::Mutex<super::Shard<D>>>],
    ) -> usize {
        shards
            .iter()
            .map(|shard| super::lock(&shard.0).buckets.allocation_size())
            .sum()
    }

    /// The shards of `lane` (all of them with one lane).
    fn lane<D: crate::Dialer>(
        store: &super::Store<D>,
        lane: usize,
    ) -> &[super::Padded<super::Mutex<super::Shard<D>>>] {
        let per_lane = store.shard_mask + 1;
        &store.shards[lane * per_lane..(lane + 1) * per_lane]
    }

    /// Destinations held all at once grow the shards' tables. Every way they can leave gives the
    /// memory back by itself: releases, expiry and a reap, purges, steals by another lane, and
    /// closing the pool. Only expiry needs the reap; the others leave nothing idle that a reaper
    /// would come for.
    #[test]
    fn a_burst_of_destinations_gives_its_memory_back() {
        let clock = ManualClock::new();
        let pool = Pool::builder(noop_dialer())
            .lanes(2)
            .capacity(2)
            .idle_timeout(Duration::from_secs(1))
            .clock(clock.clone())
            .build()
            .unwrap();
        let store = &pool.handle_inner().store;
        let size = || table_bytes(&store.shards);
        let empty = size();
        for ending in ["release", "expire", "purge", "steal", "close"] {
            super::pin_thread_lane(0);
            let held = burst(&pool, false);
            let grown = size();
            assert!(
                grown > 8 * empty.max(1),
                "{ending}: the burst grew the tables"
            );
            match ending {
                "release" => held.into_iter().for_each(Pooled::release),
                "expire" => {
                    drop(held);
                    clock.advance(Duration::from_secs(2));
                    assert_eq!(pool.reap(), BURST as usize);
                }
                "purge" => {
                    drop(held);
                    for addr in 0..BURST {
                        assert_eq!(pool.purge(&addr), 1);
                    }
                }
                "steal" => {
                    drop(held);
                    super::pin_thread_lane(1);
                    for conn in burst(&pool, false) {
                        assert!(conn.is_reused(), "taken from lane 0");
                        conn.release();
                    }
                }
                _ => {
                    drop(held);
                    assert_eq!(pool.stats().idle(), BURST as usize);
                    pool.close();
                }
            }
            assert_eq!(store.buckets(), 0, "{ending}");
            assert!(
                size() < grown / 8,
                "{ending}: the tables keep {} of {grown} bytes",
                size()
            );
        }
    }

    /// Under `max_idle_total`, a burst of destinations each left with an idle connection grows
    /// the order the cap keeps; every way they go gives its memory back with the table's, and
    /// destinations left behind keep their connections in order.
    #[test]
    fn a_burst_of_idle_destinations_gives_the_idle_order_memory_back() {
        let lru_bytes = |pool: &Pool<_>| {
            let store = &pool.handle_inner().store;
            let shard = super::lock(&store.shards[0].0);
            shard
                .books
                .lru
                .as_ref()
                .map_or(0, |lru| lru.allocation_size())
        };
        for ending in ["expire", "purge", "release"] {
            let clock = ManualClock::new();
            let pool = Pool::builder(noop_dialer())
                .capacity(2)
                .max_idle_total(BURST as usize + 10)
                .idle_timeout(Duration::from_secs(10))
                .clock(clock.clone())
                .build()
                .unwrap();
            // Two destinations that stay, one idle before the burst and one after it.
            drop(block_on(pool.get(&(BURST + 1))));
            drop(burst(&pool, false));
            drop(block_on(pool.get(&(BURST + 2))));
            let grown = lru_bytes(&pool);
            assert!(grown >= BURST as usize * 16, "{ending}: {grown} bytes");
            match ending {
                "expire" => {
                    clock.advance(Duration::from_secs(5));
                    // The two keep theirs: got and returned again, newer than the burst.
                    drop(block_on(pool.get(&(BURST + 1))));
                    drop(block_on(pool.get(&(BURST + 2))));
                    clock.advance(Duration::from_secs(5));
                    assert_eq!(pool.reap(), BURST as usize);
                }
                "purge" => {
                    for addr in 0..BURST {
                        assert_eq!(pool.purge(&addr), 1);
                    }
                }
                _ => {
                    for addr in 0..BURST {
                        block_on(pool.get(&addr)).unwrap().release();
                    }
                }
            }
            let stats = pool.stats();
            assert_eq!(stats.destinations.len(), 2, "{ending}: {stats:?}");
            assert!(
                lru_bytes(&pool) < grown / 8,
                "{ending}: the idle order keeps {} of {grown} bytes",
                lru_bytes(&pool)
            );
            // The keys the two left keep were rewritten: each leaves the order by its own.
            assert_eq!(pool.purge(&(BURST + 1)) + pool.purge(&(BURST + 2)), 2);
            let store = &pool.handle_inner().store;
            let shard = super::lock(&store.shards[0].0);
            assert_eq!(shard.books.lru.as_ref().map(|lru| lru.len()), Some(0));
        }
    }

    /// The order's compaction rewrites every key by walking the destinations' table, so it waits
    /// while the table is larger than the order: many destinations held beside a small idle set
    /// that swings would otherwise pay that walk again and again. Once the held ones go, the order
    /// gives its memory back.
    #[test]
    fn the_idle_order_is_compacted_only_when_the_table_is_no_larger() {
        const IDLE: u32 = 1_000;
        let lru_capacity = |pool: &Pool<_>| {
            let store = &pool.handle_inner().store;
            let shard = super::lock(&store.shards[0].0);
            let table = shard.buckets.capacity();
            (
                shard.books.lru.as_ref().map_or(0, |lru| lru.capacity()),
                table,
            )
        };
        let pool = Pool::builder(noop_dialer())
            .capacity(2)
            .max_idle_total(IDLE as usize + 10)
            .idle_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let held = burst(&pool, false);
        // A small burst of idle destinations beside the held ones, then gone.
        for addr in BURST..BURST + IDLE {
            drop(block_on(pool.get(&addr)));
        }
        let (grown, table) = lru_capacity(&pool);
        assert!(grown >= IDLE as usize && table > grown, "{grown} {table}");
        for addr in BURST..BURST + IDLE {
            assert_eq!(pool.purge(&addr), 1);
        }
        assert_eq!(
            lru_capacity(&pool).0,
            grown,
            "compacted beside a larger table"
        );
        // Back under `max_idle_total`, most are closed as they return; the rest are purged.
        drop(held);
        for addr in 0..BURST {
            pool.purge(&addr);
        }
        assert!(pool.stats().destinations.is_empty());
        let (left, table) = lru_capacity(&pool);
        assert!(
            left < grown / 4,
            "the order keeps {left} of {grown} nodes (table {table})"
        );
    }

    /// The return's fast path, which a pool with one lane takes from the first return (its bucket
    /// reserves the whole capacity at once): it keeps a connection only when nothing idle at its
    /// destination has reached its idle timeout and the connection has not reached its lifetime,
    /// to the nanosecond, as the slow path counts them. Otherwise the slow path closes what is due.
    #[test]
    fn the_returns_fast_path_keeps_nothing_past_its_time() {
        let idle_timeout = Duration::from_secs(60);
        let lifetime = Duration::from_secs(3600);
        let cases = [
            ("idle timeout reached", idle_timeout),
            (
                "idle timeout passed",
                idle_timeout + Duration::from_secs(10),
            ),
            ("lifetime reached", lifetime),
        ];
        for (how, after) in cases {
            let clock = ManualClock::new();
            let pool = Pool::builder(noop_dialer())
                .lanes(1)
                .capacity(4)
                .idle_timeout(idle_timeout)
                .max_lifetime(lifetime)
                .clock(clock.clone())
                .build()
                .unwrap();
            let held = block_on(pool.get(&1)).unwrap();
            if after == lifetime {
                clock.advance(after);
                drop(held);
                let counters = pool.stats().counters;
                assert_eq!(counters.closed_lifetime, 1, "{how}: {counters:?}");
                assert_eq!(pool.stats().idle(), 0, "{how}");
            } else {
                drop(block_on(pool.get(&1)).unwrap());
                clock.advance(after);
                drop(held);
                let counters = pool.stats().counters;
                assert_eq!(counters.closed_expired, 1, "{how}: {counters:?}");
                assert_eq!(pool.stats().idle(), 1, "{how}: only the one just returned");
            }
        }
    }

    /// With nothing kept idle, one lane: several would only send every get through the others
    /// before it dials, and every return to them for room.
    #[test]
    fn a_pool_that_keeps_nothing_idle_has_one_lane() {
        let keeps_one = Pool::builder(noop_dialer())
            .lanes(2)
            .capacity(1)
            .build()
            .unwrap();
        assert!(keeps_one.handle_inner().store.has_lanes());
        let keeps_none = Pool::builder(noop_dialer())
            .lanes(2)
            .capacity(0)
            .build()
            .unwrap();
        assert!(!keeps_none.handle_inner().store.has_lanes());
    }

    /// The burst test's two remaining ways out: evictions under `max_idle_total`, and returns
    /// that ask the other lanes for room (and close their expired connections on the way, or
    /// find none and close their own).
    #[test]
    fn memory_comes_back_from_evictions_and_from_returns_that_ask_other_lanes() {
        let clock = ManualClock::new();

        // Evictions: each return past the cap closes the least recently returned connection,
        // whose bucket then holds nothing.
        let capped = Pool::builder(noop_dialer())
            .max_idle_total(100)
            .clock(clock.clone())
            .build()
            .unwrap();
        let store = &capped.handle_inner().store;
        let held = burst(&capped, false);
        let grown = table_bytes(lane(store, 0));
        drop(held);
        assert_eq!(store.buckets(), 100);
        let left = table_bytes(lane(store, 0));
        assert!(left < grown / 8, "evicted: {left} of {grown} bytes");

        for ending in [
            "closed over capacity",
            "expired elsewhere",
            "expired, seen by a steal",
        ] {
            let pool = Pool::builder(noop_dialer())
                .lanes(2)
                .capacity(1)
                .idle_timeout(Duration::from_secs(1))
                .clock(clock.clone())
                .build()
                .unwrap();
            let store = &pool.handle_inner().store;
            // Every destination idle in lane 0, which holds its whole capacity.
            super::pin_thread_lane(0);
            drop(burst(&pool, false));
            let (kept_lane, emptied_lane) = match ending {
                "closed over capacity" => (0, 1),
                _ => {
                    clock.advance(Duration::from_secs(2));
                    (1, 0)
                }
            };
            // Lane 1 dials each destination afresh and returns it: with no room to be had, the
            // connection is closed and lane 1's bucket goes; with lane 0's connection expired,
            // lane 0's bucket goes and lane 1 keeps the connection. Or lane 1 gets each one: its
            // look into lane 0 finds the connection expired and closes it, lane 0's bucket goes,
            // and lane 1 dials (and releases what it dialed).
            super::pin_thread_lane(1);
            let stolen = ending == "expired, seen by a steal";
            // Lane 0's tables grew with the first burst, lane 1's grow with this one.
            let before = table_bytes(lane(store, emptied_lane));
            let held = burst(&pool, !stolen);
            let grown = before.max(table_bytes(lane(store, emptied_lane)));
            if stolen {
                held.into_iter().for_each(Pooled::release);
            } else {
                drop(held);
            }
            let left = table_bytes(lane(store, emptied_lane));
            assert!(left < grown / 8, "{ending}: {left} of {grown} bytes");
            if !stolen {
                assert_eq!(pool.stats().idle(), BURST as usize, "{ending}");
                assert!(table_bytes(lane(store, kept_lane)) > grown / 2, "{ending}");
            }
        }
    }

    mod lanes {
        use std::collections::HashSet;
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::{mpsc, Arc, Mutex};
        use std::time::{Duration, Instant};

        use futures::executor::block_on;
        use futures::future::BoxFuture;

        use crate::store::pin_thread_lane;
        use crate::{dial_fn, Clock, DialFn, ManualClock, Pool, Pooled};

        type Conn = (u8, u64);
        type Dialer = DialFn<
            u8,
            Conn,
            Box<dyn Fn(u8) -> futures::future::Ready<std::io::Result<Conn>> + Send + Sync>,
        >;

        /// A dialer whose connections are numbered in dialing order.
        fn numbered() -> Dialer {
            let next = Arc::new(AtomicU64::new(0));
            dial_fn(Box::new(move |addr: u8| {
                futures::future::ready(Ok((addr, next.fetch_add(1, Ordering::Relaxed))))
            }))
        }

        /// A pool with `lanes` lanes whose connections are numbered in dialing order.
        fn pool(lanes: usize, capacity: usize, clock: &ManualClock) -> Pool<Dialer> {
            Pool::builder(numbered())
                .lanes(lanes)
                .capacity(capacity)
                .idle_timeout(Duration::from_secs(10))
                .clock(clock.clone())
                .build()
                .unwrap()
        }

        fn get(pool: &Pool<Dialer>, lane: usize, addr: u8) -> Pooled<Dialer> {
            pin_thread_lane(lane);
            block_on(pool.get(&addr)).unwrap()
        }

        fn idle(pool: &Pool<Dialer>, addr: u8) -> usize {
            pool.stats().destination(&addr).map_or(0, |d| d.idle)
        }

        #[test]
        fn a_lane_reuses_what_another_returned_and_capacity_holds_across_lanes() {
            let clock = ManualClock::new();
            let pool = pool(2, 2, &clock);
            let held: Vec<_> = (0..3).map(|_| get(&pool, 0, 7)).collect();
            drop(held);
            assert_eq!(idle(&pool, 7), 2);
            assert_eq!(pool.stats().counters.closed_over_capacity, 1);

            // Lane 1 has nothing of its own: it takes lane 0's newest.
            let conn = get(&pool, 1, 7);
            assert!(conn.is_reused());
            assert_eq!(conn.1, 1, "lane 0's newest");
            // Back into lane 1, which takes over the room lane 0 no longer uses.
            drop(conn);
            assert_eq!(idle(&pool, 7), 2);
            assert_eq!(
                pool.stats().destinations.len(),
                1,
                "one entry per destination"
            );

            // Lane 1 first takes its own, then lane 0's; a third is dialed.
            let first = get(&pool, 1, 7);
            assert_eq!(first.1, 1);
            let second = get(&pool, 1, 7);
            assert_eq!(second.1, 0);
            let third = get(&pool, 1, 7);
            assert!(!third.is_reused());
            pin_thread_lane(1);
            drop((first, second, third));
            assert_eq!(
                idle(&pool, 7),
                2,
                "never more than the capacity, whatever the lane"
            );
            let stats = pool.stats();
            assert_eq!(stats.counters.closed_over_capacity, 2);
            assert_eq!(stats.counters.hits, 3);
            assert_eq!(stats.counters.dials, 4);

            // Purge and close reach every lane.
            let conn = get(&pool, 0, 7);
            drop(conn);
            assert_eq!(pool.purge(&7), 2);
            assert!(pool.stats().destinations.is_empty());
            assert_eq!(
                pool.handle_inner().store.buckets(),
                0,
                "no empty bucket in any lane"
            );
        }

        #[test]
        fn a_lane_uses_its_own_older_connection_before_taking_another_lanes() {
            let clock = ManualClock::new();
            let pool = Pool::builder(numbered())
                .lanes(2)
                .capacity(4)
                .idle_timeout(Duration::from_secs(60))
                .max_lifetime(Duration::from_secs(10))
                .clock(clock.clone())
                .build()
                .unwrap();
            let old = get(&pool, 0, 7);
            clock.advance(Duration::from_secs(6));
            let young = get(&pool, 0, 7);
            // Lane 1 dials its own, since lane 0 has nothing idle yet.
            let other = get(&pool, 1, 7);
            let (old_id, young_id, other_id) = (old.1, young.1, other.1);
            drop(other);
            // Lane 0 keeps [young, old]: the newest is the old one.
            pin_thread_lane(0);
            drop(young);
            drop(old);
            clock.advance(Duration::from_secs(5));
            // The old one is past its lifetime; lane 0 still has the young one, which comes
            // before lane 1's.
            let conn = get(&pool, 0, 7);
            assert_eq!(conn.1, young_id);
            assert!(conn.1 != old_id && conn.1 != other_id);
            assert_eq!(pool.stats().counters.closed_lifetime, 1);
        }

        /// A clock whose next reading, once `stall` holds a pair of channels, is taken and then
        /// held until the test lets it go: the reading thread stops between the time and the lock.
        #[derive(Clone, Default)]
        struct StalledClock {
            time: ManualClock,
            stall: Arc<Mutex<Option<Stall>>>,
        }

        /// Tells the test that the reading was taken; then waits for its word to go on.
        type Stall = (mpsc::Sender<()>, mpsc::Receiver<()>);

        impl Clock for StalledClock {
            fn now(&self) -> Instant {
                let now = self.time.now();
                let stall = self.stall.lock().unwrap().take();
                if let Some((taken, go_on)) = stall {
                    taken.send(()).unwrap();
                    go_on.recv().unwrap();
                }
                now
            }

            fn sleep(&self, dur: Duration) -> BoxFuture<'static, ()> {
                self.time.sleep(dur)
            }
        }

        #[test]
        fn a_connection_taken_from_another_lane_is_never_past_its_idle_time() {
            let clock = StalledClock::default();
            let pool = stalled_pool(&clock, 2);
            let (first, second) = (get(&pool, 0, 7), get(&pool, 0, 7));
            let first_id = first.1;
            // Lane 0 keeps [second (1 s), first (0 s)]: the newest is the older.
            return_out_of_order(&clock, first, second, Duration::from_secs(1));
            assert_eq!(idle(&pool, 7), 2);
            // At 10 s the first has been idle for the whole idle timeout, the second for 9 s.
            clock.time.advance(Duration::from_secs(9));
            // Lane 1 has nothing idle: its get takes from lane 0.
            let got = get(&pool, 1, 7);
            assert_ne!(
                got.1, first_id,
                "handed out a connection idle for its whole timeout"
            );
            assert!(got.is_reused(), "the second, idle for 9 s, goes out");
            assert_eq!(pool.stats().counters.closed_expired, 1);
        }

        /// Two lanes on `clock`, a 10 s idle timeout, `capacity` idle per destination.
        fn stalled_pool(clock: &StalledClock, capacity: usize) -> Pool<Dialer> {
            Pool::builder(numbered())
                .lanes(2)
                .capacity(capacity)
                .idle_timeout(Duration::from_secs(10))
                .clock(clock.clone())
                .build()
                .unwrap()
        }

        /// `first` goes back to lane 0 from another thread, which reads the time and is held
        /// before it takes the lock; meanwhile the clock moves `gap` and `second` goes back to
        /// lane 0; then `first` goes in behind it, stamped `gap` earlier: lane 0's newest idle
        /// connection is its older one.
        fn return_out_of_order(
            clock: &StalledClock,
            first: Pooled<Dialer>,
            second: Pooled<Dialer>,
            gap: Duration,
        ) {
            let (taken, stalled) = mpsc::channel();
            let (go_on, held) = mpsc::channel();
            *clock.stall.lock().unwrap() = Some((taken, held));
            let returning = std::thread::spawn(move || drop(first));
            stalled.recv().unwrap();
            clock.time.advance(gap);
            drop(second);
            go_on.send(()).unwrap();
            returning.join().unwrap();
        }

        #[test]
        fn a_get_keeps_a_fresh_connection_behind_an_expired_newest() {
            let clock = StalledClock::default();
            let pool = stalled_pool(&clock, 2);
            let (first, second) = (get(&pool, 0, 7), get(&pool, 0, 7));
            let second_id = second.1;
            // Lane 0 keeps [second (5 s), first (0 s)].
            return_out_of_order(&clock, first, second, Duration::from_secs(5));
            assert_eq!(idle(&pool, 7), 2);
            // At 10 s the first has been idle for its whole idle timeout, the second for 5 s.
            clock.time.advance(Duration::from_secs(5));
            let got = get(&pool, 0, 7);
            let c = pool.stats().counters;
            assert!(got.is_reused(), "the second is usable: {c:?}");
            assert_eq!(got.1, second_id);
            assert_eq!(
                (c.closed_expired, c.dials),
                (1, 2),
                "only the first expired"
            );
        }

        #[test]
        fn an_expired_connection_behind_a_fresh_one_is_reaped_and_makes_room() {
            let clock = StalledClock::default();
            let pool = stalled_pool(&clock, 2);
            let (first, second, third) = (get(&pool, 0, 7), get(&pool, 0, 7), get(&pool, 0, 7));
            return_out_of_order(&clock, first, second, Duration::from_secs(5));
            let store = &pool.handle_inner().store;
            // At 6 s nothing is due; the first is due at 10 s, the second at 15 s.
            clock.time.advance(Duration::from_secs(1));
            let second = Duration::from_secs(1).as_nanos() as u64;
            assert_eq!(store.reap(6 * second), (0, Some(10 * second)));
            // At 10 s a return to the full lane finds the room the expired first held.
            clock.time.advance(Duration::from_secs(4));
            pin_thread_lane(0);
            drop(third);
            let c = pool.stats().counters;
            assert_eq!((c.closed_expired, c.closed_over_capacity), (1, 0), "{c:?}");
            assert_eq!(idle(&pool, 7), 2);
            // A reap finds an expired connection behind a fresh one too.
            let (first, second) = (get(&pool, 0, 7), get(&pool, 0, 7));
            return_out_of_order(&clock, first, second, Duration::from_secs(5));
            clock.time.advance(Duration::from_secs(5));
            assert_eq!(pool.reap(), 1);
            assert_eq!(pool.stats().counters.closed_expired, 2);
        }

        #[test]
        fn an_expired_connection_between_fresh_ones_is_reaped_and_makes_room() {
            let clock = StalledClock::default();
            let pool = stalled_pool(&clock, 3);
            let (a, b, c, d) = (
                get(&pool, 0, 7),
                get(&pool, 0, 7),
                get(&pool, 0, 7),
                get(&pool, 0, 7),
            );
            // Lane 0 keeps [a (1 s), b (0 s), c (5 s)]: b, behind a, is the oldest.
            return_out_of_order(&clock, b, a, Duration::from_secs(1));
            clock.time.advance(Duration::from_secs(4));
            pin_thread_lane(0);
            drop(c);
            // At 10 s b has been idle for its whole idle timeout; a for 9 s, c for 5 s.
            clock.time.advance(Duration::from_secs(5));
            let second = Duration::from_secs(1).as_nanos() as u64;
            let store = &pool.handle_inner().store;
            assert_eq!(store.reap(10 * second), (1, Some(11 * second)));
            // A return to the lane, full again, finds the room.
            drop(d);
            let c = pool.stats().counters;
            assert_eq!((c.closed_expired, c.closed_over_capacity), (1, 0), "{c:?}");
            assert_eq!(idle(&pool, 7), 3);
        }

        #[test]
        fn never_stays_never_on_a_clock_moved_past_what_the_pool_counts() {
            let clock = ManualClock::new();
            let pool = Pool::builder(numbered())
                .lanes(2)
                .capacity(2)
                .idle_timeout(Duration::MAX)
                .clock(clock.clone())
                .build()
                .unwrap();
            let (idle_one, held_one) = (get(&pool, 0, 7), get(&pool, 0, 7));
            drop(idle_one);
            // Past the 584 years the pool's nanoseconds count.
            clock.advance(Duration::MAX);
            drop(held_one);
            let c = pool.stats().counters;
            assert_eq!(c.closed_lifetime, 0, "no lifetime set: {c:?}");
            assert_eq!(pool.reap(), 0, "no idle timeout");
            assert!(get(&pool, 0, 7).is_reused());
            assert_eq!(idle(&pool, 7), 2, "both kept");
        }

        /// A numbered connection; the first one's drop panics when `.1` is set.
        struct Brittle(u64, Arc<std::sync::atomic::AtomicBool>);

        impl Drop for Brittle {
            fn drop(&mut self) {
                if self.0 == 0 && self.1.load(Ordering::SeqCst) {
                    std::panic::resume_unwind(Box::new("a connection's drop failed"));
                }
            }
        }

        /// A pool with two lanes and a 10 s idle timeout whose connections are [`Brittle`], the
        /// first one's drop panicking while `armed` is set.
        fn brittle_pool(
            armed: &Arc<std::sync::atomic::AtomicBool>,
            clock: &ManualClock,
        ) -> Pool<impl crate::Dialer<Addr = u8, Conn = Brittle>> {
            let (next, flag) = (Arc::new(AtomicU64::new(0)), armed.clone());
            Pool::builder(dial_fn(move |_: u8| {
                let conn = Brittle(next.fetch_add(1, Ordering::Relaxed), flag.clone());
                futures::future::ready(Ok::<_, std::io::Error>(conn))
            }))
            .lanes(2)
            .idle_timeout(Duration::from_secs(10))
            .clock(clock.clone())
            .build()
            .unwrap()
        }

        #[test]
        fn a_get_from_another_lane_whose_close_panics_leaves_the_counts_exact() {
            let clock = ManualClock::new();
            let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let pool = brittle_pool(&armed, &clock);
            pin_thread_lane(0);
            let (first, second) = (block_on(pool.get(&7)), block_on(pool.get(&7)));
            drop(first);
            clock.advance(Duration::from_secs(6));
            drop(second);
            clock.advance(Duration::from_secs(5));
            // Lane 1 has nothing: its get takes the second from lane 0, closing the first,
            // expired, on the way, and that close panics.
            armed.store(true, Ordering::SeqCst);
            pin_thread_lane(1);
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                drop(block_on(pool.get(&7)));
            }));
            armed.store(false, Ordering::SeqCst);
            assert!(got.is_err(), "the close panicked");
            let stats = pool.stats();
            let c = &stats.counters;
            assert!(stats.destinations.is_empty(), "{stats:?}");
            assert_eq!((c.dials, c.closed(), c.hits), (2, 2, 0), "{c:?}");
            assert!(block_on(pool.shutdown(Duration::ZERO)));
        }

        #[test]
        fn a_purge_whose_first_close_panics_empties_every_lane() {
            let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let pool = brittle_pool(&armed, &ManualClock::new());
            // The first connection idle in lane 0, the second in lane 1.
            pin_thread_lane(0);
            let first = block_on(pool.get(&7)).unwrap();
            pin_thread_lane(1);
            let second = block_on(pool.get(&7)).unwrap();
            pin_thread_lane(0);
            drop(first);
            pin_thread_lane(1);
            drop(second);
            let idle = |pool: &Pool<_>| pool.stats().destination(&7).map_or(0, |d| d.idle);
            assert_eq!(idle(&pool), 2);
            armed.store(true, Ordering::SeqCst);
            let purged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.purge(&7)));
            armed.store(false, Ordering::SeqCst);
            assert!(purged.is_err(), "the first close panicked");
            assert_eq!(idle(&pool), 0, "both lanes emptied");
            assert_eq!(pool.stats().counters.closed_purged, 2);
        }

        /// An address whose `==`, `clone` and drop panic at the `n`th of their calls after
        /// [`Touchy::arm`]`(n)`, on this thread.
        #[derive(Debug)]
        struct Touchy(u8);

        impl std::hash::Hash for Touchy {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.0.hash(state);
            }
        }

        thread_local! {
            static CALLS_LEFT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }

        impl Touchy {
            fn arm(n: usize) {
                CALLS_LEFT.with(|left| left.set(n));
            }

            /// Whether the armed call has not come yet; disarms.
            fn disarm() -> bool {
                CALLS_LEFT.with(|left| left.replace(0)) > 0
            }

            /// Counts a call of `==`, `clone` or drop; panics if it is the armed one.
            fn call() {
                CALLS_LEFT.with(|left| match left.get() {
                    0 => {}
                    1 => {
                        left.set(0);
                        std::panic::resume_unwind(Box::new(
                            "an address's ==, clone or drop failed",
                        ));
                    }
                    n => left.set(n - 1),
                });
            }
        }

        impl PartialEq for Touchy {
            fn eq(&self, other: &Touchy) -> bool {
                Touchy::call();
                self.0 == other.0
            }
        }

        impl Clone for Touchy {
            fn clone(&self) -> Touchy {
                Touchy::call();
                Touchy(self.0)
            }
        }

        impl Eq for Touchy {}

        impl Drop for Touchy {
            fn drop(&mut self) {
                Touchy::call();
            }
        }

        /// With an address whose `==`, `clone` or drop panics at each of its calls in turn, in
        /// the return that finds no room in its lane and asks the others (`returning`), or in a
        /// get that takes another lane's connection (into a lane that holds one, or none: a new
        /// bucket, made with a clone; the other lane's bucket, emptied, lets its destination and
        /// the address go): every connection is counted where it is, or closed and counted as
        /// closed.
        #[test]
        fn an_address_whose_eq_clone_or_drop_panics_leaves_the_counts_exact() {
            for (returning, second_held) in [(true, true), (false, true), (false, false)] {
                for n in 1.. {
                    let live = Arc::new(AtomicU64::new(0));
                    let counter = live.clone();
                    let pool = Pool::builder(dial_fn(move |_: Touchy| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        futures::future::ready(Ok::<_, std::io::Error>(Live(counter.clone())))
                    }))
                    .lanes(2)
                    .clock(ManualClock::new())
                    .build()
                    .unwrap();
                    let addr = Touchy(7);
                    // Lane 0 holds one connection, lane 1 another, or nothing.
                    pin_thread_lane(0);
                    let first = block_on(pool.get(&addr)).unwrap();
                    pin_thread_lane(1);
                    let mut held = Vec::new();
                    if second_held {
                        held.push(block_on(pool.get(&addr)).unwrap());
                    }
                    pin_thread_lane(0);
                    if returning {
                        Touchy::arm(n);
                        let unwound =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                drop(first);
                            }));
                        if Touchy::disarm() {
                            assert!(unwound.is_ok());
                            break;
                        }
                        assert!(unwound.is_err(), "call {n} panicked");
                    } else {
                        drop(first); // idle in lane 0
                        pin_thread_lane(1);
                        Touchy::arm(n);
                        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            block_on(pool.get(&addr)).unwrap()
                        }));
                        if Touchy::disarm() {
                            held.push(got.unwrap());
                            break;
                        }
                        assert!(got.is_err(), "call {n} panicked");
                    }
                    let stats = pool.stats();
                    let c = &stats.counters;
                    let open = live.load(Ordering::SeqCst);
                    let case =
                        format!("returning {returning}, second held {second_held}, call {n}");
                    assert_eq!(open, stats.total() as u64, "{case}: {stats:?}");
                    assert_eq!(c.dials, c.closed() + open, "{case}: {c:?}");
                    assert_eq!(stats.total() - stats.idle(), held.len(), "{case}");
                    drop(held);
                    assert!(block_on(pool.shutdown(Duration::ZERO)), "{case}");
                    assert_eq!(live.load(Ordering::SeqCst), 0);
                }
            }
        }

        /// A connection that counts itself in `.0` while it lives.
        struct Live(Arc<AtomicU64>);

        impl Drop for Live {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }

        #[test]
        fn capacity_zero_keeps_nothing_in_any_lane() {
            let clock = ManualClock::new();
            let pool = pool(4, 0, &clock);
            for lane in 0..4 {
                drop(get(&pool, lane, 1));
            }
            assert!(pool.stats().destinations.is_empty());
            assert_eq!(pool.stats().counters.closed_over_capacity, 4);
        }

        /// Random gets, dials and returns from four lanes over two destinations, against what must
        /// hold whatever the lanes: a get reuses whenever anything usable is idle, no connection
        /// is held twice or handed out for another address, idle never exceeds the capacity, and
        /// every dialed connection is accounted for once.
        #[test]
        fn random_walk_across_lanes() {
            let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
            let mut random = move |n: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % n
            };
            for _ in 0..40 {
                let clock = ManualClock::new();
                let capacity = random(4) as usize;
                let pool = pool(4, capacity, &clock);
                let mut held: Vec<Pooled<Dialer>> = Vec::new();
                for _ in 0..300 {
                    let lane = random(4) as usize;
                    let addr = random(2) as u8;
                    pin_thread_lane(lane);
                    match random(10) {
                        0..=3 => {
                            let idle_before = idle(&pool, addr);
                            let conn = block_on(pool.get(&addr)).unwrap();
                            assert_eq!(conn.is_reused(), idle_before > 0);
                            assert_eq!(conn.0, addr);
                            held.push(conn);
                        }
                        4 => held.push(block_on(pool.dial(&addr)).unwrap()),
                        5..=7 if !held.is_empty() => {
                            drop(held.swap_remove(random(held.len() as u64) as usize));
                        }
                        8 if !held.is_empty() => {
                            let conn = held.swap_remove(random(held.len() as u64) as usize);
                            if random(2) == 0 {
                                conn.release();
                            } else {
                                let _ = conn.detach();
                            }
                        }
                        9 => match random(3) {
                            0 => {
                                pool.purge(&addr);
                            }
                            1 => {
                                clock.advance(Duration::from_secs(10));
                                pool.reap();
                            }
                            _ => {
                                // Reaped at once, so that what stats call idle is usable.
                                clock.advance(Duration::from_secs(3));
                                pool.reap();
                            }
                        },
                        _ => {}
                    }
                    let ids: HashSet<u64> = held.iter().map(|conn| conn.1).collect();
                    assert_eq!(ids.len(), held.len(), "a connection held twice");
                    let stats = pool.stats();
                    let mut idle_total = 0;
                    for dest in &stats.destinations {
                        assert!(dest.idle <= capacity, "{dest:?} over capacity {capacity}");
                        let held_here = held.iter().filter(|c| c.0 == dest.addr).count();
                        assert_eq!(dest.total, dest.idle + held_here);
                        idle_total += dest.idle;
                    }
                    let c = &stats.counters;
                    assert_eq!(
                        c.dials,
                        (idle_total + held.len()) as u64 + c.closed() + c.detached,
                        "{stats:?}"
                    );
                }
                drop(held);
                clock.advance(Duration::from_secs(10));
                pool.reap();
                assert_eq!(pool.handle_inner().store.buckets(), 0);
            }
        }

        /// A pool of two lanes keeping one idle connection per destination; a connection is its
        /// address's number.
        fn two_lanes<A>(number: fn(&A) -> u32) -> Pool<impl crate::Dialer<Addr = A, Conn = u32>>
        where
            A: Clone + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static,
        {
            let dial = move |addr: A| {
                let number = number(&addr);
                async move { Ok::<_, std::io::Error>(number) }
            };
            Pool::builder(dial_fn(dial))
                .lanes(2)
                .capacity(1)
                .idle_timeout(Duration::from_secs(600))
                .build()
                .unwrap()
        }

        /// An address whose clone, made by `stats` under a shard lock, can be held up once.
        #[derive(Debug, PartialEq, Eq, Hash)]
        struct Slow(u32);

        static HOLD_UP: AtomicU64 = AtomicU64::new(u64::MAX);
        static HELD_UP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        static GO_ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

        impl Clone for Slow {
            fn clone(&self) -> Self {
                if u64::from(self.0) == HOLD_UP.load(Ordering::SeqCst)
                    && !HELD_UP.swap(true, Ordering::SeqCst)
                {
                    while !GO_ON.load(Ordering::SeqCst) {
                        std::thread::yield_now();
                    }
                }
                Slow(self.0)
            }
        }

        /// A connection that moves lanes while `stats` walks the shards is counted once.
        #[test]
        fn stats_counts_a_connection_moving_lanes_once() {
            let pool = two_lanes(|addr: &Slow| addr.0);
            let store = &pool.handle_inner().store;
            let place = |addr: u32| store.shard_index(0, store.hash(&Slow(addr)));
            assert!(store.shard_mask > 0, "several shards per lane");
            // The walk stops at a later place than the target's, past the target's lane 0 shard
            // and before its lane 1 shard (with shards read one at a time).
            let target = (0..).find(|&addr| place(addr) < store.shard_mask).unwrap();
            let later = (1000..).find(|&addr| place(addr) > place(target)).unwrap();
            pin_thread_lane(0);
            drop(block_on(pool.get(&Slow(target))).unwrap());
            drop(block_on(pool.get(&Slow(later))).unwrap());
            HOLD_UP.store(u64::from(later), Ordering::SeqCst);
            let other = pool.clone();
            let mover = std::thread::spawn(move || {
                while !HELD_UP.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                // Lane 1 takes lane 0's idle connection and puts it back idle in its own lane.
                pin_thread_lane(1);
                let conn = block_on(other.get(&Slow(target))).unwrap();
                assert!(conn.is_reused());
                drop(conn);
                GO_ON.store(true, Ordering::SeqCst);
            });
            let stats = pool.stats();
            mover.join().unwrap();
            let at = stats.destination(&Slow(target)).unwrap();
            assert_eq!((at.total, at.idle), (1, 1), "counted once: {at:?}");
            let counters = &stats.counters;
            assert_eq!(
                counters.dials,
                stats.total() as u64 + counters.closed() + counters.detached
            );
        }

        /// An address whose clone waits for a lock of the application's, as a registry's might.
        #[derive(Debug, PartialEq, Eq, Hash)]
        struct Registered(u32);

        static REGISTRY: std::sync::Mutex<()> = std::sync::Mutex::new(());
        static WAITS_ON_REGISTRY: AtomicU64 = AtomicU64::new(u64::MAX);
        static CLONING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

        impl Clone for Registered {
            fn clone(&self) -> Self {
                if u64::from(self.0) == WAITS_ON_REGISTRY.load(Ordering::SeqCst) {
                    CLONING.store(true, Ordering::SeqCst);
                    drop(REGISTRY.lock().unwrap());
                }
                Registered(self.0)
            }
        }

        /// `stats` runs no code of the caller's (the address's `Clone`) under the shard locks: a
        /// thread holding the application's lock and getting a connection from another lane of
        /// the same place goes through while `stats` waits for that lock.
        #[test]
        fn stats_clones_addresses_outside_the_locks() {
            let pool = two_lanes(|addr: &Registered| addr.0);
            let store = &pool.handle_inner().store;
            let place = |addr: u32| store.shard_index(0, store.hash(&Registered(addr)));
            let (a, b) = (0, (1..).find(|&addr| place(addr) == place(0)).unwrap());
            pin_thread_lane(1);
            drop(block_on(pool.get(&Registered(a))).unwrap());
            pin_thread_lane(0);
            drop(block_on(pool.get(&Registered(b))).unwrap());
            WAITS_ON_REGISTRY.store(u64::from(a), Ordering::SeqCst);

            let registry = REGISTRY.lock().unwrap();
            let (listed, listing) = std::sync::mpsc::channel();
            let other = pool.clone();
            std::thread::spawn(move || listed.send(other.stats().destinations.len()).unwrap());
            while !CLONING.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            let (got, getting) = std::sync::mpsc::channel();
            let other = pool.clone();
            std::thread::spawn(move || {
                pin_thread_lane(0);
                drop(block_on(other.get(&Registered(b))).unwrap());
                got.send(()).unwrap();
            });
            let went_through = getting.recv_timeout(Duration::from_secs(5));
            drop(registry);
            assert!(
                went_through.is_ok(),
                "the get waited for stats, stats for the get's thread"
            );
            assert_eq!(listing.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
        }
    }
}
