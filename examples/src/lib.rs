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

#![forbid(unsafe_code)]

pub mod echo;

/// The code blocks of the README, compiled and run as doctests so that they stay correct.
#[cfg(all(doctest, feature = "tokio", feature = "smol"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
