//! Unix domain sockets on tokio: [`UnixDialer`].

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use connpool_core::Dialer;
use tokio::net::UnixStream;

use crate::socket::{dial_error, is_open, timed_out};

/// The first pause before connecting again to a backend whose backlog was full; each further
/// pause doubles, up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const LONGEST_PAUSE: Duration = Duration::from_millis(64);

/// Dials Unix domain socket connections on tokio; addresses are socket paths.
///
/// A failed dial's [`io::Error`] keeps its kind and names the path. Idle connections are checked
/// as [`TcpDialer`](crate::TcpDialer)'s are: closed, reset or with unread bytes, they are not
/// reused; [`readiness_first`](Self::readiness_first) is as `TcpDialer`'s.
///
/// A backend whose listen backlog is full (a burst of connections it has not accepted yet) is
/// waited for, as a blocking connect waits: the system turns a connect that must not wait away
/// at once, so the dialer connects again after a pause (1 ms, doubling up to 64 ms) until the
/// backlog has room, the [`connect_timeout`](Self::connect_timeout) passes, or the dial is
/// dropped (the pool's `dial_timeout` drops it). The pauses sleep on tokio's timer: on a runtime
/// without time enabled, a dial that meets a full backlog panics, as
/// [`builder`](crate::builder)'s reaper does there.
///
/// Paths are taken as tokio's connect takes them: on Linux and Android, one that starts with a NUL
/// byte names an abstract socket (the bytes after it); an empty path, one with a NUL byte inside,
/// or one too long for a socket address (on Linux, a path of 108 bytes or more, or an abstract
/// name of 108 or more after its NUL byte) is a dial error of kind
/// [`io::ErrorKind::InvalidInput`].
#[derive(Debug, Clone, Default)]
pub struct UnixDialer {
    readiness_first: bool,
    connect_timeout: Option<Duration>,
}

impl UnixDialer {
    /// A Unix socket dialer.
    pub fn new() -> Self {
        UnixDialer::default()
    }

    /// Whether [`is_open`](Dialer::is_open) asks tokio's reactor before it peeks (default
    /// `false`); see [`TcpDialer::readiness_first`](crate::TcpDialer::readiness_first) for what
    /// it saves and what it may miss.
    pub fn readiness_first(mut self, yes: bool) -> Self {
        self.readiness_first = yes;
        self
    }

    /// How long one dial, the waits for room in a full backlog included, may take before it
    /// fails with [`io::ErrorKind::TimedOut`] (default: until the backend has room). Timing out
    /// needs a runtime with time enabled.
    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = Some(limit);
        self
    }

    async fn connect(&self, path: &Path) -> io::Result<UnixStream> {
        match self.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, connect_when_room(path))
                .await
                .unwrap_or_else(|_| Err(timed_out(limit))),
            None => connect_when_room(path).await,
        }
    }
}

/// Connects to `path`, again after a pause each time the backend's backlog is full: tokio's
/// connect does not wait, and the system answers it with `WouldBlock` then.
async fn connect_when_room(path: &Path) -> io::Result<UnixStream> {
    let mut pause = FIRST_PAUSE;
    loop {
        match UnixStream::connect(path).await {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(pause).await;
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
        is_open(conn, self.readiness_first)
    }
}
