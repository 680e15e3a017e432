//! loadgen: echo requests through a connpool pool on smol, with throughput, latency percentiles
//! and the pool's stats.
//!
//! ```text
//! cargo run --release --example loadgen -- [ADDR...] --requests N --concurrency C --payload BYTES [--unpooled]
//! cargo run --release --example loadgen -- --help
//! ```
//!
//! Without addresses it starts three echo servers on 127.0.0.1 and loads those. Exit status: 0 when
//! every request was answered, 1 when an address cannot be reached or a request failed, 2 for a bad
//! command line.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use connpool_smol::{Dialer, Pool, TcpDialer};
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Timer};

const USAGE: &str = "\
loadgen: sends echo requests through a connpool pool and reports throughput, latency and the
pool's stats.

Usage: cargo run --release --example loadgen -- [ADDR...] [OPTIONS]

Arguments:
  [ADDR...]  echo servers as host:port, sent to in turn; without any, loadgen starts three
             echo servers on 127.0.0.1 and loads those

Options:
  -n, --requests N              requests to send in all [default: 10000]
  -c, --concurrency C           requests in flight at once [default: 16]
  -p, --payload BYTES           bytes per request, echoed back [default: 64]
      --max-open-per-host N     at most N connections per address; more callers wait in line
                                [default: no limit]
      --unpooled                dial a new connection for every request, to compare
  -h, --help                    print this help

Every address is tried once before the run. The run stops early after 100 failed requests.

Exit status: 0 when every request was answered; 1 when an address cannot be reached or a
request failed; 2 for a bad command line.
";

/// How long the first contact with each address may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest payload accepted, to keep a typo from allocating gigabytes.
const MAX_PAYLOAD: usize = 16 << 20;
/// Failed requests after which the run stops: a server that went away mid-run is reported at
/// once rather than after every remaining request has failed against it.
const MAX_FAILURES: u64 = 100;

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(options)) => options,
        Err(problem) => {
            eprintln!("loadgen: {problem}");
            eprintln!("Try `loadgen --help` for the options.");
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loadgen: {err}");
            ExitCode::FAILURE
        }
    }
}

/// What the command line asks for.
enum Command {
    Help,
    Run(Options),
}

struct Options {
    addrs: Vec<String>,
    requests: u64,
    concurrency: usize,
    payload: usize,
    max_open_per_host: Option<usize>,
    unpooled: bool,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut options = Options {
        addrs: Vec::new(),
        requests: 10_000,
        concurrency: 16,
        payload: 64,
        max_open_per_host: None,
        unpooled: false,
    };
    let mut args = args.into_iter();
    let mut only_addrs = false;
    while let Some(arg) = args.next() {
        if only_addrs || !arg.starts_with('-') || arg == "-" {
            options.addrs.push(parse_addr(&arg)?);
            continue;
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(Command::Help),
            "-n" | "--requests" => options.requests = number("--requests", &value(flag)?)?,
            "-c" | "--concurrency" => options.concurrency = number("--concurrency", &value(flag)?)?,
            "-p" | "--payload" => options.payload = number("--payload", &value(flag)?)?,
            "--max-open-per-host" => {
                options.max_open_per_host = Some(number("--max-open-per-host", &value(flag)?)?)
            }
            "--unpooled" if inline.is_none() => options.unpooled = true,
            "--unpooled" => return Err("--unpooled takes no value".to_string()),
            "--" => only_addrs = true,
            _ => return Err(format!("unknown option `{arg}`")),
        }
    }
    if options.payload > MAX_PAYLOAD {
        return Err(format!(
            "--payload {} is more than the {} bytes loadgen sends in one request",
            options.payload, MAX_PAYLOAD
        ));
    }
    if options.unpooled && options.max_open_per_host.is_some() {
        return Err("--max-open-per-host limits the pool; --unpooled has none".to_string());
    }
    Ok(Command::Run(options))
}

/// A count of at least one: `10000`, `10_000`.
fn number<T: TryFrom<u64>>(name: &str, text: &str) -> Result<T, String> {
    let digits = text.replace('_', "");
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{name} takes a whole number, not `{text}`"))?;
    if n == 0 {
        return Err(format!("{name} must be at least 1"));
    }
    T::try_from(n).map_err(|_| format!("{name} {text} is too large"))
}

/// A `host:port` address, checked for form only: the name is resolved when it is dialed.
fn parse_addr(arg: &str) -> Result<String, String> {
    match arg.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(arg.to_string())
        }
        _ => Err(format!(
            "`{arg}` is not an address: expected host:port, such as 127.0.0.1:7000"
        )),
    }
}

fn run(options: Options) -> io::Result<()> {
    let executor = Arc::new(Executor::new());
    let threads = thread::available_parallelism().map_or(2, |n| n.get());
    let (stop, stopped) = smol::channel::unbounded::<()>();
    thread::scope(|scope| {
        for _ in 1..threads {
            let (executor, stopped) = (executor.clone(), stopped.clone());
            scope.spawn(move || smol::block_on(executor.run(stopped.recv())));
        }
        let result = smol::block_on(executor.run(load(executor.clone(), options)));
        // Closing the channel ends the other threads' runs.
        drop(stop);
        result
    })
}

async fn load(executor: Arc<Executor<'static>>, mut options: Options) -> io::Result<()> {
    if options.addrs.is_empty() {
        for _ in 0..3 {
            options.addrs.push(echo_server(&executor).await?);
        }
        println!(
            "no address given: started echo servers on {}",
            options.addrs.join(", ")
        );
    }
    let dialer = TcpDialer::new().connect_timeout(PROBE_TIMEOUT);
    for addr in &options.addrs {
        probe(&dialer, addr, options.payload).await?;
    }
    let pool = if options.unpooled {
        None
    } else {
        let mut builder = connpool_smol::builder(dialer.clone()).capacity(options.concurrency);
        if let Some(limit) = options.max_open_per_host {
            builder = builder.max_open_per_host(limit);
        }
        Some(builder.build().map_err(io::Error::other)?)
    };
    let concurrency = options.concurrency.min(options.requests as usize);
    println!(
        "{} requests of {} bytes to {} address{}, {concurrency} at a time, {}",
        options.requests,
        options.payload,
        options.addrs.len(),
        if options.addrs.len() == 1 { "" } else { "es" },
        if pool.is_some() {
            "through the pool"
        } else {
            "a new connection each (--unpooled)"
        },
    );

    let plan = Arc::new(Plan {
        addrs: options.addrs.clone(),
        requests: options.requests,
        payload: (0..options.payload)
            .map(|i| b'a' + (i % 26) as u8)
            .collect(),
        pool: pool.clone(),
        dialer,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let finished = Arc::new(AtomicBool::new(false));
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| executor.spawn(progress(plan.clone(), finished.clone())));

    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| executor.spawn(worker(plan.clone())))
        .collect();
    let mut report = Report::default();
    for worker in workers {
        report.add(worker.await);
    }
    let took = started.elapsed();
    finished.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        progress.await;
    }

    print_results(&options, &mut report, took);
    if let Some(pool) = &pool {
        print_pool(pool);
        pool.close();
    } else {
        println!(
            "connections: {} dialed, one per request",
            report.answered + report.failed
        );
    }
    let sent = report.answered + report.failed;
    let stopped = if sent < options.requests {
        format!(" (stopped after {MAX_FAILURES} failures)")
    } else {
        String::new()
    };
    match report.first_error {
        None => Ok(()),
        Some(err) => Err(io::Error::new(
            err.kind(),
            format!(
                "{} of {sent} requests sent failed{stopped}; the first: {err}",
                report.failed
            ),
        )),
    }
}

/// What every worker shares: the work to do and how far it has got.
struct Plan {
    addrs: Vec<String>,
    requests: u64,
    payload: Vec<u8>,
    pool: Option<Pool>,
    dialer: TcpDialer,
    /// The next request to claim.
    next: AtomicU64,
    /// Requests finished, answered or failed.
    done: AtomicU64,
    /// Requests failed; at `MAX_FAILURES` the workers stop.
    failed: AtomicU64,
}

/// What workers measured.
#[derive(Default)]
struct Report {
    answered: u64,
    failed: u64,
    first_error: Option<io::Error>,
    /// The time each answered request took, in nanoseconds.
    latencies: Vec<u64>,
}

impl Report {
    fn add(&mut self, other: Report) {
        self.answered += other.answered;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
    }
}

/// Sends requests until none are left to claim.
async fn worker(plan: Arc<Plan>) -> Report {
    let mut report = Report::default();
    let mut reply = vec![0; plan.payload.len()];
    loop {
        if plan.failed.load(Ordering::Relaxed) >= MAX_FAILURES {
            return report;
        }
        let n = plan.next.fetch_add(1, Ordering::Relaxed);
        if n >= plan.requests {
            return report;
        }
        let addr = &plan.addrs[(n % plan.addrs.len() as u64) as usize];
        let started = Instant::now();
        let result = match &plan.pool {
            Some(pool) => match pool.get(addr).await {
                Ok(mut conn) => {
                    let result = exchange(&mut conn, &plan.payload, &mut reply).await;
                    if result.is_err() {
                        // Cut off half-way, the connection is out of step: never reuse it.
                        conn.release();
                    }
                    result
                }
                Err(err) => Err(err.into()),
            },
            None => match plan.dialer.dial(addr).await {
                Ok(mut stream) => exchange(&mut stream, &plan.payload, &mut reply).await,
                Err(err) => Err(err),
            },
        };
        match result {
            Ok(()) => {
                report.answered += 1;
                report.latencies.push(started.elapsed().as_nanos() as u64);
            }
            Err(err) => {
                report.failed += 1;
                report.first_error.get_or_insert(err);
                plan.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        plan.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// One request on `conn`: sends `payload`, reads the echo into `reply`, and checks it.
///
/// Reads while it writes: an echo server sends back what it has read while the rest arrives, and
/// a payload larger than the sockets' buffers would otherwise stall both ends, each waiting for
/// the other to read.
async fn exchange<C>(conn: &mut C, payload: &[u8], reply: &mut [u8]) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = smol::io::split(conn);
    let send = async {
        writer.write_all(payload).await?;
        writer.flush().await
    };
    smol::future::try_zip(send, reader.read_exact(reply)).await?;
    if reply != payload {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the answer differs from the request",
        ));
    }
    Ok(())
}

/// One request on a connection of its own, so that an address that is down, or that does not
/// echo, is reported before the run instead of as thousands of failed requests.
async fn probe(dialer: &TcpDialer, addr: &String, payload: usize) -> io::Result<()> {
    // The dialer's error names the address and the cause, and its connect timeout bounds the wait.
    let mut stream = dialer.dial(addr).await?;
    let bytes = vec![b'?'; payload];
    let mut reply = vec![0; payload];
    let attempt = exchange(&mut stream, &bytes, &mut reply);
    let give_up = async {
        Timer::after(PROBE_TIMEOUT).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
        ))
    };
    smol::future::or(attempt, give_up).await.map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("{addr} accepts connections but does not echo ({err}): is it an echo server?"),
        )
    })
}

/// Redraws a progress bar on stderr ten times a second until the run is over.
async fn progress(plan: Arc<Plan>, finished: Arc<AtomicBool>) {
    let started = Instant::now();
    let mut stderr = std::io::stderr();
    loop {
        let over = finished.load(Ordering::Relaxed);
        let done = plan.done.load(Ordering::Relaxed);
        let _ = write!(
            stderr,
            "\r{}",
            Bar::new(done, plan.requests, started.elapsed())
        );
        if over {
            let _ = writeln!(stderr);
            return;
        }
        Timer::after(Duration::from_millis(100)).await;
    }
}

/// A progress line: `[#########---------]  4500/10000  45%  21034 req/s`.
struct Bar {
    done: u64,
    total: u64,
    elapsed: Duration,
}

impl Bar {
    const WIDTH: u64 = 30;

    fn new(done: u64, total: u64, elapsed: Duration) -> Self {
        Bar {
            done,
            total,
            elapsed,
        }
    }
}

impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let filled = (self.done * Bar::WIDTH / self.total.max(1)) as usize;
        let rate = self.done as f64 / self.elapsed.as_secs_f64().max(1e-3);
        write!(
            f,
            "[{}{}] {:>width$}/{}  {:>3}%  {rate:.0} req/s ",
            "#".repeat(filled),
            "-".repeat(Bar::WIDTH as usize - filled),
            self.done,
            self.total,
            self.done * 100 / self.total.max(1),
            width = self.total.to_string().len(),
        )
    }
}

fn print_results(options: &Options, report: &mut Report, took: Duration) {
    let seconds = took.as_secs_f64().max(1e-9);
    let rate = report.answered as f64 / seconds;
    let megabytes = rate * options.payload as f64 / 1e6;
    println!(
        "done in {seconds:.2} s: {} answered, {} failed; {rate:.0} requests/s, {megabytes:.1} MB/s each way",
        report.answered, report.failed
    );
    report.latencies.sort_unstable();
    if let Some(&max) = report.latencies.last() {
        println!(
            "latency: p50 {}   p99 {}   max {}",
            Nanos(percentile(&report.latencies, 50)),
            Nanos(percentile(&report.latencies, 99)),
            Nanos(max),
        );
    }
}

/// The nearest-rank percentile `p` of sorted `values`.
fn percentile(values: &[u64], p: u64) -> u64 {
    let rank = (values.len() as u64 * p).div_ceil(100).max(1);
    values[rank as usize - 1]
}

/// A duration in nanoseconds, shown in a unit that fits.
struct Nanos(u64);

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0 as f64;
        if nanos < 1e6 {
            write!(f, "{:.0} µs", nanos / 1e3)
        } else if nanos < 1e9 {
            write!(f, "{:.2} ms", nanos / 1e6)
        } else {
            write!(f, "{:.2} s", nanos / 1e9)
        }
    }
}

fn print_pool(pool: &Pool) {
    let stats = pool.stats();
    let c = &stats.counters;
    let failed_dials = match c.dial_errors {
        0 => String::new(),
        n => format!(" ({n} failed)"),
    };
    println!(
        "pool: {} dials{failed_dials}, {} reused; {} waited for a slot ({} timed out); {} closed; {} idle now",
        c.dials,
        c.hits,
        c.waits,
        c.wait_timeouts,
        c.closed(),
        stats.idle()
    );
    let mut destinations = stats.destinations;
    destinations.sort_by(|a, b| a.addr.cmp(&b.addr));
    for dest in destinations {
        println!(
            "  {:<24} {} open, {} idle",
            dest.addr, dest.total, dest.idle
        );
    }
}

/// An echo server on 127.0.0.1, on `executor`; returns its address.
async fn echo_server(executor: &Arc<Executor<'static>>) -> io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let spawner = executor.clone();
    executor
        .spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => spawner.spawn(echo(stream)).detach(),
                    // Out of file descriptors, say: back off rather than spin.
                    Err(_) => {
                        Timer::after(Duration::from_millis(10)).await;
                    }
                }
            }
        })
        .detach();
    Ok(addr)
}

async fn echo(stream: TcpStream) {
    let mut writer = stream.clone();
    let _ = smol::io::copy(stream, &mut writer).await;
}
