//! The guard a caller holds: [`Pooled`], which puts its connection back when dropped.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::clock::Nanos;
use crate::pool::{check_in, release};
use crate::store::{Lent, Reason};
use crate::Dialer;

/// A connection handed out by a [`Pool`](crate::Pool).
///
/// It dereferences to the connection. Dropping it puts the connection back into the pool if the
/// pool is open, its destination has room, the thread is not panicking, the connection is
/// younger than `max_lifetime` and (with `check_on_get` and `check_on_return`, the defaults)
/// [`Dialer::is_open`] agrees; otherwise the connection is closed. When callers are queued for
/// the destination, it goes straight to the oldest of them instead of idle (or, when that one is
/// a [`Pool::dial`](crate::Pool::dial), which wants a new connection, it is closed to free its
/// slot). Dropping never waits on I/O or a timer (it takes one of the pool's short internal
/// locks) and needs no runtime.
///
/// Three kinds of guard are closed on drop, as by [`Pooled::release`], because the pool cannot
/// see what state they leave their stream in, or the guard saw that it is over:
/// - one whose stream was shut down through it (futures-io's `poll_close`, tokio's
///   `poll_shutdown`): the next caller's first write would fail;
/// - one whose stream ended or failed under a read, write or flush through it: a read met the
///   end of the stream (the peer closed its side: a read of some bytes answered none, a buffered
///   read handed out an empty buffer), a write of some bytes wrote none, or the call failed with
///   an error other than `TimedOut`, `WouldBlock` or `Interrupted`, which say it did not happen
///   (below): a reset, a broken pipe, a TLS layer's bad record. Such a stream is dead or out of
///   step with its peer whatever the dialer's [`is_open`](crate::Dialer::is_open) would answer,
///   and the check may be off; a caller that drops the guard on such an error leaves nothing for
///   the next one;
/// - one dropped while a read, write or flush through it was unfinished (a request cut off by a
///   timeout or a `select!`): the peer may still answer the abandoned request, or hold part of
///   it, and the next caller would read that answer as its own. Unfinished means its last poll
///   was `Pending`, failed with an error that says the operation did not happen (`TimedOut`,
///   from a stream's own timeout; `WouldBlock`; `Interrupted`), or panicked; for a write, that it
///   wrote only part of its bytes (given up there, where `write_all` goes on with the rest); for
///   a buffered read, that not all the bytes it handed out were taken, by `consume` or by the
///   reads after it (a line taken from a buffer that holds two leaves the second for the next
///   caller). A read or write of no bytes says nothing of the stream and changes nothing. The
///   guard keeps one mark for reads, one for writes and one for flushes, not one per request: a
///   read or write that finishes after another was cut off crosses that one off too, so a
///   request retried on the same guard after a cut-off one leaves the guard looking settled.
///
/// The guard cannot tell a read awaiting an answer from one awaiting bytes nobody asked for: a
/// reader loop stopped once every answer had arrived also leaves a read pending. A caller that
/// knows its stream is between requests says so with [`Pooled::forget_pending`].
///
/// The guard sees only the I/O done through it (its `AsyncRead`/`AsyncWrite`/`AsyncBufRead`, and
/// what wraps the guard: `tokio::io::split(&mut guard)`, a codec over it), not the I/O done on the
/// connection it dereferences to (a `&mut *guard`, tokio's `guard.split()`, smol's
/// `guard.clone()`, a `&mut guard` passed where a `&mut TcpStream` is taken, which the compiler
/// turns into `&mut *guard` unasked, or a method the guard does not have and the connection does,
/// which a call on the guard reaches through `DerefMut`: have helpers take the guard, or any
/// `AsyncRead + AsyncWrite`, rather than the stream type), nor what a buffer around the guard (a
/// `BufReader` over it) read ahead and was dropped with: buffer the connection instead, in the
/// dialer, and the guard reads through its `AsyncBufRead`. What such a connection holds that
/// never went through the guard is for its dialer's [`is_open`](crate::Dialer::is_open) to see:
/// bytes its own reads fetched ahead (a plain read smaller than its buffer fills the buffer and
/// takes part), writes it has not flushed. For tokio's `BufReader<BufWriter<TcpStream>>`, that is
/// `conn.buffer().is_empty() && conn.get_ref().buffer().is_empty()` (tokio's `BufStream` does not
/// show its buffers). Nor does it see a future cut off while it waited on
/// something else in the middle of an exchange: between the request and its answer, on the
/// source of a request's body, on a sink the answer is copied to (`futures::io::copy` and
/// `tokio::io::copy` also keep bytes read from the guard in a buffer of their own). A request
/// abandoned in any of those places (or ended by an error or a caught panic of the caller's own
/// between the request and the end of its answer) still calls for [`Pooled::release`]: keep the
/// guard outside the future that can be cut off (`timeout(limit, handle(&mut guard))`) and
/// release it when the future did not finish, as after a request cut off through the guard
/// rather than retry on it.
///
/// When the connection implements futures-io's `AsyncRead`, `AsyncWrite` or `AsyncBufRead` (and
/// is `Unpin`), so does the guard; with the `tokio` feature, tokio's too. Without that feature, a
/// guard over a tokio stream has none of tokio's traits, and tokio's `AsyncReadExt` and
/// `AsyncWriteExt` calls on it reach the stream through `DerefMut`, unseen: a crate doing tokio
/// I/O through guards turns the feature on itself (the crate overview's "Cargo features").
///
/// # Example
///
/// A helper that takes the guard, so that its reads and writes go through it, and a caller that
/// releases the connection when the exchange failed:
///
/// ```
/// use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Cursor};
/// use connpool_core::{dial_fn, Dialer, Pool, Pooled};
/// use std::{io, time::Duration};
///
/// /// Reads the server's 5-byte greeting and answers it.
/// async fn greet<D: Dialer>(conn: &mut Pooled<D>) -> io::Result<[u8; 5]>
/// where
///     D::Conn: AsyncRead + AsyncWrite + Unpin,
/// {
///     let mut greeting = [0; 5];
///     conn.read_exact(&mut greeting).await?;
///     conn.write_all(b"hi").await?;
///     Ok(greeting)
/// }
///
/// # futures::executor::block_on(async {
/// // An in-memory stream that says hello, standing in for a socket.
/// let dialer = dial_fn(|_: String| async { Ok(Cursor::new(b"hello".to_vec())) });
/// let pool = Pool::new(dialer, 8, Duration::from_secs(90))?;
///
/// let mut conn = pool.get(&"10.0.0.7:25".to_string()).await?;
/// // With a runtime, a time limit goes around the helper, not around the guard:
/// // `timeout(limit, greet(&mut conn))`, and a release when it ran out.
/// match greet(&mut conn).await {
///     Ok(greeting) => {
///         assert_eq!(&greeting, b"hello");
///         drop(conn); // finished: back to the pool
///     }
///     Err(_) => conn.release(), // its state is unknown: closed for good
/// }
/// assert_eq!(pool.stats().idle(), 1);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
// Made of whole words (no `bool` beside them): a guard is often moved right after it was written,
// and copying a word that was written a byte at a time stalls the copy on store forwarding.
pub struct Pooled<D: Dialer> {
    /// `None` only once `release`, `detach` or the drop has taken it.
    held: Option<Held<D>>,
    origin: Origin,
    /// How many of the bytes the last buffered read handed out are not taken yet (by `consume`,
    /// or by the plain reads after it): while any are, that read is unfinished (the next caller
    /// would read them as its own).
    unconsumed: usize,
}

/// The connection and the destination it counts for, lent by the destination's bucket while the
/// guard is counted there as held.
struct Held<D: Dialer> {
    conn: D::Conn,
    dest: Lent<D>,
}

/// When the connection was dialed (on the pool's clock, for `max_lifetime`), whether it came
/// from the idle store, and what was done to its stream through the guard, in one word: the top
/// bit says reused, the next one shut down or ended, the next three a read, a write and a flush
/// left unfinished, and the 59 below them the dial time. Up to [`Origin::SCALED`] (9 years of the
/// pool's time) it is kept to the nanosecond; past it, in units of 64 ns flagged by that bit,
/// enough for any time the pool's nanoseconds can count.
#[derive(Clone, Copy)]
struct Origin(u64);

impl Origin {
    const REUSED: u64 = 1 << 63;
    /// The stream was shut down through the guard, or ended or failed under I/O through it
    /// ([`Step::Ended`]): whatever comes after, it does not go back.
    const ENDED: u64 = 1 << 62;
    /// A read through the guard is unfinished (see the type's documentation).
    const READING: u64 = 1 << 61;
    /// A write through the guard is unfinished.
    const WRITING: u64 = 1 << 60;
    /// A flush through the guard is unfinished. Apart from
    /// [`Origin::WRITING`]: a flush that ends says nothing of a write cut off before it.
    const FLUSHING: u64 = 1 << 59;
    /// Any I/O left unfinished, what [`Pooled::forget_pending`] forgets.
    const PENDING: u64 = Origin::READING | Origin::WRITING | Origin::FLUSHING;
    /// The stream is in a state the next caller must not inherit.
    const UNSETTLED: u64 = Origin::ENDED | Origin::PENDING;
    const SCALED: u64 = 1 << 58;
    const SCALE: u32 = 6;

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
        Origin::SCALED | born >> Origin::SCALE
    }

    /// The dial time; past [`Origin::SCALED`], up to 63 ns early, so the connection's age is never
    /// under-counted.
    #[inline]
    fn born(self) -> Nanos {
        let born = self.0 & (Origin::FLUSHING - 1);
        if born < Origin::SCALED {
            born
        } else {
            (born & (Origin::SCALED - 1)) << Origin::SCALE
        }
    }

    #[inline]
    fn reused(self) -> bool {
        self.0 & Origin::REUSED != 0
    }

    /// Shut down or ended, or a read, write or flush left unfinished: the connection must not go
    /// back.
    #[inline]
    fn unsettled(self) -> bool {
        self.0 & Origin::UNSETTLED != 0
    }

    /// `op` for a read or write of `len` bytes; nothing for one of no bytes, which says nothing
    /// of the stream (a socket answers it at once, whatever is under way).
    #[inline]
    fn unless_empty(op: u64, len: usize) -> u64 {
        if len == 0 {
            0
        } else {
            op
        }
    }
}

/// Where a read, write or flush through the guard left the stream.
#[derive(Clone, Copy)]
enum Step {
    /// Under way: the peer may still answer the request it was part of.
    Unfinished,
    /// Over, with the stream fit for the next request as far as the guard can tell.
    Over,
    /// Over, and the stream with it: the end of the stream read, nothing written, or an error.
    Ended,
}

/// Where a read, write or flush that answered `poll` left the stream: `done` tells for a ready
/// answer. An error ends the stream unless it says the operation did not happen and may still
/// (the stream's own timeout, `TimedOut`; `WouldBlock`; `Interrupted`), which leaves it as
/// unfinished as `Pending` does.
#[inline]
fn step<T>(poll: &Poll<io::Result<T>>, done: impl FnOnce(&T) -> Step) -> Step {
    match poll {
        Poll::Pending => Step::Unfinished,
        Poll::Ready(Ok(ready)) => done(ready),
        Poll::Ready(Err(err)) => match err.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {
                Step::Unfinished
            }
            _ => Step::Ended,
        },
    }
}

// Every time the pool's nanoseconds count fits below the flag once scaled.
const _: () = assert!(u64::MAX >> Origin::SCALE < Origin::SCALED);

impl<D: Dialer> Pooled<D> {
    pub(crate) fn new(dest: Lent<D>, conn: D::Conn, born: Nanos, reused: bool) -> Self {
        Pooled {
            held: Some(Held { conn, dest }),
            origin: Origin::new(born, reused),
            unconsumed: 0,
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
    /// or left in an unknown state: out of step with its peer, or a request cut off half-way
    /// where the guard cannot tell (I/O done on the connection it dereferences to, or an await on
    /// something else mid-exchange: see the type's documentation).
    pub fn release(mut self) {
        if let Some(Held { conn, dest }) = self.held.take() {
            release(&dest, conn);
        }
    }

    /// Forgets the reads, writes and flushes left pending through the guard, for a caller that
    /// knows its stream is between requests although one of them did not finish: a reader loop
    /// stopped once every answer had arrived, a probe for stray bytes that found none. Dropped
    /// after this, the guard puts the connection back as it would one whose I/O all finished
    /// (with the same checks). Neither a shutdown through the guard, nor a stream that ended or
    /// failed under I/O through it, nor the bytes a buffered read handed out and nobody took are
    /// forgotten: those bytes are there, and the next caller would read them (`consume` them to
    /// throw them away).
    pub fn forget_pending(&mut self) {
        self.origin.0 &= !Origin::PENDING;
        if self.unconsumed > 0 {
            self.origin.0 |= Origin::READING;
        }
    }

    /// Takes the connection out of the pool's accounting and hands it over (to upgrade a protocol,
    /// say). The pool no longer counts it.
    #[must_use = "dropped, the connection closes, counted as detached; release() closes it"]
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
        self.parts().0
    }

    /// The connection, the origin word and the count of bytes unconsumed, borrowed apart: what a
    /// poll through the guard returns may borrow the connection (a buffered read's bytes) while
    /// the others note how it ended.
    fn parts(&mut self) -> (&mut D::Conn, &mut Origin, &mut usize) {
        match &mut self.held {
            Some(held) => (&mut held.conn, &mut self.origin, &mut self.unconsumed),
            None => unreachable!("a guard's connection is taken only by value"),
        }
    }
}

impl<D: Dialer> Pooled<D> {
    /// The stream is being shut down through the guard: it must not go back to the pool.
    fn shutting_down(&mut self) -> &mut D::Conn {
        self.origin.0 |= Origin::ENDED;
        self.conn_mut()
    }

    /// Polls a read, write or flush (`op`: [`Origin::READING`], [`Origin::WRITING`],
    /// [`Origin::FLUSHING`], or 0 to note nothing) of the connection, and notes whether it was
    /// left unfinished or ended the stream.
    #[inline]
    fn track_io<'a, T>(
        &'a mut self,
        op: u64,
        poll: impl FnOnce(Pin<&'a mut D::Conn>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        D::Conn: Unpin,
    {
        self.track_io_until(op, poll, |_, _| Step::Over)
    }

    /// [`Pooled::track_io`] for a poll whose ready answer `done` may still leave unfinished, or
    /// take as the stream's end (and may note, in its second argument, how many bytes it handed
    /// out to be consumed).
    ///
    /// The operation is noted before the poll and crossed off after it only if it is over, so a
    /// poll that panics leaves it unfinished: the stream may hold part of a request, and a guard
    /// that outlives the panic (caught around the future, not the guard) must not put it back.
    /// An operation that notes nothing (`op` 0: a read or write of no bytes) ends nothing either.
    #[inline]
    fn track_io_until<'a, T>(
        &'a mut self,
        op: u64,
        poll: impl FnOnce(Pin<&'a mut D::Conn>) -> Poll<io::Result<T>>,
        done: impl FnOnce(&T, &mut usize) -> Step,
    ) -> Poll<io::Result<T>>
    where
        D::Conn: Unpin,
    {
        let (conn, origin, unconsumed) = self.parts();
        origin.0 |= op;
        let poll = poll(Pin::new(conn));
        match step(&poll, |ready| done(ready, unconsumed)) {
            Step::Unfinished => {}
            Step::Over => origin.0 &= !op,
            Step::Ended if op == 0 => {}
            Step::Ended => origin.0 = (origin.0 & !op) | Origin::ENDED,
        }
        poll
    }

    /// Polls a write of `len` bytes, which stays unfinished when it writes only some of them: a
    /// caller that gives up there (where `write_all` would go on with the rest) leaves part of a
    /// request with the peer. The rest, written by the next write, finishes it.
    #[inline]
    fn track_write<'a>(
        &'a mut self,
        len: usize,
        poll: impl FnOnce(Pin<&'a mut D::Conn>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>>
    where
        D::Conn: Unpin,
    {
        let op = Origin::unless_empty(Origin::WRITING, len);
        self.track_io_until(op, poll, |&written, _| {
            if written >= len {
                Step::Over
            } else if written == 0 {
                // A stream that takes none of some bytes will take no more (`WriteZero`).
                Step::Ended
            } else {
                Step::Unfinished
            }
        })
    }

    /// Polls a buffered read, which stays unfinished until every byte it hands out is taken.
    fn track_fill_buf<'a>(
        &'a mut self,
        poll: impl FnOnce(Pin<&'a mut D::Conn>) -> Poll<io::Result<&'a [u8]>>,
    ) -> Poll<io::Result<&'a [u8]>>
    where
        D::Conn: Unpin,
    {
        self.unconsumed = 0;
        self.track_io_until(Origin::READING, poll, |buf, unconsumed| {
            *unconsumed = buf.len();
            if buf.is_empty() {
                // An empty buffer is the end of the stream.
                Step::Ended
            } else {
                Step::Unfinished
            }
        })
    }

    /// `n` of the bytes a buffered read handed out were taken: by `consume`, or by a plain read
    /// after it (a buffered stream's read empties its buffer before it reads the stream; `n` is 0
    /// for one that failed). The read is over once all are, and unfinished while some are left,
    /// which the next caller would read: a line taken from a buffer that holds two, a body that
    /// does not take all that came with its header. With nothing handed out, this settles nothing
    /// (a read left pending stays so).
    fn took(&mut self, n: usize) {
        if self.unconsumed == 0 {
            return;
        }
        self.unconsumed = self.unconsumed.saturating_sub(n);
        if self.unconsumed == 0 {
            self.origin.0 &= !Origin::READING;
        } else {
            self.origin.0 |= Origin::READING;
        }
    }

    /// [`Pooled::track_io`] for a read of `len` bytes that answers how many it read (futures-io's,
    /// or tokio's counted), which may take from a buffered read's bytes.
    #[inline]
    fn track_read(
        &mut self,
        len: usize,
        poll: impl FnOnce(Pin<&mut D::Conn>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>>
    where
        D::Conn: Unpin,
    {
        let op = Origin::unless_empty(Origin::READING, len);
        let poll = self.track_io_until(op, poll, |&read, _| {
            // No bytes for a read of some: the end of the stream.
            if read == 0 {
                Step::Ended
            } else {
                Step::Over
            }
        });
        if let Poll::Ready(read) = &poll {
            self.took(*read.as_ref().unwrap_or(&0));
        }
        poll
    }
}

impl<D: Dialer> Drop for Pooled<D> {
    #[inline]
    fn drop(&mut self) {
        if let Some(Held { conn, dest }) = self.held.take() {
            check_in(&dest, conn, self.origin.born(), self.origin.unsettled());
        }
    }
}

impl<D: Dialer> Deref for Pooled<D> {
    type Target = D::Conn;

    fn deref(&self) -> &D::Conn {
        self.conn()
    }
}

/// The connection itself: I/O done on it this way goes around the guard, which does not see it
/// (the type's documentation says what that leaves to the caller).
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
        self.get_mut()
            .track_read(buf.len(), |conn| conn.poll_read(cx, buf))
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|buf| buf.len()).sum();
        self.get_mut()
            .track_read(len, |conn| conn.poll_read_vectored(cx, bufs))
    }
}

/// A buffered read is a read: `read_line`, `read_until` and `lines` on the guard are tracked as its
/// reads are (without this impl they would reach the connection through `DerefMut`, unseen).
impl<D: Dialer> futures_io::AsyncBufRead for Pooled<D>
where
    D::Conn: futures_io::AsyncBufRead + Unpin,
{
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        // Bytes handed out and not yet consumed are an answer half taken.
        self.get_mut().track_fill_buf(|conn| conn.poll_fill_buf(cx))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        // Crossed off only once the connection took it: a consume that panics leaves it unsettled.
        let this = self.get_mut();
        Pin::new(this.conn_mut()).consume(amt);
        this.took(amt);
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
        self.get_mut()
            .track_write(buf.len(), |conn| conn.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|buf| buf.len()).sum();
        self.get_mut()
            .track_write(len, |conn| conn.poll_write_vectored(cx, bufs))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .track_io(Origin::FLUSHING, |conn| conn.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().shutting_down()).poll_close(cx)
    }
}

/// With the `tokio` feature (on in `connpool-tokio`): tokio's reads on the guard, tracked as
/// futures-io's are.
#[cfg(feature = "tokio")]
impl<D: Dialer> tokio::io::AsyncRead for Pooled<D>
where
    D::Conn: tokio::io::AsyncRead + Unpin,
{
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        // A futures-io read, counting the bytes it filled in.
        self.get_mut()
            .track_read(buf.remaining(), |conn| {
                let read = conn.poll_read(cx, buf);
                read.map_ok(|()| buf.filled().len().saturating_sub(before))
            })
            .map_ok(drop)
    }
}

/// With the `tokio` feature, as futures-io's: tokio's `read_line`, `read_until` and `lines` on the
/// guard are tracked.
#[cfg(feature = "tokio")]
impl<D: Dialer> tokio::io::AsyncBufRead for Pooled<D>
where
    D::Conn: tokio::io::AsyncBufRead + Unpin,
{
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        // Bytes handed out and not yet consumed are an answer half taken.
        self.get_mut().track_fill_buf(|conn| conn.poll_fill_buf(cx))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        // Crossed off only once the connection took it: a consume that panics leaves it unsettled.
        let this = self.get_mut();
        Pin::new(this.conn_mut()).consume(amt);
        this.took(amt);
    }
}

/// With the `tokio` feature: tokio's writes and flushes on the guard, tracked as futures-io's
/// are; a connection shut down through the guard does not go back to the pool.
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
        self.get_mut()
            .track_write(buf.len(), |conn| conn.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|buf| buf.len()).sum();
        self.get_mut()
            .track_write(len, |conn| conn.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.conn().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut()
            .track_io(Origin::FLUSHING, |conn| conn.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().shutting_down()).poll_shutdown(cx)
    }
}
