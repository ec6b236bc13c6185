//! What processes sharing one database tell each other without polling
//! ([`QueueStore::signals`](super::QueueStore::signals)): on PostgreSQL,
//! `LISTEN/NOTIFY` on the channels that `migrations/postgres/0006` and
//! [`QueueStore::request_cancel`](super::QueueStore::request_cancel) notify;
//! a single-process backend has none (the process wakes itself).

use super::RunId;

/// One thing another process (or this one) did to the shared queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A run became claimable: claim now rather than at the next poll.
    Queued,
    /// A run reached a terminal status: re-read it.
    Finished(RunId),
    /// Someone asked to cancel this run: the process executing it stops it.
    Cancel(RunId),
    /// The listening connection was lost and re-made: signals may have been
    /// missed, so re-check everything waited on.
    Resync,
}

/// The `LISTEN` channel of queued runs (no payload).
pub(crate) const QUEUE_CHANNEL: &str = "omniflow_queue";
/// The `LISTEN` channel of finished runs (payload: the run id).
pub(crate) const RUN_CHANNEL: &str = "omniflow_run";
/// The `LISTEN` channel of cancel requests (payload: the run id).
pub(crate) const CANCEL_CHANNEL: &str = "omniflow_cancel";

impl Signal {
    /// The signal a notification on `channel` with `payload` carries (None:
    /// not ours, or a malformed payload).
    pub(crate) fn from_notification(channel: &str, payload: &str) -> Option<Signal> {
        match channel {
            QUEUE_CHANNEL => Some(Signal::Queued),
            RUN_CHANNEL => payload.parse().ok().map(Signal::Finished),
            CANCEL_CHANNEL => payload.parse().ok().map(Signal::Cancel),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_decode() {
        let id = RunId::now_v7();
        assert_eq!(
            Signal::from_notification(QUEUE_CHANNEL, ""),
            Some(Signal::Queued)
        );
        assert_eq!(
            Signal::from_notification(RUN_CHANNEL, &id.to_string()),
            Some(Signal::Finished(id))
        );
        assert_eq!(
            Signal::from_notification(CANCEL_CHANNEL, &id.to_string()),
            Some(Signal::Cancel(id))
        );
        assert_eq!(Signal::from_notification(CANCEL_CHANNEL, "nope"), None);
        assert_eq!(Signal::from_notification("other", ""), None);
    }
}
