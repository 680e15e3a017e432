//! Model-based tests: random sequences of pool operations over several destinations, checked
//! after every step against a plain reference model of what the pool should hold.
//!
//! The model is deliberately naive (vectors, queues and counters; no sharding, hashing or locks),
//! so a disagreement points at the pool. Gets that find their destination at `max_open_per_host`
//! stay pending in the harness until an operation polls or drops them. With `check_on_return`
//! off, a connection killed while held goes back unchecked, and whoever gets it next must turn it
//! down: a get goes on to the next idle connection or dials, a waiter it was handed to dials in
//! its place without losing its turn. Some cases set `max_lifetime` (a connection too old is
//! closed when it comes back, by a get that finds it idle, or by the reaper) or `max_idle_total`
//! (the least recently returned idle connection anywhere makes room). After every step:
//! invariants I1-I7 of DESIGN.md hold, open(addr) <= max_open_per_host, and the pool's stats
//! equal the model's.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use connpool_core::{Counters, Error, ManualClock, Pool, Pooled};
use futures::executor::block_on;
use proptest::prelude::*;
use support::{poll_once, TestDialer};

const ADDRS: [&str; 3] = ["a:1", "b:2", "c:3"];
const IDLE_TIMEOUT_MS: u64 = 1_000;

type Pending = Pin<Box<dyn Future<Output = Result<Pooled<TestDialer>, Error>>>>;

#[derive(Debug, Clone)]
enum Op {
    Get(usize),
    Dial(usize),
    /// Drop the n-th held connection (modulo how many are held).
    Drop(usize),
    Release(usize),
    Detach(usize),
    /// Mark the n-th held connection dead, as if its peer had closed it.
    Kill(usize),
    /// Every idle connection to an address dies, as when its backend restarts.
    KillIdle(usize),
    /// Drop the n-th held connection while the thread panics.
    PanicDrop(usize),
    /// Start a get whose dial stalls, poll it once, and drop it.
    CancelledGet(usize),
    FailingDial(usize),
    /// Poll every pending get once.
    PollWaiters,
    /// Drop the n-th pending get.
    DropWaiter(usize),
    Purge(usize),
    Reap,
    Close,
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let addr = 0..ADDRS.len();
    let n = 0..8usize;
    prop_oneof![
        6 => addr.clone().prop_map(Op::Get),
        2 => addr.clone().prop_map(Op::Dial),
        6 => n.clone().prop_map(Op::Drop),
        1 => n.clone().prop_map(Op::Release),
        1 => n.clone().prop_map(Op::Detach),
        1 => n.clone().prop_map(Op::Kill),
        1 => addr.clone().prop_map(Op::KillIdle),
        1 => n.clone().prop_map(Op::PanicDrop),
        1 => addr.clone().prop_map(Op::CancelledGet),
        1 => addr.clone().prop_map(Op::FailingDial),
        3 => Just(Op::PollWaiters),
        1 => n.clone().prop_map(Op::DropWaiter),
        1 => addr.clone().prop_map(Op::Purge),
        1 => Just(Op::Reap),
        1 => (0..3u64).prop_map(|_| Op::Close),
        3 => (0..1_500u64).prop_map(Op::Advance),
    ]
}

/// What a queued caller has been given and not yet collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Granted {
    Conn(usize),
    Slot,
    Closed,
}

/// What a get or dial should do, by the book.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Reuse(usize),
    Dial,
    Wait(usize),
    Closed,
}

/// What the pool should hold, by the book.
struct Model {
    capacity: usize,
    max_open: usize,
    /// `max_idle_total` (`usize::MAX`: none): past it, the least recently returned idle
    /// connection anywhere is closed.
    max_idle_total: usize,
    /// `max_lifetime` in milliseconds (`u64::MAX`: none), counted from each connection's dial.
    max_lifetime: u64,
    /// `check_on_return`: whether a dead connection coming back is closed, or kept unchecked.
    /// Off where nothing is kept idle (`capacity` or `max_idle_total` 0): the connection is
    /// closed anyway, or handed to a waiter whose get checks it.
    check_on_return: bool,
    now: u64,
    closed: bool,
    /// Per address: idle connections as (id, since, the return's place in the order of all
    /// returns), oldest first.
    idle: BTreeMap<usize, Vec<(usize, u64, u64)>>,
    returns: u64,
    /// When each connection was dialed.
    born: HashMap<usize, u64>,
    /// Held connections: (id, address index, dead), in the harness's order.
    held: Vec<(usize, usize, bool)>,
    /// Per address: queued callers, oldest first.
    queue: BTreeMap<usize, VecDeque<usize>>,
    /// Every pending caller: its address, whether it dials fresh, and what it was given.
    waiters: HashMap<usize, (usize, bool, Option<Granted>)>,
    next_id: usize,
    next_waiter: usize,
    /// Connections whose peer is gone.
    dead: HashSet<usize>,
    counters: Counters,
}

impl Model {
    fn granted(&self, a: usize) -> impl Iterator<Item = Granted> + '_ {
        self.waiters
            .values()
            .filter(move |w| w.0 == a)
            .filter_map(|w| w.2)
    }

    /// Held by callers, including connections handed to a queued caller who has not collected it.
    fn held_at(&self, a: usize) -> usize {
        let granted = self
            .granted(a)
            .filter(|g| matches!(g, Granted::Conn(_)))
            .count();
        self.held.iter().filter(|h| h.1 == a).count() + granted
    }

    fn open(&self, a: usize) -> usize {
        let slots = self.granted(a).filter(|g| *g == Granted::Slot).count();
        self.held_at(a) + self.idle.get(&a).map_or(0, Vec::len) + slots
    }

    fn idle_total(&self) -> usize {
        self.idle.values().map(Vec::len).sum()
    }

    /// Gives `a`'s room to its oldest waiters.
    fn settle(&mut self, a: usize) {
        while self.open(a) < self.max_open {
            let Some(key) = self.queue.entry(a).or_default().pop_front() else {
                return;
            };
            self.waiters.get_mut(&key).unwrap().2 = Some(Granted::Slot);
        }
    }

    /// A connection dialed now.
    fn new_id(&mut self) -> usize {
        self.next_id += 1;
        self.born.insert(self.next_id - 1, self.now);
        self.next_id - 1
    }

    fn too_old(&self, id: usize) -> bool {
        self.now - self.born[&id] >= self.max_lifetime
    }

    /// Closes `a`'s idle connections whose idle time is up.
    fn expire_idle(&mut self, a: usize) {
        let now = self.now;
        let idle = self.idle.entry(a).or_default();
        let expired = idle
            .iter()
            .take_while(|(_, since, _)| now - since >= IDLE_TIMEOUT_MS)
            .count();
        idle.drain(..expired);
        self.counters.closed_expired += expired as u64;
    }

    /// Closes `a`'s idle connections whose lifetime is up.
    fn expire_lifetime(&mut self, a: usize) {
        let (now, max_lifetime, born) = (self.now, self.max_lifetime, &self.born);
        let idle = self.idle.entry(a).or_default();
        let before = idle.len();
        idle.retain(|(id, _, _)| now - born[id] < max_lifetime);
        self.counters.closed_lifetime += (before - idle.len()) as u64;
    }

    /// With `max_idle_total`: closes the least recently returned idle connections until the
    /// total fits.
    fn evict_over_total(&mut self) {
        while self.idle_total() > self.max_idle_total {
            let (a, i) = self
                .idle
                .iter()
                .flat_map(|(a, idle)| idle.iter().enumerate().map(move |(i, e)| (e.2, *a, i)))
                .min()
                .map(|(_, a, i)| (a, i))
                .unwrap();
            self.idle.get_mut(&a).unwrap().remove(i);
            self.counters.closed_evicted += 1;
            self.settle(a);
        }
    }

    fn checkout(&mut self, a: usize, fresh: bool) -> Outcome {
        if self.closed {
            return Outcome::Closed;
        }
        let now = self.now;
        if !fresh {
            // Those whose idle time is up are closed first, whichever is handed out.
            self.expire_idle(a);
            let idle = self.idle.entry(a).or_default();
            while let Some(&(id, since, _)) = idle.last() {
                idle.pop();
                if now - since >= IDLE_TIMEOUT_MS {
                    // The newest is stale, so all are.
                    self.counters.closed_expired += idle.len() as u64 + 1;
                    idle.clear();
                } else if now - self.born[&id] >= self.max_lifetime {
                    self.counters.closed_lifetime += 1;
                } else if self.dead.contains(&id) {
                    self.counters.closed_not_open += 1;
                    self.settle(a);
                    return self.checkout(a, fresh);
                } else {
                    self.counters.hits += 1;
                    return Outcome::Reuse(id);
                }
            }
        }
        if fresh {
            self.expire_idle(a);
            self.expire_lifetime(a);
        }
        if fresh && self.open(a) >= self.max_open && !self.idle.entry(a).or_default().is_empty() {
            self.idle.get_mut(&a).unwrap().remove(0);
            self.counters.closed_evicted += 1;
            self.settle(a);
        }
        if self.open(a) < self.max_open && self.queue.entry(a).or_default().is_empty() {
            return Outcome::Dial;
        }
        let key = self.next_waiter;
        self.next_waiter += 1;
        self.queue.entry(a).or_default().push_back(key);
        self.waiters.insert(key, (a, fresh, None));
        self.counters.waits += 1;
        Outcome::Wait(key)
    }

    /// A good connection comes back to its bucket: to the oldest waiter, or idle if there is room.
    fn check_in(&mut self, id: usize, a: usize) {
        if let Some(key) = self.queue.entry(a).or_default().pop_front() {
            let waiter = self.waiters.get_mut(&key).unwrap();
            if waiter.1 {
                self.counters.closed_evicted += 1;
                waiter.2 = Some(Granted::Slot);
            } else {
                self.counters.hits += 1;
                waiter.2 = Some(Granted::Conn(id));
            }
            return;
        }
        self.expire_idle(a);
        if self.idle[&a].len() >= self.capacity || self.idle_total() >= self.max_idle_total {
            // No room: those past their lifetime make room first. (With room, the pool may or may
            // not close them on the way; `Harness::settle_lifetimes` accepts either.)
            self.expire_lifetime(a);
        }
        let idle = self.idle.entry(a).or_default();
        if idle.len() >= self.capacity {
            self.counters.closed_over_capacity += 1;
        } else {
            idle.push((id, self.now, self.returns));
            self.returns += 1;
            self.evict_over_total();
        }
    }

    /// A dropped guard: closed, or checked in.
    fn give_back(&mut self, id: usize, a: usize, dead: bool) {
        if self.closed {
            self.counters.closed_pool_closed += 1;
        } else if dead && self.check_on_return {
            // Closed, and a return all the same: those whose idle time is up go too.
            self.counters.closed_not_open += 1;
            self.expire_idle(a);
        } else if self.too_old(id) {
            self.counters.closed_lifetime += 1;
            self.expire_idle(a);
        } else {
            if dead {
                // Unchecked: it goes idle or to a waiter, and the next get's check finds it.
                self.dead.insert(id);
            }
            self.check_in(id, a);
        }
        self.settle(a);
    }

    /// A held connection leaves the books for good. Released or detached, it is a return all the
    /// same (`expire`): those whose idle time is up go too; not when its thread is panicking.
    fn forget(&mut self, a: usize, counter: fn(&mut Counters) -> &mut u64, expire: bool) {
        *counter(&mut self.counters) += 1;
        if expire {
            self.expire_idle(a);
        }
        self.settle(a);
    }

    /// A pending caller goes away.
    fn drop_waiter(&mut self, key: usize) {
        let (a, _, granted) = self.waiters.remove(&key).unwrap();
        match granted {
            None => self.queue.entry(a).or_default().retain(|k| *k != key),
            Some(Granted::Conn(id)) => {
                // It comes back unused, checked as a dropped guard's connection is.
                self.counters.hits -= 1;
                let dead = self.dead.contains(&id);
                self.give_back(id, a, dead);
            }
            Some(Granted::Slot) | Some(Granted::Closed) => {}
        }
        self.settle(a);
    }

    fn reap(&mut self) -> usize {
        let before = self.idle_total();
        for a in 0..ADDRS.len() {
            self.expire_idle(a);
            self.expire_lifetime(a);
            self.settle(a);
        }
        before - self.idle_total()
    }
}

struct Harness {
    pool: Pool<TestDialer>,
    dialer: TestDialer,
    clock: ManualClock,
    held: Vec<Pooled<TestDialer>>,
    pending: Vec<(usize, Pending)>,
    model: Model,
}

/// The pool's settings for one case (`None`: the default).
#[derive(Debug, Clone, Copy)]
struct Settings {
    capacity: usize,
    max_open: usize,
    check_on_return: bool,
    max_idle_total: Option<usize>,
    max_lifetime_ms: Option<u64>,
}

impl Harness {
    fn new(settings: Settings) -> Self {
        let Settings {
            capacity,
            max_open,
            check_on_return,
            max_idle_total,
            max_lifetime_ms,
        } = settings;
        let dialer = TestDialer::new();
        let clock = ManualClock::new();
        let mut builder = Pool::builder(dialer.clone())
            .capacity(capacity)
            .idle_timeout(Duration::from_millis(IDLE_TIMEOUT_MS))
            .max_open_per_host(max_open)
            .check_on_return(check_on_return)
            .clock(clock.clone());
        if let Some(n) = max_idle_total {
            builder = builder.max_idle_total(n);
        }
        if let Some(ms) = max_lifetime_ms {
            builder = builder.max_lifetime(Duration::from_millis(ms));
        }
        let pool = builder.build().unwrap();
        Harness {
            pool,
            dialer,
            clock,
            held: Vec::new(),
            pending: Vec::new(),
            model: Model {
                capacity,
                max_open,
                max_idle_total: max_idle_total.unwrap_or(usize::MAX),
                max_lifetime: max_lifetime_ms.unwrap_or(u64::MAX),
                check_on_return: check_on_return && capacity > 0 && max_idle_total != Some(0),
                now: 0,
                closed: false,
                idle: BTreeMap::new(),
                returns: 0,
                born: HashMap::new(),
                held: Vec::new(),
                queue: BTreeMap::new(),
                waiters: HashMap::new(),
                next_id: 0,
                next_waiter: 0,
                dead: HashSet::new(),
                counters: Counters::default(),
            },
        }
    }

    fn take(&mut self, n: usize) -> Option<(Pooled<TestDialer>, (usize, usize, bool))> {
        if self.held.is_empty() {
            return None;
        }
        let i = n % self.held.len();
        Some((self.held.swap_remove(i), self.model.held.swap_remove(i)))
    }

    fn hold(&mut self, conn: Pooled<TestDialer>, id: usize, a: usize, reused: bool) {
        assert_eq!(conn.id, id, "I1/LIFO: wrong connection");
        assert_eq!(conn.is_reused(), reused);
        assert_eq!(conn.addr, ADDRS[a], "I4");
        self.held.push(conn);
        self.model.held.push((id, a, false));
    }

    /// Starts a get or dial: it completes at once, or stays pending in line.
    fn start(&mut self, a: usize, fresh: bool) {
        let pool = self.pool.clone();
        let mut fut: Pending = Box::pin(async move {
            let addr = ADDRS[a].to_string();
            if fresh {
                pool.dial(&addr).await
            } else {
                pool.get(&addr).await
            }
        });
        let poll = poll_once(&mut fut);
        match (self.model.checkout(a, fresh), poll) {
            (Outcome::Reuse(id), Poll::Ready(Ok(conn))) => self.hold(conn, id, a, true),
            (Outcome::Dial, Poll::Ready(Ok(conn))) => {
                let id = self.model.new_id();
                self.model.counters.dials += 1;
                self.hold(conn, id, a, false);
            }
            (Outcome::Wait(key), Poll::Pending) => self.pending.push((key, fut)),
            (Outcome::Closed, Poll::Ready(Err(Error::Closed))) => {}
            (expected, got) => panic!("{} {a}: expected {expected:?}, got {got:?}", fresh),
        }
    }

    fn poll_waiters(&mut self) {
        let mut still = Vec::new();
        for (key, mut fut) in std::mem::take(&mut self.pending) {
            let poll = poll_once(&mut fut);
            let (a, _, granted) = self.model.waiters[&key];
            let m = &mut self.model;
            let granted = match granted {
                // Handed over before the pool closed: nothing once it has.
                Some(Granted::Conn(_)) if m.closed => {
                    m.counters.hits -= 1;
                    m.counters.closed_pool_closed += 1;
                    Some(Granted::Closed)
                }
                Some(Granted::Slot) if m.closed => Some(Granted::Closed),
                // Handed a connection that has since grown too old, or came back unchecked and
                // dead: the caller turns it down and keeps its turn, dialing in its slot.
                Some(Granted::Conn(id)) if m.too_old(id) || m.dead.contains(&id) => {
                    m.counters.hits -= 1;
                    if m.too_old(id) {
                        m.counters.closed_lifetime += 1;
                    } else {
                        m.counters.closed_not_open += 1;
                    }
                    m.waiters.get_mut(&key).unwrap().2 = Some(Granted::Slot);
                    Some(Granted::Slot)
                }
                granted => granted,
            };
            match (granted, poll) {
                (None, Poll::Pending) => {
                    still.push((key, fut));
                    continue;
                }
                (Some(Granted::Conn(id)), Poll::Ready(Ok(conn))) => self.hold(conn, id, a, true),
                (Some(Granted::Slot), Poll::Ready(Ok(conn))) => {
                    let id = self.model.new_id();
                    self.model.counters.dials += 1;
                    self.hold(conn, id, a, false);
                }
                (Some(Granted::Closed), Poll::Ready(Err(Error::Closed))) => {}
                (granted, poll) => panic!("waiter {key}: given {granted:?}, got {poll:?}"),
            }
            self.model.waiters.remove(&key);
            self.model.settle(a);
        }
        self.pending = still;
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Get(a) => self.start(a, false),
            Op::Dial(a) => self.start(a, true),
            Op::Drop(n) => {
                if let Some((conn, (id, a, dead))) = self.take(n) {
                    drop(conn);
                    self.model.give_back(id, a, dead);
                }
            }
            Op::Release(n) => {
                if let Some((conn, (_, a, _))) = self.take(n) {
                    conn.release();
                    self.model.forget(a, |c| &mut c.released, true);
                }
            }
            Op::Detach(n) => {
                if let Some((conn, (_, a, _))) = self.take(n) {
                    drop(conn.detach());
                    self.model.forget(a, |c| &mut c.detached, true);
                }
            }
            Op::Kill(n) => {
                if !self.held.is_empty() {
                    let i = n % self.held.len();
                    self.held[i].kill();
                    self.model.held[i].2 = true;
                }
            }
            Op::KillIdle(a) => {
                let conns = self.dialer.state.conns.lock().unwrap();
                for &(id, _, _) in self.model.idle.get(&a).into_iter().flatten() {
                    conns[id].store(false, std::sync::atomic::Ordering::SeqCst);
                    self.model.dead.insert(id);
                }
            }
            Op::PanicDrop(n) => {
                if let Some((conn, (_, a, _))) = self.take(n) {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let _conn = conn;
                        std::panic::resume_unwind(Box::new("a handler failed"));
                    }));
                    assert!(result.is_err());
                    self.model.forget(a, |c| &mut c.closed_panicking, false);
                }
            }
            Op::CancelledGet(a) => {
                let gate = self.dialer.hold();
                let before = self.pending.len();
                self.start_cancelled(a);
                assert_eq!(self.pending.len(), before);
                gate.open();
                self.dialer.release_hold();
            }
            Op::FailingDial(a) => {
                let m = &self.model;
                let would_dial = !m.closed
                    && m.queue.get(&a).is_none_or(VecDeque::is_empty)
                    && (m.open(a) < m.max_open || !m.idle.get(&a).is_none_or(Vec::is_empty));
                if m.closed || would_dial {
                    self.dialer
                        .fail(ADDRS[a], std::io::ErrorKind::ConnectionRefused);
                    let result = block_on(self.pool.dial(&ADDRS[a].to_string()));
                    self.dialer.heal(ADDRS[a]);
                    match self.model.checkout(a, true) {
                        Outcome::Closed => assert!(matches!(result, Err(Error::Closed))),
                        Outcome::Dial => {
                            assert!(matches!(result, Err(Error::Dial(_))), "{result:?}");
                            self.model.counters.dial_errors += 1;
                            self.model.settle(a);
                        }
                        other => panic!("a dial expected to go ahead: {other:?}"),
                    }
                }
            }
            Op::PollWaiters => self.poll_waiters(),
            Op::DropWaiter(n) => {
                if !self.pending.is_empty() {
                    let (key, fut) = self.pending.remove(n % self.pending.len());
                    drop(fut);
                    self.model.drop_waiter(key);
                }
            }
            Op::Purge(a) => {
                let purged = self.pool.purge(&ADDRS[a].to_string());
                let idle = self.model.idle.entry(a).or_default();
                assert_eq!(purged, idle.len());
                self.model.counters.closed_purged += idle.len() as u64;
                idle.clear();
                self.model.settle(a);
            }
            Op::Reap => {
                let reaped = self.pool.reap();
                assert_eq!(reaped, self.model.reap());
            }
            Op::Close => {
                self.pool.close();
                let m = &mut self.model;
                if !m.closed {
                    m.closed = true;
                    m.counters.closed_pool_closed += m.idle_total() as u64;
                    m.idle.clear();
                    for queue in m.queue.values_mut() {
                        for key in queue.drain(..) {
                            m.waiters.get_mut(&key).unwrap().2 = Some(Granted::Closed);
                        }
                    }
                }
            }
            Op::Advance(ms) => {
                self.clock.advance(Duration::from_millis(ms));
                self.model.now += ms;
            }
        }
        self.settle_lifetimes();
        self.check();
    }

    /// An idle connection past its lifetime is never handed out, but when it is closed is up to
    /// the pool: by the get that finds it, the reaper, or any return to its destination on the
    /// way (the return's fast path leaves it be). Whichever step closed one, the model follows.
    fn settle_lifetimes(&mut self) {
        let m = &mut self.model;
        let (now, max_lifetime, born) = (m.now, m.max_lifetime, &m.born);
        let mut closed = 0;
        for idle in m.idle.values_mut() {
            idle.retain(|(id, _, _)| {
                let gone = now - born[id] >= max_lifetime && !self.dialer.is_live(*id);
                closed += u64::from(gone);
                !gone
            });
        }
        m.counters.closed_lifetime += closed;
    }

    /// A get that stalls in its dial (or waits in line) and is dropped after one poll.
    fn start_cancelled(&mut self, a: usize) {
        let addr = ADDRS[a].to_string();
        let mut fut: Pin<Box<dyn Future<Output = _>>> = Box::pin(self.pool.get(&addr));
        let poll = poll_once(&mut fut);
        match (self.model.checkout(a, false), poll) {
            (Outcome::Reuse(id), Poll::Ready(Ok(conn))) => {
                drop(fut);
                self.hold(conn, id, a, true);
            }
            (Outcome::Dial, Poll::Pending) => {
                drop(fut);
                self.model.settle(a);
            }
            (Outcome::Wait(key), Poll::Pending) => {
                drop(fut);
                self.model.drop_waiter(key);
            }
            (Outcome::Closed, Poll::Ready(Err(Error::Closed))) => {}
            (expected, got) => panic!("cancelled get {a}: expected {expected:?}, got {got:?}"),
        }
    }

    fn check(&self) {
        let m = &self.model;
        let stats = self.pool.stats();
        assert_eq!(stats.counters, m.counters, "counters");
        let mut ids = HashSet::new();
        let mut listed = 0;
        for (i, a) in ADDRS.iter().enumerate() {
            let idle = m.idle.get(&i).map_or(0, Vec::len);
            let held = m.held_at(i);
            let waiting = m.queue.get(&i).map_or(0, VecDeque::len);
            let got = stats
                .destination(&a.to_string())
                .map_or((0, 0, 0), |d| (d.total, d.idle, d.waiting));
            let expected = if held + idle > 0 {
                (held + idle, idle, waiting)
            } else {
                (0, 0, 0)
            };
            assert_eq!(got, expected, "stats of {a}");
            listed += usize::from(held + idle > 0);
            assert!(idle <= m.capacity, "I2");
            assert!(m.open(i) <= m.max_open, "open({a}) over the limit");
            for (id, _, _) in m.idle.get(&i).into_iter().flatten() {
                assert!(ids.insert(*id), "I1: {id} idle twice");
            }
        }
        assert!(m.idle_total() <= m.max_idle_total, "over max_idle_total");
        assert_eq!(
            stats.destinations.len(),
            listed,
            "a destination with nothing is listed"
        );
        for (conn, (id, a, _)) in self.held.iter().zip(&m.held) {
            assert_eq!(conn.id, *id);
            assert_eq!(conn.addr, ADDRS[*a], "I4");
            assert!(ids.insert(*id), "I1: {id} held and idle, or held twice");
        }
        // I3: every dialed connection is idle, held, closed or detached, exactly once.
        let c = &stats.counters;
        let held: usize = (0..ADDRS.len()).map(|a| m.held_at(a)).sum();
        let idle = m.idle_total();
        assert_eq!(
            c.dials,
            (idle + held) as u64 + c.closed() + c.detached,
            "I3"
        );
        // Closed connections are really closed; detached ones were dropped by the test.
        assert_eq!(self.dialer.live(), idle + held, "live connections");
    }
}

proptest! {
    // PROPTEST_CASES raises the count for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
        max_shrink_iters: 4_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_pool_agrees_with_the_model(
        capacity in 0..4usize,
        max_open in prop_oneof![Just(usize::MAX), 1..4usize],
        check_on_return in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..100),
        // Drawn after the operations, so that the saved seeds still make the operations they
        // were saved for.
        max_idle_total in prop_oneof![2 => Just(None), 1 => (0..4usize).prop_map(Some)],
        max_lifetime_ms in prop_oneof![2 => Just(None), 1 => (500..3_000u64).prop_map(Some)],
    ) {
        let mut harness = Harness::new(Settings {
            capacity,
            max_open,
            check_on_return,
            max_idle_total,
            max_lifetime_ms,
        });
        for op in &ops {
            harness.apply(op);
        }
        harness.pending.clear();
        harness.held.clear();
        harness.pool.close();
        prop_assert_eq!(harness.dialer.live(), 0, "every connection is closed in the end");
    }
}
