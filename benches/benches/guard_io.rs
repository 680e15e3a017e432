//! What the guard's own I/O costs: a 64-byte read or write through `Pooled`'s `AsyncRead` and
//! `AsyncWrite` (tokio's and futures-io's), which note whether each call finished, ended the
//! stream or was left unfinished, against the same call on the bare stream. The stream is in
//! memory and answers at once (the bytes read are copied and passed through `black_box`, as is
//! the stream's address), so the difference is what the guard adds to a call; on a socket a call
//! is a system call of a microsecond or more.

use std::hint::black_box;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use connpool_benches::ready;
use connpool_core::{Dialer, Pool, Pooled};
use criterion::{criterion_group, criterion_main, Criterion};

const LEN: usize = 64;

/// A stream whose reads fill what they are given (up to [`LEN`] bytes) and whose writes take
/// everything, at once.
struct Memory;

impl tokio::io::AsyncRead for Memory {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = buf.remaining().min(LEN);
        buf.put_slice(&[7; LEN][..n]);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for Memory {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl smol::io::AsyncRead for Memory {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(LEN);
        buf[..n].fill(7);
        Poll::Ready(Ok(n))
    }
}

impl smol::io::AsyncWrite for Memory {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

struct MemoryDialer;

#[connpool_core::async_trait]
impl Dialer for MemoryDialer {
    type Addr = String;
    type Conn = Memory;

    async fn dial(&self, _: &String) -> io::Result<Memory> {
        Ok(Memory)
    }
}

/// A 64-byte tokio read; how many bytes it read.
fn tokio_read<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, cx: &mut Context<'_>) -> usize {
    let mut bytes = [0; LEN];
    let mut buf = tokio::io::ReadBuf::new(&mut bytes);
    let read = Pin::new(black_box(stream)).poll_read(cx, &mut buf);
    assert!(matches!(read, Poll::Ready(Ok(()))));
    black_box(buf.filled()).len()
}

/// A 64-byte tokio write; how many bytes it wrote.
fn tokio_write<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, cx: &mut Context<'_>) -> usize {
    match Pin::new(black_box(stream)).poll_write(cx, black_box(&[7; LEN])) {
        Poll::Ready(Ok(n)) => n,
        _ => panic!("the write did not finish"),
    }
}

/// A 64-byte futures-io read; how many bytes it read.
fn futures_read<S: smol::io::AsyncRead + Unpin>(stream: &mut S, cx: &mut Context<'_>) -> usize {
    let mut bytes = [0; LEN];
    match Pin::new(black_box(stream)).poll_read(cx, &mut bytes) {
        Poll::Ready(Ok(n)) => black_box(&bytes[..n]).len(),
        _ => panic!("the read did not finish"),
    }
}

/// A 64-byte futures-io write; how many bytes it wrote.
fn futures_write<S: smol::io::AsyncWrite + Unpin>(stream: &mut S, cx: &mut Context<'_>) -> usize {
    match Pin::new(black_box(stream)).poll_write(cx, black_box(&[7; LEN])) {
        Poll::Ready(Ok(n)) => n,
        _ => panic!("the write did not finish"),
    }
}

fn guard_io(c: &mut Criterion) {
    let pool = Pool::new(MemoryDialer, 1, Duration::from_secs(60)).expect("valid settings");
    let mut guard: Pooled<MemoryDialer> = ready(pool.get(&"memory".to_string())).expect("dialed");
    let mut bare = Memory;
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("guard_io");
    group.bench_function("tokio_read/guard", |b| {
        b.iter(|| tokio_read(&mut guard, &mut cx))
    });
    group.bench_function("tokio_read/bare", |b| {
        b.iter(|| tokio_read(&mut bare, &mut cx))
    });
    group.bench_function("tokio_write/guard", |b| {
        b.iter(|| tokio_write(&mut guard, &mut cx))
    });
    group.bench_function("tokio_write/bare", |b| {
        b.iter(|| tokio_write(&mut bare, &mut cx))
    });
    group.bench_function("futures_read/guard", |b| {
        b.iter(|| futures_read(&mut guard, &mut cx))
    });
    group.bench_function("futures_read/bare", |b| {
        b.iter(|| futures_read(&mut bare, &mut cx))
    });
    group.bench_function("futures_write/guard", |b| {
        b.iter(|| futures_write(&mut guard, &mut cx))
    });
    group.bench_function("futures_write/bare", |b| {
        b.iter(|| futures_write(&mut bare, &mut cx))
    });
    group.finish();
    drop(guard);
    // Every call finished: the connection went back.
    assert_eq!(pool.stats().idle(), 1);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = guard_io
}
criterion_main!(benches);
