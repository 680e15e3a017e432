//! Faults over real loopback sockets. Under each fault a [`Backend`] can show, many tasks share one
//! pool and recover as go-connpool prescribes: a connection that errs, ends, stalls or answers out
//! of step is released, and the request retried on a fresh `dial`.
//!
//! Checked as they go: no connection is held by two tasks at once, and none found bad is ever
//! handed out again (connections are told apart by their local address). Checked at the end: nothing
//! is held, the counters add up, the backend sees exactly the pool's idle connections open and none
//! once the pool is closed, and once the backend is healthy again every request succeeds.

use std::collections::HashSet;
use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use connpool_core::{Error, Pool};
use futures::future::{join_all, select, Either};

use super::backend::{Backend, Mode, FRAME};
use super::{eventually, Runtime, Stream};

/// Tasks sharing the pool in every fault test: more than the pool keeps idle.
const TASKS: usize = 24;
const CAPACITY: usize = 16;
/// How long an answer may take before the backend counts as stalled, where it is not meant to.
const PATIENCE: Duration = Duration::from_secs(5);

/// A request of `task`: its number and a sequence number, which the answer must repeat.
pub fn frame(task: usize, seq: usize) -> [u8; FRAME] {
    let text = format!("{task:04}:{seq:011}");
    let mut frame = [0; FRAME];
    frame.copy_from_slice(text.as_bytes());
    frame
}

/// `fut`'s output, or `None` if `limit` passes first on the runtime's clock.
pub async fn within<R: Runtime, T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    match select(pin!(fut), pin!(R::sleep(limit))).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// What the requests of a run came to. Each request ends as exactly one of `ok`, `failed`,
/// `refused` or `errors`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tally {
    /// Answered correctly.
    ok: usize,
    /// Every attempt met a bad connection.
    failed: usize,
    /// The backend refused the connection.
    refused: usize,
    /// Any other error from the pool.
    errors: Vec<String>,
    /// Attempts that met a bad connection the pool had reused.
    bad_reused: usize,
    /// Attempts that met a bad connection dialed for them.
    bad_fresh: usize,
    /// Dials cut off by the backend before they completed (a reset mid-handshake).
    bad_dials: usize,
}

impl Tally {
    fn ok(requests: usize) -> Self {
        Tally {
            ok: requests,
            ..Tally::default()
        }
    }

    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.refused += other.refused;
        self.errors.extend(other.errors);
        self.bad_reused += other.bad_reused;
        self.bad_fresh += other.bad_fresh;
        self.bad_dials += other.bad_dials;
    }
}

/// What a task does with a connection that turned out bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnBad {
    /// Releases it, as it should.
    Release,
    /// Tasks with an odd number drop it instead, as a careless caller would: the pool must see
    /// for itself that it cannot be kept.
    OddTasksDrop,
}

#[derive(Default)]
struct Tracked {
    /// Local addresses of the connections tasks hold now.
    held: HashSet<SocketAddr>,
    /// Local addresses of the connections found bad.
    bad: HashSet<SocketAddr>,
    violations: Vec<String>,
}

/// The tasks' side: requests through the pool, with the retry after a bad connection, and a record
/// of every connection they were handed.
struct Client<'a, R: Runtime> {
    pool: &'a Pool<R::Tcp>,
    addr: String,
    patience: Duration,
    attempts: usize,
    on_bad: OnBad,
    tracked: Mutex<Tracked>,
}

impl<'a, R: Runtime> Client<'a, R> {
    fn new(pool: &'a Pool<R::Tcp>, backend: &Backend) -> Self {
        Client {
            pool,
            addr: backend.addr(),
            patience: PATIENCE,
            attempts: 3,
            on_bad: OnBad::Release,
            tracked: Mutex::default(),
        }
    }

    fn tracked(&self) -> std::sync::MutexGuard<'_, Tracked> {
        self.tracked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `TASKS` tasks at once, each making `rounds` requests; `inject(task, round)` runs before each.
    async fn run(&self, rounds: usize, inject: impl Fn(usize, usize)) -> Tally {
        let inject = &inject;
        let tallies = join_all((0..TASKS).map(|task| async move {
            let mut tally = Tally::default();
            let mut seq = 0;
            for round in 0..rounds {
                inject(task, round);
                self.request(task, &mut seq, &mut tally).await;
                self.check_pool();
            }
            tally
        }))
        .await;
        let mut total = Tally::default();
        for tally in tallies {
            total.add(tally);
        }
        total
    }

    /// Runs with no fault: every request must be answered at the first attempt.
    async fn run_healthy(&self, rounds: usize) {
        assert_eq!(self.run(rounds, |_, _| {}).await, Tally::ok(TASKS * rounds));
    }

    async fn request(&self, task: usize, seq: &mut usize, tally: &mut Tally) {
        for attempt in 0..self.attempts {
            let checkout = if attempt == 0 {
                self.pool.get(&self.addr).await
            } else {
                self.pool.dial(&self.addr).await
            };
            let mut conn = match checkout {
                Ok(conn) => conn,
                Err(Error::Dial(err)) if err.kind() == ErrorKind::ConnectionRefused => {
                    tally.refused += 1;
                    return;
                }
                Err(Error::Dial(err)) if err.kind() == ErrorKind::ConnectionReset => {
                    tally.bad_dials += 1;
                    continue;
                }
                Err(err) => {
                    tally.errors.push(err.to_string());
                    return;
                }
            };
            let local = R::local_addr(&conn);
            let reused = conn.is_reused();
            self.handed_out(local, reused);
            *seq += 1;
            let request = frame(task, *seq);
            let answer = within::<R, _>(self.patience, conn.echo(&request)).await;
            let good = matches!(answer, Some(Ok(ref answer)) if answer[..] == request[..]);
            self.given_back(local, good);
            if good {
                tally.ok += 1;
                return;
            }
            if reused {
                tally.bad_reused += 1;
            } else {
                tally.bad_fresh += 1;
            }
            match self.on_bad {
                OnBad::OddTasksDrop if task % 2 == 1 => drop(conn),
                _ => conn.release(),
            }
        }
        tally.failed += 1;
    }

    fn handed_out(&self, local: SocketAddr, reused: bool) {
        let mut tracked = self.tracked();
        if !tracked.held.insert(local) {
            tracked
                .violations
                .push(format!("{local} handed to two tasks at once"));
        }
        if !reused {
            // A new socket: the system gives out an address only once the last socket on it
            // closed.
            tracked.bad.remove(&local);
        } else if tracked.bad.contains(&local) {
            tracked
                .violations
                .push(format!("{local} handed out again after it was found bad"));
        }
    }

    /// Called before the connection goes back or is closed, so that the next holder finds it free.
    fn given_back(&self, local: SocketAddr, good: bool) {
        let mut tracked = self.tracked();
        tracked.held.remove(&local);
        if !good {
            tracked.bad.insert(local);
        }
    }

    fn check_pool(&self) {
        for dest in self.pool.stats().destinations {
            assert!(dest.idle <= CAPACITY, "{dest:?}: more idle than capacity");
            // Each task holds one connection at most, and leaves one idle at most when it is
            // done: more means the pool kept a connection a task had given up on.
            assert!(dest.total <= TASKS, "{dest:?}: more connections than tasks");
        }
    }

    fn assert_clean(&self) {
        let tracked = self.tracked();
        assert!(tracked.violations.is_empty(), "{:?}", tracked.violations);
        assert!(tracked.held.is_empty());
    }
}

fn fault_pool<R: Runtime>() -> Pool<R::Tcp> {
    R::builder(R::tcp()).capacity(CAPACITY).build().unwrap()
}

/// Once every task is done: nothing held, the counters add up, the backend sees exactly the
/// pool's idle connections open; then the pool closes, and the backend sees every socket closed.
pub async fn settle<R: Runtime>(pool: &Pool<R::Tcp>, backend: &Backend) {
    let stats = pool.stats();
    assert_eq!(stats.total(), stats.idle(), "a connection is still held");
    let counters = &stats.counters;
    assert_eq!(
        counters.dials,
        stats.idle() as u64 + counters.closed() + counters.detached,
        "{counters:?}"
    );
    let idle = stats.idle();
    eventually::<R>("the backend sees only the idle connections open", || {
        backend.open() == idle
    })
    .await;
    pool.close();
    eventually::<R>("the backend sees every connection closed", || {
        backend.open() == 0
    })
    .await;
    assert_eq!(backend.closed(), backend.accepted());
    let stats = pool.stats();
    assert!(stats.destinations.is_empty(), "{stats:?}");
    assert_eq!(
        stats.counters.closed() + stats.counters.detached,
        stats.counters.dials
    );
}

/// Nothing listens on the port yet: every request is refused, nothing is counted as open, and the
/// pool serves as soon as the backend listens.
pub fn faults_refused_until_the_backend_listens<R: Runtime>() {
    R::block_on(async {
        let mut backend = Backend::refusing();
        let pool = fault_pool::<R>();
        let client = Client::<R>::new(&pool, &backend);
        let tally = client.run(2, |_, _| {}).await;
        assert_eq!(
            tally,
            Tally {
                refused: TASKS * 2,
                ..Tally::default()
            }
        );
        let stats = pool.stats();
        assert!(stats.destinations.is_empty(), "{stats:?}");
        assert_eq!(stats.counters.dials, 0);
        assert_eq!(stats.counters.dial_errors, (TASKS * 2) as u64);

        backend.listen();
        client.run_healthy(3).await;
        client.assert_clean();
        settle::<R>(&pool, &backend).await;
    });
}

/// The backend stops listening and hangs up on every connection: each get skips the dead idle
/// connections and reports the refused dial, never handing out a dead connection; the pool closes
/// every socket of the old backend, and serves once it listens again.
pub fn faults_stopped_backend_refuses_without_handing_out_dead_connections<R: Runtime>() {
    R::block_on(async {
        let mut backend = Backend::start();
        let pool = fault_pool::<R>();
        let client = Client::<R>::new(&pool, &backend);
        client.run_healthy(2).await;
        let idle = pool.stats().idle();
        assert!(idle > 0);
        let closed_not_open = pool.stats().counters.closed_not_open;

        let probe = backend.probe();
        backend.crash();
        eventually::<R>("the probe sees the backend hang up", || probe.disturbed()).await;
        let tally = client.run(2, |_, _| {}).await;
        assert_eq!(
            tally,
            Tally {
                refused: TASKS * 2,
                ..Tally::default()
            }
        );
        let stats = pool.stats();
        assert_eq!(
            stats.counters.closed_not_open - closed_not_open,
            idle as u64
        );
        assert_eq!(stats.total(), 0);
        drop(probe);
        eventually::<R>("the pool closed every socket of the old backend", || {
            backend.open() == 0
        })
        .await;

        backend.listen();
        client.run_healthy(3).await;
        client.assert_clean();
        settle::<R>(&pool, &backend).await;
    });
}

/// Every new connection is hung up on at once: each attempt fails on a connection dialed for it,
/// none is ever reused (not even those careless tasks drop instead of releasing), and the pool
/// closes them all; once the backend answers, every request succeeds.
pub fn faults_accept_then_close<R: Runtime>() {
    const ROUNDS: usize = 2;
    R::block_on(async {
        let backend = Backend::start();
        backend.set_mode(Mode::AcceptThenClose);
        let pool = fault_pool::<R>();
        let mut client = Client::<R>::new(&pool, &backend);
        client.on_bad = OnBad::OddTasksDrop;
        let attempts = TASKS * ROUNDS * client.attempts;
        let tally = client.run(ROUNDS, |_, _| {}).await;
        assert_eq!(
            tally,
            Tally {
                failed: TASKS * ROUNDS,
                bad_fresh: attempts,
                ..Tally::default()
            }
        );
        let stats = pool.stats();
        assert_eq!(stats.total(), 0);
        let counters = stats.counters;
        assert_eq!(counters.released, (attempts / 2) as u64);
        assert_eq!(counters.closed_not_open, (attempts / 2) as u64);
        assert_eq!(backend.hung_up(), attempts);
        eventually::<R>("the backend sees every connection closed", || {
            backend.open() == 0
        })
        .await;

        backend.set_mode(Mode::Echo);
        client.run_healthy(3).await;
        client.assert_clean();
        settle::<R>(&pool, &backend).await;
    });
}

/// Each connection is closed by the backend after three answers, the end of the stream arriving
/// with the third: the pool sees it when the connection comes back and closes it, so no request
/// ever fails.
#[cfg(target_os = "linux")]
pub fn faults_close_after_n_requests<R: Runtime>() {
    const ROUNDS: usize = 12;
    R::block_on(async {
        let backend = Backend::start();
        backend.set_mode(Mode::CloseAfter(3));
        let pool = fault_pool::<R>();
        let client = Client::<R>::new(&pool, &backend);
        client.run_healthy(ROUNDS).await;
        let counters = pool.stats().counters;
        assert!(backend.hung_up() >= TASKS * ROUNDS / 3 - CAPACITY);
        assert_eq!(counters.closed_not_open, backend.hung_up() as u64);
        client.assert_clean();
        settle::<R>(&pool, &backend).await;
    });
}

/// The backend resets every connection (`SO_LINGER` 0) twice while tasks run: requests cut off
/// are retried and all succeed, and no reset connection is handed out again, even one a careless
/// task dropped. Reset while idle, connections are skipped without a failed request.
pub fn faults_reset_with_linger_zero<R: Runtime>() {
    const ROUNDS: usize = 8;
    R::block_on(async {
        let backend = Backend::start();
        let pool = fault_pool::<R>();
        let mut client = Client::<R>::new(&pool, &backend);
        client.on_bad = OnBad::OddTasksDrop;
        let tally = client
            .run(ROUNDS, |task, round| {
                if task == 0 && (round == 2 || round == 5) {
                    backend.reset_all();
                }
            })
            .await;
        assert_eq!(
            (tally.ok, tally.failed, tally.refused),
            (TASKS * ROUNDS, 0, 0),
            "{tally:?}"
        );
        assert!(tally.errors.is_empty(), "{tally:?}");

        let idle = pool.stats().idle();
        let closed_not_open = pool.stats().counters.closed_not_open;
        let probe = backend.probe();
        backend.reset_all();
        eventually::<R>("the probe sees the reset", || probe.disturbed()).await;
        client.run_healthy(3).await;
        assert_eq!(
            pool.stats().counters.closed_not_open - closed_not_open,
            idle as u64
        );
        client.assert_clean();
        settle::<R>(&pool, &backend).await;
    });
}

/// The backend reads requests and answers none: every request runs out of patience, each stalled
/// connection is released and never handed out again (an answer could still come and put it out
/// of step); once the backend answers, every request succeeds.
pub fn faults_stalled_backend<R: Runtime>() {
    const ROUNDS: usize = 2;
    R::block_on(async {
        let backend = Backend::start();
        let pool = fault_pool::<R>();
        let mut client = Client::<R>::new(&pool, &backend);
        client.patience = Duration::from_millis(100);
        client.attempts = 2;
        client.run_healthy(1).await;

        backend.set_mode(Mode::Stall);
        let tally = client.run(ROUNDS, |_, _| {}).await;
        let attempts = TASKS * ROUNDS * client.attempts;
        assert_eq!(
            (tally.ok, tally.failed, tally.bad_reused + tally.bad_fresh),
            (0, TASKS * ROUNDS, attempts),
            "{tally:?}"
        );
        let stats = pool.stats();
        assert_eq!(stats.total(), 0);
        assert_eq!(stats.counters.released, attempts as u64);

        backend.set_mode(Mode::Echo);
        client.run_healthy(3).await;
        client.assert_clean();
        settle::<R>(&pool, &backend).await;
    });
}

/// The backend writes what nobody asked for, twice while tasks run: requests that read it are
/// retried and all succeed. Written to idle connections, it gets them skipped without a failed
/// request: no task reads another answer than its own.
pub fn faults_unsolicited_bytes_on_idle_connections<R: Runtime>() {
    const ROUNDS: usize = 8;
    const UNASKED: &[u8] = b"out of turn";
    R::block_on(async {
        let backend = Backend::start();
        let pool = fault_pool::<R>();
        let client = Client::<R>::new(&pool, &backend);
        let tally = client
            .run(ROUNDS, |task, round| {
                if task == 0 && (round == 2 || round == 5) {
                    backend.send_unsolicited(UNASKED);
                }
            })
            .await;
        assert_eq!(
            (tally.ok, tally.failed, tally.refused),
            (TASKS * ROUNDS, 0, 0),
            "{tally:?}"
        );
        assert!(tally.errors.is_empty(), "{tally:?}");

        let idle = pool.stats().idle();
        let closed_not_open = pool.stats().counters.closed_not_open;
        let probe = backend.probe();
        backend.send_unsolicited(UNASKED);
        eventually::<R>("the probe receives the bytes", || probe.disturbed()).await;
        client.run_healthy(3).await;
        assert_eq!(
            pool.stats().counters.closed_not_open - closed_not_open,
            idle as u64
        );
        drop(probe);
        client.assert_clean();
        settle::<R>(&pool, &backend).await;
    });
}

/// The backend restarts on its port twice while tasks run: requests cut off are retried on the
/// new backend and all succeed. Restarted while connections are idle, the dead ones are skipped
/// without a failed request, and the pool closes every socket to the old backend.
pub fn faults_restart_on_the_same_port<R: Runtime>() {
    const ROUNDS: usize = 8;
    R::block_on(async {
        let backend = std::cell::RefCell::new(Backend::start());
        let pool = fault_pool::<R>();
        let mut client = Client::<R>::new(&pool, &backend.borrow());
        client.on_bad = OnBad::OddTasksDrop;
        let tally = client
            .run(ROUNDS, |task, round| {
                if task == 0 && (round == 2 || round == 5) {
                    backend.borrow_mut().restart();
                }
            })
            .await;
        assert_eq!(
            (tally.ok, tally.failed, tally.refused),
            (TASKS * ROUNDS, 0, 0),
            "{tally:?}"
        );
        assert!(tally.errors.is_empty(), "{tally:?}");

        let mut backend = backend.into_inner();
        let idle = pool.stats().idle();
        let closed_not_open = pool.stats().counters.closed_not_open;
        let probe = backend.probe();
        backend.restart();
        eventually::<R>("the probe sees the backend hang up", || probe.disturbed()).await;
        client.run_healthy(3).await;
        assert_eq!(
            pool.stats().counters.closed_not_open - closed_not_open,
            idle as u64
        );
        drop(probe);
        client.assert_clean();
        settle::<R>(&pool, &backend).await;
    });
}

/// A request whose answer is awaited through the guard and cut off by a timeout: the guard is
/// dropped, not released, and still its connection is closed, because the backend answers the
/// abandoned request late and the next caller would read that answer as its own. A request that
/// finished through its guard leaves the connection to the pool.
pub fn faults_request_cut_off_through_its_guard<R: Runtime>() {
    R::block_on(async {
        let backend = Backend::start();
        let addr = backend.addr();
        let pool = fault_pool::<R>();
        let mut conn = pool.get(&addr).await.unwrap();
        let request = frame(0, 1);
        assert_eq!(R::guarded_echo(&mut conn, &request).await.unwrap(), request);
        drop(conn);

        backend.set_mode(Mode::Stall);
        let mut conn = pool.get(&addr).await.unwrap();
        assert!(conn.is_reused(), "a finished request left it to the pool");
        let cut_off = within::<R, _>(
            Duration::from_millis(50),
            R::guarded_echo(&mut conn, &frame(0, 2)),
        )
        .await;
        assert!(cut_off.is_none(), "the stalled backend answered");
        drop(conn);
        let stats = pool.stats();
        assert_eq!((stats.total(), stats.counters.released), (0, 1));

        // Got before the late answer can arrive, and answered with its own.
        let mut conn = pool.get(&addr).await.unwrap();
        assert!(
            !conn.is_reused(),
            "the cut-off connection was handed out again"
        );
        backend.set_mode(Mode::Echo);
        let request = frame(0, 3);
        assert_eq!(R::guarded_echo(&mut conn, &request).await.unwrap(), request);
        drop(conn);
        settle::<R>(&pool, &backend).await;
    });
}
