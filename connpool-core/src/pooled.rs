//! The guard a caller holds: [`Pooled`], which puts its connection back when dropped.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::clock::Nanos;
use crate::pool::check_in;
use crate::store::{Lent, Reason};
use crate::Dialer;

/// A connection handed out by a [`Pool`](crate::Pool).
///
/// It dereferences to the connection. Dropping it puts the connection back into the pool if the
/// pool is open, its destination has room, the thread is not panicking, the connection is
/// younger than `max_lifetime` and (with `check_on_get` and `check_on_return`, the defaults)
/// [`Dialer::is_open`] agrees; otherwise the connection is closed. When callers are queued for
/// the destination, it goes straight to the oldest of them instead of idle. A guard whose stream
/// was shut down through it (futures-io's `poll_close`, tokio's `poll_shutdown`) is closed on
/// drop, as by [`Pooled::release`]: the pool cannot see its own side's shutdown, and the next
/// caller's first write would fail. Dropping never blocks and needs no runtime.
///
/// When the connection implements futures-io's `AsyncRead`/`AsyncWrite` (and is `Unpin`), so does
/// the guard; with the `tokio` feature, tokio's too.
// Made of whole words (no `bool` beside them): a guard is often moved right after it was written,
// and copying a word that was written a byte at a time stalls the copy on store forwarding.
pub struct Pooled<D: Dialer> {
    /// `None` only once `release`, `detach` or the drop has taken it.
    held: Option<Held<D>>,
    origin: Origin,
}

/// The connection and the destination it counts for, lent by the destination's bucket while the
/// guard is counted there as held.
struct Held<D: Dialer> {
    conn: D::Conn,
    dest: Lent<D>,
}

/// When the connection was dialed (on the pool's clock, for `max_lifetime`), whether it came
/// from the idle store, and whether its stream was shut down, in one word: the top bit says
/// reused, the next one shut down, and the 62 below them the dial time. Up to [`Origin::SCALED`]
/// (73 years of the pool's time) it is kept to the nanosecond; past it, in units of 8 ns flagged
/// by that bit, enough for any time the pool's nanoseconds can count.
#[derive(Clone, Copy)]
struct Origin(u64);

impl Origin {
    const REUSED: u64 = 1 << 63;
    const SHUT: u64 = 1 << 62;
    const SCALED: u64 = 1 << 61;

    #[inline]
    fn new(born: Nanos, reused: bool) -> Self {
        let born = if born < Origin::SCALED {
            born
        } else {
            Origin::scale(born)
        };
        Origin(if reused { born | Origin::REUSED } else { born })
    }

    #[cold]
    fn scale(born: Nanos) -> u64 {
        Origin::SCALED | born >> 3
    }

    /// The dial time; past [`Origin::SCALED`], up to 7 ns early, so the connection's age is never
    /// under-counted.
    #[inline]
    fn born(self) -> Nanos {
        let born = self.0 & (Origin::SHUT - 1);
        if born < Origin::SCALED {
            born
        } else {
            (born & (Origin::SCALED - 1)) << 3
        }
    }

    #[inline]
    fn reused(self) -> bool {
        self.0 & Origin::REUSED != 0
    }

    #[inline]
    fn shut(self) -> bool {
        self.0 & Origin::SHUT != 0
    }
}

impl<D: Dialer> Pooled<D> {
    pub(crate) fn new(dest: Lent<D>, conn: D::Conn, born: Nanos, reused: bool) -> Self {
        Pooled {
            held: Some(Held { conn, dest }),
            origin: Origin::new(born, reused),
        }
    }

    /// The destination this connection was dialed for.
    pub fn addr(&self) -> &D::Addr {
        &self.held().dest.addr
    }

    /// `true` when the connection was used before (taken from the idle store, or handed over by a
    /// return while this caller was queued), `false` when it was dialed for this caller.
    pub fn is_reused(&self) -> bool {
        self.origin.reused()
    }

    /// Closes the connection now; it never returns to the pool. For a connection known to be dead
    /// or left in an unknown state (a request cut off half-way).
    pub fn release(mut self) {
        if let Some(Held { conn, dest }) = self.held.take() {
            let _ending = dest.ending(Reason::Released);
            drop(conn);
        }
    }

    /// Takes the connection out of the pool's accounting and hands it over (to upgrade a protocol,
    /// say). The pool no longer counts it.
    pub fn detach(mut self) -> D::Conn {
        match self.held.take() {
            Some(Held { conn, dest }) => {
                dest.forget(Reason::Detached);
                conn
            }
            None => unreachable!("a guard's connection is taken only by value"),
        }
    }

    fn held(&self) -> &Held<D> {
        match &self.held {
            Some(held) => held,
            None => unreachable!("a guard's connection is taken only by value"),
        }
    }

    fn conn(&self) -> &D::Conn {
        &self.held().conn
    }

    fn conn_mut(&mut self) -> &mut D::Conn {
        match &mut self.held {
            Some(held) => &mut held.conn,
            None => unreachable!("a guard's connection is taken only by value"),
        }
    }
}

impl<D: Dialer> Pooled<D> {
    /// The stream is being shut down through the guard: it must not go back to the pool.
    fn shutting_down(&mut self) -> &mut D::Conn {
        self.origin.0 |= Origin::SHUT;
        self.conn_mut()
    }
}

impl<D: Dialer> Drop for Pooled<D> {
    #[inline]
    fn drop(&mut self) {
        if let Some(Held { conn, dest }) = self.held.take() {
            if self.origin.shut() {
                let _ending = dest.ending(Reason::Released);
                drop(conn);
                return;
            }
            check_in(&dest, conn, self.origin.born());
        }
    }
}

impl<D: Dialer> Deref for Pooled<D> {
    type Target = D::Conn;

    fn deref(&self) -> &D::Conn {
        self.conn()
    }
}

impl<D: Dialer> DerefMut for Pooled<D> {
    fn deref_mut(&mut self) -> &mut D::Conn {
        self.conn_mut()
    }
}

impl<D: Dialer> fmt::Debug for Pooled<D>
where
    D::Conn: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled")
            .field("addr", self.addr())
            .field("reused", &self.is_reused())
            .field("conn", self.conn())
            .finish()
    }
}

impl<D: Dialer> futures_io::AsyncRead for Pooled<D>
where
    D::Conn: futures_io::AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().conn_mut()).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().conn_mut()).poll_read_vectored(cx, bufs)
    }
}

impl<D: Dialer> futures_io::AsyncWrite for Pooled<D>
where
    D::Conn: futures_io::AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().conn_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().conn_mut()).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().conn_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().shutting_down()).poll_close(cx)
    }
}

#[cfg(feature = "tokio")]
impl<D: Dialer> tokio::io::AsyncRead for Pooled<D>
where
    D::Conn: tokio::io::AsyncRead + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().conn_mut()).poll_read(cx, buf)
    }
}

#[cfg(feature = "tokio")]
impl<D: Dialer> tokio::io::AsyncWrite for Pooled<D>
where
    D::Conn: tokio::io::AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().conn_mut()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().conn_mut()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().conn_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().shutting_down()).poll_shutdown(cx)
    }
}
