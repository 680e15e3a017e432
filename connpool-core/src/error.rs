//! What can go wrong: [`Error`] for pool operations, [`BuildError`] for settings.

use std::fmt;
use std::io;

/// Why a pool could not hand out a connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The dialer failed; the io error says why (refused, unresolvable name, malformed address...).
    /// Its message is part of this error's; match on the variant, or convert with
    /// `io::Error::from`, for the io error itself.
    Dial(io::Error),
    /// The pool is closed: it hands out nothing more.
    Closed,
    /// A wait for a free slot, or a dial, took longer than the pool allows.
    Timeout,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Dial(err) => write!(f, "could not connect: {err}"),
            Error::Closed => f.write_str("the pool is closed; build a new one to connect again"),
            Error::Timeout => f.write_str("timed out waiting for a connection"),
        }
    }
}

impl std::error::Error for Error {
    /// For [`Error::Dial`], what the io error's own [`source`](std::error::Error::source) gives:
    /// the io error's message is already in this one's, and a reporter that walks the chain
    /// would print it twice (std's `io::Error` skips what it prints the same way).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Dial(err) => std::error::Error::source(err),
            Error::Closed | Error::Timeout => None,
        }
    }
}

impl From<Error> for io::Error {
    /// A dial error comes back as itself; the others get a fitting [`io::ErrorKind`].
    fn from(err: Error) -> io::Error {
        match err {
            Error::Dial(err) => err,
            Error::Closed => io::Error::new(io::ErrorKind::NotConnected, err),
            Error::Timeout => io::Error::new(io::ErrorKind::TimedOut, err),
        }
    }
}

/// A pool setting that cannot work, found by [`Builder::build`](crate::Builder::build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    setting: &'static str,
    problem: &'static str,
}

impl BuildError {
    pub(crate) fn new(setting: &'static str, problem: &'static str) -> Self {
        BuildError { setting, problem }
    }

    /// The name of the builder setting at fault, such as `"idle_timeout"`.
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid pool setting `{}`: {}",
            self.setting, self.problem
        )
    }
}

impl std::error::Error for BuildError {}

impl From<BuildError> for io::Error {
    /// [`io::ErrorKind::InvalidInput`], for constructors that answer [`io::Result`].
    fn from(err: BuildError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, err)
    }
}
