//! The guard's own I/O (futures-io): a read or a write left unfinished through it, or a shutdown,
//! keeps its connection from going back to the pool; I/O that finished does not.

mod support;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use connpool_core::{ManualClock, Pool, Pooled};
use futures::executor::block_on;
use futures::future::BoxFuture;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, IoSlice, IoSliceMut};
use futures::FutureExt;
use support::{addr, poll_once};

/// What a [`Wire`] does with reads and writes.
const SILENT: u8 = 0;
const ANSWERING: u8 = 1;
const FAILING: u8 = 2;

/// A connection whose reads and writes wait (`SILENT`), succeed at once (`ANSWERING`) or fail
/// (`FAILING`), as its dialer's switch says: a peer that has not answered yet, has, or is gone.
/// It never wakes anyone: a test polls again once it has turned the switch.
#[derive(Debug)]
struct Wire {
    id: usize,
    mode: Arc<AtomicU8>,
}

impl Wire {
    fn ready<T>(&self, ok: T) -> Poll<io::Result<T>> {
        match self.mode.load(Ordering::SeqCst) {
            SILENT => Poll::Pending,
            ANSWERING => Poll::Ready(Ok(ok)),
            _ => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
        }
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        buf.fill(b'a');
        self.ready(buf.len())
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.ready(buf.len())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ready(())
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
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

/// Every read and write the guard forwards, each as one call.
fn ops() -> Vec<(&'static str, Op)> {
    vec![
        ("read", |conn| {
            async { conn.read(&mut [0; 4]).await.map(drop) }.boxed()
        }),
        ("read_vectored", |conn| {
            async {
                let mut buf = [0; 4];
                let mut bufs = [IoSliceMut::new(&mut buf)];
                conn.read_vectored(&mut bufs).await.map(drop)
            }
            .boxed()
        }),
        ("write", |conn| {
            async { conn.write(b"ping").await.map(drop) }.boxed()
        }),
        ("write_vectored", |conn| {
            async {
                let bufs = [IoSlice::new(b"ping")];
                conn.write_vectored(&bufs).await.map(drop)
            }
            .boxed()
        }),
        ("flush", |conn| async { conn.flush().await }.boxed()),
    ]
}

/// The connection `get` hands out next: reused (`Some` with its id) or dialed afresh (`None`).
fn next(pool: &Pool<WireDialer>) -> Option<usize> {
    let conn = get(pool);
    conn.is_reused().then_some(conn.id)
}

#[test]
fn a_guard_dropped_with_a_read_or_write_pending_closes_its_connection() {
    for (name, op) in ops() {
        let (pool, dialer) = pool();
        let mut conn = get(&pool);
        let id = conn.id;
        let mut pending = op(&mut conn);
        assert!(poll_once(&mut pending).is_pending(), "{name}");
        // Cut off, as by a timeout: the future goes, then the guard.
        drop(pending);
        drop(conn);
        let stats = pool.stats();
        assert_eq!((stats.total(), stats.counters.released), (0, 1), "{name}");
        dialer.set(ANSWERING);
        assert_eq!(
            next(&pool),
            None,
            "{name}: connection {id} was handed out again"
        );
    }
}

#[test]
fn a_read_or_write_that_finished_leaves_its_connection_to_the_pool() {
    for (name, op) in ops() {
        for end in [ANSWERING, FAILING] {
            let (pool, dialer) = pool();
            let mut conn = get(&pool);
            let id = conn.id;
            {
                let mut call = op(&mut conn);
                assert!(poll_once(&mut call).is_pending(), "{name}");
                dialer.set(end);
                assert!(poll_once(&mut call).is_ready(), "{name}");
            }
            drop(conn);
            // Whether a connection whose I/O failed is any good is `is_open`'s call, not the
            // guard's: this dialer's answers yes.
            assert_eq!(pool.stats().idle(), 1, "{name}, mode {end}");
            assert_eq!(next(&pool), Some(id), "{name}, mode {end}");
        }
    }
}

#[test]
fn a_write_that_finished_does_not_settle_a_read_left_pending_nor_the_other_way_round() {
    let (pool, dialer) = pool();
    let ops = ops();
    let (read, write) = (ops[0].1, ops[2].1);
    for (first, then) in [(read, write), (write, read)] {
        dialer.set(SILENT);
        let mut conn = get(&pool);
        assert!(poll_once(&mut first(&mut conn)).is_pending());
        dialer.set(ANSWERING);
        assert!(poll_once(&mut then(&mut conn)).is_ready());
        drop(conn);
        assert_eq!(pool.stats().total(), 0);
    }
    assert_eq!(pool.stats().counters.released, 2);
}

#[test]
fn a_guard_whose_stream_was_shut_down_closes_its_connection_whether_or_not_it_finished() {
    for mode in [SILENT, ANSWERING] {
        let (pool, dialer) = pool();
        dialer.set(mode);
        let mut conn = get(&pool);
        let closed = poll_once(&mut conn.close());
        assert_eq!(closed.is_ready(), mode == ANSWERING);
        drop(conn);
        assert_eq!(pool.stats().counters.released, 1);
        dialer.set(ANSWERING);
        assert_eq!(next(&pool), None);
    }
}

#[test]
fn a_guard_that_did_no_io_goes_back_to_the_pool() {
    let (pool, _) = pool();
    let id = get(&pool).id;
    assert_eq!(next(&pool), Some(id));
    assert_eq!(pool.stats().counters.released, 0);
}
