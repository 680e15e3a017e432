//! Unix domain sockets on smol: [`UnixDialer`].

use std::io;
use std::path::PathBuf;

use connpool_core::Dialer;
use smol::net::unix::UnixStream;
use socket2::SockRef;

use crate::socket::{dial_error, is_open};

/// Dials Unix domain socket connections on smol; addresses are socket paths.
///
/// A failed dial's [`io::Error`] keeps its kind and names the path. Idle connections are checked
/// as [`TcpDialer`](crate::TcpDialer)'s are: closed, reset or with unread bytes, they are not
/// reused.
#[derive(Debug, Clone, Default)]
pub struct UnixDialer {
    _settings: (),
}

impl UnixDialer {
    /// A Unix socket dialer.
    pub fn new() -> Self {
        UnixDialer::default()
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
        is_open(SockRef::from(conn))
    }
}
