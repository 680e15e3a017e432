//! The tour's echo backends: loopback servers that count their connections, and that can drop
//! them all, stop, and start again on the same port.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

/// An echo server on 127.0.0.1.
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listening: Option<JoinHandle<()>>,
}

struct Shared {
    /// How long the server waits before it answers, to keep requests in flight for a while.
    delay: Duration,
    open: AtomicUsize,
    peak: AtomicUsize,
    accepted: AtomicUsize,
    /// Bumped to make every open connection close.
    hang_up: watch::Sender<u64>,
}

impl Backend {
    /// Starts a backend on a free port, answering after `delay`.
    pub async fn start(delay: Duration) -> io::Result<Backend> {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let shared = Arc::new(Shared {
            delay,
            open: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            hang_up: watch::Sender::new(0),
        });
        Ok(Backend {
            addr: listener.local_addr()?,
            listening: Some(tokio::spawn(serve(listener, shared.clone()))),
            shared,
        })
    }

    /// Its address, as the pool's TCP dialer takes it.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Connections open now, as the server sees them.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The most connections that were open at once.
    pub fn peak(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Connections accepted since the backend first started.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Closes every open connection, as a server does when it restarts or sheds load, and waits
    /// until they are gone. It keeps listening.
    pub async fn hang_up(&self) -> io::Result<()> {
        self.shared
            .hang_up
            .send_modify(|generation| *generation += 1);
        if settle(|| self.open() == 0).await {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the backend did not close its connections within 2 s",
            ))
        }
    }

    /// Stops listening and closes every open connection: the process is gone.
    pub async fn stop(&mut self) -> io::Result<()> {
        if let Some(listening) = self.listening.take() {
            listening.abort();
            // Awaiting the aborted task makes sure the listener is closed.
            let _ = listening.await;
        }
        self.hang_up().await
    }

    /// Listens again, on the same port.
    pub async fn restart(&mut self) -> io::Result<()> {
        let listener = listen(self.addr)?;
        self.listening = Some(tokio::spawn(serve(listener, self.shared.clone())));
        Ok(())
    }
}

/// Waits up to two seconds for `done`, looking every millisecond; whether it came true.
///
/// The backends learn that a client closed a connection a moment after it did, when they read the
/// end of the stream, so counts seen from the server side settle rather than change at once.
pub async fn settle(done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(1)).await;
    }
    true
}

/// A listener on `addr`, with `SO_REUSEADDR` so that a restart can take the same port at once.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(_) => {
                // Out of file descriptors, say: back off rather than spin.
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut hang_up = shared.hang_up.subscribe();
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let open = shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(open, Ordering::SeqCst);
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = echo(socket, shared.delay) => {}
                _ = hang_up.changed() => {}
            }
            shared.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn echo(mut socket: TcpStream, delay: Duration) -> io::Result<()> {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if !delay.is_zero() {
            sleep(delay).await;
        }
        socket.write_all(&buf[..n]).await?;
    }
}
