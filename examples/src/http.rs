//! An HTTP/1.1 client on hyper and Tokio that keeps connections per backend with connpool.
//!
//! The pool keeps hyper's request senders ([`SendRequest`]), one per connection, not the TCP
//! streams under them. hyper's connection task owns the stream, and only it knows where an
//! exchange stands: it keeps a read waiting on an idle connection (to see the server close it),
//! and it reads a response's body ahead into a channel. A guard around the stream would see the
//! first as a read left unfinished and close every connection on drop, and would miss the second:
//! a request cut off while its body was still coming looks finished to the stream's guard, and the
//! rest of the body would reach the next caller. Around a sender, hyper answers both: of a
//! connection whose exchange was cut off, hyper reads what has already arrived and closes it unless
//! that finished the exchange, and [`SendRequest::ready`] waits for it to be done either way.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use connpool_examples::http;
//! use http_body_util::Full;
//! use hyper::Request;
//!
//! let pool = http::pool()?;
//! let addr = "10.0.0.7:8080".to_string();
//! let request = Request::get("/health")
//!     .header("host", &addr)
//!     .body(Full::default())
//!     .expect("a valid request");
//! let response = http::send(&pool, &addr, request).await?;
//! println!("{}: {} bytes", response.status(), response.body().len());
//! # Ok(())
//! # }
//! ```

use std::io;

use connpool_tokio::{async_trait, Dialer, Pool, Pooled, TcpDialer};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, CONNECTION};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// The body of a request: whole, in memory.
pub type Body = Full<Bytes>;

/// Dials a backend with connpool-tokio's [`TcpDialer`], runs hyper's HTTP/1.1 handshake on the
/// stream, and spawns the connection's task on the current Tokio runtime.
#[derive(Debug, Clone, Default)]
pub struct HttpDialer {
    tcp: TcpDialer,
}

impl HttpDialer {
    /// A dialer over `tcp` (its connect timeout, `TCP_NODELAY` and so on).
    pub fn new(tcp: TcpDialer) -> Self {
        HttpDialer { tcp }
    }
}

#[async_trait]
impl Dialer for HttpDialer {
    type Addr = String;
    type Conn = SendRequest<Body>;

    async fn dial(&self, addr: &String) -> io::Result<SendRequest<Body>> {
        let stream = self.tcp.dial(addr).await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io_error)?;
        // The task ends with the connection; how it ended, the sender tells (`is_closed`).
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Whether hyper still has the connection. Not whether it is ready for the next request
    /// (`is_ready`): a guard is dropped as soon as its caller has the response, and hyper's task
    /// may not have wound the exchange up yet; [`send`] waits for that with `ready`.
    fn is_open(&self, conn: &SendRequest<Body>) -> bool {
        !conn.is_closed()
    }
}

/// A pool of [`HttpDialer`] connections with the adapter's defaults (a reaper on the current
/// Tokio runtime); call it inside one.
pub fn pool() -> io::Result<Pool<HttpDialer>> {
    Ok(connpool_tokio::builder(HttpDialer::default()).build()?)
}

/// Sends `request` to the backend at `addr` on a pooled connection and reads the whole response.
///
/// A connection that hyper finds closed before it wrote anything of the request (the server
/// closed it idle, just as the pool handed it out) is released, and the request goes once more on
/// a connection dialed for it (go-connpool's `Release` and `New`). A request hyper had begun to
/// write is never sent twice. A response that says `Connection: close` releases its connection.
///
/// Cut off (a timeout, a `select!`), it leaves the pool nothing to hand on half-read: the next
/// request on that connection waits in `ready()` until hyper has finished the exchange with what
/// had arrived, or closed the connection when that was not enough.
///
/// Errors: the pool's, converted; hyper's as [`io::ErrorKind::UnexpectedEof`] for a connection
/// closed in the middle of a message, the kind of the I/O error under them otherwise
/// (`ConnectionReset`, ...), [`io::ErrorKind::Other`] for the rest (a malformed answer).
pub async fn send(
    pool: &Pool<HttpDialer>,
    addr: &String,
    request: Request<Body>,
) -> io::Result<Response<Bytes>> {
    let mut conn = pool.get(addr).await?;
    let request = match conn.ready().await {
        Ok(()) => match conn.try_send_request(request).await {
            Ok(response) => return read_whole(conn, response).await,
            Err(mut err) => match err.take_message() {
                Some(request) => request,
                None => return Err(give_up(conn, err.into_error())),
            },
        },
        Err(_closed) => request,
    };
    // Closed before any of the request was written: once more, on a new connection.
    conn.release();
    let mut conn = pool.dial(addr).await?;
    if let Err(err) = conn.ready().await {
        return Err(give_up(conn, err));
    }
    match conn.send_request(request).await {
        Ok(response) => read_whole(conn, response).await,
        Err(err) => Err(give_up(conn, err)),
    }
}

/// Reads the body of `response`, holding its connection until the body is all there, and
/// releases the connection when the server said it would close it.
async fn read_whole(
    conn: Pooled<HttpDialer>,
    response: Response<Incoming>,
) -> io::Result<Response<Bytes>> {
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(err) => return Err(give_up(conn, err)),
    };
    if says_close(&parts.headers) {
        conn.release();
    }
    Ok(Response::from_parts(parts, body))
}

/// Whether `Connection` headers name `close` among their options.
fn says_close(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&byte| byte == b',')
            .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// Releases a connection whose exchange failed, and returns the failure.
fn give_up(conn: Pooled<HttpDialer>, err: hyper::Error) -> io::Error {
    conn.release();
    io_error(err)
}

/// hyper's error as an I/O error of the kind a caller's retry looks at.
fn io_error(err: hyper::Error) -> io::Error {
    let kind = if err.is_incomplete_message() {
        io::ErrorKind::UnexpectedEof
    } else {
        std::error::Error::source(&err)
            .and_then(|source| source.downcast_ref::<io::Error>())
            .map_or(io::ErrorKind::Other, io::Error::kind)
    };
    io::Error::new(kind, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_is_found_among_the_connection_options() {
        let says = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(CONNECTION, value.parse().expect("a header value"));
            }
            says_close(&headers)
        };
        assert!(says(&["close"]));
        assert!(says(&["Close"]));
        assert!(says(&["keep-alive, close"]));
        assert!(says(&["upgrade", " CLOSE "]));
        assert!(!says(&[]));
        assert!(!says(&["keep-alive"]));
        assert!(!says(&["closed, keep-alive"]));
    }
}
