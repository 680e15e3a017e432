//! Background tasks on smol: [`SmolSpawner`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use connpool_core::Spawner;
use smol::Executor;

/// Runs the pool's background reaper on a smol executor.
///
/// By default on smol's global executor, which runs on threads of its own; or on an
/// [`Executor`] the application runs itself.
///
/// The global executor starts its threads when first spawned on, so a pool built by
/// [`builder`](crate::builder) starts them at `build()`, in a program that never spawned
/// anything itself. With `SMOL_THREADS=0` in its environment, smol starts none, the reaper never
/// runs, and idle connections are closed only lazily (by gets and returns).
#[derive(Debug, Clone, Default)]
pub struct SmolSpawner {
    executor: Option<Arc<Executor<'static>>>,
}

impl SmolSpawner {
    /// Spawns on smol's global executor ([`smol::spawn`]).
    pub fn global() -> Self {
        SmolSpawner { executor: None }
    }

    /// Spawns on `executor`. Its owner must keep running it, or the reaper never runs and idle
    /// connections are closed only lazily.
    pub fn on(executor: Arc<Executor<'static>>) -> Self {
        SmolSpawner {
            executor: Some(executor),
        }
    }
}

impl Spawner for SmolSpawner {
    fn spawn(&self, task: Pin<Box<dyn Future<Output = ()> + Send>>) {
        // The reaper ends by itself when its pool closes or goes away; nobody needs to join it.
        match &self.executor {
            Some(executor) => executor.spawn(task).detach(),
            None => smol::spawn(task).detach(),
        }
    }
}
