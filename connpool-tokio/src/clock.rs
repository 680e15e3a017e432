//! Time on tokio: [`TokioClock`].

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use connpool_core::Clock;

/// The pool's clock on tokio: tokio's own time.
///
/// [`now`](Clock::now) reads [`tokio::time::Instant::now`], so a paused test clock
/// (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`) moves the pool's idle times
/// and its reaper along with every other timer of the test. Read outside a runtime (a guard
/// dropped on a plain thread, or by a thread-local's destructor as its thread exits) it is the
/// system clock, which agrees with tokio's unless paused.
///
/// Its sleeps are tokio timers: they must be made inside a tokio runtime with time enabled, as
/// they are when the reaper runs on a [`TokioSpawner`](crate::TokioSpawner).
///
/// Only a current-thread runtime's clock can be paused. Asked inside a multi-thread runtime,
/// [`is_system_time`](Clock::is_system_time) says yes, so a pool built there (by
/// [`builder`](crate::builder), say) reads the system's clock itself, as a pool with no clock does
/// (a few nanoseconds a reading when the timeouts span 256 ticks of the coarse clock, instead of
/// a precise read of tokio's clock at every get and return), and sleeps on tokio's timers. Such a
/// pool belongs to that runtime's time: used from inside a paused current-thread runtime, it
/// would not see that runtime's time move, and given a spawner on such a runtime
/// ([`TokioSpawner::on`](crate::TokioSpawner::on)), its reaper would wake at every step the paused
/// clock takes until the system's time catches up. [`builder`](crate::builder) takes the clock and
/// the spawner from the same runtime.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioClock;

impl TokioClock {
    /// The tokio clock.
    pub fn new() -> Self {
        TokioClock
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        // Once any runtime in the process has paused its clock, tokio reads its time through its
        // thread-local context, and panics if that context is gone: a guard kept in a
        // thread-local is dropped as its thread exits, maybe after tokio's, where a panic aborts
        // the process. Inside a task the context is there (a look at it, about a nanosecond);
        // elsewhere asking for it costs more (a handle cloned and dropped), and outside a runtime
        // tokio's time is the system's anyway.
        let in_runtime =
            tokio::task::try_id().is_some() || tokio::runtime::Handle::try_current().is_ok();
        if in_runtime {
            tokio::time::Instant::now().into_std()
        } else {
            Instant::now()
        }
    }

    fn sleep(&self, dur: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(dur))
    }

    /// `true` inside a multi-thread runtime: tokio pauses only a current-thread runtime's clock,
    /// so a multi-thread runtime's time is the system's.
    fn is_system_time(&self) -> bool {
        tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
            runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        })
    }
}
