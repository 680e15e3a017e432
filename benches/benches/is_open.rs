//! What the adapters' `is_open` costs on a healthy idle loopback connection: the check the pool
//! makes at every get and every return (with the default `check_on_get` and `check_on_return`).
//!
//! `peek` is the default (a one-byte peek, a system call); `readiness_first` asks tokio's reactor
//! first and peeks only at a stream it marked readable, so an idle stream costs no system call.

use std::hint::black_box;
use std::net::TcpListener;

use connpool_core::Dialer;
use criterion::{criterion_group, criterion_main, Criterion};

fn is_open(c: &mut Criterion) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("its address");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let stream = runtime
        .block_on(tokio::net::TcpStream::connect(addr))
        .expect("a loopback connection");
    let _tokio_peer = listener.accept().expect("accepted");
    let mut group = c.benchmark_group("is_open_tokio");
    for (name, dialer) in [
        ("peek", connpool_tokio::TcpDialer::new()),
        (
            "readiness_first",
            connpool_tokio::TcpDialer::new().readiness_first(true),
        ),
    ] {
        let _context = runtime.enter();
        group.bench_function(name, |b| {
            b.iter(|| assert!(dialer.is_open(black_box(&stream))))
        });
    }
    group.finish();

    let stream = smol::block_on(smol::net::TcpStream::connect(addr)).expect("a connection");
    let _smol_peer = listener.accept().expect("accepted");
    let dialer = connpool_smol::TcpDialer::new();
    c.benchmark_group("is_open_smol")
        .bench_function("peek", |b| {
            b.iter(|| assert!(dialer.is_open(black_box(&stream))))
        });
}

criterion_group!(benches, is_open);
criterion_main!(benches);
