//! Retention (`serve --retention 30d [--retention-failed 90d]`): finished
//! runs older than the window are deleted with their steps and attempts,
//! in small batches, in the background, never blocking the queue (each
//! batch is one short transaction; a pause between batches lets the
//! workers' writes through). Queued, running and parked runs are never
//! touched. What was deleted is counted for `/metrics`
//! (`omniflow_runs_pruned_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::store::{RunStatus, Store, StoreError};

/// Runs deleted per transaction.
const BATCH: usize = 500;
/// Pause between two batches.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

/// How long finished runs are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Succeeded and cancelled runs (and failed ones unless `failed` says otherwise).
    pub keep: Duration,
    /// Failed runs, when they should be kept longer (or shorter).
    pub keep_failed: Option<Duration>,
    /// How often to look.
    pub every: Duration,
}

impl Retention {
    /// Keep finished runs for `keep` (failed ones for `keep_failed`).
    pub fn new(keep: Duration, keep_failed: Option<Duration>) -> Retention {
        Retention {
            keep,
            keep_failed,
            every: Duration::from_secs(60),
        }
    }
}

/// Delete, in batches, what `retention` says is too old; returns how many.
pub async fn prune_once(
    store: &dyn Store,
    retention: &Retention,
    stop: &CancellationToken,
) -> Result<u64, StoreError> {
    let now = SystemTime::now();
    let keep_failed = retention.keep_failed.unwrap_or(retention.keep);
    let classes = [
        (
            now - retention.keep,
            &[RunStatus::Succeeded, RunStatus::Cancelled][..],
        ),
        (now - keep_failed, &[RunStatus::Failed][..]),
    ];
    let mut total = 0;
    for (before, statuses) in classes {
        loop {
            if stop.is_cancelled() {
                return Ok(total);
            }
            let deleted = store.prune_runs(before, statuses, BATCH, false).await?;
            total += deleted;
            if deleted < BATCH as u64 {
                break;
            }
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
    }
    Ok(total)
}

/// Prune every `retention.every` until `stop`, counting into `pruned`.
pub(super) async fn run(
    store: Arc<dyn Store>,
    retention: Retention,
    pruned: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    loop {
        match prune_once(store.as_ref(), &retention, &stop).await {
            Ok(0) => {}
            Ok(n) => {
                pruned.fetch_add(n, Ordering::Relaxed);
                tracing::info!(runs = n, "pruned finished runs past their retention");
            }
            Err(e) => tracing::warn!("pruning runs: {e}"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retention.every) => {}
        }
    }
}
