//! Model-based tests: random sequences of pool operations over several destinations, checked
//! after every step against a plain reference model of what the pool should hold.
//!
//! The model is deliberately naive (vectors and counters, no sharding, no hashing, no locks), so a
//! disagreement points at the pool. After every step: invariants I1-I7 of DESIGN.md hold and the
//! pool's stats equal the model's.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use connpool_core::{Counters, ManualClock, Pool, Pooled};
use futures::executor::block_on;
use proptest::prelude::*;
use support::{poll_once, TestDialer};

const ADDRS: [&str; 3] = ["a:1", "b:2", "c:3"];
const IDLE_TIMEOUT_MS: u64 = 1_000;

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
    FailingGet(usize),
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
        1 => addr.clone().prop_map(Op::FailingGet),
        1 => addr.clone().prop_map(Op::Purge),
        1 => Just(Op::Reap),
        1 => (0..3u64).prop_map(|_| Op::Close),
        3 => (0..1_500u64).prop_map(Op::Advance),
    ]
}

/// What the pool should hold, by the book.
#[derive(Default)]
struct Model {
    now: u64,
    closed: bool,
    /// Per address: idle connections as (id, since), oldest first.
    idle: BTreeMap<usize, Vec<(usize, u64)>>,
    /// Held connections: (id, address index, dead).
    held: Vec<(usize, usize, bool)>,
    next_id: usize,
    /// Connections whose peer is gone.
    dead: HashSet<usize>,
    counters: Counters,
}

impl Model {
    fn expired(&self, since: u64) -> bool {
        self.now - since >= IDLE_TIMEOUT_MS
    }

    /// The connection a get should hand out, after closing what it should close.
    fn get(&mut self, a: usize, capacity: usize) -> Option<(usize, bool)> {
        let _ = capacity;
        if self.closed {
            return None;
        }
        let now = self.now;
        let idle = self.idle.entry(a).or_default();
        while let Some(&(id, since)) = idle.last() {
            if now - since >= IDLE_TIMEOUT_MS {
                // The newest is stale, so all are.
                self.counters.closed_expired += idle.len() as u64;
                idle.clear();
            } else if self.dead.contains(&id) {
                idle.pop();
                self.counters.closed_not_open += 1;
            } else {
                idle.pop();
                self.counters.hits += 1;
                return Some((id, true));
            }
        }
        Some((self.dial(), false))
    }

    fn dial(&mut self) -> usize {
        self.counters.dials += 1;
        self.next_id += 1;
        self.next_id - 1
    }

    fn give_back(&mut self, id: usize, a: usize, dead: bool, capacity: usize) {
        if self.closed {
            self.counters.closed_pool_closed += 1;
            return;
        }
        if dead {
            self.counters.closed_not_open += 1;
            return;
        }
        let now = self.now;
        let idle = self.idle.entry(a).or_default();
        let expired = idle
            .iter()
            .take_while(|(_, since)| now - since >= IDLE_TIMEOUT_MS)
            .count();
        idle.drain(..expired);
        self.counters.closed_expired += expired as u64;
        if idle.len() >= capacity {
            self.counters.closed_over_capacity += 1;
        } else {
            idle.push((id, now));
        }
    }

    fn reap(&mut self) -> usize {
        let now = self.now;
        let mut reaped = 0;
        for idle in self.idle.values_mut() {
            let before = idle.len();
            idle.retain(|(_, since)| now - since < IDLE_TIMEOUT_MS);
            reaped += before - idle.len();
        }
        self.counters.closed_expired += reaped as u64;
        reaped
    }
}

struct Harness {
    pool: Pool<TestDialer>,
    dialer: TestDialer,
    clock: ManualClock,
    capacity: usize,
    held: Vec<Pooled<TestDialer>>,
    model: Model,
}

impl Harness {
    fn new(capacity: usize) -> Self {
        let dialer = TestDialer::new();
        let clock = ManualClock::new();
        let pool = Pool::builder(dialer.clone())
            .capacity(capacity)
            .idle_timeout(Duration::from_millis(IDLE_TIMEOUT_MS))
            .clock(clock.clone())
            .build()
            .unwrap();
        Harness {
            pool,
            dialer,
            clock,
            capacity,
            held: Vec::new(),
            model: Model::default(),
        }
    }

    fn take(&mut self, n: usize) -> Option<(Pooled<TestDialer>, (usize, usize, bool))> {
        if self.held.is_empty() {
            return None;
        }
        let i = n % self.held.len();
        Some((self.held.swap_remove(i), self.model.held.swap_remove(i)))
    }

    fn apply(&mut self, op: &Op) {
        let m = &mut self.model;
        match *op {
            Op::Get(a) | Op::Dial(a) => {
                let dial = matches!(op, Op::Dial(_));
                let result = if dial {
                    block_on(self.pool.dial(&ADDRS[a].to_string()))
                } else {
                    block_on(self.pool.get(&ADDRS[a].to_string()))
                };
                let expected = if m.closed {
                    None
                } else if dial {
                    Some((m.dial(), false))
                } else {
                    m.get(a, self.capacity)
                };
                match (result, expected) {
                    (Ok(conn), Some((id, reused))) => {
                        assert_eq!(conn.id, id, "I1/LIFO: wrong connection for {op:?}");
                        assert_eq!(conn.is_reused(), reused);
                        assert_eq!(conn.addr, ADDRS[a], "I4");
                        self.held.push(conn);
                        m.held.push((id, a, false));
                    }
                    (Err(connpool_core::Error::Closed), None) => {}
                    (result, expected) => panic!("{op:?}: got {result:?}, expected {expected:?}"),
                }
            }
            Op::Drop(n) => {
                if let Some((conn, (id, a, dead))) = self.take(n) {
                    drop(conn);
                    self.model.give_back(id, a, dead, self.capacity);
                }
            }
            Op::Release(n) => {
                if let Some((conn, _)) = self.take(n) {
                    conn.release();
                    self.model.counters.released += 1;
                }
            }
            Op::Detach(n) => {
                if let Some((conn, _)) = self.take(n) {
                    drop(conn.detach());
                    self.model.counters.detached += 1;
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
                for &(id, _) in m.idle.get(&a).into_iter().flatten() {
                    conns[id].store(false, std::sync::atomic::Ordering::SeqCst);
                    m.dead.insert(id);
                }
            }
            Op::PanicDrop(n) => {
                if let Some((conn, _)) = self.take(n) {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let _conn = conn;
                        std::panic::resume_unwind(Box::new("a handler failed"));
                    }));
                    assert!(result.is_err());
                    self.model.counters.closed_panicking += 1;
                }
            }
            Op::CancelledGet(a) => {
                let gate = self.dialer.hold();
                let addr = ADDRS[a].to_string();
                {
                    let mut fut: Pin<Box<dyn Future<Output = _>>> = Box::pin(self.pool.get(&addr));
                    match poll_once(&mut fut) {
                        std::task::Poll::Ready(Ok(conn)) => {
                            // An idle connection was there: it behaves like a plain get.
                            let expected = m.get(a, self.capacity);
                            assert_eq!(expected, Some((conn.id, true)));
                            self.held.push(conn);
                            m.held.push((expected.unwrap().0, a, false));
                        }
                        std::task::Poll::Ready(Err(_)) => assert!(m.closed),
                        std::task::Poll::Pending => {
                            // It found nothing usable and is dialing: the model closes what the
                            // get closed, but counts no dial.
                            let before = m.counters.dials;
                            let got = m.get(a, self.capacity);
                            assert_eq!(got.map(|g| g.1), Some(false));
                            m.counters.dials = before;
                            m.next_id -= 1;
                        }
                    }
                }
                gate.open();
                self.dialer.release_hold();
            }
            Op::FailingGet(a) => {
                self.dialer
                    .fail(ADDRS[a], std::io::ErrorKind::ConnectionRefused);
                let result = block_on(self.pool.dial(&ADDRS[a].to_string()));
                self.dialer.heal(ADDRS[a]);
                if m.closed {
                    assert!(matches!(result, Err(connpool_core::Error::Closed)));
                } else {
                    assert!(matches!(result, Err(connpool_core::Error::Dial(_))));
                    m.counters.dial_errors += 1;
                }
            }
            Op::Purge(a) => {
                let purged = self.pool.purge(&ADDRS[a].to_string());
                let idle = m.idle.entry(a).or_default();
                assert_eq!(purged, idle.len());
                m.counters.closed_purged += idle.len() as u64;
                idle.clear();
            }
            Op::Reap => {
                let reaped = self.pool.reap();
                assert_eq!(reaped, self.model.reap());
            }
            Op::Close => {
                self.pool.close();
                if !m.closed {
                    m.closed = true;
                    let idle: usize = m.idle.values().map(Vec::len).sum();
                    m.counters.closed_pool_closed += idle as u64;
                    m.idle.clear();
                }
            }
            Op::Advance(ms) => {
                self.clock.advance(Duration::from_millis(ms));
                m.now += ms;
            }
        }
        self.check();
    }

    fn check(&self) {
        let m = &self.model;
        let stats = self.pool.stats();
        assert_eq!(stats.counters, m.counters, "counters");
        let mut ids = HashSet::new();
        for (i, a) in ADDRS.iter().enumerate() {
            let idle = m.idle.get(&i).map_or(0, Vec::len);
            let held = m.held.iter().filter(|h| h.1 == i).count();
            let got = stats
                .destination(&a.to_string())
                .map_or((0, 0), |d| (d.total, d.idle));
            assert_eq!(got, (held + idle, idle), "stats of {a}");
            assert!(idle <= self.capacity, "I2");
            for (id, since) in m.idle.get(&i).into_iter().flatten() {
                assert!(ids.insert(*id), "I1: {id} idle twice");
                let _ = since;
            }
        }
        for (conn, (id, a, _)) in self.held.iter().zip(&m.held) {
            assert_eq!(conn.id, *id);
            assert_eq!(conn.addr, ADDRS[*a], "I4");
            assert!(ids.insert(*id), "I1: {id} held and idle, or held twice");
        }
        assert_eq!(
            stats.destinations.len(),
            ADDRS
                .iter()
                .enumerate()
                .filter(|(i, _)| {
                    m.idle.get(i).is_some_and(|v| !v.is_empty()) || m.held.iter().any(|h| h.1 == *i)
                })
                .count(),
            "a destination with nothing held or idle is listed"
        );
        // I3: every dialed connection is idle, held, closed or detached, exactly once.
        let c = &stats.counters;
        let idle: usize = m.idle.values().map(Vec::len).sum();
        assert_eq!(
            c.dials,
            (idle + m.held.len()) as u64 + c.closed() + c.detached,
            "I3"
        );
        // Closed connections are really closed; detached ones were dropped by the test.
        assert_eq!(self.dialer.live(), idle + m.held.len(), "live connections");
        let _ = m.expired(m.now);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn the_pool_agrees_with_the_model(capacity in 0..4usize, ops in proptest::collection::vec(op(), 1..80)) {
        let mut harness = Harness::new(capacity);
        for op in &ops {
            harness.apply(op);
        }
        harness.held.clear();
        harness.pool.close();
        prop_assert_eq!(harness.dialer.live(), 0, "every connection is closed in the end");
    }
}
