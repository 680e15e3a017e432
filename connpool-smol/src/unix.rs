//! Unix domain sockets on smol: [`UnixDialer`].

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use connpool_core::Dialer;
use smol::net::unix::UnixStream;
use smol::Timer;
use socket2::SockRef;

use crate::socket::{dial_error, is_open, timed_out};

/// Dials Unix domain socket connections on smol; addresses are socket paths.
///
/// A failed dial's [`io::Error`] keeps its kind and names the path. Idle connections are checked
/// as [`TcpDialer`](crate::TcpDialer)'s are: closed, reset or with unread bytes, they are not
/// reused.
///
/// On Linux, a backend whose listen backlog is full (a burst of connections it has not accepted
/// yet) is waited for, as a blocking connect waits: the system turns a connect that must not wait
/// away at once, so the dialer connects again after a pause (1 ms, doubling up to 64 ms) until the
/// backlog has room, the [`connect_timeout`](Self::connect_timeout) passes, or the dial is dropped
/// (the pool's `dial_timeout` drops it). Elsewhere the system refuses such a connect, and the dial
/// fails as a blocking connect would.
///
/// Paths are taken as on Tokio: on Linux and Android, one that starts with a NUL byte names an
/// abstract socket (the bytes after it); an empty path, one with a NUL byte inside, or one too long
/// for a socket address (on Linux, a path of 108 bytes or more, or an abstract name of 108 or
/// more after its NUL byte) is a dial error of kind
/// [`io::ErrorKind::InvalidInput`].
#[derive(Debug, Clone, Default)]
pub struct UnixDialer {
    connect_timeout: Option<Duration>,
}

impl UnixDialer {
    /// A Unix socket dialer.
    pub fn new() -> Self {
        UnixDialer::default()
    }

    /// How long one dial, the waits for room in a full backlog included, may take before it
    /// fails with [`io::ErrorKind::TimedOut`] (default: until the backend has room).
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = Some(limit);
        self
    }

    async fn connect(&self, path: &Path) -> io::Result<UnixStream> {
        // smol's connect would hand it to the system as the abstract address of no name, on
        // Linux, and connect to a socket nobody named.
        if path.as_os_str().is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an empty path names no socket",
            ));
        }
        socket_address(path)?;
        match self.connect_timeout {
            Some(limit) => {
                let give_up = async {
                    Timer::after(limit).await;
                    Err(timed_out(limit))
                };
                smol::future::or(connect_when_room(path), give_up).await
            }
            None => connect_when_room(path).await,
        }
    }
}

/// Checks that `path` makes a socket address, by the rules tokio's connect reads it with (std's):
/// on Linux and Android, a leading NUL byte names an abstract socket; no other NUL byte, and
/// short enough for the address (under 108 bytes on Linux, a path or an abstract name after its
/// NUL byte). smol's connect would hand a path too
/// long to the system, which fails it with another kind of error (or, at exactly 108 bytes,
/// takes it).
fn socket_address(path: &Path) -> io::Result<()> {
    use std::os::unix::net::SocketAddr;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;

        if let Some(name) = path.as_os_str().as_bytes().strip_prefix(b"\0") {
            return SocketAddr::from_abstract_name(name).map(drop);
        }
    }
    SocketAddr::from_pathname(path).map(drop)
}

/// Connects to `path`, again after a pause each time the backend's backlog is full.
///
/// Linux answers a connect that must not wait, on a Unix socket, at once: connected, refused for
/// good, or turned away for a full backlog (`EAGAIN`). smol's connect, handed the last, waits for
/// the socket to turn writable (at once) and then fails with `NotConnected`, as nothing else ends
/// it there. Elsewhere a full backlog refuses the connect, and `NotConnected` may end a connect
/// that failed for good, so only Linux tries again.
async fn connect_when_room(path: &Path) -> io::Result<UnixStream> {
    /// The first pause; each further one doubles, up to the longest.
    const FIRST_PAUSE: Duration = Duration::from_millis(1);
    const LONGEST_PAUSE: Duration = Duration::from_millis(64);
    const TURNED_AWAY_MEANS_FULL: bool = cfg!(any(target_os = "linux", target_os = "android"));

    let mut pause = FIRST_PAUSE;
    loop {
        match UnixStream::connect(path).await {
            Err(err) if TURNED_AWAY_MEANS_FULL && err.kind() == io::ErrorKind::NotConnected => {
                Timer::after(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            outcome => return outcome,
        }
    }
}

#[connpool_core::async_trait]
impl Dialer for UnixDialer {
    type Addr = PathBuf;
    type Conn = UnixStream;

    async fn dial(&self, path: &PathBuf) -> io::Result<UnixStream> {
        self.connect(path)
            .await
            .map_err(|err| dial_error(path.display(), err))
    }

    fn is_open(&self, conn: &UnixStream) -> bool {
        is_open(SockRef::from(conn))
    }
}
