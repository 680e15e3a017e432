//! What the dialers share: the check that an idle socket may be reused, and errors that name the
//! address being dialed.

use std::fmt::Display;
use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

use socket2::SockRef;

/// Whether an idle socket may be handed out again, asked without waiting: a one-byte peek on the
/// non-blocking socket, which neither blocks nor registers a waker.
///
/// Nothing to read yet (`WouldBlock`) is the only healthy answer for a connection nobody is using.
/// End of stream means the peer closed it; bytes waiting mean an answer nobody asked for (the
/// protocol is out of step); an error means it was reset.
pub(crate) fn is_open(socket: SockRef<'_>) -> bool {
    let mut byte = [MaybeUninit::uninit()];
    loop {
        match socket.peek(&mut byte) {
            Ok(_) => return false,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return err.kind() == io::ErrorKind::WouldBlock,
        }
    }
}

/// `err`, met while dialing `addr`, with the address in its message and its kind kept.
pub(crate) fn dial_error(addr: impl Display, err: io::Error) -> io::Error {
    io::Error::new(err.kind(), format!("connecting to {addr}: {err}"))
}

/// The error of a connect that got no answer within `limit`.
pub(crate) fn timed_out(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no answer within {limit:?} (the dialer's connect_timeout)"),
    )
}
