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
