//! Code of the caller's that the pool runs as it makes and lets go of a destination (the
//! address's `Clone` and `Drop`) calling back into the pool. The pool runs it with none of its
//! locks held: under one, such a call would wait for ever for the lock its own thread holds.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use connpool_core::{Builder, ManualClock, Pool};
use futures::executor::block_on;

/// An address that runs, at its next clone or drop once armed ([`arm`]), what the test gave it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Hooked(u32);

/// What the next clone or drop of the armed address runs.
type Hook = Box<dyn FnOnce()>;

thread_local! {
    /// The address armed on this thread, and its hook.
    static HOOK: RefCell<Option<(u32, Hook)>> = const { RefCell::new(None) };
}

/// Makes the next clone or drop of `Hooked(id)` on this thread run `hook`.
fn arm(id: u32, hook: impl FnOnce() + 'static) {
    HOOK.with(|armed| *armed.borrow_mut() = Some((id, Box::new(hook))));
}

fn fire(id: u32) {
    let hook = HOOK.with(|armed| {
        let mut armed = armed.borrow_mut();
        match armed.take() {
            Some((armed_id, hook)) if armed_id == id => Some(hook),
            other => {
                *armed = other;
                None
            }
        }
    });
    if let Some(hook) = hook {
        hook();
    }
}

impl Clone for Hooked {
    fn clone(&self) -> Self {
        fire(self.0);
        Hooked(self.0)
    }
}

impl Drop for Hooked {
    fn drop(&mut self) {
        fire(self.0);
    }
}

struct Numbers;

#[connpool_core::async_trait]
impl connpool_core::Dialer for Numbers {
    type Addr = Hooked;
    type Conn = u32;

    async fn dial(&self, addr: &Hooked) -> io::Result<u32> {
        Ok(addr.0)
    }
}

const TIMEOUT: Duration = Duration::from_secs(60);

fn pool(
    configure: impl FnOnce(Builder<Numbers>) -> Builder<Numbers>,
) -> (Pool<Numbers>, ManualClock) {
    let clock = ManualClock::new();
    let builder = Pool::builder(Numbers)
        .idle_timeout(TIMEOUT)
        .clock(clock.clone());
    (configure(builder).build().unwrap(), clock)
}

/// Runs `scenario` on a thread of its own; whether it ended within five seconds. One that waits
/// for ever is left behind, parked on the pool's lock, and goes with the test's process.
fn ends(scenario: impl FnOnce() + Send + 'static) -> bool {
    let (done, ended) = mpsc::channel();
    thread::spawn(move || {
        scenario();
        let _ = done.send(());
    });
    ended.recv_timeout(Duration::from_secs(5)).is_ok()
}

/// Arms `Hooked(id)` to read the pool's stats, and returns whether it has.
fn arm_stats(pool: &Pool<Numbers>, id: u32) -> Arc<AtomicBool> {
    let fired = Arc::new(AtomicBool::new(false));
    let (pool, flag) = (pool.clone(), fired.clone());
    arm(id, move || {
        assert_eq!(
            pool.stats().destinations.len(),
            pool.stats().destinations.len()
        );
        flag.store(true, Ordering::SeqCst);
    });
    fired
}

#[test]
fn an_address_cloned_for_a_new_destination_may_call_into_the_pool() {
    let ended = ends(|| {
        let (pool, _clock) = pool(|builder| builder);
        let fired = arm_stats(&pool, 5);
        let conn = block_on(pool.get(&Hooked(5))).unwrap();
        assert!(fired.load(Ordering::SeqCst), "the address was cloned");
        assert_eq!(*conn, 5);
        assert_eq!(pool.stats().total(), 1);
    });
    assert!(ended, "the address's clone waited for the pool's lock");
}

/// Each way a destination's bucket leaves the store with nothing else holding the destination:
/// the address's last copy drops then. (A guard's return or release holds it through the call.)
#[test]
fn an_address_dropped_as_its_destination_goes_may_call_into_the_pool() {
    type Removal = fn(&Pool<Numbers>, &ManualClock);
    let ways: [(&str, Removal); 4] = [
        ("evicted under max_idle_total", |pool, _| {
            // Destination 1 is the least recently used: the return of 2 evicts it.
            let held = block_on(pool.get(&Hooked(2))).unwrap();
            let fired = arm_stats(pool, 1);
            drop(held);
            assert!(fired.load(Ordering::SeqCst));
        }),
        ("expired at a reap", |pool, clock| {
            clock.advance(TIMEOUT);
            let fired = arm_stats(pool, 1);
            assert_eq!(pool.reap(), 1);
            assert!(fired.load(Ordering::SeqCst));
        }),
        ("purged", |pool, _| {
            let fired = arm_stats(pool, 1);
            assert_eq!(pool.purge(&Hooked(1)), 1);
            assert!(fired.load(Ordering::SeqCst));
        }),
        ("closed", |pool, _| {
            let fired = arm_stats(pool, 1);
            pool.close();
            assert!(fired.load(Ordering::SeqCst));
        }),
    ];
    for (way, remove) in ways {
        let ended = ends(move || {
            let (pool, clock) = pool(|builder| builder.max_idle_total(1));
            drop(block_on(pool.get(&Hooked(1))).unwrap());
            remove(&pool, &clock);
            assert!(pool.stats().destination(&Hooked(1)).is_none(), "{way}");
        });
        assert!(
            ended,
            "{way}: the address's drop waited for the pool's lock"
        );
    }
}
