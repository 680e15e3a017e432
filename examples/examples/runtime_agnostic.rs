//! One client library, two runtimes.
//!
//! `connpool_examples::echo` is a small echo client written once against `connpool-core`. This
//! program starts two echo servers on plain threads (they belong to no runtime), then uses the
//! client from Tokio and from smol, each enabled by the cargo feature of the same name (both are on
//! by default):
//!
//! ```text
//! cargo run --release --example runtime_agnostic
//! cargo run --release --example runtime_agnostic --no-default-features --features smol
//! ```
//!
//! It exits non-zero if an answer is wrong or the pool did not reuse its connections.

// Built with neither runtime, it only says so, and the code for the runtimes goes unused.
#![cfg_attr(
    not(any(feature = "tokio", feature = "smol")),
    allow(unused, clippy::useless_vec)
)]

use std::error::Error;
use std::io;
use std::net::TcpListener;
use std::process::ExitCode;
use std::thread;

use connpool_core::{Dialer, Stats};
use connpool_examples::echo::EchoClient;
use futures_io::{AsyncRead, AsyncWrite};

const REQUESTS: usize = 20;

const ABOUT: &str = "\
runtime_agnostic: one echo client library, written once against connpool-core, used from Tokio
and from smol (each behind the cargo feature of its name; both on by default) against two echo
servers it starts on 127.0.0.1. Takes no arguments.

Usage: cargo run --release --example runtime_agnostic [--no-default-features --features smol]

Exit status: 0 when every answer was right and the pools reused their connections, 1 otherwise.";

fn main() -> ExitCode {
    if let Some(refused) = connpool_examples::no_arguments("runtime_agnostic", ABOUT) {
        return refused;
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("runtime_agnostic: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, Box<dyn Error>> {
    let servers = vec![echo_server()?, echo_server()?];
    println!("echo servers on {}", servers.join(", "));
    let mut ok = true;
    let mut ran = 0;

    #[cfg(feature = "tokio")]
    {
        let runtime = tokio::runtime::Runtime::new()?;
        let stats = runtime.block_on(async {
            let client = connpool_examples::echo::tokio::client(servers.clone())?;
            talk(&client).await
        })?;
        ok &= report("tokio", &stats, servers.len());
        ran += 1;
    }

    #[cfg(feature = "smol")]
    {
        let stats = smol::block_on(async {
            let client = connpool_examples::echo::smol::client(servers.clone())?;
            talk(&client).await
        })?;
        ok &= report("smol", &stats, servers.len());
        ran += 1;
    }

    if ran == 0 {
        println!("built without a runtime: enable the feature `tokio` or `smol`");
    }
    Ok(ok)
}

/// The same code for every runtime: requests through the generic client.
async fn talk<D>(client: &EchoClient<D>) -> io::Result<Stats<D::Addr>>
where
    D: Dialer,
    D::Conn: AsyncRead + AsyncWrite + Unpin,
{
    for n in 0..REQUESTS {
        let payload = format!("request {n}");
        let reply = client.echo(payload.as_bytes()).await?;
        if reply != payload.as_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "asked for {payload:?}, got {:?}",
                    String::from_utf8_lossy(&reply)
                ),
            ));
        }
    }
    Ok(client.pool().stats())
}

/// Prints what the pool did; true when it reused as it should: one dial per server.
fn report<A>(runtime: &str, stats: &Stats<A>, servers: usize) -> bool {
    let counters = &stats.counters;
    let ok = counters.dials == servers as u64 && counters.hits == (REQUESTS - servers) as u64;
    println!(
        "{runtime:>5}: {REQUESTS} requests answered, {} dials, {} reused, {} idle now  [{}]",
        counters.dials,
        counters.hits,
        stats.idle(),
        if ok {
            "ok"
        } else {
            "FAILED: expected one dial per server"
        },
    );
    ok
}

/// An echo server on threads of its own; returns its address.
fn echo_server() -> io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || io::copy(&mut &stream, &mut &stream));
        }
    });
    Ok(addr)
}
