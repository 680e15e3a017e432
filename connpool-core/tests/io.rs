//! The guard's own I/O (futures-io's traits, and tokio's with the `tokio` feature, which
//! `cargo test --workspace` turns on): a read (buffered or not), write or flush left unfinished
//! through it (waiting, failed without having happened, panicked, or bytes not consumed), a
//! shutdown, or a stream that ended or failed under it (the end of the stream read, nothing
//! written, an error), keeps its connection from going back to the pool; I/O that finished does
//! not, nor does a read or write of no bytes.

mod support;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use connpool_core::{ManualClock, Pool, Pooled};
use futures::executor::block_on;
#[cfg(feature = "tokio")]
use futures::future::poll_fn;
use futures::future::BoxFuture;
use futures::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, IoSlice,
    IoSliceMut,
};
use futures::FutureExt;
#[cfg(feature = "tokio")]
use futures::TryFutureExt;
use support::{addr, poll_once};

/// What a [`Wire`]'s buffered reads find.
const LINE: &[u8] = b"ok\n";

/// What a [`Wire`] does with reads and writes.
const SILENT: u8 = 0;
const ANSWERING: u8 = 1;
const FAILING: u8 = 2;
/// Fail with an error that says the operation did not happen: a stream's own timeout...
const TIMING_OUT: u8 = 3;
/// ... a non-blocking socket with nothing to give...
const BLOCKING: u8 = 4;
/// ... a signal.
const INTERRUPTED: u8 = 5;
/// Panic in the poll.
const PANICKING: u8 = 6;
/// Answer, but take at most [`SHORT_WRITE`] bytes a write: a socket with little room.
const SHORT: u8 = 7;
const SHORT_WRITE: usize = 2;
/// The peer closed its side: reads find the end of the stream (no bytes, an empty buffer), and
/// writes take nothing.
const ENDING: u8 = 8;

/// A connection whose reads and writes wait (`SILENT`), succeed at once (`ANSWERING`) or fail
/// (`FAILING`), as its dialer's switch says: a peer that has not answered yet, has, or is gone.
/// Or they fail without having happened, or panic. It never wakes anyone: a test polls again
/// once it has turned the switch. A read or write of no bytes succeeds at once, as on a socket.
#[derive(Debug)]
struct Wire {
    id: usize,
    mode: Arc<AtomicU8>,
}

impl Wire {
    fn ready<T>(&self, ok: T) -> Poll<io::Result<T>> {
        match self.mode.load(Ordering::SeqCst) {
            SILENT => Poll::Pending,
            ANSWERING | SHORT | ENDING => Poll::Ready(Ok(ok)),
            FAILING => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
            TIMING_OUT => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            BLOCKING => Poll::Ready(Err(io::ErrorKind::WouldBlock.into())),
            INTERRUPTED => Poll::Ready(Err(io::ErrorKind::Interrupted.into())),
            _ => panic!("the connection panicked in a poll"),
        }
    }

    /// What a consume does in [`PANICKING`] mode (in the others it takes the bytes at once).
    fn panic_if_panicking(&self) {
        if self.mode.load(Ordering::SeqCst) == PANICKING {
            panic!("the connection panicked in a consume");
        }
    }

    /// [`Wire::ready`] for a read or write of `len` bytes. One of no bytes is answered at once,
    /// with no bytes, unless the wire fails.
    fn ready_len(&self, len: usize) -> Poll<io::Result<usize>> {
        if self.ending() || (len == 0 && self.mode.load(Ordering::SeqCst) != FAILING) {
            return Poll::Ready(Ok(0));
        }
        self.ready(len)
    }

    fn ending(&self) -> bool {
        self.mode.load(Ordering::SeqCst) == ENDING
    }

    /// What a buffered read finds: a line, or nothing at the end of the stream.
    fn line(&self) -> Poll<io::Result<&'static [u8]>> {
        self.ready(if self.ending() { &[] } else { LINE })
    }

    /// [`Wire::ready_len`] for a write, which takes only part of its bytes in [`SHORT`] mode.
    fn written(&self, len: usize) -> Poll<io::Result<usize>> {
        if self.mode.load(Ordering::SeqCst) == SHORT {
            return Poll::Ready(Ok(len.min(SHORT_WRITE)));
        }
        self.ready_len(len)
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        buf.fill(b'a');
        self.ready_len(buf.len())
    }
}

/// Buffered reads: a line at a time (the same line, for as long as it answers).
impl AsyncBufRead for Wire {
    fn poll_fill_buf(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        self.line()
    }

    fn consume(self: Pin<&mut Self>, _: usize) {
        self.panic_if_panicking();
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written(buf.len())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ready(())
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ready(())
    }
}

#[cfg(feature = "tokio")]
impl tokio::io::AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let ready = self.ready_len(buf.remaining());
        if let Poll::Ready(Ok(n)) = ready {
            buf.put_slice(&vec![b'a'; n]);
        }
        ready.map_ok(drop)
    }
}

#[cfg(feature = "tokio")]
impl tokio::io::AsyncBufRead for Wire {
    fn poll_fill_buf(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        self.line()
    }

    fn consume(self: Pin<&mut Self>, _: usize) {
        self.panic_if_panicking();
    }
}

#[cfg(feature = "tokio")]
impl tokio::io::AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written(buf.len())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.written(bufs.iter().map(|buf| buf.len()).sum())
    }

    /// Even-numbered wires write vectored, odd ones do not.
    fn is_write_vectored(&self) -> bool {
        self.id % 2 == 0
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ready(())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ready(())
    }
}

#[derive(Clone, Default)]
struct WireDialer {
    mode: Arc<AtomicU8>,
    dials: Arc<AtomicUsize>,
}

impl WireDialer {
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

#[connpool_core::async_trait]
impl connpool_core::Dialer for WireDialer {
    type Addr = String;
    type Conn = Wire;

    async fn dial(&self, _: &String) -> io::Result<Wire> {
        Ok(Wire {
            id: self.dials.fetch_add(1, Ordering::SeqCst),
            mode: self.mode.clone(),
        })
    }
}

fn pool() -> (Pool<WireDialer>, WireDialer) {
    let dialer = WireDialer::default();
    let pool = Pool::builder(dialer.clone())
        .clock(ManualClock::new())
        .build()
        .unwrap();
    (pool, dialer)
}

fn get(pool: &Pool<WireDialer>) -> Pooled<WireDialer> {
    block_on(pool.get(&addr("a:1"))).unwrap()
}

type Op = for<'a> fn(&'a mut Pooled<WireDialer>) -> BoxFuture<'a, io::Result<()>>;

/// A read, a write and a flush of each trait family the guard forwards, a buffered read counting
/// as a read.
fn families() -> Vec<[Op; 3]> {
    let op = |name| ops().into_iter().find(|(n, _)| *n == name).unwrap().1;
    vec![
        [op("read"), op("write"), op("flush")],
        [op("read_line"), op("write"), op("flush")],
        #[cfg(feature = "tokio")]
        [tokio_read, tokio_write, tokio_flush],
        #[cfg(feature = "tokio")]
        [tokio_read_line, tokio_write, tokio_flush],
    ]
}

/// Every read, write and flush the guard forwards, each as one call: futures-io's, then (with the
/// `tokio` feature) tokio's.
fn ops() -> Vec<(&'static str, Op)> {
    vec![
        ("read", |conn| {
            async { conn.read(&mut [0; 4]).await.map(drop) }.boxed()
        }),
        ("write", |conn| {
            async { conn.write(b"ping").await.map(drop) }.boxed()
        }),
        ("flush", |conn| async { conn.flush().await }.boxed()),
        ("read_vectored", |conn| {
            async {
                let mut buf = [0; 4];
                let mut bufs = [IoSliceMut::new(&mut buf)];
                conn.read_vectored(&mut bufs).await.map(drop)
            }
            .boxed()
        }),
        ("write_vectored", |conn| {
            async {
                let bufs = [IoSlice::new(b"ping")];
                conn.write_vectored(&bufs).await.map(drop)
            }
            .boxed()
        }),
        // A buffered read on the guard, as a line protocol's client writes it: without the
        // guard's own `AsyncBufRead` it compiles all the same, through `DerefMut`, unseen.
        ("read_line", |conn| {
            async {
                let mut line = String::new();
                conn.read_line(&mut line).await.map(drop)
            }
            .boxed()
        }),
        #[cfg(feature = "tokio")]
        ("tokio poll_read", tokio_read),
        #[cfg(feature = "tokio")]
        ("tokio poll_fill_buf", tokio_read_line),
        #[cfg(feature = "tokio")]
        ("tokio poll_write", tokio_write),
        #[cfg(feature = "tokio")]
        ("tokio poll_write_vectored", tokio_write_vectored),
        #[cfg(feature = "tokio")]
        ("tokio poll_flush", tokio_flush),
    ]
}

#[cfg(feature = "tokio")]
fn tokio_read(conn: &mut Pooled<WireDialer>) -> BoxFuture<'_, io::Result<()>> {
    async {
        let mut buf = [0; 4];
        let mut buf = tokio::io::ReadBuf::new(&mut buf);
        poll_fn(|cx| tokio::io::AsyncRead::poll_read(Pin::new(&mut *conn), cx, &mut buf)).await
    }
    .boxed()
}

/// A line read as tokio's `read_line` reads one: fill the buffer, then take the line out of it.
#[cfg(feature = "tokio")]
fn tokio_read_line(conn: &mut Pooled<WireDialer>) -> BoxFuture<'_, io::Result<()>> {
    use tokio::io::AsyncBufRead as TokioBufRead;
    poll_fn(|cx| {
        let mut conn = Pin::new(&mut *conn);
        let line = match TokioBufRead::poll_fill_buf(conn.as_mut(), cx) {
            Poll::Ready(Ok(buf)) => buf
                .iter()
                .position(|&byte| byte == b'\n')
                .map_or(buf.len(), |at| at + 1),
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => return Poll::Pending,
        };
        TokioBufRead::consume(conn, line);
        Poll::Ready(Ok(()))
    })
    .boxed()
}

#[cfg(feature = "tokio")]
fn tokio_write(conn: &mut Pooled<WireDialer>) -> BoxFuture<'_, io::Result<()>> {
    let write = poll_fn(|cx| tokio::io::AsyncWrite::poll_write(Pin::new(&mut *conn), cx, b"ping"));
    async { write.await.map(drop) }.boxed()
}

#[cfg(feature = "tokio")]
fn tokio_write_vectored(conn: &mut Pooled<WireDialer>) -> BoxFuture<'_, io::Result<()>> {
    async {
        let bufs = [IoSlice::new(b"ping")];
        let write = poll_fn(|cx| {
            tokio::io::AsyncWrite::poll_write_vectored(Pin::new(&mut *conn), cx, &bufs)
        });
        write.await.map(drop)
    }
    .boxed()
}

#[cfg(feature = "tokio")]
fn tokio_flush(conn: &mut Pooled<WireDialer>) -> BoxFuture<'_, io::Result<()>> {
    poll_fn(|cx| tokio::io::AsyncWrite::poll_flush(Pin::new(&mut *conn), cx)).boxed()
}

/// Asserts the dropped guard's connection was closed as by `release`, not kept for the next
/// caller; `what` says which case failed.
fn assert_closed(pool: &Pool<WireDialer>, what: impl std::fmt::Display) {
    let stats = pool.stats();
    assert_eq!(
        (stats.total(), stats.counters.released),
        (0, 1),
        "{what}: the connection went back"
    );
}

/// A pool whose connections answer at once, its dialer, and a connection from it.
fn answered() -> (Pool<WireDialer>, WireDialer, Pooled<WireDialer>) {
    let (pool, dialer) = pool();
    dialer.set(ANSWERING);
    let conn = get(&pool);
    (pool, dialer, conn)
}

/// The connection dropped last went back idle if `finished`, else it was closed.
fn assert_kept_or_closed(pool: &Pool<WireDialer>, finished: bool, what: impl std::fmt::Display) {
    if finished {
        assert_eq!(pool.stats().idle(), 1, "{what}");
    } else {
        assert_closed(pool, what);
    }
}

/// A write that takes only part of its bytes leaves the rest of the request unwritten: a caller
/// that gives up there leaves part of a request with the peer, and the connection is unfinished.
/// Written on to the end, as `write_all` does, it goes back.
#[test]
fn a_write_that_takes_part_of_its_bytes_is_unfinished_until_the_rest_is_written() {
    let writes = [
        "write",
        "write_vectored",
        "tokio poll_write",
        "tokio poll_write_vectored",
    ];
    for (name, write) in ops().into_iter().filter(|(name, _)| writes.contains(name)) {
        let (pool, dialer, mut conn) = answered();
        dialer.set(SHORT);
        block_on(write(&mut conn)).unwrap();
        drop(conn);
        assert_kept_or_closed(&pool, false, format!("{name}: 2 bytes of 4, given up"));
    }
    for tokio in tokio_or_not() {
        let (pool, dialer, mut conn) = answered();
        dialer.set(SHORT);
        block_on(write_all(&mut conn, b"a request", tokio)).unwrap();
        drop(conn);
        assert_kept_or_closed(&pool, true, format!("tokio {tokio}: written on to the end"));
    }
}

/// A vectored write counts the bytes of all its slices: futures-io's default
/// `poll_write_vectored` (the wire's) writes the first slice only.
#[test]
fn a_vectored_write_of_several_slices_is_unfinished_until_all_are_written() {
    let bufs = [IoSlice::new(b"pi"), IoSlice::new(b"ng")];
    let (pool, _dialer, mut conn) = answered();
    assert_eq!(block_on(conn.write_vectored(&bufs)).unwrap(), 2);
    drop(conn);
    assert_kept_or_closed(&pool, false, "2 slices, the first written");
    let (pool, _dialer, mut conn) = answered();
    block_on(async {
        let written = conn.write_vectored(&bufs).await?;
        conn.write_all(&b"ping"[written..]).await
    })
    .unwrap();
    drop(conn);
    assert_kept_or_closed(&pool, true, "2 slices, the rest written after");
}

/// `write_all` of `bytes` through futures-io, or through tokio's `poll_write` (as tokio's
/// `write_all` does it: again with the rest after each write).
fn write_all<'a>(
    conn: &'a mut Pooled<WireDialer>,
    bytes: &'a [u8],
    tokio: bool,
) -> BoxFuture<'a, io::Result<()>> {
    if tokio {
        return write_all_through_tokio(conn, bytes);
    }
    conn.write_all(bytes).boxed()
}

#[cfg(feature = "tokio")]
fn write_all_through_tokio<'a>(
    conn: &'a mut Pooled<WireDialer>,
    bytes: &'a [u8],
) -> BoxFuture<'a, io::Result<()>> {
    async move {
        let mut rest = bytes;
        while !rest.is_empty() {
            let write = |cx: &mut Context<'_>| {
                tokio::io::AsyncWrite::poll_write(Pin::new(&mut *conn), cx, rest)
            };
            rest = &rest[poll_fn(write).await?..];
        }
        Ok(())
    }
    .boxed()
}

#[cfg(not(feature = "tokio"))]
fn write_all_through_tokio<'a>(
    _: &'a mut Pooled<WireDialer>,
    _: &'a [u8],
) -> BoxFuture<'a, io::Result<()>> {
    unreachable!("tokio's traits without the feature")
}

/// The connection `get` hands out next: reused (`Some` with its id) or dialed afresh (`None`).
fn next(pool: &Pool<WireDialer>) -> Option<usize> {
    let conn = get(pool);
    conn.is_reused().then_some(conn.id)
}

#[test]
fn a_guard_dropped_with_its_io_pending_closes_its_connection() {
    for (name, op) in ops() {
        let (pool, dialer) = pool();
        let mut conn = get(&pool);
        let id = conn.id;
        let mut pending = op(&mut conn);
        assert!(poll_once(&mut pending).is_pending(), "{name}");
        // Cut off, as by a timeout: the future goes, then the guard.
        drop(pending);
        drop(conn);
        assert_closed(&pool, format_args!("{name}"));
        dialer.set(ANSWERING);
        assert_eq!(
            next(&pool),
            None,
            "{name}: connection {id} was handed out again"
        );
    }
}

/// Leaves `op` pending on a new guard, then answers it as `end` says, and drops the guard: what
/// the next get hands out (the same connection reused, or `None`: dialed afresh), and whether the
/// call ended in an error.
fn after_io(op: Op, end: u8) -> (Option<usize>, bool, Pool<WireDialer>) {
    let (pool, dialer) = pool();
    let mut conn = get(&pool);
    let failed = {
        let mut call = op(&mut conn);
        assert!(poll_once(&mut call).is_pending());
        dialer.set(end);
        match poll_once(&mut call) {
            Poll::Ready(done) => done.is_err(),
            Poll::Pending => panic!("mode {end}: the call did not end"),
        }
    };
    drop(conn);
    dialer.set(ANSWERING);
    (next(&pool), failed, pool)
}

#[test]
fn io_that_finished_leaves_its_connection_to_the_pool() {
    for (name, op) in ops() {
        let (next, failed, _) = after_io(op, ANSWERING);
        assert!(!failed, "{name}");
        assert_eq!(next, Some(0), "{name}");
    }
}

/// A read, write or flush that failed (reset, broken pipe) through the guard ends its stream: the
/// dialer here says every connection is open, as `dial_fn`'s does and as a pool with its checks
/// off takes it, and the guard, dropped by a caller's `?`, still does not put the dead stream back
/// for the next caller.
#[test]
fn io_that_failed_closes_its_connection() {
    for (name, op) in ops() {
        let (next, failed, pool) = after_io(op, FAILING);
        assert!(failed, "{name}");
        assert_eq!(
            next, None,
            "{name}: the failed connection was handed out again"
        );
        assert_eq!(pool.stats().counters.released, 1, "{name}");
    }
}

/// A read that finds the end of the stream (the peer closed its side), or a write that takes none
/// of its bytes, ends the stream for the pool too; a flush, which reads nothing, says nothing of
/// it.
#[test]
fn a_stream_that_ended_under_a_read_or_write_closes_its_connection() {
    for (name, op) in ops() {
        let (next, _, pool) = after_io(op, ENDING);
        if name.contains("flush") {
            assert_eq!(next, Some(0), "{name}");
        } else {
            assert_eq!(
                next, None,
                "{name}: the ended connection was handed out again"
            );
            assert_eq!(pool.stats().counters.released, 1, "{name}");
        }
    }
}

/// An ended stream is not an unfinished one: a reader loop stopped by the end of the stream,
/// then told it is between requests, still leaves nothing for the next caller.
#[test]
fn forget_pending_does_not_forget_a_stream_that_ended() {
    for (name, op) in ops() {
        for end in [FAILING, ENDING] {
            if end == ENDING && name.contains("flush") {
                continue;
            }
            let (pool, dialer, mut conn) = answered();
            dialer.set(end);
            assert!(poll_once(&mut op(&mut conn)).is_ready(), "{name}");
            conn.forget_pending();
            drop(conn);
            assert_eq!(pool.stats().counters.released, 1, "{name}, mode {end}");
            dialer.set(ANSWERING);
            assert_eq!(next(&pool), None, "{name}, mode {end}");
        }
    }
}

/// Leaves `first` pending on a guard, then finishes `then` on it: `then` must not settle what
/// `first` left, so the dropped guard's connection is closed.
fn assert_not_settled_by(first: Op, then: Op) {
    let (pool, dialer) = pool();
    let mut conn = get(&pool);
    assert!(poll_once(&mut first(&mut conn)).is_pending());
    dialer.set(ANSWERING);
    assert!(poll_once(&mut then(&mut conn)).is_ready());
    drop(conn);
    assert_closed(&pool, "half a request");
}

#[test]
fn a_write_that_finished_does_not_settle_a_read_left_pending_nor_the_other_way_round() {
    for [read, write, _] in families() {
        assert_not_settled_by(read, write);
        assert_not_settled_by(write, read);
    }
}

/// A stream shut down through the guard (futures-io's `close`, tokio's `poll_shutdown`) is not
/// put back, whether or not the shutdown finished.
#[test]
fn a_guard_whose_stream_was_shut_down_closes_its_connection_whether_or_not_it_finished() {
    for tokio in tokio_or_not() {
        for mode in [SILENT, ANSWERING] {
            let (pool, dialer) = pool();
            dialer.set(mode);
            let mut conn = get(&pool);
            let shutdown = shut_down(&mut conn, tokio);
            assert_eq!(
                shutdown.is_ready(),
                mode == ANSWERING,
                "tokio {tokio}: the wire's answer"
            );
            drop(conn);
            assert_eq!(pool.stats().counters.released, 1);
            dialer.set(ANSWERING);
            assert_eq!(next(&pool), None);
        }
    }
}

/// Shuts the guard's stream down, polled once: futures-io's `close`, or tokio's `poll_shutdown`.
fn shut_down(conn: &mut Pooled<WireDialer>, tokio: bool) -> Poll<io::Result<()>> {
    if tokio {
        return shut_down_through_tokio(conn);
    }
    poll_once(&mut conn.close())
}

#[cfg(feature = "tokio")]
fn shut_down_through_tokio(conn: &mut Pooled<WireDialer>) -> Poll<io::Result<()>> {
    poll_once(&mut poll_fn(|cx| {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut *conn), cx)
    }))
}

#[cfg(not(feature = "tokio"))]
fn shut_down_through_tokio(_: &mut Pooled<WireDialer>) -> Poll<io::Result<()>> {
    unreachable!("tokio's traits without the feature")
}

/// A guard answers tokio's `is_write_vectored` as its connection does.
#[cfg(feature = "tokio")]
#[test]
fn a_guard_writes_vectored_when_its_connection_does() {
    let (pool, _) = pool();
    let (even, odd) = (get(&pool), get(&pool));
    assert_eq!((even.id, odd.id), (0, 1));
    assert!(tokio::io::AsyncWrite::is_write_vectored(&even));
    assert!(!tokio::io::AsyncWrite::is_write_vectored(&odd));
}

#[test]
fn a_guard_that_did_no_io_goes_back_to_the_pool() {
    let (pool, _) = pool();
    let id = get(&pool).id;
    assert_eq!(next(&pool), Some(id));
    assert_eq!(pool.stats().counters.released, 0);
}

#[test]
fn a_write_and_a_flush_do_not_settle_each_other() {
    for [_, write, flush] in families() {
        assert_not_settled_by(write, flush);
        assert_not_settled_by(flush, write);
    }
}

#[test]
fn forget_pending_puts_back_a_connection_left_waiting_for_bytes_nobody_asked_for() {
    for (name, op) in ops() {
        let (pool, dialer) = pool();
        let mut conn = get(&pool);
        let id = conn.id;
        assert!(poll_once(&mut op(&mut conn)).is_pending(), "{name}");
        conn.forget_pending();
        drop(conn);
        assert_eq!(pool.stats().counters.released, 0, "{name}");
        dialer.set(ANSWERING);
        assert_eq!(next(&pool), Some(id), "{name}");
    }
}

#[test]
fn forget_pending_does_not_forget_bytes_handed_out_and_not_taken() {
    // A probe for stray bytes that found some.
    for tokio in tokio_or_not() {
        let (pool, _, mut conn) = answered();
        fill(&mut conn, tokio);
        conn.forget_pending();
        drop(conn);
        assert_closed(
            &pool,
            format_args!("tokio: {tokio}: forgot 3 bytes waiting"),
        );

        // Thrown away, they leave nothing to keep it from the pool.
        let (pool, dialer, mut conn) = answered();
        fill(&mut conn, tokio);
        consume(&mut conn, tokio, 3);
        dialer.set(SILENT);
        assert!(poll_once(&mut conn.read(&mut [0; 8])).is_pending());
        conn.forget_pending();
        drop(conn);
        assert_eq!(pool.stats().idle(), 1, "tokio: {tokio}");
    }
}

#[test]
fn forget_pending_does_not_forget_a_shutdown() {
    let (pool, _, mut conn) = answered();
    assert!(poll_once(&mut conn.close()).is_ready());
    conn.forget_pending();
    drop(conn);
    assert_eq!(pool.stats().counters.released, 1);
    assert_eq!(next(&pool), None);
}

#[test]
fn a_guard_left_pending_counts_its_close_as_panicking_or_pool_closed_where_that_applies() {
    let (pool, _) = pool();
    let ops = ops();
    let read = ops[0].1;
    let mut conn = get(&pool);
    assert!(poll_once(&mut read(&mut conn)).is_pending());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _conn = conn;
        panic!("dropped by a panic");
    }));
    assert!(panicked.is_err());
    let counters = pool.stats().counters;
    assert_eq!((counters.closed_panicking, counters.released), (1, 0));

    let mut conn = get(&pool);
    assert!(poll_once(&mut read(&mut conn)).is_pending());
    pool.close();
    drop(conn);
    let counters = pool.stats().counters;
    assert_eq!((counters.closed_pool_closed, counters.released), (1, 0));
    assert_eq!(counters.dials, counters.closed());
}

#[test]
fn io_that_failed_without_happening_is_left_unfinished() {
    for (name, op) in ops() {
        for end in [TIMING_OUT, BLOCKING, INTERRUPTED] {
            let (pool, dialer) = pool();
            let mut conn = get(&pool);
            {
                let mut call = op(&mut conn);
                assert!(poll_once(&mut call).is_pending(), "{name}");
                dialer.set(end);
                assert!(
                    matches!(poll_once(&mut call), Poll::Ready(Err(_))),
                    "{name}"
                );
            }
            drop(conn);
            // The request may still be answered: as after `Pending`.
            assert_closed(&pool, format_args!("{name}, mode {end}"));
        }
    }
}

/// An error that says the operation did not happen leaves it unfinished, not the stream ended:
/// told the stream is between requests, the guard puts it back.
#[test]
fn forget_pending_forgets_io_that_failed_without_happening() {
    for (name, op) in ops() {
        for end in [TIMING_OUT, BLOCKING, INTERRUPTED] {
            let (pool, dialer, mut conn) = answered();
            dialer.set(end);
            assert!(
                matches!(poll_once(&mut op(&mut conn)), Poll::Ready(Err(_))),
                "{name}"
            );
            conn.forget_pending();
            drop(conn);
            assert_eq!(pool.stats().idle(), 1, "{name}, mode {end}: closed");
        }
    }
}

#[test]
fn a_poll_that_panics_leaves_its_operation_unfinished() {
    for (name, op) in ops() {
        let (pool, dialer) = pool();
        let mut conn = get(&pool);
        dialer.set(PANICKING);
        // Caught around the call, not the guard, which outlives the panic.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            poll_once(&mut op(&mut conn))
        }));
        assert!(caught.is_err(), "{name}");
        dialer.set(ANSWERING);
        drop(conn);
        assert_closed(
            &pool,
            format_args!("{name}: the stream may hold part of a request"),
        );
    }
}

/// A read and a write of no bytes on each trait family, with the read or write each leaves alone.
fn empty_ops() -> Vec<(&'static str, Op, Op)> {
    let op = |name| ops().into_iter().find(|(n, _)| *n == name).unwrap().1;
    vec![
        ("empty read", op("read"), |conn| {
            async { conn.read(&mut []).await.map(drop) }.boxed()
        }),
        ("empty write", op("write"), |conn| {
            async { conn.write(&[]).await.map(drop) }.boxed()
        }),
        ("empty read_vectored", op("read"), |conn| {
            async { conn.read_vectored(&mut []).await.map(drop) }.boxed()
        }),
        ("read_vectored of empty slices", op("read"), |conn| {
            async {
                let (mut a, mut b) = ([0; 0], [0; 0]);
                let mut bufs = [IoSliceMut::new(&mut a), IoSliceMut::new(&mut b)];
                conn.read_vectored(&mut bufs).await.map(drop)
            }
            .boxed()
        }),
        ("empty write_vectored", op("write"), |conn| {
            async { conn.write_vectored(&[]).await.map(drop) }.boxed()
        }),
        // What a reader that answers a buffered read itself (a `take(0)`) asks of the guard.
        ("consume of nothing", op("read"), |conn| {
            Pin::new(&mut *conn).consume(0);
            async { Ok(()) }.boxed()
        }),
        #[cfg(feature = "tokio")]
        ("tokio consume of nothing", tokio_read, |conn| {
            tokio::io::AsyncBufRead::consume(Pin::new(&mut *conn), 0);
            async { Ok(()) }.boxed()
        }),
        #[cfg(feature = "tokio")]
        ("tokio empty poll_read", tokio_read, |conn| {
            let mut buf = tokio::io::ReadBuf::new(&mut []);
            poll_fn(move |cx| tokio::io::AsyncRead::poll_read(Pin::new(&mut *conn), cx, &mut buf))
                .boxed()
        }),
        #[cfg(feature = "tokio")]
        ("tokio poll_read into a full buffer", tokio_read, |conn| {
            async {
                let mut bytes = [0; 4];
                let mut buf = tokio::io::ReadBuf::new(&mut bytes);
                buf.set_filled(4);
                poll_fn(|cx| tokio::io::AsyncRead::poll_read(Pin::new(&mut *conn), cx, &mut buf))
                    .await
            }
            .boxed()
        }),
        #[cfg(feature = "tokio")]
        ("tokio empty poll_write", tokio_write, |conn| {
            let write =
                poll_fn(|cx| tokio::io::AsyncWrite::poll_write(Pin::new(&mut *conn), cx, &[]));
            async { write.await.map(drop) }.boxed()
        }),
        #[cfg(feature = "tokio")]
        ("tokio empty poll_write_vectored", tokio_write, |conn| {
            poll_fn(|cx| tokio::io::AsyncWrite::poll_write_vectored(Pin::new(&mut *conn), cx, &[]))
                .map_ok(drop)
                .boxed()
        }),
    ]
}

#[test]
fn a_read_or_write_of_no_bytes_settles_nothing() {
    for (name, pending, empty) in empty_ops() {
        let (pool, _) = pool();
        let mut conn = get(&pool);
        assert!(poll_once(&mut pending(&mut conn)).is_pending(), "{name}");
        // Answered at once, as a socket answers it, whatever is under way.
        assert!(
            matches!(poll_once(&mut empty(&mut conn)), Poll::Ready(Ok(()))),
            "{name}"
        );
        drop(conn);
        assert_closed(&pool, format_args!("{name} settled what was left pending"));
    }
}

/// What ends a stream is a read or write of some bytes: one of none says nothing of the stream
/// whatever it answers (no bytes, an error), and a settled guard still goes back after it.
#[test]
fn a_read_or_write_of_no_bytes_ends_nothing() {
    for mode in [ANSWERING, ENDING, FAILING] {
        for (name, _, empty) in empty_ops() {
            let (pool, dialer, mut conn) = answered();
            dialer.set(mode);
            assert!(poll_once(&mut empty(&mut conn)).is_ready(), "{name}");
            drop(conn);
            assert_eq!(pool.stats().idle(), 1, "{name}, mode {mode}: closed");
        }
    }
}

/// A tokio read into a buffer that already holds bytes meets the end of the stream when it adds
/// none of its own.
#[cfg(feature = "tokio")]
#[test]
fn a_tokio_read_that_adds_nothing_to_the_bytes_in_its_buffer_ends_the_stream() {
    let (pool, dialer, mut conn) = answered();
    dialer.set(ENDING);
    let mut bytes = [0; 8];
    let mut buf = tokio::io::ReadBuf::new(&mut bytes);
    buf.put_slice(b"abc");
    let mut read = poll_fn(|cx| tokio::io::AsyncRead::poll_read(Pin::new(&mut conn), cx, &mut buf));
    assert!(matches!(poll_once(&mut read), Poll::Ready(Ok(()))));
    assert_eq!(buf.filled(), b"abc");
    drop(conn);
    assert_closed(&pool, "a read that added nothing");
}

/// A writer that never takes anything: a slow client an answer is streamed to.
struct Stuck;

impl AsyncWrite for Stuck {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

#[test]
fn a_buffered_read_whose_bytes_were_not_consumed_is_unfinished() {
    // An answer streamed out of the guard to a slow sink, cut off half-way.
    let (pool, _, mut conn) = answered();
    assert!(poll_once(&mut futures::io::copy_buf(&mut conn, &mut Stuck)).is_pending());
    drop(conn);
    assert_closed(&pool, "copy_buf");

    #[cfg(feature = "tokio")]
    {
        use tokio::io::AsyncBufRead as TokioBufRead;
        let (pool, _, mut conn) = answered();
        let filled = poll_once(&mut poll_fn(|cx| {
            TokioBufRead::poll_fill_buf(Pin::new(&mut conn), cx).map_ok(|buf| buf.len())
        }));
        assert!(matches!(filled, Poll::Ready(Ok(3))));
        drop(conn);
        assert_closed(&pool, "tokio poll_fill_buf");
    }

    // Consumed, the same bytes leave it to the pool.
    let (pool, _, mut conn) = answered();
    let buf = poll_once(&mut conn.fill_buf()).map_ok(|buf| buf.len());
    assert!(matches!(buf, Poll::Ready(Ok(3))));
    Pin::new(&mut conn).consume(3);
    drop(conn);
    assert_eq!(pool.stats().idle(), 1);
}

/// The trait families the guard reads through: futures-io's (`false`), and tokio's (`true`) with
/// the feature.
fn tokio_or_not() -> Vec<bool> {
    let mut families = vec![false];
    if cfg!(feature = "tokio") {
        families.push(true);
    }
    families
}

/// Has one buffered read hand out its 3 bytes, through futures-io or tokio.
fn fill(conn: &mut Pooled<WireDialer>, tokio: bool) {
    let filled = if tokio {
        fill_through_tokio(conn)
    } else {
        poll_once(&mut conn.fill_buf()).map_ok(|buf| buf.len())
    };
    assert!(matches!(filled, Poll::Ready(Ok(3))));
}

#[cfg(feature = "tokio")]
fn fill_through_tokio(conn: &mut Pooled<WireDialer>) -> Poll<io::Result<usize>> {
    poll_once(&mut poll_fn(|cx| {
        tokio::io::AsyncBufRead::poll_fill_buf(Pin::new(&mut *conn), cx).map_ok(|buf| buf.len())
    }))
}

#[cfg(not(feature = "tokio"))]
fn fill_through_tokio(_: &mut Pooled<WireDialer>) -> Poll<io::Result<usize>> {
    unreachable!("tokio's traits without the feature")
}

/// Consumes `amt` of what a buffered read handed out, through futures-io or tokio.
fn consume(conn: &mut Pooled<WireDialer>, tokio: bool, amt: usize) {
    if tokio {
        #[cfg(feature = "tokio")]
        tokio::io::AsyncBufRead::consume(Pin::new(conn), amt);
    } else {
        Pin::new(conn).consume(amt);
    }
}

/// Consumes `amts` of what one buffered read hands out (3 bytes), through futures-io or tokio.
fn consume_in_parts(conn: &mut Pooled<WireDialer>, tokio: bool, amts: &[usize]) {
    fill(conn, tokio);
    for &amt in amts {
        consume(conn, tokio, amt);
    }
}

#[test]
fn a_buffered_read_consumed_in_part_is_unfinished_until_the_rest_is() {
    // A line taken from a buffer that holds two answers leaves the second for the next caller.
    for tokio in tokio_or_not() {
        for (amts, finished) in [
            (&[2][..], false),
            (&[0], false),
            (&[1, 1], false),
            (&[1, 2], true),
            (&[2, 5], true),
        ] {
            let (pool, _, mut conn) = answered();
            consume_in_parts(&mut conn, tokio, amts);
            drop(conn);
            let what = format!("tokio: {tokio}, consumed {amts:?} of 3");
            assert_kept_or_closed(&pool, finished, what);
        }
    }

    // A second buffered read counts afresh: what the first left is in what the second hands out.
    let (pool, _, mut conn) = answered();
    consume_in_parts(&mut conn, false, &[1]);
    consume_in_parts(&mut conn, false, &[3]);
    drop(conn);
    assert_eq!(pool.stats().idle(), 1);

    // `read_line` takes its line and leaves the connection to the pool.
    let (pool, _, mut conn) = answered();
    let mut line = String::new();
    assert!(matches!(
        poll_once(&mut conn.read_line(&mut line)),
        Poll::Ready(Ok(3))
    ));
    drop(conn);
    assert_eq!(pool.stats().idle(), 1);
}

/// Reads `len` bytes with a plain read, through futures-io (`read`, `read_vectored`) or tokio.
fn read_plainly(conn: &mut Pooled<WireDialer>, how: &str, len: usize) {
    let read = try_read_plainly(conn, how, len);
    assert!(matches!(read, Poll::Ready(Ok(n)) if n == len), "{how}");
}

/// [`read_plainly`]'s poll, however it ends.
fn try_read_plainly(
    conn: &mut Pooled<WireDialer>,
    how: &str,
    len: usize,
) -> Poll<io::Result<usize>> {
    let mut buf = vec![0; len];
    match how {
        "read" => poll_once(&mut conn.read(&mut buf)),
        "read_vectored" => poll_once(&mut conn.read_vectored(&mut [IoSliceMut::new(&mut buf)])),
        #[cfg(feature = "tokio")]
        "tokio poll_read" => {
            let mut buf = tokio::io::ReadBuf::new(&mut buf);
            poll_once(&mut poll_fn(|cx| {
                tokio::io::AsyncRead::poll_read(Pin::new(&mut *conn), cx, &mut buf)
            }))
            .map_ok(|()| buf.filled().len())
        }
        _ => unreachable!("{how}"),
    }
}

#[test]
fn a_read_after_a_buffered_read_takes_from_what_it_handed_out() {
    // A header taken with `read_line`, then a body with `read_exact`: a buffered stream's reads
    // empty its buffer first, so a body that does not take all of it leaves the rest behind.
    let mut reads = vec![(false, "read"), (false, "read_vectored")];
    if cfg!(feature = "tokio") {
        reads.push((true, "tokio poll_read"));
    }
    for (tokio, how) in reads {
        for (consumed, read, finished) in [(1, 1, false), (1, 2, true), (0, 3, true), (0, 4, true)]
        {
            let (pool, _, mut conn) = answered();
            consume_in_parts(&mut conn, tokio, &[consumed]);
            read_plainly(&mut conn, how, read);
            drop(conn);
            let what = format!("{how}: consumed {consumed} of 3, then read {read}");
            assert_kept_or_closed(&pool, finished, what);
        }

        // A read that failed took none of them.
        let (pool, dialer, mut conn) = answered();
        fill(&mut conn, tokio);
        dialer.set(FAILING);
        assert!(matches!(
            try_read_plainly(&mut conn, how, 3),
            Poll::Ready(Err(_))
        ));
        drop(conn);
        assert_closed(&pool, format_args!("{how}: failed after a buffered read"));
    }
}

#[test]
fn a_consume_that_panics_leaves_its_read_unfinished() {
    for tokio in tokio_or_not() {
        let (pool, dialer, mut conn) = answered();
        fill(&mut conn, tokio);
        dialer.set(PANICKING);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            consume(&mut conn, tokio, 3);
        }));
        assert!(caught.is_err());
        dialer.set(ANSWERING);
        drop(conn);
        assert_closed(
            &pool,
            format_args!("tokio: {tokio}: the bytes were not taken"),
        );
    }
}
