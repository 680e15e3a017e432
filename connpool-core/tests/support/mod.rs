//! Test doubles shared by the core's tests: a counting dialer whose connections know when they
//! close, a dial gate for cancellation, and a tiny deterministic executor for the reaper.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures::future::BoxFuture;

/// A fake connection: remembers which address it was dialed for and its serial number, and tells
/// the dialer when it closes (is dropped).
#[derive(Debug)]
pub struct Conn {
    pub addr: String,
    pub id: usize,
    pub open: Arc<AtomicBool>,
    live: Arc<AtomicUsize>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Conn {
    /// Makes `is_open` answer false from now on, as for a connection whose peer went away.
    pub fn kill(&self) {
        self.open.store(false, Ordering::SeqCst);
    }
}

/// A dialer that counts its dials and the connections still alive, can be made to fail for some
/// addresses, and can hold dials until a test lets them go.
#[derive(Clone, Default)]
pub struct TestDialer {
    pub state: Arc<DialerState>,
}

#[derive(Default)]
pub struct DialerState {
    pub dials: AtomicUsize,
    pub live: Arc<AtomicUsize>,
    pub failing: Mutex<HashMap<String, io::ErrorKind>>,
    pub gate: Mutex<Option<Arc<Gate>>>,
    pub conns: Mutex<Vec<Arc<AtomicBool>>>,
    /// Calls to `is_open`.
    pub checks: AtomicUsize,
}

/// Holds dials until opened.
#[derive(Default)]
pub struct Gate {
    open: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl Gate {
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        for w in self.waiters.lock().unwrap().drain(..) {
            w.wake();
        }
    }
}

struct GateWait(Arc<Gate>);

impl Future for GateWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.open.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        self.0.waiters.lock().unwrap().push(cx.waker().clone());
        if self.0.open.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl TestDialer {
    pub fn new() -> Self {
        Self::default()
    }
    /// Connections dialed so far.
    pub fn dials(&self) -> usize {
        self.state.dials.load(Ordering::SeqCst)
    }
    /// Connections dialed and not yet closed.
    pub fn live(&self) -> usize {
        self.state.live.load(Ordering::SeqCst)
    }
    /// Whether connection `id` has not been dropped yet.
    pub fn is_live(&self, id: usize) -> bool {
        // The dialer keeps one reference to each connection's flag and the connection the other.
        Arc::strong_count(&self.state.conns.lock().unwrap()[id]) > 1
    }
    /// Times the pool asked `is_open` so far.
    pub fn checks(&self) -> usize {
        self.state.checks.load(Ordering::SeqCst)
    }
    pub fn fail(&self, addr: &str, kind: io::ErrorKind) {
        self.state
            .failing
            .lock()
            .unwrap()
            .insert(addr.to_string(), kind);
    }
    pub fn heal(&self, addr: &str) {
        self.state.failing.lock().unwrap().remove(addr);
    }
    /// Holds every dial from now until the returned gate opens.
    pub fn hold(&self) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        *self.state.gate.lock().unwrap() = Some(gate.clone());
        gate
    }
    pub fn release_hold(&self) {
        if let Some(gate) = self.state.gate.lock().unwrap().take() {
            gate.open();
        }
    }
    /// Marks every connection dialed so far as dead.
    pub fn kill_all(&self) {
        for open in self.state.conns.lock().unwrap().iter() {
            open.store(false, Ordering::SeqCst);
        }
    }
}

#[connpool_core::async_trait]
impl connpool_core::Dialer for TestDialer {
    type Addr = String;
    type Conn = Conn;

    async fn dial(&self, addr: &String) -> io::Result<Conn> {
        let gate = self.state.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            GateWait(gate).await;
        }
        if let Some(kind) = self.state.failing.lock().unwrap().get(addr) {
            return Err(io::Error::new(*kind, format!("cannot reach {addr}")));
        }
        let id = self.state.dials.fetch_add(1, Ordering::SeqCst);
        self.state.live.fetch_add(1, Ordering::SeqCst);
        let open = Arc::new(AtomicBool::new(true));
        self.state.conns.lock().unwrap().push(open.clone());
        Ok(Conn {
            addr: addr.clone(),
            id,
            open,
            live: self.state.live.clone(),
        })
    }

    fn is_open(&self, conn: &Conn) -> bool {
        self.state.checks.fetch_add(1, Ordering::SeqCst);
        conn.open.load(Ordering::SeqCst)
    }
}

/// A spawner that keeps its tasks until a test runs them, so the reaper runs only when told.
#[derive(Clone, Default)]
pub struct TestSpawner {
    tasks: Arc<Tasks>,
}

/// The spawned tasks. A pending task's waker may sit in something its own future keeps alive
/// (the clock's sleeps, the pool's reaper signal), a cycle of `Arc`s: when the last spawner
/// goes, the futures are dropped, as a runtime drops its tasks when it shuts down.
#[derive(Default)]
struct Tasks(Mutex<Vec<Arc<Task>>>);

impl Tasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Task>>> {
        self.0.lock().unwrap()
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        let tasks = std::mem::take(self.0.get_mut().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.end();
        }
    }
}

struct Task {
    future: Mutex<Option<BoxFuture<'static, ()>>>,
    woken: AtomicBool,
    polls: AtomicUsize,
}

impl Task {
    /// Drops the task's future unfinished, as a runtime does with its tasks when it shuts down.
    fn end(&self) {
        let future = self.future.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(future);
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
    }
}

impl connpool_core::Spawner for TestSpawner {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.tasks.lock().push(Arc::new(Task {
            future: Mutex::new(Some(task)),
            woken: AtomicBool::new(true),
            polls: AtomicUsize::new(0),
        }));
    }
}

impl TestSpawner {
    /// Polls every woken task until none is woken; returns how many polls that took.
    pub fn run(&self) -> usize {
        let mut polls = 0;
        for _ in 0..10_000 {
            let tasks: Vec<_> = self.tasks.lock().clone();
            let mut progressed = false;
            for task in tasks {
                if !task.woken.swap(false, Ordering::SeqCst) {
                    continue;
                }
                progressed = true;
                polls += 1;
                task.polls.fetch_add(1, Ordering::SeqCst);
                let waker = Waker::from(task.clone());
                let mut slot = task.future.lock().unwrap();
                if let Some(fut) = slot.as_mut() {
                    if fut
                        .as_mut()
                        .poll(&mut Context::from_waker(&waker))
                        .is_ready()
                    {
                        *slot = None;
                    }
                }
            }
            if !progressed {
                return polls;
            }
        }
        panic!("tasks kept waking each other for 10 000 rounds");
    }

    /// Tasks spawned and not finished.
    pub fn pending(&self) -> usize {
        self.tasks
            .lock()
            .iter()
            .filter(|t| t.future.lock().unwrap().is_some())
            .count()
    }

    /// Drops every unfinished task's future, as a runtime does with its tasks when it shuts down.
    pub fn shut_down(&self) {
        let tasks: Vec<_> = self.tasks.lock().clone();
        for task in tasks {
            task.end();
        }
    }

    /// How many of the tasks' wakers are held anywhere (a runtime's waker holds the runtime).
    pub fn wakers_out(&self) -> usize {
        let tasks = self.tasks.lock();
        // The list holds each task once; every other holder is one of its wakers.
        tasks.iter().map(|t| Arc::strong_count(t) - 1).sum()
    }

    /// How many times the tasks have been polled in all.
    pub fn polls(&self) -> usize {
        self.tasks
            .lock()
            .iter()
            .map(|t| t.polls.load(Ordering::SeqCst))
            .sum()
    }
}

/// Polls `fut` once with a no-op waker.
pub fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let waker = Waker::noop();
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

pub fn addr(s: &str) -> String {
    s.to_string()
}
