//! Runnable examples of connpool, and a small library that shows how to build on it.
//!
//! The examples live under `examples/examples/` and run from the repository root:
//!
//! - `cargo run --release --example tour`: the pool at work on Tokio against local echo
//!   backends, every claim checked with the pool's own numbers.
//! - `cargo run --release --example loadgen -- --help`: a load generator on smol.
//! - `cargo run --release --example runtime_agnostic`: the client library below, used from
//!   Tokio and from smol.
//!
//! The library part is [`echo`]: a tiny client for an echo service, written once against
//! `connpool-core` and shipped with a ready-made constructor per runtime behind the cargo features
//! `tokio` and `smol` (both on by default), the way a library author would ship a client without
//! choosing the runtime for its users.
//!
//! [`http`] (feature `http`, on by default) is an HTTP/1.1 client on hyper and Tokio that pools
//! hyper's request senders per backend: what to pool when a protocol library owns the stream.

#![forbid(unsafe_code)]

pub mod echo;
#[cfg(feature = "http")]
pub mod http;

use std::process::ExitCode;

/// For an example that takes no arguments: `None` when there are none, so that it runs.
/// Otherwise it does not run: `-h` or `--help` prints `about` (exit status 0), and anything else
/// is refused with a line on standard error (exit status 2).
pub fn no_arguments(name: &str, about: &str) -> Option<ExitCode> {
    let first = std::env::args_os().nth(1)?;
    if first == "-h" || first == "--help" {
        println!("{about}");
        return Some(ExitCode::SUCCESS);
    }
    eprintln!("{name}: takes no arguments, got {first:?} (--help says what it does)");
    Some(ExitCode::from(2))
}

/// The code blocks of the README, compiled and run as doctests so that they stay correct.
#[cfg(all(doctest, feature = "tokio", feature = "smol"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
