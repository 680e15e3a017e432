//! The echo client on smol (feature `smol`).
//!
//! smol's sockets already implement futures-io's traits, so `connpool-smol`'s dialer serves the
//! runtime-agnostic [`EchoClient`] as it is.

use std::io;

use connpool_smol::TcpDialer;

use super::EchoClient;

/// The echo client on smol.
pub type Client = EchoClient<TcpDialer>;

/// An echo client sending to `servers` (`"host:port"`) in turn.
///
/// Its pool has `connpool-smol`'s clock and spawner, so idle connections are reaped in the
/// background on smol's global executor.
///
/// ```
/// # fn main() -> std::io::Result<()> {
/// # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let addr = listener.local_addr()?.to_string();
/// # std::thread::spawn(move || {
/// #     for stream in listener.incoming().flatten() {
/// #         std::thread::spawn(move || std::io::copy(&mut &stream, &mut &stream));
/// #     }
/// # });
/// smol::block_on(async {
///     let client = connpool_examples::echo::smol::client(vec![addr])?;
///     assert_eq!(client.echo(b"hello").await?, b"hello");
///     assert_eq!(client.echo(b"again").await?, b"again");
///     assert_eq!(client.pool().stats().counters.dials, 1);
///     Ok(())
/// })
/// # }
/// ```
pub fn client(servers: Vec<String>) -> io::Result<Client> {
    let pool = connpool_smol::builder(TcpDialer::new()).build()?;
    EchoClient::new(pool, servers)
}
