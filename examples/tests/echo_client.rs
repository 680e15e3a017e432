//! The echo client's retry: a reused connection the server has closed is released, and the request
//! goes again on a fresh one.

#![cfg(feature = "smol")]

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use connpool_examples::echo::EchoClient;
use connpool_smol::TcpDialer;

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
