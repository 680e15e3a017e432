//! The suite's backend: a loopback echo server on plain threads that counts its connections.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
#[cfg(unix)]
use std::os::unix::net::{UnixListener, UnixStream};
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A fresh socket path in the temporary directory.
///
/// Named after the process and the time it first asked, not the process alone: a test process
/// killed before its sockets' files were removed leaves them behind, and a later process given
/// the same id would find its paths taken.
#[cfg(unix)]
pub fn socket_path() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static STARTED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let started = STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos())
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("connpool-{}-{started:x}-{n}.sock", std::process::id());
    std::env::temp_dir().join(name)
}

/// A listening socket the echo server can serve.
trait Listener: Send + Sync + 'static {
    type Stream: Read + Write + Send + 'static;
    fn accept(&self) -> io::Result<Self::Stream>;
    /// Connects to the listener, to wake an `accept` blocked on it.
    fn knock(&self);
    fn try_clone(stream: &Self::Stream) -> io::Result<Self::Stream>;
    fn shutdown(stream: &Self::Stream);
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    fn accept(&self) -> io::Result<TcpStream> {
        TcpListener::accept(self).map(|(stream, _)| stream)
    }

    fn knock(&self) {
        if let Ok(addr) = self.local_addr() {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
    }

    fn try_clone(stream: &TcpStream) -> io::Result<TcpStream> {
        stream.try_clone()
    }

    fn shutdown(stream: &TcpStream) {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

#[cfg(unix)]
impl Listener for UnixListener {
    type Stream = UnixStream;

    fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).map(|(stream, _)| stream)
    }

    fn knock(&self) {
        if let Ok(addr) = self.local_addr() {
            if let Some(path) = addr.as_pathname() {
                let _ = UnixStream::connect(path);
            }
        }
    }

    fn try_clone(stream: &UnixStream) -> io::Result<UnixStream> {
        stream.try_clone()
    }

    fn shutdown(stream: &UnixStream) {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// An echo server on plain threads that counts the connections it accepted and those still open.
///
/// [`stop`](EchoServer::stop) (or drop) closes the listener and shuts down every connection, so
/// clients see end of stream as from a crashed backend.
pub struct EchoServer {
    addr: String,
    counts: Arc<Counts>,
    stop: Option<Box<dyn FnOnce() + Send>>,
    /// A Unix socket's path, removed once the server stops.
    socket_file: Option<PathBuf>,
}

/// A connection being served: a clone to shut it down with, and the thread echoing on it.
type Served<S> = (S, JoinHandle<()>);

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

impl EchoServer {
    /// A TCP echo server on a port of the system's choosing.
    pub fn tcp() -> Self {
        EchoServer::tcp_on("127.0.0.1:0")
    }

    /// A TCP echo server on `addr`, as a backend restarted on the port it had.
    pub fn tcp_on(addr: &str) -> Self {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        EchoServer::serve(listener, addr)
    }

    /// A Unix socket echo server on a fresh path.
    #[cfg(unix)]
    pub fn unix() -> Self {
        EchoServer::unix_on(&socket_path())
    }

    /// A Unix socket echo server on `path`.
    #[cfg(unix)]
    pub fn unix_on(path: &Path) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let mut server = EchoServer::serve(listener, path.to_string_lossy().into_owned());
        server.socket_file = Some(path.to_owned());
        server
    }

    fn serve<L: Listener>(listener: L, addr: String) -> Self {
        let counts = Arc::new(Counts::default());
        let listener = Arc::new(listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<Served<L::Stream>>>> = Arc::default();
        let acceptor = std::thread::spawn({
            let (listener, stopping, conns, counts) = (
                listener.clone(),
                stopping.clone(),
                conns.clone(),
                counts.clone(),
            );
            move || loop {
                let accepted = listener.accept();
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = accepted else { continue };
                let Ok(clone) = L::try_clone(&stream) else {
                    continue;
                };
                counts.accepted.fetch_add(1, Ordering::SeqCst);
                counts.open.fetch_add(1, Ordering::SeqCst);
                let counts = counts.clone();
                let handler = std::thread::spawn(move || {
                    echo_until_closed(stream);
                    counts.open.fetch_sub(1, Ordering::SeqCst);
                });
                conns.lock().unwrap().push((clone, handler));
            }
        });
        let stop = move || {
            stopping.store(true, Ordering::SeqCst);
            listener.knock();
            acceptor.join().unwrap();
            drop(listener);
            for (stream, handler) in conns.lock().unwrap().drain(..) {
                L::shutdown(&stream);
                handler.join().unwrap();
            }
        };
        EchoServer {
            addr,
            counts,
            stop: Some(Box::new(stop)),
            socket_file: None,
        }
    }

    /// The address to dial: `"127.0.0.1:port"`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// The socket path to dial.
    #[cfg(unix)]
    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Connections accepted and not yet closed by either side.
    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    /// Closes the listener and every connection, and waits until all are closed.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
        if let Some(path) = self.socket_file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn echo_until_closed(mut stream: impl Read + Write) {
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
