//! The echo client's retry: a reused connection the server has closed is released, and the request
//! goes again on a fresh one. And a request cut off half-way leaves no answer to the next one.

#![cfg(feature = "smol")]

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use connpool_examples::echo::EchoClient;
use connpool_smol::TcpDialer;
use smol::Timer;

/// An echo server on threads that can hang up on every connection it has accepted.
struct Server {
    addr: String,
    accepted: Arc<Mutex<Vec<TcpStream>>>,
}

impl Server {
    fn start() -> io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let keep = accepted.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Ok(clone) = stream.try_clone() {
                    keep.lock().unwrap().push(clone);
                }
                thread::spawn(move || io::copy(&mut &stream, &mut &stream));
            }
        });
        Ok(Server { addr, accepted })
    }

    fn hang_up(&self) {
        for stream in self.accepted.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn a_stale_connection_is_released_and_the_request_retried_on_a_new_one() {
    let server = Server::start().unwrap();
    smol::block_on(async {
        // Without the check on get, the pool hands out the stale connection, as it would when
        // the server closes it just after the check.
        let pool = connpool_smol::builder(TcpDialer::new())
            .check_on_get(false)
            .build()
            .unwrap();
        let client = EchoClient::new(pool, vec![server.addr.clone()]).unwrap();
        assert_eq!(client.echo(b"first").await.unwrap(), b"first");

        server.hang_up();
        assert_eq!(client.echo(b"second").await.unwrap(), b"second");

        let counters = client.pool().stats().counters;
        assert_eq!(counters.dials, 2);
        assert_eq!(counters.hits, 1);
        assert_eq!(counters.released, 1);
        assert_eq!(client.pool().stats().idle(), 1);
    });
}

#[test]
fn a_client_needs_a_server() {
    let pool = connpool_smol::builder(TcpDialer::new()).build().unwrap();
    let err = EchoClient::new(pool, Vec::new()).err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

/// An echo server whose first connection answers its first request only once `answer` is sent
/// to (a backend that answers late), and says on `received` when that request has come in.
struct LateServer {
    addr: String,
    answer: mpsc::Sender<()>,
    received: mpsc::Receiver<()>,
}

impl LateServer {
    fn start() -> io::Result<LateServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let (answer, held) = mpsc::channel();
        let (arrived, received) = mpsc::channel();
        thread::spawn(move || {
            let mut late = Some((held, arrived));
            for stream in listener.incoming().flatten() {
                let late = late.take();
                thread::spawn(move || {
                    if let Some((held, arrived)) = late {
                        let mut request = [0; 4];
                        io::Read::read_exact(&mut &stream, &mut request)?;
                        let _ = arrived.send(());
                        let _ = held.recv();
                        io::Write::write_all(&mut &stream, &request)?;
                    }
                    io::copy(&mut &stream, &mut &stream)
                });
            }
        });
        Ok(LateServer {
            addr,
            answer,
            received,
        })
    }
}

#[test]
fn a_request_cut_off_leaves_no_answer_to_the_next_one() {
    let server = LateServer::start().unwrap();
    smol::block_on(async {
        let pool = connpool_smol::builder(TcpDialer::new()).build().unwrap();
        let client = EchoClient::new(pool, vec![server.addr.clone()]).unwrap();
        // Cut off once the server holds the request, as by the caller's timeout.
        let mut first = Box::pin(client.echo(b"AAAA"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while server.received.try_recv().is_err() {
            assert!(
                Instant::now() < deadline,
                "the request never reached the server"
            );
            assert!(smol::future::poll_once(first.as_mut()).await.is_none());
            Timer::after(Duration::from_millis(1)).await;
        }
        assert!(smol::future::poll_once(first.as_mut()).await.is_none());
        drop(first);

        // The next request is on its way before the late answer is sent.
        let mut second = Box::pin(client.echo(b"BBBB"));
        assert!(smol::future::poll_once(second.as_mut()).await.is_none());
        server.answer.send(()).unwrap();
        let second = smol::future::or(async { Some(second.await) }, async {
            Timer::after(Duration::from_secs(5)).await;
            None
        });
        let reply = second.await.expect("the second request was never answered");
        assert_eq!(reply.unwrap(), b"BBBB");

        let counters = client.pool().stats().counters;
        assert_eq!(
            (counters.dials, counters.hits, counters.released),
            (2, 0, 1)
        );
    });
}
