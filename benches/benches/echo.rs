//! Real sockets: 64-byte echo round trips over loopback to 4 backends from 8 concurrent tasks, on
//! Tokio and on smol. Requests per second for:
//!
//! - `pooled`: connpool through the runtime's adapter (`builder(TcpDialer::new())`, defaults:
//!   `check_on_get` on, so every get and return asks the socket whether it is still open);
//! - `pooled_readiness_first` (Tokio only): the same with `TcpDialer::readiness_first(true)`, so
//!   the check peeks only at a socket Tokio's reactor has marked readable;
//! - `pooled_get_check_only`: the same with `check_on_return(false)`, so only the get peeks;
//! - `pooled_check_off`: the same with `check_on_get(false)`;
//! - `unpooled`: a new connection per request, closed after it;
//! - `dedicated`: each task keeps its own connection to each backend, opened before timing: the
//!   ceiling no pool can beat.
//!
//! Each task walks the backends round robin, one request (write 64 bytes, read the 64 echoed)
//! per step. The echo servers run in this process on a thread of their own (a single-threaded
//! Tokio runtime serving all four listeners); the client tasks run on one thread (a
//! single-threaded Tokio runtime, or a smol executor driven by `block_on`), so client and servers
//! each have one of the machine's two cores. On smol, the pools' reapers are spawned on smol's
//! global executor, whose thread can also drive the reactor. Each pooled mode builds its pool
//! as the loop over `ON_SMOL` reaches it, whether or not a filter selects that mode, and the
//! pooled modes come first, so that thread is there for every smol mode alike.

use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use connpool_benches::share;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};

const BACKENDS: usize = 4;
const TASKS: usize = 8;
const MESSAGE: [u8; 64] = [0x2a; 64];

/// Starts the echo servers on `127.0.0.1:0` on a thread of their own; their addresses.
fn echo_servers() -> Arc<[String]> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        runtime.block_on(async move {
            let mut addrs = Vec::new();
            for _ in 0..BACKENDS {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("a loopback listener");
                addrs.push(listener.local_addr().expect("its address").to_string());
                tokio::spawn(serve(listener));
            }
            tx.send(addrs).expect("the bench waits for the addresses");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("the echo servers started").into()
}

async fn serve(listener: tokio::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = [0; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// How the pool checks an idle connection before it is reused and when it comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// `check_on_get` on, the dialer's default check: a peek each time.
    Peek,
    /// `check_on_get` on, and the peek only where Tokio's reactor saw something (Tokio only).
    ReadinessFirst,
    /// `check_on_get` on, `check_on_return(false)`: the default peek, at the get only.
    GetOnly,
    /// `check_on_get(false)`.
    Off,
}

/// How the client gets a connection for each request.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Pooled(Check),
    Unpooled,
    Dedicated,
}

impl Mode {
    const ON_TOKIO: [Mode; 6] = [
        Mode::Pooled(Check::Peek),
        Mode::Pooled(Check::ReadinessFirst),
        Mode::Pooled(Check::GetOnly),
        Mode::Pooled(Check::Off),
        Mode::Unpooled,
        Mode::Dedicated,
    ];
    /// smol's streams have no readiness to ask.
    const ON_SMOL: [Mode; 5] = [
        Mode::Pooled(Check::Peek),
        Mode::Pooled(Check::GetOnly),
        Mode::Pooled(Check::Off),
        Mode::Unpooled,
        Mode::Dedicated,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Pooled(Check::Peek) => "pooled",
            Mode::Pooled(Check::ReadinessFirst) => "pooled_readiness_first",
            Mode::Pooled(Check::GetOnly) => "pooled_get_check_only",
            Mode::Pooled(Check::Off) => "pooled_check_off",
            Mode::Unpooled => "unpooled",
            Mode::Dedicated => "dedicated",
        }
    }
}

/// The dedicated connections: one set (a stream per backend) per task, lent to the task for a
/// run and handed back after it.
struct Dedicated<S> {
    sets: Mutex<Vec<Option<Vec<S>>>>,
}

impl<S> Dedicated<S> {
    fn new(sets: Vec<Vec<S>>) -> Self {
        Dedicated {
            sets: Mutex::new(sets.into_iter().map(Some).collect()),
        }
    }

    fn take(&self, task: usize) -> Vec<S> {
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        sets[task].take().expect("one run at a time")
    }

    fn give_back(&self, task: usize, set: Vec<S>) {
        self.sets.lock().unwrap_or_else(PoisonError::into_inner)[task] = Some(set);
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group
}

mod on_tokio {
    use super::*;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// One request on `stream`: a pooled one's guard itself, so its reads and writes go through
    /// the guard's own I/O (and its tracking of I/O left unfinished), as a user's do.
    async fn round_trip(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> io::Result<()> {
        stream.write_all(&MESSAGE).await?;
        let mut reply = [0; MESSAGE.len()];
        stream.read_exact(&mut reply).await?;
        Ok(())
    }

    async fn connect(addr: &str) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Runs `task(index, requests)` for each of the tasks, splitting `iters` requests between
    /// them; the wall time of the lot.
    async fn run<F, Fut>(iters: u64, task: F) -> Duration
    where
        F: Fn(usize, u64) -> Fut,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        let start = Instant::now();
        let tasks: Vec<_> = (0..TASKS)
            .map(|index| tokio::spawn(task(index, share(iters, TASKS, index))))
            .collect();
        for task in tasks {
            task.await
                .expect("an echo task panicked")
                .expect("an echo round trip failed");
        }
        start.elapsed()
    }

    pub(super) fn bench(c: &mut Criterion, backends: &Arc<[String]>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        let mut group = group(c, "echo_tokio");
        for mode in Mode::ON_TOKIO {
            let backends = backends.clone();
            match mode {
                Mode::Pooled(check) => {
                    let dialer = connpool_tokio::TcpDialer::new()
                        .readiness_first(check == Check::ReadinessFirst);
                    let pool = {
                        let _context = runtime.enter();
                        connpool_tokio::builder(dialer)
                            .check_on_get(check != Check::Off)
                            .check_on_return(check != Check::GetOnly)
                            .build()
                            .expect("valid settings")
                    };
                    group.bench_function(mode.name(), |b| {
                        b.iter_custom(|iters| {
                            runtime.block_on(run(iters, |index, requests| {
                                let (pool, backends) = (pool.clone(), backends.clone());
                                async move {
                                    for step in 0..requests as usize {
                                        let addr = &backends[(index + step) % BACKENDS];
                                        let mut conn = pool.get(addr).await?;
                                        round_trip(&mut conn).await?;
                                    }
                                    Ok(())
                                }
                            }))
                        });
                    });
                }
                Mode::Unpooled => {
                    group.bench_function(mode.name(), |b| {
                        b.iter_custom(|iters| {
                            runtime.block_on(run(iters, |index, requests| {
                                let backends = backends.clone();
                                async move {
                                    for step in 0..requests as usize {
                                        let addr = &backends[(index + step) % BACKENDS];
                                        round_trip(&mut connect(addr).await?).await?;
                                    }
                                    Ok(())
                                }
                            }))
                        });
                    });
                }
                Mode::Dedicated => {
                    let sets = runtime.block_on(async {
                        let mut sets = Vec::new();
                        for _ in 0..TASKS {
                            let mut set = Vec::new();
                            for addr in backends.iter() {
                                set.push(connect(addr).await.expect("a dedicated connection"));
                            }
                            sets.push(set);
                        }
                        sets
                    });
                    let dedicated = Arc::new(Dedicated::new(sets));
                    group.bench_function(mode.name(), |b| {
                        b.iter_custom(|iters| {
                            runtime.block_on(run(iters, |index, requests| {
                                let dedicated = dedicated.clone();
                                async move {
                                    let mut set = dedicated.take(index);
                                    for step in 0..requests as usize {
                                        round_trip(&mut set[(index + step) % BACKENDS]).await?;
                                    }
                                    dedicated.give_back(index, set);
                                    Ok(())
                                }
                            }))
                        });
                    });
                }
            }
        }
        group.finish();
    }
}

mod on_smol {
    use super::*;
    use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use smol::net::TcpStream;
    use smol::Executor;

    /// One request on `stream`, a pooled one's guard itself, as on Tokio.
    async fn round_trip(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> io::Result<()> {
        stream.write_all(&MESSAGE).await?;
        let mut reply = [0; MESSAGE.len()];
        stream.read_exact(&mut reply).await?;
        Ok(())
    }

    async fn connect(addr: &str) -> io::Result<TcpStream> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Runs `task(index, requests)` for each of the tasks on `executor`, driven from this thread,
    /// splitting `iters` requests between them; the wall time of the lot.
    fn run<F, Fut>(executor: &Executor<'static>, iters: u64, task: F) -> Duration
    where
        F: Fn(usize, u64) -> Fut,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        smol::block_on(executor.run(async {
            let start = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|index| executor.spawn(task(index, share(iters, TASKS, index))))
                .collect();
            for task in tasks {
                task.await.expect("an echo round trip failed");
            }
            start.elapsed()
        }))
    }

    pub(super) fn bench(c: &mut Criterion, backends: &Arc<[String]>) {
        let executor = Executor::new();
        let mut group = group(c, "echo_smol");
        for mode in Mode::ON_SMOL {
            let backends = backends.clone();
            match mode {
                Mode::Pooled(check) => {
                    assert_ne!(check, Check::ReadinessFirst, "smol has no readiness to ask");
                    let pool = connpool_smol::builder(connpool_smol::TcpDialer::new())
                        .check_on_get(check != Check::Off)
                        .check_on_return(check != Check::GetOnly)
                        .build()
                        .expect("valid settings");
                    group.bench_function(mode.name(), |b| {
                        b.iter_custom(|iters| {
                            run(&executor, iters, |index, requests| {
                                let (pool, backends) = (pool.clone(), backends.clone());
                                async move {
                                    for step in 0..requests as usize {
                                        let addr = &backends[(index + step) % BACKENDS];
                                        let mut conn = pool.get(addr).await?;
                                        round_trip(&mut conn).await?;
                                    }
                                    Ok(())
                                }
                            })
                        });
                    });
                }
                Mode::Unpooled => {
                    group.bench_function(mode.name(), |b| {
                        b.iter_custom(|iters| {
                            run(&executor, iters, |index, requests| {
                                let backends = backends.clone();
                                async move {
                                    for step in 0..requests as usize {
                                        let addr = &backends[(index + step) % BACKENDS];
                                        round_trip(&mut connect(addr).await?).await?;
                                    }
                                    Ok(())
                                }
                            })
                        });
                    });
                }
                Mode::Dedicated => {
                    let sets = smol::block_on(async {
                        let mut sets = Vec::new();
                        for _ in 0..TASKS {
                            let mut set = Vec::new();
                            for addr in backends.iter() {
                                set.push(connect(addr).await.expect("a dedicated connection"));
                            }
                            sets.push(set);
                        }
                        sets
                    });
                    let dedicated = Arc::new(Dedicated::new(sets));
                    group.bench_function(mode.name(), |b| {
                        b.iter_custom(|iters| {
                            run(&executor, iters, |index, requests| {
                                let dedicated = dedicated.clone();
                                async move {
                                    let mut set = dedicated.take(index);
                                    for step in 0..requests as usize {
                                        round_trip(&mut set[(index + step) % BACKENDS]).await?;
                                    }
                                    dedicated.give_back(index, set);
                                    Ok(())
                                }
                            })
                        });
                    });
                }
            }
        }
        group.finish();
    }
}

fn echo(c: &mut Criterion) {
    let backends = echo_servers();
    on_tokio::bench(c, &backends);
    on_smol::bench(c, &backends);
}

criterion_group!(benches, echo);
criterion_main!(benches);
