//! What the engine and its callers need of the queue's workers, as a trait:
//! the worker pool (`server::queue::QueueHandle`) implements it, so the API
//! and the triggers talk to "the queue" without knowing the server, and a
//! test (or a cross-process implementation later) can stand in for it.

use crate::store::RunId;

/// The queue's workers, seen from outside.
pub trait RunQueue: Send + Sync {
    /// There is new work: claim now instead of at the next poll.
    fn wake(&self);
    /// Cancel run `id` if it executes here; false otherwise.
    fn cancel(&self, id: RunId) -> bool;
    /// Cancel run `id` as soon as this process registers it (claimed, not
    /// registered yet), or now if it already is.
    fn request_cancel(&self, id: RunId);
    /// Runs executing now.
    fn busy(&self) -> usize;
    /// Runs executed at most at once.
    fn capacity(&self) -> usize;
    /// False once the workers stopped.
    fn is_alive(&self) -> bool;
}

/// A queue with no workers here: runs stay queued until some other process
/// (or the caller itself) executes them. For tools and tests that build the
/// API's state without a worker pool (`bench console`, router tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWorkers;

impl RunQueue for NoWorkers {
    fn wake(&self) {}
    fn cancel(&self, _: RunId) -> bool {
        false
    }
    fn request_cancel(&self, _: RunId) {}
    fn busy(&self) -> usize {
        0
    }
    fn capacity(&self) -> usize {
        0
    }
    fn is_alive(&self) -> bool {
        true
    }
}
