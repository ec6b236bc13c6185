//! Live run events (CLI progress now; SSE later).

use serde::Serialize;

use crate::store::{RunId, RunStatus, StepStatus};

/// Which `for_each` item of how many (`index` is 0-based; shown 1-based:
/// `shout [2/3]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ItemOf {
    /// 0-based position of the item.
    pub index: usize,
    /// Items in the step.
    pub count: usize,
}

impl std::fmt::Display for ItemOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}/{}]", self.index + 1, self.count)
    }
}

/// Something that happened in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    /// The run started (or resumed).
    RunStarted {
        /// Run id.
        run: RunId,
        /// Steps in the workflow.
        steps: usize,
        /// Steps already finished before this start (resume).
        already_done: usize,
    },
    /// An attempt of a step started.
    StepStarted {
        /// Run id.
        run: RunId,
        /// Step id.
        step: String,
        /// Attempt number (1-based), counted over the whole step (every
        /// `for_each` item's attempts included).
        attempt: u32,
        /// The try within the current retry budget of the step (or of its
        /// item): 1 for a first try, 2 for the first retry, ...
        tries: u32,
        /// The `for_each` item this attempt runs, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        item: Option<ItemOf>,
    },
    /// An attempt failed and will be retried after `delay_ms`.
    StepRetrying {
        /// Run id.
        run: RunId,
        /// Step id.
        step: String,
        /// The attempt that failed.
        attempt: u32,
        /// The `for_each` item it ran, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        item: Option<ItemOf>,
        /// Wait before the next attempt.
        delay_ms: u64,
        /// Error class and message.
        error: String,
    },
    /// A step's piece asked to be held (`$wait_until`, e.g. the delay piece)
    /// until `until`; it succeeds then.
    StepWaiting {
        /// Run id.
        run: RunId,
        /// Step id.
        step: String,
        /// When it continues (RFC 3339).
        until: String,
    },
    /// Every step left waits: the run went back to the queue until `until`
    /// (no worker is held); any worker resumes it then.
    RunParked {
        /// Run id.
        run: RunId,
        /// When it is claimed again (RFC 3339).
        until: String,
    },
    /// A step reached a final status.
    StepFinished {
        /// Run id.
        run: RunId,
        /// Step id.
        step: String,
        /// Final status.
        status: StepStatus,
        /// Attempts made.
        attempts: u32,
        /// Duration of the step, all attempts.
        duration_ms: u64,
        /// Error class and message, when it failed.
        error: Option<String>,
    },
    /// The run reached a final status.
    RunFinished {
        /// Run id.
        run: RunId,
        /// Final status.
        status: RunStatus,
        /// Why it failed, if it did.
        error: Option<String>,
    },
}
