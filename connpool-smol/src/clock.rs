//! Time on smol: [`SmolClock`].

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use connpool_core::Clock;
use smol::Timer;

/// The pool's clock on smol: the system's monotonic clock, with async-io timers to sleep on.
///
/// Its sleeps need no executor of their own: async-io drives its timers from whichever thread
/// waits for them, or from its background thread. As its time is the system's
/// ([`is_system_time`](Clock::is_system_time)), a pool on it reads the system's clock itself, as a
/// pool with no clock does: at its coarse resolution when the timeouts span 256 of its ticks (a few
/// nanoseconds a reading instead of over twenty).
#[derive(Debug, Default, Clone, Copy)]
pub struct SmolClock;

impl SmolClock {
    /// The smol clock.
    pub fn new() -> Self {
        SmolClock
    }
}

impl Clock for SmolClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, dur: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let timer = Timer::after(dur);
        Box::pin(async move {
            timer.await;
        })
    }

    /// Always `true`: async-io's timers run on the system's monotonic clock, which nothing pauses.
    fn is_system_time(&self) -> bool {
        true
    }
}
