//! A guard dropped as its thread exits, after Tokio's own thread-locals are gone.
//!
//! Once any runtime in the process has paused its clock, every read of Tokio's clock goes through
//! Tokio's thread-local context, and a read after that context is destroyed panics. A guard kept
//! in a thread-local (a per-thread client, say) is dropped among the thread's last destructors,
//! and a panic there aborts the process. So the test runs in a child process of its own: a
//! regression shows as the child's abort, and no other test shares its paused clock.

use std::cell::RefCell;
use std::io;
use std::process::Command;

use connpool_core::{async_trait, Dialer};
use tokio::io::DuplexStream;

/// In-memory connections: what is tested is the guard's way back, not the wire.
struct Memory;

#[async_trait]
impl Dialer for Memory {
    type Addr = &'static str;
    type Conn = DuplexStream;

    async fn dial(&self, _addr: &&'static str) -> io::Result<DuplexStream> {
        let (near, far) = tokio::io::duplex(64);
        // The far end stays open, so the near one is never seen closed.
        std::mem::forget(far);
        Ok(near)
    }
}

thread_local! {
    static HELD: RefCell<Option<connpool_tokio::Pooled<Memory>>> = const { RefCell::new(None) };
}

const CHILD: &str = "CONNPOOL_TEST_THREAD_EXIT_CHILD";
const NAME: &str = "a_guard_dropped_after_tokios_thread_locals_are_gone_goes_back";

#[test]
fn a_guard_dropped_after_tokios_thread_locals_are_gone_goes_back() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the child process ended with {}:\n{stdout}\n{stderr}",
        out.status
    );
    // The child ran the test, rather than finding no test of that name.
    assert!(
        stdout.contains("1 passed"),
        "the child ran nothing:\n{stdout}"
    );
}

fn child() {
    // A paused clock, once, anywhere in the process.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {});
    let pool = std::thread::spawn(|| {
        // Made before Tokio's thread-locals, so dropped after them as the thread exits.
        HELD.with(|_| {});
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // On a current-thread runtime the pool reads Tokio's clock (`TokioClock`).
        runtime.block_on(async {
            let pool = connpool_tokio::builder(Memory).build().unwrap();
            let conn = pool.get(&"a").await.unwrap();
            HELD.with(|held| *held.borrow_mut() = Some(conn));
            pool
        })
    })
    .join()
    .unwrap();
    let stats = pool.stats();
    let dest = stats.destination(&"a").expect("the connection is counted");
    assert_eq!((dest.total, dest.idle), (1, 1), "it went back idle");
}
