//! A tour of connpool on Tokio: `cargo run --release --example tour`.
//!
//! It starts echo backends on 127.0.0.1, sends requests to them through a round-robin address
//! picker (a stand-in for a load balancer) and one pool, and tells what the pool does, chapter by
//! chapter, with the numbers from `Pool::stats` and from the backends' own connection counts:
//! reuse, the per-host capacity, a backend restarting mid-run, go-connpool's release + dial
//! retry, idle connections expiring, pooled against unpooled throughput, the per-host limit
//! holding a burst, a wait timeout, and shutdown. Every claim is checked; the tour exits non-zero
//! if one does not hold, and ends with a summary table.

mod backend;
mod story;

use std::error::Error;
use std::io;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connpool_tokio::{Dialer, Pool, Pooled, TcpDialer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::{sleep, Instant};

use backend::{settle, Backend};
use story::Story;

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

const ABOUT: &str = "\
tour: connpool at work on Tokio against echo backends it starts on 127.0.0.1, chapter by
chapter, every claim checked with the pool's own numbers. Takes no arguments.

Usage: cargo run --release --example tour

Exit status: 0 when every check held, 1 otherwise.";

/// Idle connections the main pool keeps per backend.
const CAPACITY: usize = 4;
/// The bytes every request sends and expects back.
const PAYLOAD: [u8; 64] = *b"connpool tour: one request, sixty-four bytes, echoed back whole.";

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(refused) = connpool_examples::no_arguments("tour", ABOUT) {
        return refused;
    }
    let started = Instant::now();
    let mut story = Story::default();
    if let Err(err) = tour(&mut story).await {
        println!("\nThe tour stopped: {err}");
        return ExitCode::FAILURE;
    }
    if story.summary(started.elapsed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn tour(story: &mut Story) -> Result<()> {
    let mut backends = Vec::new();
    for _ in 0..3 {
        backends.push(Backend::start(Duration::ZERO).await?);
    }
    let slow = Backend::start(Duration::from_millis(20)).await?;
    let picker = Arc::new(RoundRobin::new(
        backends.iter().map(Backend::addr).collect(),
    ));
    println!("connpool tour");
    println!(
        "   echo backends on {}, picked round-robin",
        picker.addrs.join(", ")
    );
    println!("   one pool: connpool_tokio::builder(TcpDialer::new()).capacity({CAPACITY}).build()");

    let pool = connpool_tokio::builder(TcpDialer::new())
        .capacity(CAPACITY)
        .build()?;
    reuse(story, &pool, &picker, &backends).await?;
    capacity(story, &pool, &picker, &backends).await?;
    restart(story, &pool, &picker, &mut backends).await?;
    release_and_dial(story, &pool, &backends[2]).await?;
    idle_timeout(story, &picker, &backends).await?;
    throughput(story, &picker, &backends).await?;
    limit(story, &slow).await?;
    wait_timeout(story, &slow).await?;
    shutdown(story, &pool, &picker, &backends, &slow).await
}

/// Hands out the backends' addresses in turn, as a load balancer would.
struct RoundRobin {
    addrs: Vec<String>,
    next: AtomicUsize,
}

impl RoundRobin {
    fn new(addrs: Vec<String>) -> Self {
        RoundRobin {
            addrs,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> &String {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.addrs[turn % self.addrs.len()]
    }
}

/// One request: sends the payload on `conn` and checks that it comes back.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(conn: &mut S) -> io::Result<()> {
    conn.write_all(&PAYLOAD).await?;
    let mut reply = [0; PAYLOAD.len()];
    conn.read_exact(&mut reply).await?;
    if reply != PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the backend answered with other bytes than it was sent",
        ));
    }
    Ok(())
}

/// A connection from `pool` to `addr` that has just served a request.
async fn request(pool: &Pool, addr: &String) -> io::Result<Pooled> {
    let mut conn = pool.get(addr).await?;
    echo(&mut conn).await?;
    Ok(conn)
}

/// Whether `err` says the peer had closed the connection.
fn is_closed(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn open_at(backends: &[Backend]) -> Vec<usize> {
    backends.iter().map(Backend::open).collect()
}

async fn reuse(
    story: &mut Story,
    pool: &Pool,
    picker: &RoundRobin,
    backends: &[Backend],
) -> Result<()> {
    const REQUESTS: u64 = 300;
    story.chapter(
        "reuse",
        "Reuse: one connection per backend serves every request",
    );
    story.say(format!(
        "{REQUESTS} requests, one at a time, each to the next backend: get, echo, drop"
    ));
    for _ in 0..REQUESTS {
        request(pool, picker.pick()).await?;
    }
    let counters = pool.stats().counters;
    let hosts = backends.len() as u64;
    story.check(
        counters.dials == hosts,
        format!(
            "{} dials for {REQUESTS} requests: one per backend",
            counters.dials
        ),
    );
    story.check(
        counters.hits == REQUESTS - hosts,
        format!("{} requests reused an idle connection", counters.hits),
    );
    let accepted: Vec<usize> = backends.iter().map(Backend::accepted).collect();
    story.check(
        accepted.iter().all(|&n| n == 1),
        format!("the backends accepted {accepted:?} connections"),
    );
    story.sum_up(format!(
        "{REQUESTS} requests, {} dials, {} reused",
        counters.dials, counters.hits
    ));
    Ok(())
}

async fn capacity(
    story: &mut Story,
    pool: &Pool,
    picker: &RoundRobin,
    backends: &[Backend],
) -> Result<()> {
    const PER_BACKEND: usize = 8;
    let burst = PER_BACKEND * backends.len();
    story.chapter(
        "capacity",
        format!("Per-host capacity: at most {CAPACITY} idle connections kept per backend"),
    );
    story.say(format!(
        "{burst} requests at once, {PER_BACKEND} per backend, all holding their connection until \
         every one is answered"
    ));
    let before = pool.stats();
    let barrier = Arc::new(Barrier::new(burst));
    let mut tasks = JoinSet::new();
    for _ in 0..burst {
        let (pool, addr, barrier) = (pool.clone(), picker.pick().clone(), barrier.clone());
        tasks.spawn(async move {
            let conn = request(&pool, &addr).await;
            // Everyone waits here, so that all the connections are held at once.
            barrier.wait().await;
            conn.map(drop)
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let after = pool.stats();
    let peaks: Vec<usize> = backends.iter().map(Backend::peak).collect();
    story.check(
        peaks.iter().all(|&n| n == PER_BACKEND),
        format!("the backends saw {peaks:?} connections open at once"),
    );
    let dialed = after.counters.dials - before.counters.dials;
    story.check(
        dialed as usize == burst - before.idle(),
        format!(
            "{dialed} dials: the {} idle connections were reused, the rest dialed",
            before.idle()
        ),
    );
    let idle: Vec<usize> = picker.addrs[..]
        .iter()
        .map(|addr| after.destination(addr).map_or(0, |d| d.idle))
        .collect();
    let over = after.counters.closed_over_capacity - before.counters.closed_over_capacity;
    story.check(
        idle.iter().all(|&n| n == CAPACITY) && over as usize == burst - CAPACITY * idle.len(),
        format!("back in the pool: {idle:?} idle per backend, {over} closed as over capacity"),
    );
    let settled = settle(|| backends.iter().all(|b| b.open() == CAPACITY)).await;
    story.check(
        settled,
        format!(
            "the backends saw the extra ones close: {:?} open",
            open_at(backends)
        ),
    );
    story.sum_up(format!(
        "{burst} held at once -> {CAPACITY} idle per host, {over} closed"
    ));
    Ok(())
}

async fn restart(
    story: &mut Story,
    pool: &Pool,
    picker: &RoundRobin,
    backends: &mut [Backend],
) -> Result<()> {
    const REQUESTS: usize = 60;
    let victim = 1;
    let addr = backends[victim].addr();
    story.chapter(
        "restart",
        "A backend restarts mid-run: the pool skips its dead idle connections",
    );
    story.say(format!(
        "{REQUESTS} requests round-robin; after {}, {addr} stops, and starts again on the same port",
        REQUESTS / 2
    ));
    let before = pool.stats();
    let dead = before.destination(&addr).map_or(0, |d| d.idle);
    let mut accepted_before = 0;
    let mut failures = Vec::new();
    for n in 0..REQUESTS {
        if n == REQUESTS / 2 {
            backends[victim].stop().await?;
            sleep(Duration::from_millis(50)).await;
            accepted_before = backends[victim].accepted();
            backends[victim].restart().await?;
            story.say(format!(
                "restarted {addr} after 50 ms down: the {dead} connections the pool keeps \
                 idle to it are dead"
            ));
        }
        if let Err(err) = request(pool, picker.pick()).await {
            failures.push(err);
        }
    }
    let after = pool.stats();
    story.check(
        failures.is_empty(),
        match failures.first() {
            None => format!("{REQUESTS} requests, 0 errors"),
            Some(err) => format!("{REQUESTS} requests, {} errors: {err}", failures.len()),
        },
    );
    let skipped = after.counters.closed_not_open - before.counters.closed_not_open;
    story.check(
        skipped as usize == dead,
        format!("is_open turned down the {skipped} dead idle connections (closed_not_open)"),
    );
    let dialed = after.counters.dials - before.counters.dials;
    let accepted = backends[victim].accepted() - accepted_before;
    story.check(
        dialed == 1 && accepted == 1,
        format!(
            "{dialed} dial, and the restarted backend accepted {accepted} connection: the \
             first get after the restart dialed afresh"
        ),
    );
    story.sum_up(format!(
        "{REQUESTS} requests, {} errors; {skipped} dead skipped, {dialed} redial",
        failures.len()
    ));
    Ok(())
}

async fn release_and_dial(story: &mut Story, pool: &Pool, backend: &Backend) -> Result<()> {
    let addr = backend.addr();
    story.chapter(
        "release",
        "release + dial: go-connpool's retry when a connection dies while held",
    );
    let before = pool.stats();
    let mut conn = pool.get(&addr).await?;
    story.say(format!(
        "took a connection to {addr} (reused: {}); then the backend hung up on every \
         connection, this one among them",
        conn.is_reused()
    ));
    backend.hang_up().await?;
    let first = echo(&mut conn).await;
    story.check(
        matches!(&first, Err(err) if is_closed(err)),
        match &first {
            Err(err) => format!("the request on it failed: {err}"),
            Ok(()) => "the request on the dead connection was answered".to_string(),
        },
    );
    // Dropping it would offer it back to the pool; release closes it for good.
    conn.release();
    let mut conn = pool.dial(&addr).await?;
    let retry = echo(&mut conn).await;
    story.check(
        retry.is_ok() && !conn.is_reused(),
        format!(
            "conn.release(), then pool.dial(): a new connection (reused: {}), and the retry \
             was answered",
            conn.is_reused()
        ),
    );
    let purged = pool.purge(&addr);
    drop(conn);
    let after = pool.stats();
    let released = after.counters.released - before.counters.released;
    let dialed = after.counters.dials - before.counters.dials;
    story.check(
        released == 1 && dialed == 1,
        format!("counters: released +{released}, dials +{dialed}"),
    );
    story.check(
        purged == CAPACITY - 1,
        format!("pool.purge() closed the {purged} other idle connections to it, dead too"),
    );
    let failed = usize::from(first.is_err());
    let answered = if retry.is_ok() { "answered" } else { "failed" };
    story.sum_up(format!(
        "{failed} failed request, released +{released}, dialed +{dialed}, retry {answered}; \
         {purged} purged"
    ));
    Ok(())
}

async fn idle_timeout(story: &mut Story, picker: &RoundRobin, backends: &[Backend]) -> Result<()> {
    const IDLE: Duration = Duration::from_millis(300);
    const CONNS: usize = 6;
    story.chapter(
        "expiry",
        format!(
            "Idle connections expire: a pool with idle_timeout({})",
            ms(IDLE)
        ),
    );
    story.say(
        "connpool_tokio::builder sets tokio's clock and spawner, so a reaper closes them in \
         the background",
    );
    let pool = connpool_tokio::builder(TcpDialer::new())
        .capacity(CAPACITY)
        .idle_timeout(IDLE)
        .build()?;
    let open_before: usize = backends.iter().map(Backend::open).sum();
    let mut held = Vec::new();
    for _ in 0..CONNS {
        held.push(request(&pool, picker.pick()).await?);
    }
    // Read before they go back, so that no connection has been idle for longer than this says.
    let returned = Instant::now();
    drop(held);
    story.check(
        pool.stats().idle() == CONNS,
        format!(
            "{CONNS} connections used at once and returned: {} idle",
            pool.stats().idle()
        ),
    );
    sleep(IDLE / 2).await;
    let (idle, at) = (pool.stats().idle(), returned.elapsed());
    story.check(
        idle == CONNS || at >= IDLE,
        format!("after {}: still {idle} idle", ms(at)),
    );
    let expired = settle(|| pool.stats().idle() == 0).await;
    let gone_after = returned.elapsed();
    let counters = pool.stats().counters;
    story.check(
        expired && gone_after >= IDLE && counters.closed_expired == CONNS as u64,
        format!(
            "after {}: 0 idle, closed_expired = {}, and nobody called reap()",
            ms(gone_after),
            counters.closed_expired
        ),
    );
    let closed = settle(|| backends.iter().map(Backend::open).sum::<usize>() == open_before).await;
    story.check(
        closed,
        format!(
            "the backends saw them close: {} connections open, as before",
            backends.iter().map(Backend::open).sum::<usize>()
        ),
    );
    pool.close();
    story.sum_up(format!(
        "{CONNS} idle closed by the reaper after {}",
        ms(gone_after)
    ));
    Ok(())
}

/// What a load run measured.
#[derive(Default)]
struct Load {
    requests: u64,
    errors: u64,
    first_error: Option<io::Error>,
}

impl Load {
    fn add(&mut self, other: Load) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn per_second(&self, took: Duration) -> f64 {
        self.requests as f64 / took.as_secs_f64()
    }
}

/// Sends requests from `workers` tasks for `length`, each on a connection from `pool`, or on a
/// connection dialed for it alone when `pool` is `None`.
async fn load(
    pool: Option<&Pool>,
    picker: &Arc<RoundRobin>,
    workers: usize,
    length: Duration,
) -> Load {
    let deadline = Instant::now() + length;
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let (pool, picker) = (pool.cloned(), picker.clone());
        tasks.spawn(async move {
            let dialer = TcpDialer::new();
            let mut load = Load::default();
            while Instant::now() < deadline {
                let addr = picker.pick();
                let result = match &pool {
                    Some(pool) => request(pool, addr).await.map(drop),
                    None => match dialer.dial(addr).await {
                        Ok(mut stream) => echo(&mut stream).await,
                        Err(err) => Err(err),
                    },
                };
                match result {
                    Ok(()) => load.requests += 1,
                    Err(err) => {
                        load.errors += 1;
                        load.first_error.get_or_insert(err);
                    }
                }
            }
            load
        });
    }
    let mut total = Load::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(load) => total.add(load),
            Err(err) => {
                total.errors += 1;
                total.first_error.get_or_insert(io::Error::other(err));
            }
        }
    }
    total
}

async fn throughput(
    story: &mut Story,
    picker: &Arc<RoundRobin>,
    backends: &[Backend],
) -> Result<()> {
    const WORKERS: usize = 16;
    const LENGTH: Duration = Duration::from_millis(750);
    story.chapter(
        "throughput",
        format!(
            "Pooled against unpooled: {WORKERS} workers, {} each, the same backends",
            ms(LENGTH)
        ),
    );
    let pool = connpool_tokio::builder(TcpDialer::new())
        .capacity(WORKERS)
        .build()?;
    let started = Instant::now();
    let pooled = load(Some(&pool), picker, WORKERS, LENGTH).await;
    let pooled_rate = pooled.per_second(started.elapsed());
    let dials = pool.stats().counters.dials;

    let accepted_before: usize = backends.iter().map(Backend::accepted).sum();
    let started = Instant::now();
    let unpooled = load(None, picker, WORKERS, LENGTH).await;
    let unpooled_rate = unpooled.per_second(started.elapsed());
    let accepted = backends.iter().map(Backend::accepted).sum::<usize>() - accepted_before;

    for (name, run) in [("pooled", &pooled), ("unpooled", &unpooled)] {
        story.check(
            run.errors == 0,
            match &run.first_error {
                None => format!("{name}: {} requests, 0 errors", run.requests),
                Some(err) => format!(
                    "{name}: {} requests, {} errors: {err}",
                    run.requests, run.errors
                ),
            },
        );
    }
    // A worker holds one connection at a time, so a backend never needs more than one per worker.
    let most = WORKERS * backends.len();
    story.check(
        dials as usize <= most,
        format!(
            "pooled: {dials} dials for {} requests (at most {most}: one per worker and backend)",
            pooled.requests
        ),
    );
    story.check(
        accepted as u64 == unpooled.requests,
        format!("unpooled: the backends accepted {accepted} connections, one per request"),
    );
    let speedup = pooled_rate / unpooled_rate.max(1.0);
    story.check(
        speedup > 1.0,
        format!(
            "pooled {pooled_rate:.0} requests/s against unpooled {unpooled_rate:.0}: {speedup:.1}x"
        ),
    );
    let idle = pool.stats().idle();
    pool.close();
    story.check(
        pool.is_closed() && pool.stats().total() == 0,
        format!(
            "pool.close() closed its {idle} idle connections: {} left",
            pool.stats().total()
        ),
    );
    story.sum_up(format!(
        "pooled {pooled_rate:.0}/s vs unpooled {unpooled_rate:.0}/s ({speedup:.1}x)"
    ));
    Ok(())
}

async fn limit(story: &mut Story, slow: &Backend) -> Result<()> {
    const LIMIT: usize = 4;
    const BURST: usize = 32;
    let addr = slow.addr();
    story.chapter(
        "limit",
        format!("max_open_per_host({LIMIT}): a burst of {BURST} held to {LIMIT} connections"),
    );
    story.say(format!(
        "{BURST} requests at once to a backend that takes 20 ms to answer ({addr})"
    ));
    let pool = connpool_tokio::builder(TcpDialer::new())
        .capacity(LIMIT)
        .max_open_per_host(LIMIT)
        .build()?;
    let accepted_before = slow.accepted();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (pool, addr, sampling) = (pool.clone(), addr.clone(), sampling.clone());
        async move {
            let (mut waiting, mut open) = (0, 0);
            while sampling.load(Ordering::Relaxed) {
                if let Some(dest) = pool.stats().destination(&addr) {
                    waiting = dest.waiting.max(waiting);
                    open = dest.total.max(open);
                }
                sleep(Duration::from_millis(1)).await;
            }
            (waiting, open)
        }
    });
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..BURST {
        let (pool, addr) = (pool.clone(), addr.clone());
        tasks.spawn(async move { request(&pool, &addr).await.map(drop) });
    }
    let mut answered = 0;
    while let Some(done) = tasks.join_next().await {
        done??;
        answered += 1;
    }
    let took = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let (most_waiting, most_open) = sampler.await?;
    let counters = pool.stats().counters;
    story.check(
        answered == BURST,
        format!("all {answered} answered, in {}", ms(took)),
    );
    story.check(
        slow.peak() <= LIMIT,
        format!(
            "the backend never saw more than {} connections open at once",
            slow.peak()
        ),
    );
    let accepted = slow.accepted() - accepted_before;
    story.check(
        counters.dials as usize <= LIMIT && accepted <= LIMIT,
        format!(
            "{} dials, {accepted} connections accepted by the backend",
            counters.dials
        ),
    );
    story.check(
        counters.waits > 0 && most_waiting > 0 && most_open <= LIMIT,
        format!(
            "{} callers queued (counters.waits); stats showed up to {most_waiting} waiting and \
             {most_open} open at once",
            counters.waits
        ),
    );
    pool.close();
    story.sum_up(format!(
        "{BURST} at once -> backend peak {} open, {} waited",
        slow.peak(),
        counters.waits
    ));
    Ok(())
}

async fn wait_timeout(story: &mut Story, slow: &Backend) -> Result<()> {
    const WAIT: Duration = Duration::from_millis(100);
    let addr = slow.addr();
    story.chapter(
        "wait",
        format!(
            "wait_timeout({}): no free slot in time is Error::Timeout",
            ms(WAIT)
        ),
    );
    let pool = connpool_tokio::builder(TcpDialer::new())
        .max_open_per_host(1)
        .wait_timeout(WAIT)
        .build()?;
    let held = request(&pool, &addr).await?;
    story.say("max_open_per_host(1): one connection held, then a second get to the same backend");
    let waiter = tokio::spawn({
        let (pool, addr) = (pool.clone(), addr.clone());
        async move {
            let started = Instant::now();
            let result = pool.get(&addr).await.map(drop);
            (result, started.elapsed())
        }
    });
    sleep(WAIT / 3).await;
    let waiting = pool.stats().destination(&addr).map_or(0, |d| d.waiting);
    let (result, waited) = waiter.await?;
    story.check(
        waiting == 1,
        format!("while it waited, stats showed waiting = {waiting} for {addr}"),
    );
    story.check(
        matches!(result, Err(connpool_tokio::Error::Timeout)) && waited >= WAIT,
        match &result {
            Err(err) => format!("after {}: Err({err:?}): \"{err}\"", ms(waited)),
            Ok(()) => format!("after {}: it got a connection", ms(waited)),
        },
    );
    let counters = pool.stats().counters;
    story.check(
        counters.waits == 1 && counters.wait_timeouts == 1,
        format!(
            "counters: waits = {}, wait_timeouts = {}",
            counters.waits, counters.wait_timeouts
        ),
    );
    drop(held);
    let again = pool.get(&addr).await?;
    story.check(
        again.is_reused(),
        format!(
            "once the held connection came back, the next get had it (reused: {})",
            again.is_reused()
        ),
    );
    drop(again);
    pool.close();
    story.sum_up(format!("second get -> Error::Timeout after {}", ms(waited)));
    Ok(())
}

async fn shutdown(
    story: &mut Story,
    pool: &Pool,
    picker: &RoundRobin,
    backends: &[Backend],
    slow: &Backend,
) -> Result<()> {
    const IN_FLIGHT: Duration = Duration::from_millis(100);
    const GRACE: Duration = Duration::from_secs(2);
    story.chapter(
        "shutdown",
        "shutdown: close, then wait for the connections in use",
    );
    let addr = picker.pick().clone();
    let mut conn = pool.get(&addr).await?;
    let before = pool.stats();
    story.say(format!(
        "the main pool: {} idle, 1 in use by a request that takes {} more",
        before.idle(),
        ms(IN_FLIGHT)
    ));
    let in_flight = tokio::spawn(async move {
        sleep(IN_FLIGHT).await;
        echo(&mut conn).await
    });
    let started = Instant::now();
    let all_back = pool.shutdown(GRACE).await;
    let took = started.elapsed();
    let finished = in_flight.await?;
    story.check(
        all_back && took >= IN_FLIGHT / 2,
        format!(
            "pool.shutdown({} s) returned {all_back} after {}: it waited for the request in flight",
            GRACE.as_secs(),
            ms(took)
        ),
    );
    story.check(
        finished.is_ok(),
        format!(
            "the request in flight finished normally: {}",
            match &finished {
                Ok(()) => "answered".to_string(),
                Err(err) => err.to_string(),
            }
        ),
    );
    let after = pool.stats();
    let closed = after.counters.closed_pool_closed - before.counters.closed_pool_closed;
    story.check(
        after.total() == 0 && closed as usize == before.total(),
        format!(
            "{closed} connections closed by the shutdown, {} left",
            after.total()
        ),
    );
    let refused = pool.get(&addr).await;
    story.check(
        matches!(refused, Err(connpool_tokio::Error::Closed)),
        match &refused {
            Err(err) => format!("a get afterwards: Err({err:?}): \"{err}\""),
            Ok(_) => "a get afterwards was handed a connection".to_string(),
        },
    );
    let everyone = || backends.iter().chain([slow]).all(|b| b.open() == 0);
    let drained = settle(everyone).await;
    story.check(
        drained,
        format!(
            "the backends see no connection left open: {:?}",
            open_at(backends)
        ),
    );
    story.sum_up(format!(
        "{closed} closed, in-flight request finished, then Error::Closed"
    ));
    Ok(())
}
