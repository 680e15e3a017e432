//! A backend that misbehaves on demand, for the fault and limit tests: a loopback echo server on
//! plain threads that can refuse, hang up, reset, stall, restart on its port and speak out of
//! turn, and that counts what it accepted, what is open, the most open at once, and what closed.
//!
//! Requests are frames of [`FRAME`] bytes, echoed back whole, so a client that reads anything but
//! its own frame knows the connection is out of step.
//!
//! A connection counts as open from its accept until the client has closed it: when the backend
//! hangs up by itself it only shuts its sending side (the client sees end of stream) and keeps
//! reading until the client closes too, so [`Backend::open`] reaching zero shows that the client
//! closed every socket it opened. Only a reset ends a connection on the backend's side alone.

use std::io::{ErrorKind, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

/// The size of a request and of its answer.
pub const FRAME: usize = 16;

/// How the backend treats connections and requests from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Echo every frame.
    Echo,
    /// Hang up on every new connection as soon as it is accepted.
    AcceptThenClose,
    /// Answer `n` frames per connection; the last answer carries the end of the stream, so the
    /// client has both when it reads the answer.
    // Its test needs Linux's `TCP_CORK`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    CloseAfter(usize),
    /// Read frames and answer none until the mode changes; then answer them late.
    Stall,
}

pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    port: Port,
}

/// The backend always holds its port, so that nothing else takes it while it refuses.
enum Port {
    /// Bound, not listening: connections are refused.
    Reserved(Socket),
    Listening(Acceptor),
    /// Only while switching between the two, and once the backend is dropped.
    Stopped,
}

struct Acceptor {
    listener: Arc<TcpListener>,
    stopping: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

struct Shared {
    mode: Mutex<Mode>,
    /// Signalled when the mode or a connection's fate changes, for stalled connections.
    changed: Condvar,
    /// The connections being served, in the order they were accepted.
    conns: Mutex<Vec<Served>>,
    accepted: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
    closed: AtomicUsize,
    hung_up: AtomicUsize,
}

/// A connection as the registry sees it.
struct Served {
    peer: SocketAddr,
    conn: Arc<Conn>,
    thread: JoinHandle<()>,
}

/// What the registry shares with the thread serving a connection.
struct Conn {
    fate: AtomicU8,
    /// A second handle on the socket, to act on it from outside its thread. The serving thread
    /// drops it when it ends, so that its own handle is the last and closing it closes the socket.
    handle: Mutex<Option<TcpStream>>,
}

const SERVING: u8 = 0;
/// The backend crashed: no more answers, but the connection is watched until the client closes.
const CRASHED: u8 = 1;
/// Reset or stopped: the serving thread ends at once.
const ENDING: u8 = 2;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits in real time, blocking the thread, until `done` holds; panics after five seconds.
pub fn block_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl Backend {
    /// A healthy backend on a loopback port of the system's choosing.
    pub fn start() -> Self {
        let mut backend = Backend::refusing();
        backend.listen();
        backend
    }

    /// A loopback port the backend holds without listening: every connection is refused until
    /// [`listen`](Backend::listen).
    pub fn refusing() -> Self {
        let socket = reserve("127.0.0.1:0".parse().unwrap());
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        Backend {
            addr,
            shared: Arc::new(Shared {
                mode: Mutex::new(Mode::Echo),
                changed: Condvar::new(),
                conns: Mutex::default(),
                accepted: AtomicUsize::new(0),
                open: AtomicUsize::new(0),
                max_open: AtomicUsize::new(0),
                closed: AtomicUsize::new(0),
                hung_up: AtomicUsize::new(0),
            }),
            port: Port::Reserved(socket),
        }
    }

    /// The address to dial.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Starts listening on the backend's port.
    pub fn listen(&mut self) {
        let socket = match std::mem::replace(&mut self.port, Port::Stopped) {
            Port::Reserved(socket) => socket,
            Port::Listening(acceptor) => {
                self.port = Port::Listening(acceptor);
                return;
            }
            Port::Stopped => reserve(self.addr),
        };
        socket.listen(128).unwrap();
        let listener = Arc::new(TcpListener::from(socket));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (listener, stopping, shared) =
                (listener.clone(), stopping.clone(), self.shared.clone());
            move || accept_until_stopped(&listener, &stopping, &shared)
        });
        self.port = Port::Listening(Acceptor {
            listener,
            stopping,
            thread,
        });
    }

    /// Stops listening (new connections are refused) and hangs up on every connection, as a
    /// backend that crashed; the connections stay counted until their clients close them.
    pub fn crash(&mut self) {
        self.stop_listening();
        self.port = Port::Reserved(reserve(self.addr));
        self.for_each_conn(|conn, handle| {
            conn.fate.store(CRASHED, Ordering::SeqCst);
            let _ = handle.shutdown(Shutdown::Write);
        });
        self.shared.changed.notify_all();
    }

    /// A crash, then listening again on the same port.
    pub fn restart(&mut self) {
        self.crash();
        self.listen();
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
        self.shared.changed.notify_all();
    }

    /// Resets every open connection (`SO_LINGER` 0, then close: the client gets RST), in the
    /// order they were accepted; returns once all are reset.
    pub fn reset_all(&self) {
        let served: Vec<Served> = lock(&self.shared.conns).drain(..).collect();
        for Served { conn, thread, .. } in served {
            if let Some(handle) = &*lock(&conn.handle) {
                let _ = SockRef::from(handle).set_linger(Some(Duration::ZERO));
                conn.fate.store(ENDING, Ordering::SeqCst);
                // Wakes the serving thread's read; nothing goes to the client.
                let _ = handle.shutdown(Shutdown::Read);
            }
            self.shared.changed.notify_all();
            // Its thread closes the last handle, which sends the reset.
            thread.join().unwrap();
        }
    }

    /// Writes `bytes` to every connection still served, in the order they were accepted, as a
    /// backend that answers what nobody asked.
    pub fn send_unsolicited(&self, bytes: &[u8]) {
        self.for_each_conn(|conn, mut handle| {
            if conn.fate.load(Ordering::SeqCst) == SERVING {
                let _ = handle.write_all(bytes);
            }
        });
    }

    /// A connection of the test's own, accepted after every connection open now, so that once
    /// something the backend did to all its connections reached it, it reached the others.
    pub fn probe(&self) -> Probe {
        let stream = TcpStream::connect(self.addr).unwrap();
        stream.set_nonblocking(true).unwrap();
        let local = stream.local_addr().unwrap();
        block_until("the backend accepts the probe", || {
            lock(&self.shared.conns).iter().any(|s| s.peer == local)
        });
        Probe { stream }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections accepted and not yet closed by the client (or reset).
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The most connections open at once.
    pub fn max_open(&self) -> usize {
        self.shared.max_open.load(Ordering::SeqCst)
    }

    /// Connections over: closed by the client, or reset.
    pub fn closed(&self) -> usize {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Connections the backend hung up on by itself (after accept, or after `n` answers).
    pub fn hung_up(&self) -> usize {
        self.shared.hung_up.load(Ordering::SeqCst)
    }

    fn for_each_conn(&self, mut act: impl FnMut(&Conn, &TcpStream)) {
        for served in lock(&self.shared.conns).iter() {
            if let Some(handle) = &*lock(&served.conn.handle) {
                act(&served.conn, handle);
            }
        }
    }

    fn stop_listening(&mut self) {
        if let Port::Listening(acceptor) = std::mem::replace(&mut self.port, Port::Stopped) {
            acceptor.stopping.store(true, Ordering::SeqCst);
            // A connection wakes the blocked accept, which then sees `stopping`.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            acceptor.thread.join().unwrap();
            drop(acceptor.listener);
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop_listening();
        self.port = Port::Stopped;
        let served: Vec<Served> = lock(&self.shared.conns).drain(..).collect();
        for served in &served {
            served.conn.fate.store(ENDING, Ordering::SeqCst);
            if let Some(handle) = &*lock(&served.conn.handle) {
                let _ = handle.shutdown(Shutdown::Both);
            }
        }
        self.shared.changed.notify_all();
        for served in served {
            let _ = served.thread.join();
        }
    }
}

/// A socket bound to `addr` and not listening: it keeps the port, and connections are refused.
fn reserve(addr: SocketAddr) -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    // The port's earlier connections may still be closing.
    socket.set_reuse_address(true).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket
}

fn accept_until_stopped(listener: &TcpListener, stopping: &AtomicBool, shared: &Arc<Shared>) {
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Ok(handle) = stream.try_clone() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_open.fetch_max(open, Ordering::SeqCst);
        let conn = Arc::new(Conn {
            fate: AtomicU8::new(SERVING),
            handle: Mutex::new(Some(handle)),
        });
        let thread = std::thread::spawn({
            let (conn, shared) = (conn.clone(), shared.clone());
            move || {
                serve(&stream, &conn, &shared);
                drop(lock(&conn.handle).take());
                drop(stream);
                shared.open.fetch_sub(1, Ordering::SeqCst);
                shared.closed.fetch_add(1, Ordering::SeqCst);
            }
        });
        let mut conns = lock(&shared.conns);
        conns.retain(|served| !served.thread.is_finished());
        conns.push(Served { peer, conn, thread });
    }
}

/// Serves one connection until its client closes it or the backend ends it.
fn serve(mut stream: &TcpStream, conn: &Conn, shared: &Shared) {
    if *lock(&shared.mode) == Mode::AcceptThenClose {
        return hang_up(stream, shared);
    }
    let mut answered = 0;
    let mut frame = [0; FRAME];
    while stream.read_exact(&mut frame).is_ok() {
        let Some(mode) = wait_while_stalled(conn, shared) else {
            break;
        };
        let written = match mode {
            Mode::CloseAfter(n) if answered + 1 >= n => {
                // Held back until the end of the stream joins it in one segment.
                #[cfg(target_os = "linux")]
                let _ = SockRef::from(stream).set_tcp_cork(true);
                let _ = stream.write_all(&frame);
                return hang_up(stream, shared);
            }
            _ => stream.write_all(&frame),
        };
        if written.is_err() {
            break;
        }
        answered += 1;
    }
    if conn.fate.load(Ordering::SeqCst) == CRASHED {
        drain(stream);
    }
}

/// The mode to answer in, once the backend no longer stalls; `None` when the backend stopped
/// serving this connection meanwhile.
fn wait_while_stalled(conn: &Conn, shared: &Shared) -> Option<Mode> {
    let mut mode = lock(&shared.mode);
    loop {
        if conn.fate.load(Ordering::SeqCst) != SERVING {
            return None;
        }
        if *mode != Mode::Stall {
            return Some(*mode);
        }
        mode = shared
            .changed
            .wait(mode)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// Ends the backend's side of the stream, then waits for the client to close its side.
fn hang_up(stream: &TcpStream, shared: &Shared) {
    // Counted first: the client may act on the end of the stream before this thread runs again.
    shared.hung_up.fetch_add(1, Ordering::SeqCst);
    let _ = stream.shutdown(Shutdown::Write);
    drain(stream);
}

/// Reads and discards until the client closes the connection (or the backend ends it).
fn drain(mut stream: &TcpStream) {
    let mut buf = [0; 256];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

/// A client connection of the test's own that never sends: anything it can read tells that
/// something the backend did reached it.
pub struct Probe {
    stream: TcpStream,
}

impl Probe {
    /// Whether bytes, the end of the stream or a reset have reached the probe.
    pub fn disturbed(&self) -> bool {
        let mut byte = [MaybeUninit::uninit()];
        match SockRef::from(&self.stream).peek(&mut byte) {
            Ok(_) => true,
            Err(err) => !matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
        }
    }
}

/// A listener that accepts nothing, with a backlog of zero that one connection fills: once one
/// connection waits in its queue, Linux drops every further SYN, so those connects get no answer
/// until the client gives up.
#[cfg(target_os = "linux")]
pub struct SilentListener {
    _socket: Socket,
    _queued: TcpStream,
    addr: SocketAddr,
}

#[cfg(target_os = "linux")]
impl SilentListener {
    pub fn new() -> std::io::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())?;
        socket.listen(0)?;
        let addr = socket.local_addr()?.as_socket().unwrap();
        let queued = TcpStream::connect(addr)?;
        Ok(SilentListener {
            _socket: socket,
            _queued: queued,
            addr,
        })
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }
}

/// A Unix listener with a backlog of zero that one connection nobody accepted fills: Linux
/// answers every further connect that must not wait with `EAGAIN` until [`accept_all`] makes
/// room.
///
/// [`accept_all`]: FullUnixBacklog::accept_all
#[cfg(target_os = "linux")]
pub struct FullUnixBacklog {
    socket: Socket,
    _queued: std::os::unix::net::UnixStream,
    path: std::path::PathBuf,
}

#[cfg(target_os = "linux")]
impl FullUnixBacklog {
    pub fn new() -> std::io::Result<Self> {
        let path = super::socket_path();
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.bind(&socket2::SockAddr::unix(&path)?)?;
        socket.listen(0)?;
        let queued = std::os::unix::net::UnixStream::connect(&path)?;
        Ok(FullUnixBacklog {
            socket,
            _queued: queued,
            path,
        })
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.path.clone()
    }

    /// Accepts `n` connections on a plain thread (the queued one first), and keeps them open
    /// until the thread is joined.
    pub fn accept_all(&self, n: usize) -> JoinHandle<Vec<Socket>> {
        let socket = self.socket.try_clone().unwrap();
        std::thread::spawn(move || (0..n).map(|_| socket.accept().unwrap().0).collect())
    }
}

#[cfg(target_os = "linux")]
impl Drop for FullUnixBacklog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
