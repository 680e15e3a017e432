//! Unix domain sockets on tokio: [`UnixDialer`].

use std::io;
use std::path::PathBuf;

use connpool_core::Dialer;
use tokio::net::UnixStream;

use crate::socket::{dial_error, is_open};

/// Dials Unix domain socket connections on tokio; addresses are socket paths.
///
/// A failed dial's [`io::Error`] keeps its kind and names the path. Idle connections are checked
/// as [`TcpDialer`](crate::TcpDialer)'s are: closed, reset or with unread bytes, they are not
/// reused; [`readiness_first`](Self::readiness_first) is as `TcpDialer`'s.
#[derive(Debug, Clone, Default)]
pub struct UnixDialer {
    readiness_first: bool,
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
}

#[connpool_core::async_trait]
impl Dialer for UnixDialer {
    type Addr = PathBuf;
    type Conn = UnixStream;

    async fn dial(&self, path: &PathBuf) -> io::Result<UnixStream> {
        UnixStream::connect(path)
            .await
            .map_err(|err| dial_error(path.display(), err))
    }

    fn is_open(&self, conn: &UnixStream) -> bool {
        is_open(conn, self.readiness_first)
    }
}
