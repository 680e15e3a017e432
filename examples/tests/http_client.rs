//! The hyper client of `connpool_examples::http` against a hyper server on loopback: reuse, a
//! server that closes, a backend that restarts, and requests cut off halfway through their body.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connpool_examples::http::{self, Body};
use connpool_tokio::Dialer;
use futures_util::stream::{self, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// What `/slow/` sends once it is let go: a whole response of its own, for a client that would
/// take the rest of a cut-off body for the answer to its next request.
const STALE: &str = "HTTP/1.1 200 OK\r\nx-id: stale\r\ncontent-length: 8\r\n\r\nid=stale";

/// A hyper server on 127.0.0.1. `/id/N` answers `id=N` with the header `x-id: N`; `/close/N`
/// answers the same and closes the connection; `/slow/N` sends its head and `id=N;` at once, and
/// the rest of its body ([`STALE`]) only once [`Server::let_go`] lets it.
struct Server {
    addr: String,
    accepted: Arc<AtomicUsize>,
    held_back: Arc<Semaphore>,
    tasks: JoinSet<()>,
}

impl Server {
    async fn start() -> Server {
        Server::on("127.0.0.1:0").await
    }

    async fn on(addr: &str) -> Server {
        let listener = TcpListener::bind(addr).await.expect("a loopback port");
        let addr = listener.local_addr().expect("its address").to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let held_back = Arc::new(Semaphore::new(0));
        let mut tasks = JoinSet::new();
        let (count, notify) = (accepted.clone(), held_back.clone());
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let notify = notify.clone();
                let service = service_fn(move |request| answer(request, notify.clone()));
                connections.spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server {
            addr,
            accepted,
            held_back,
            tasks,
        }
    }

    /// Lets one `/slow/` response, waiting now or the next to wait, send the rest of its body.
    fn let_go(&self) {
        self.held_back.add_permits(1);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening, and aborts every connection's task (they go with the accept loop's), and
    /// returns the address it listened on.
    async fn stop(mut self) -> String {
        self.tasks.shutdown().await;
        self.addr
    }
}

type ServerBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(
    request: Request<Incoming>,
    held_back: Arc<Semaphore>,
) -> Result<Response<ServerBody>, Infallible> {
    let path = request.uri().path().to_owned();
    let (kind, id) = path[1..].split_once('/').expect("/kind/id");
    let first = format!("id={id};");
    let response = Response::builder().header("x-id", id);
    let response = match kind {
        "id" => response.body(full(first)),
        "close" => response.header(CONNECTION, "close").body(full(first)),
        "slow" => {
            let length = first.len() + STALE.len();
            let rest = async move {
                if let Ok(permit) = held_back.acquire().await {
                    permit.forget();
                }
                Ok(Frame::data(Bytes::from_static(STALE.as_bytes())))
            };
            let frames = stream::once(async move { Ok(Frame::data(Bytes::from(first))) })
                .chain(stream::once(rest));
            response
                .header(CONTENT_LENGTH, length)
                .body(BodyExt::boxed(StreamBody::new(frames)))
        }
        other => panic!("no such path: {other}"),
    };
    Ok(response.expect("a valid response"))
}

fn full(text: String) -> ServerBody {
    BodyExt::boxed(http_body_util::Full::new(Bytes::from(text)))
}

fn request(addr: &str, path: &str) -> Request<Body> {
    Request::get(path)
        .header(HOST, addr)
        .body(Body::default())
        .expect("a valid request")
}

/// A server, a pool, and the server's address.
async fn started() -> (Server, connpool_tokio::Pool<http::HttpDialer>, String) {
    let server = Server::start().await;
    let addr = server.addr.clone();
    (server, http::pool().expect("a pool"), addr)
}

/// Sends `/kind/id` and checks that the answer is that request's.
async fn exchange(
    pool: &connpool_tokio::Pool<http::HttpDialer>,
    addr: &String,
    kind: &str,
    id: usize,
) {
    let response = http::send(pool, addr, request(addr, &format!("/{kind}/{id}")))
        .await
        .expect("an answer");
    assert_eq!(response.headers()["x-id"], id.to_string().as_str());
    assert_eq!(response.body(), format!("id={id};").as_bytes());
}

// On two workers, hyper's connection task winds an exchange up beside the caller: a guard comes
// back while its connection is not ready yet, and must still go back to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_one_after_another_reuse_one_connection() {
    let (server, pool, addr) = started().await;
    for id in 0..200 {
        exchange(&pool, &addr, "id", id).await;
    }
    let counters = pool.stats().counters;
    assert_eq!((counters.dials, counters.hits), (1, 199));
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn answers_that_close_their_connection_cost_no_error() {
    let (server, pool, addr) = started().await;
    for id in 0..20 {
        let kind = if id % 2 == 0 { "close" } else { "id" };
        exchange(&pool, &addr, kind, id).await;
    }
    let counters = pool.stats().counters;
    assert_eq!(
        counters.released, 10,
        "each `Connection: close` answer released"
    );
    // The first request and each one after a close dial; each close reuses the one before it.
    assert_eq!((counters.dials, counters.hits), (11, 9));
    assert_eq!(server.accepted(), 11);
}

#[tokio::test]
async fn a_backend_restarted_on_its_port_is_dialed_again() {
    const RESTARTS: usize = 5;
    let mut server = Server::start().await;
    let pool = http::pool().expect("a pool");
    let addr = server.addr.clone();
    exchange(&pool, &addr, "id", 0).await;
    let mut failed = 0;
    for restart in 0..RESTARTS {
        server = Server::on(&server.stop().await).await;
        // The idle connection's close may reach hyper before the next request (skipped, or
        // found closed before any of it was written and sent again on a new connection) or
        // while it is being written: then that one request fails.
        let mut failed_now = 0;
        for id in 1..10 {
            let id = 100 * restart + id;
            match http::send(&pool, &addr, request(&addr, &format!("/id/{id}"))).await {
                Ok(response) => assert_eq!(response.headers()["x-id"], id.to_string().as_str()),
                Err(_) => failed_now += 1,
            }
        }
        assert!(
            failed_now <= 1,
            "{failed_now} requests failed after restart {restart}"
        );
        failed += failed_now;
        assert_eq!(server.accepted(), 1);
    }
    // A request hyper handed back unwritten is sent again: not every restart may cost one.
    assert!(failed < RESTARTS, "every restart cost a request");
    assert_eq!(pool.stats().counters.dials, 1 + RESTARTS as u64);
}

#[tokio::test]
async fn a_response_dropped_halfway_through_its_body_leaves_nothing_for_the_next_caller() {
    let (server, pool, addr) = started().await;
    exchange(&pool, &addr, "id", 0).await;

    let mut conn = pool.get(&addr).await.expect("the idle connection");
    assert!(conn.is_reused());
    conn.ready().await.expect("ready");
    let response = conn
        .send_request(request(&addr, "/slow/1"))
        .await
        .expect("the head");
    let mut body = response.into_body();
    let frame = body.frame().await.expect("a frame").expect("no error");
    assert_eq!(frame.into_data().expect("data"), "id=1;".as_bytes());
    drop(body); // the caller gives up on the rest
    drop(conn); // and the guard goes back
    server.let_go();

    for id in 2..6 {
        exchange(&pool, &addr, "id", id).await;
    }
    assert_eq!(
        pool.stats().counters.dials,
        2,
        "the cut-off connection was not reused"
    );
}

#[tokio::test]
async fn a_request_timed_out_halfway_through_its_body_leaves_nothing_for_the_next_caller() {
    let (server, pool, addr) = started().await;
    exchange(&pool, &addr, "id", 0).await;
    for round in 0..3 {
        let slow = http::send(&pool, &addr, request(&addr, &format!("/slow/{round}")));
        // The rest of the body never comes before the server is let go: this always times out,
        // after the head if it came in time, before it otherwise. Either way, nothing of it may
        // reach the next caller.
        let cut_off = tokio::time::timeout(Duration::from_millis(100), slow).await;
        assert!(cut_off.is_err(), "the slow answer cannot finish");
        server.let_go();
        exchange(&pool, &addr, "id", 10 + round).await;
    }
    let counters = pool.stats().counters;
    assert_eq!(counters.dials, 4, "a cut-off connection was reused");
}

#[tokio::test]
async fn a_connection_the_server_closed_is_not_open() {
    let server = Server::start().await;
    let dialer = http::HttpDialer::default();
    let addr = server.addr.clone();
    let mut conn = dialer.dial(&addr).await.expect("a connection");
    assert!(dialer.is_open(&conn));
    server.stop().await;
    // hyper's task reads the close in its own time; `is_open` must say so once it has, and
    // `ready` then fails.
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while dialer.is_open(&conn) {
            tokio::task::yield_now().await;
        }
    });
    assert!(seen.await.is_ok(), "the close was never seen");
    assert!(conn.ready().await.is_err());
}

#[tokio::test]
async fn an_answer_the_server_cuts_short_is_an_unexpected_eof_and_its_connection_released() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address").to_string();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("a connection");
        let mut request = [0; 1024];
        let _ = stream.read(&mut request).await.expect("the request");
        let head = "HTTP/1.1 200 OK\r\nx-id: 1\r\ncontent-length: 100\r\n\r\nid=1;";
        stream.write_all(head.as_bytes()).await.expect("the head");
    }); // the stream drops here, 95 bytes short
    let pool = http::pool().expect("a pool");
    let err = http::send(&pool, &addr, request(&addr, "/id/1"))
        .await
        .expect_err("the body was cut short");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
    server.await.expect("the server");
    let counters = pool.stats().counters;
    assert_eq!((counters.dials, counters.released), (1, 1));
}
