//! Tail latency of a get + drop on a Tokio multi-thread runtime, beside a naive map.
//!
//! The criterion groups report medians of mean costs; this reports the tail of each operation.
//! `--tasks` tasks share `--workers` Tokio workers. Each loops over `--dests` destinations (a
//! round robin of its own): a get, a `yield_now` while holding the connection (`--hold yield`,
//! so the task may move to another worker and return it from there; `--hold none` drops it at
//! once and yields after), the drop. The time of the get and of the drop (not of the hold) is
//! recorded for every operation. With `--stats-every-ms N`, one more task calls the pool's stats
//! every N ms (or right after the last call, when that took longer), as a metrics exporter would.
//! The pools run one after the other, `--runs` times in turn: `connpool` (`connpool_core::Pool`,
//! check off, no clock) and `naive` (the benches' `NaiveMap`: a std `Mutex` around a map hashed
//! as connpool hashes, a lock and a lookup on get and on return; its stats only sum the lengths
//! of its lists, where connpool's list every destination).
//!
//! Each run prints operations per second and the percentiles of the get + drop time in ns (the
//! time at rank ⌊(n − 1)q⌋ of the n sorted times); the last lines give each pool's medians over
//! the runs.
//!
//! ```sh
//! cargo run --release -p connpool-benches --example tail -- \
//!     --workers 4 --tasks 64 --dests 1 --hold yield --runs 5
//! ```

use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use connpool_benches::peers::{FastHash, NaiveGuard, NaiveMap};
use connpool_benches::{addresses, NoopDialer};

struct Args {
    workers: usize,
    tasks: usize,
    dests: usize,
    hold: bool,
    stats_every: Option<Duration>,
    secs: f64,
    runs: usize,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        workers: 2,
        tasks: 64,
        dests: 16,
        hold: true,
        stats_every: None,
        secs: 1.5,
        runs: 3,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let (name, value) = match pair {
            [name, value] => (name.as_str(), value.as_str()),
            [name] => return Err(format!("{name} needs a value")),
            _ => unreachable!("chunks of two"),
        };
        match name {
            "--workers" => args.workers = number(name, value)?,
            "--tasks" => args.tasks = number(name, value)?,
            "--dests" => args.dests = number(name, value)?,
            "--runs" => args.runs = number(name, value)?,
            "--secs" => args.secs = seconds(name, value)?,
            "--stats-every-ms" => {
                let every = Duration::from_secs_f64(seconds(name, value)? / 1000.0);
                args.stats_every = Some(every).filter(|every| !every.is_zero());
            }
            "--hold" => {
                args.hold = match value {
                    "yield" => true,
                    "none" => false,
                    _ => return Err(format!("--hold yield|none, not {value}")),
                }
            }
            _ => return Err(format!("unknown option {name}")),
        }
    }
    if args.workers == 0 || args.tasks == 0 || args.dests == 0 || args.runs == 0 {
        return Err("--workers, --tasks, --dests and --runs must be at least 1".into());
    }
    Ok(args)
}

fn number<T: FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name} takes a whole number, not {value}"))
}

/// A finite, non-negative number of seconds (or milliseconds).
fn seconds(name: &str, value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..1e9).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{name} takes a number of zero or more, not {value}"
        )),
    }
}

/// What the loop needs of a pool: a get that hands out a guard, and the stats.
trait Tail: Send + Sync + 'static {
    type Guard<'a>: Send;
    fn get(&self, dest: usize) -> impl std::future::Future<Output = Self::Guard<'_>> + Send;
    fn stats(&self) -> usize;
}

struct Connpool {
    pool: connpool_core::Pool<NoopDialer>,
    addrs: Vec<String>,
}

impl Tail for Connpool {
    type Guard<'a> = connpool_core::Pooled<NoopDialer>;
    async fn get(&self, dest: usize) -> Self::Guard<'_> {
        self.pool.get(&self.addrs[dest]).await.expect("no-op dial")
    }
    fn stats(&self) -> usize {
        self.pool.stats().total()
    }
}

/// No cap on the idle lists: a destination never has more idle connections than there are tasks.
struct Naive {
    map: NaiveMap<FastHash>,
    addrs: Vec<String>,
}

impl Tail for Naive {
    type Guard<'a> = NaiveGuard<'a, FastHash>;
    async fn get(&self, dest: usize) -> Self::Guard<'_> {
        self.map.get(&self.addrs[dest])
    }
    fn stats(&self) -> usize {
        self.map.sizes().iter().sum()
    }
}

const WARM: u8 = 0;
const RECORD: u8 = 1;
const STOP: u8 = 2;

/// Nanoseconds of each recorded get + drop.
async fn task<P: Tail>(
    pool: Arc<P>,
    phase: Arc<AtomicU8>,
    first: usize,
    args: (usize, bool),
) -> Vec<u32> {
    let (dests, hold) = args;
    let mut times = Vec::with_capacity(1 << 16);
    let mut dest = first;
    loop {
        let now = phase.load(Ordering::Relaxed);
        if now == STOP {
            return times;
        }
        dest = (dest + 1) % dests;
        let start = Instant::now();
        let guard = pool.get(dest).await;
        let got = start.elapsed();
        if hold {
            tokio::task::yield_now().await;
        }
        let dropping = Instant::now();
        drop(guard);
        let total = got + dropping.elapsed();
        if now == RECORD {
            times.push(u32::try_from(total.as_nanos()).unwrap_or(u32::MAX));
        }
        if !hold {
            tokio::task::yield_now().await;
        }
    }
}

/// Operations per second and the percentiles of one run.
struct Run {
    per_sec: f64,
    /// p50, p99, p99.9, p99.99, max.
    ns: [u32; 5],
}

/// `None` when no operation was recorded.
fn run<P: Tail>(args: &Args, pool: P) -> Option<Run> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
        .expect("a runtime");
    let pool = Arc::new(pool);
    let (mut times, secs) = runtime.block_on(async {
        let phase = Arc::new(AtomicU8::new(WARM));
        let tasks: Vec<_> = (0..args.tasks)
            .map(|t| {
                let first = t * args.dests / args.tasks;
                tokio::spawn(task(
                    pool.clone(),
                    phase.clone(),
                    first,
                    (args.dests, args.hold),
                ))
            })
            .collect();
        let stats = args.stats_every.map(|every| {
            let (pool, phase) = (pool.clone(), phase.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while phase.load(Ordering::Relaxed) != STOP {
                    tick.tick().await;
                    std::hint::black_box(pool.stats());
                }
            })
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        phase.store(RECORD, Ordering::Relaxed);
        let start = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(args.secs)).await;
        phase.store(STOP, Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        let mut times = Vec::new();
        for t in tasks {
            times.extend(t.await.expect("a task"));
        }
        if let Some(stats) = stats {
            stats.await.expect("the stats task");
        }
        (times, secs)
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    times.sort_unstable();
    let last = times.len().checked_sub(1)?;
    let at = |q: f64| times[(last as f64 * q) as usize];
    Some(Run {
        per_sec: times.len() as f64 / secs,
        ns: [at(0.5), at(0.99), at(0.999), at(0.9999), at(1.0)],
    })
}

/// The middle value, or the mean of the two middle ones.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let half = values.len() / 2;
    if values.len() % 2 == 1 {
        values[half]
    } else {
        (values[half - 1] + values[half]) / 2.0
    }
}

const USAGE: &str = "\
usage: tail [--workers N] [--tasks N] [--dests N] [--hold yield|none] [--stats-every-ms MS]
            [--secs S] [--runs N]
defaults: 2 workers, 64 tasks, 16 destinations, hold yield, no stats, 1.5 s a run, 3 runs";

fn main() -> ExitCode {
    if std::env::args().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match parse() {
        Ok(args) => args,
        Err(problem) => {
            eprintln!("tail: {problem}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{} workers, {} tasks, {} destinations, hold: {}, stats every: {:?}",
        args.workers,
        args.tasks,
        args.dests,
        if args.hold { "yield" } else { "none" },
        args.stats_every
    );
    println!("run pool        ops/s      p50     p99   p99.9  p99.99      max (ns)");
    let capacity = args.tasks.max(32);
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=args.runs {
        for (which, name) in ["connpool", "naive"].into_iter().enumerate() {
            let addrs = addresses(args.dests);
            let run = if which == 0 {
                let pool = connpool_core::Pool::builder(NoopDialer)
                    .capacity(capacity)
                    .check_on_get(false)
                    .build()
                    .expect("valid settings");
                run(&args, Connpool { pool, addrs })
            } else {
                let map = NaiveMap::default();
                run(&args, Naive { map, addrs })
            };
            let Some(run) = run else {
                println!("{round:>3} {name:<9} no operation recorded: give it more --secs");
                continue;
            };
            let [p50, p99, p999, p9999, max] = run.ns;
            println!(
                "{round:>3} {name:<9} {:>8.2}M {p50:>8} {p99:>7} {p999:>7} {p9999:>7} {max:>8}",
                run.per_sec / 1e6
            );
            runs[which].push(run);
        }
    }
    for (name, runs) in ["connpool", "naive"].into_iter().zip(runs) {
        if runs.is_empty() {
            continue;
        }
        let per_sec = median(runs.iter().map(|r| r.per_sec).collect());
        let ns: Vec<f64> = (0..5)
            .map(|i| median(runs.iter().map(|r| f64::from(r.ns[i])).collect()))
            .collect();
        println!(
            "med {name:<9} {:>8.2}M {:>8.0} {:>7.0} {:>7.0} {:>7.0} {:>8.0}",
            per_sec / 1e6,
            ns[0],
            ns[1],
            ns[2],
            ns[3],
            ns[4]
        );
    }
    ExitCode::SUCCESS
}
