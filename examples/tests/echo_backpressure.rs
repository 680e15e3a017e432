//! The echo client reads the answer while it sends the request: a server echoes as it reads, so a
//! request larger than what the connection buffers must not wait for its own end to be sent.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use connpool_core::{dial_fn, Pool};
use connpool_examples::echo::EchoClient;
use futures_io::{AsyncRead, AsyncWrite};

/// An echo server in memory holding at most `room` bytes in flight, as a connection's buffers
/// do: a write waits while they are full, a read while they are empty.
struct BoundedEcho {
    in_flight: VecDeque<u8>,
    room: usize,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl BoundedEcho {
    fn new(room: usize) -> Self {
        BoundedEcho {
            in_flight: VecDeque::new(),
            room,
            reader: None,
            writer: None,
        }
    }
}

impl AsyncWrite for BoundedEcho {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let space = self.room - self.in_flight.len();
        if space == 0 && !buf.is_empty() {
            self.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = space.min(buf.len());
        self.in_flight.extend(&buf[..n]);
        if let Some(reader) = self.reader.take() {
            reader.wake();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for BoundedEcho {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.in_flight.is_empty() && !buf.is_empty() {
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = self.in_flight.len().min(buf.len());
        for (to, from) in buf.iter_mut().zip(self.in_flight.drain(..n)) {
            *to = from;
        }
        if let Some(writer) = self.writer.take() {
            writer.wake();
        }
        Poll::Ready(Ok(n))
    }
}

/// Remembers whether it was woken.
struct Woken(AtomicBool);

impl Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Polls `future` to its end. Everything here is in memory, so a `Pending` without a wake-up
/// during its poll is one that nothing will ever end: the future is stalled.
fn finish<F: Future>(future: F) -> F::Output {
    let woken = Arc::new(Woken(AtomicBool::new(false)));
    let waker = Waker::from(woken.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        woken.0.store(false, Ordering::SeqCst);
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => assert!(
                woken.0.load(Ordering::SeqCst),
                "stalled: waiting for a wake-up nothing will send"
            ),
        }
    }
}

#[test]
fn a_request_larger_than_the_connection_buffers_is_answered() {
    const ROOM: usize = 64 << 10;
    let dialer = dial_fn(|_: String| async { Ok::<_, io::Error>(BoundedEcho::new(ROOM)) });
    let pool = Pool::new(dialer, 4, Duration::from_secs(60)).unwrap();
    let client = EchoClient::new(pool, vec!["echo:7".to_string()]).unwrap();
    let payload: Vec<u8> = (0..16 * ROOM).map(|i| (i % 251) as u8).collect();
    let reply = finish(client.echo(&payload)).unwrap();
    assert!(reply == payload, "the answer differs from the request");
    // Answered in full, the connection goes back to the pool and serves the next request.
    assert_eq!(finish(client.echo(b"small")).unwrap(), b"small");
    let counters = client.pool().stats().counters;
    assert_eq!((counters.dials, counters.hits), (1, 1));
}
