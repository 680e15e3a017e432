//! Background tasks on tokio: [`TokioSpawner`].

use std::future::Future;
use std::pin::Pin;

use connpool_core::Spawner;
use tokio::runtime::Handle;

/// Runs the pool's background reaper on a tokio runtime.
///
/// It holds a [`Handle`], so a pool built inside a runtime keeps reaping there whichever thread
/// later uses or drops it.
#[derive(Debug, Clone)]
pub struct TokioSpawner {
    handle: Handle,
}

impl TokioSpawner {
    /// Spawns on the runtime of the caller.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime, as [`tokio::spawn`] does. Outside one, use
    /// [`try_current`](TokioSpawner::try_current), or [`on`](TokioSpawner::on) with the
    /// [`Handle`] of the runtime the reaper should run on.
    pub fn current() -> Self {
        match TokioSpawner::try_current() {
            Some(spawner) => spawner,
            None => panic!(
                "connpool-tokio: no tokio runtime here; build the pool inside one, \
                 or pass a runtime Handle to TokioSpawner::on"
            ),
        }
    }

    /// Spawns on the runtime of the caller, or `None` outside a tokio runtime.
    pub fn try_current() -> Option<Self> {
        Handle::try_current().ok().map(TokioSpawner::on)
    }

    /// Spawns on the runtime of `handle`. The reaper runs only while that runtime does: once it
    /// shuts down, the pool closes expired idle connections only lazily.
    pub fn on(handle: Handle) -> Self {
        TokioSpawner { handle }
    }
}

impl Default for TokioSpawner {
    /// [`TokioSpawner::current`], with its panic outside a runtime.
    fn default() -> Self {
        TokioSpawner::current()
    }
}

impl Spawner for TokioSpawner {
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>) {
        // The reaper ends by itself when its pool closes or goes away; nobody needs to join it.
        drop(self.handle.spawn(task));
    }
}
