//! The per-host idle store: the pool's state machine, with no async and no runtime in it.
//!
//! Destinations are spread over a few shards, each a mutex around a hash table of buckets, so that
//! threads working on different destinations rarely meet. A bucket holds one destination's idle
//! connections (last in, first out, stamped with the time they came back) and counts those held by
//! callers and being dialed. Every operation is one short critical section: it takes `now` as an
//! argument, changes the counts, and hands back the connections to close, which are dropped only
//! after the lock is released (closing a socket is a system call that others should not wait for).
//!
//! A bucket leaves its table the moment it holds nothing, so short-lived destinations cost nothing
//! once their connections are gone.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::time::Duration;

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::clock::{nanos, Nanos};
use crate::pool::PoolInner;
use crate::stats::{Counters, DestinationStats, Stats};
use crate::sync::{lock, Arc, AtomicBool, Mutex, Ordering};
use crate::Dialer;

/// One destination: its address, the address's hash, and the pool it belongs to. Its bucket holds
/// one reference and every connection to it (held, or on its way to being dialed) another, so a
/// returning connection finds its bucket by the stored hash and a pointer comparison, without
/// hashing the address again.
pub(crate) struct Destination<D: Dialer> {
    pub(crate) addr: D::Addr,
    hash: u64,
    pub(crate) pool: Arc<PoolInner<D>>,
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
    Released,
    PoolClosed,
    Purged,
    Panicking,
    Detached,
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
            Reason::Released => self.released += n,
            Reason::PoolClosed => self.closed_pool_closed += n,
            Reason::Purged => self.closed_purged += n,
            Reason::Panicking => self.closed_panicking += n,
            Reason::Detached => self.detached += n,
        }
    }
}

/// What a get found in the store.
pub(crate) enum Checkout<D: Dialer> {
    /// An idle connection, now counted as held.
    Reuse(Arc<Destination<D>>, D::Conn),
    /// Nothing idle: the caller is counted as dialing and must end with
    /// [`Store::finish_dial`] or [`Store::cancel_dial`].
    Dial(Arc<Destination<D>>),
    /// The pool is closed.
    Closed,
}

/// How a dial that the store counted ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialOutcome {
    Connected,
    Failed,
}

pub(crate) struct Store<D: Dialer> {
    shards: Box<[Padded<Mutex<Shard<D>>>]>,
    shard_shift: u32,
    hasher: DefaultHashBuilder,
    closed: AtomicBool,
    capacity: usize,
    idle_timeout: Duration,
    idle_timeout_nanos: Nanos,
}

/// Keeps each shard on cache lines of its own, so two threads on two shards do not slow each
/// other down.
#[repr(align(128))]
struct Padded<T>(T);

struct Shard<D: Dialer> {
    buckets: HashTable<Bucket<D>>,
    counters: Counters,
    idle: usize,
}

struct Bucket<D: Dialer> {
    dest: Arc<Destination<D>>,
    /// Oldest at the front, newest at the back: reuse pops the back, expiry drains the front.
    idle: VecDeque<Idle<D::Conn>>,
    held: usize,
    dialing: usize,
}

struct Idle<C> {
    conn: C,
    since: Nanos,
}

impl<D: Dialer> Bucket<D> {
    fn is_empty(&self) -> bool {
        self.idle.is_empty() && self.held == 0 && self.dialing == 0
    }

    /// Moves the connections whose idle time is up into `closing`; returns how many.
    #[inline]
    fn expire(&mut self, now: Nanos, idle_timeout: Nanos, closing: &mut Vec<D::Conn>) -> usize {
        let is_expired = |idle: &Idle<D::Conn>| now.saturating_sub(idle.since) >= idle_timeout;
        // The oldest is at the front: when it is fresh, all are (the common case, kept cheap).
        if !self.idle.front().is_some_and(is_expired) {
            return 0;
        }
        let expired = self.idle.iter().take_while(|idle| is_expired(idle)).count();
        closing.extend(self.idle.drain(..expired).map(|idle| idle.conn));
        expired
    }

    /// When the oldest idle connection's time is up; `None` when nothing is idle or it never is.
    fn next_deadline(&self, idle_timeout: Nanos) -> Option<Nanos> {
        let deadline = self.idle.front()?.since.saturating_add(idle_timeout);
        (deadline < Nanos::MAX).then_some(deadline)
    }
}

impl<D: Dialer> Store<D> {
    pub(crate) fn new(capacity: usize, idle_timeout: Duration) -> Self {
        let shards = shard_count();
        Store {
            shards: (0..shards)
                .map(|_| {
                    Padded(Mutex::new(Shard {
                        buckets: HashTable::new(),
                        counters: Counters::default(),
                        idle: 0,
                    }))
                })
                .collect(),
            shard_shift: 64 - shards.trailing_zeros(),
            hasher: DefaultHashBuilder::default(),
            closed: AtomicBool::new(false),
            capacity,
            idle_timeout,
            idle_timeout_nanos: nanos(idle_timeout),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    pub(crate) fn hash(&self, addr: &D::Addr) -> u64 {
        self.hasher.hash_one(addr)
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard<D>> {
        // The table inside a shard indexes by the low bits of the hash and tags by the top seven;
        // the shard takes the bits just below the tag so the three stay independent.
        let index = if self.shard_shift == 64 {
            0
        } else {
            ((hash << 7) >> self.shard_shift) as usize
        };
        &self.shards[index].0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The newest usable idle connection to `addr`, or a reservation to dial one.
    pub(crate) fn checkout(
        &self,
        pool: &Arc<PoolInner<D>>,
        addr: &D::Addr,
        hash: u64,
        now: Nanos,
    ) -> Checkout<D> {
        let mut closing = Vec::new();
        let mut guard = lock(self.shard(hash));
        if self.is_closed() {
            return Checkout::Closed;
        }
        let shard = &mut *guard;
        let checkout = match shard.buckets.find_mut(hash, |b| b.dest.addr == *addr) {
            Some(bucket) => match bucket.idle.pop_back() {
                // The newest is fresh: hand it out, leaving any expired older ones to the next
                // return or reap, which check from the oldest end.
                Some(idle) if now.saturating_sub(idle.since) < self.idle_timeout_nanos => {
                    shard.idle -= 1;
                    shard.counters.hits += 1;
                    bucket.held += 1;
                    Checkout::Reuse(bucket.dest.clone(), idle.conn)
                }
                // The newest has expired, so have all the others.
                newest => {
                    closing.extend(newest.map(|idle| idle.conn));
                    closing.extend(bucket.idle.drain(..).map(|idle| idle.conn));
                    shard.idle -= closing.len();
                    shard.counters.count(Reason::Expired, closing.len());
                    bucket.dialing += 1;
                    Checkout::Dial(bucket.dest.clone())
                }
            },
            None => Checkout::Dial(Self::insert_dialing(shard, pool, addr, hash)),
        };
        drop(guard);
        drop(closing);
        checkout
    }

    /// A reservation to dial `addr`, whatever is idle there; `None` when the pool is closed.
    pub(crate) fn reserve_dial(
        &self,
        pool: &Arc<PoolInner<D>>,
        addr: &D::Addr,
        hash: u64,
    ) -> Option<Arc<Destination<D>>> {
        let mut guard = lock(self.shard(hash));
        if self.is_closed() {
            return None;
        }
        let shard = &mut *guard;
        match shard.buckets.find_mut(hash, |b| b.dest.addr == *addr) {
            Some(bucket) => {
                bucket.dialing += 1;
                Some(bucket.dest.clone())
            }
            None => Some(Self::insert_dialing(shard, pool, addr, hash)),
        }
    }

    fn insert_dialing(
        shard: &mut Shard<D>,
        pool: &Arc<PoolInner<D>>,
        addr: &D::Addr,
        hash: u64,
    ) -> Arc<Destination<D>> {
        let dest = Arc::new(Destination {
            addr: addr.clone(),
            hash,
            pool: pool.clone(),
        });
        shard.buckets.insert_unique(
            hash,
            Bucket {
                dest: dest.clone(),
                idle: VecDeque::new(),
                held: 0,
                dialing: 1,
            },
            |b| b.dest.hash,
        );
        dest
    }

    /// Runs `f` on `dest`'s bucket under its shard's lock, and drops the bucket if it is left
    /// empty.
    ///
    /// A bucket stays while anything is held or being dialed there, so a destination in hand
    /// always finds its bucket; were that ever broken, the operation is skipped rather than
    /// panicking inside a guard's drop.
    fn with_bucket<R>(
        &self,
        dest: &Arc<Destination<D>>,
        f: impl FnOnce(&mut Bucket<D>, &mut Counters, &mut usize) -> R,
    ) -> Option<R> {
        let mut guard = lock(self.shard(dest.hash));
        let shard = &mut *guard;
        let entry = shard
            .buckets
            .find_entry(dest.hash, |b| Arc::ptr_eq(&b.dest, dest));
        let Ok(mut entry) = entry else {
            debug_assert!(false, "a destination in use has no bucket");
            return None;
        };
        let result = f(entry.get_mut(), &mut shard.counters, &mut shard.idle);
        if entry.get().is_empty() {
            entry.remove();
        }
        Some(result)
    }

    /// Ends a dial counted by [`Store::checkout`] or [`Store::reserve_dial`]. A connection that
    /// arrives after the pool closed is counted and must be closed by the caller: `false`.
    pub(crate) fn finish_dial(&self, dest: &Arc<Destination<D>>, outcome: DialOutcome) -> bool {
        let closed = self.is_closed();
        self.with_bucket(dest, |bucket, counters, _| {
            bucket.dialing -= 1;
            match outcome {
                DialOutcome::Failed => {
                    counters.dial_errors += 1;
                    false
                }
                DialOutcome::Connected if closed => {
                    counters.dials += 1;
                    counters.count(Reason::PoolClosed, 1);
                    false
                }
                DialOutcome::Connected => {
                    counters.dials += 1;
                    bucket.held += 1;
                    true
                }
            }
        })
        .unwrap_or(false)
    }

    /// Takes back a dial reservation whose caller went away; nothing is counted.
    pub(crate) fn cancel_dial(&self, dest: &Arc<Destination<D>>) {
        self.with_bucket(dest, |bucket, _, _| bucket.dialing -= 1);
    }

    /// Takes back a held connection: keeps it idle if the pool is open and `dest` has room (and
    /// closes the expired ones there while at it). Returns `true` when it was kept.
    pub(crate) fn check_in(&self, dest: &Arc<Destination<D>>, conn: D::Conn, now: Nanos) -> bool {
        let mut closing = Vec::new();
        let kept = self.with_bucket(dest, |bucket, counters, idle| {
            bucket.held -= 1;
            if self.is_closed() {
                counters.count(Reason::PoolClosed, 1);
                closing.push(conn);
                return false;
            }
            let expired = bucket.expire(now, self.idle_timeout_nanos, &mut closing);
            *idle -= expired;
            counters.count(Reason::Expired, expired);
            if bucket.idle.len() >= self.capacity {
                counters.count(Reason::OverCapacity, 1);
                closing.push(conn);
                return false;
            }
            bucket.idle.push_back(Idle { conn, since: now });
            *idle += 1;
            true
        });
        drop(closing);
        kept.unwrap_or(false)
    }

    /// Takes a held connection out of the accounting, for `reason`; the caller closes or keeps it.
    pub(crate) fn forget(&self, dest: &Arc<Destination<D>>, reason: Reason) {
        self.with_bucket(dest, |bucket, counters, _| {
            bucket.held -= 1;
            counters.count(reason, 1);
        });
    }

    /// Closes the idle connections whose time is up. Returns how many, and when the next one's
    /// time will be up (`None` when nothing is idle).
    pub(crate) fn reap(&self, now: Nanos) -> (usize, Option<Nanos>) {
        let mut reaped = 0;
        let mut next: Option<Nanos> = None;
        for shard in self.shards.iter() {
            let mut closing = Vec::new();
            let mut guard = lock(&shard.0);
            if guard.idle == 0 {
                continue;
            }
            let shard = &mut *guard;
            let idle_timeout = self.idle_timeout_nanos;
            let mut expired = 0;
            shard.buckets.retain(|bucket| {
                expired += bucket.expire(now, idle_timeout, &mut closing);
                if let Some(deadline) = bucket.next_deadline(idle_timeout) {
                    next = Some(next.map_or(deadline, |next| next.min(deadline)));
                }
                !bucket.is_empty()
            });
            shard.idle -= expired;
            shard.counters.count(Reason::Expired, expired);
            reaped += expired;
            drop(guard);
            drop(closing);
        }
        (reaped, next)
    }

    /// Closes every idle connection to `addr`; returns how many.
    pub(crate) fn purge(&self, addr: &D::Addr, hash: u64) -> usize {
        let mut guard = lock(self.shard(hash));
        let shard = &mut *guard;
        let Ok(mut entry) = shard.buckets.find_entry(hash, |b| b.dest.addr == *addr) else {
            return 0;
        };
        let closing: Vec<Idle<D::Conn>> = entry.get_mut().idle.drain(..).collect();
        if entry.get().is_empty() {
            entry.remove();
        }
        shard.idle -= closing.len();
        shard.counters.count(Reason::Purged, closing.len());
        drop(guard);
        closing.len()
    }

    /// Marks the store closed and closes every idle connection; returns how many. Idempotent.
    pub(crate) fn close(&self) -> usize {
        self.closed.store(true, Ordering::Release);
        let mut closed = 0;
        for shard in self.shards.iter() {
            let mut closing = Vec::new();
            let mut guard = lock(&shard.0);
            let shard = &mut *guard;
            shard.buckets.retain(|bucket| {
                closing.extend(bucket.idle.drain(..).map(|idle| idle.conn));
                !bucket.is_empty()
            });
            shard.idle = 0;
            shard.counters.count(Reason::PoolClosed, closing.len());
            closed += closing.len();
            drop(guard);
            drop(closing);
        }
        closed
    }

    pub(crate) fn has_idle(&self) -> bool {
        self.shards.iter().any(|shard| lock(&shard.0).idle > 0)
    }

    pub(crate) fn stats(&self) -> Stats<D::Addr> {
        let mut destinations = Vec::new();
        let mut counters = Counters::default();
        for shard in self.shards.iter() {
            let shard = lock(&shard.0);
            counters.add(&shard.counters);
            destinations.extend(shard.buckets.iter().filter_map(|bucket| {
                let total = bucket.held + bucket.idle.len();
                (total > 0).then(|| DestinationStats {
                    addr: bucket.dest.addr.clone(),
                    total,
                    idle: bucket.idle.len(),
                })
            }));
        }
        Stats {
            destinations,
            counters,
        }
    }
}

/// Enough shards that a handful of threads seldom share one, as a power of two.
fn shard_count() -> usize {
    if cfg!(loom) {
        return 1;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    (threads * 8).next_power_of_two().clamp(8, 128)
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

    use crate::{dial_fn, ManualClock, Pool};

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
        for port in 0..10_000u32 {
            match port % 5 {
                0 => drop(block_on(pool.get(&port)).unwrap()),
                1 => block_on(pool.get(&port)).unwrap().release(),
                2 => drop(block_on(pool.dial(&port)).unwrap().detach()),
                // A get dropped before it ran (one dropped mid-dial is the next test).
                3 => drop(pool.get(&port)),
                _ => assert!(block_on(pool.get(&port)).is_err()),
            }
        }
        assert_eq!(store.buckets(), 2_000, "only the idle ones remain");
        clock.advance(Duration::from_secs(1));
        assert_eq!(pool.reap(), 2_000);
        assert_eq!(store.buckets(), 0);
        assert!(pool.stats().destinations.is_empty());
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
}
