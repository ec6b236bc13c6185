//! Cron triggers: `"trigger": {"type": "schedule", "cron": "0 */6 * * *",
//! "timezone": "Europe/Paris", "missed": "run_once"}`.
//!
//! The next fire time of every scheduled workflow is stored (`schedules`).
//! [`Scheduler::tick`] looks at the schedules that are due and, for each,
//! moves the stored fire time forward and queues the run in ONE
//! transaction, conditional on the fire time it read
//! ([`ScheduleStore::fire_schedule`](crate::store::ScheduleStore::fire_schedule)):
//! however many schedulers tick at once, each fire time yields at most one run.
//!
//! Each fire time handled on time (within [`MISSED_AFTER`]) moves the
//! schedule to the fire time after it, so every instant of the expression
//! fires once even when ticks come late (several processes tick; any may
//! handle a fire time, exactly one does).
//!
//! Missed-fire policy: a fire time more than [`MISSED_AFTER`] in the past
//! when it is handled was missed (the server was down). Whatever the number
//! of missed fire times, `run_once` (the default) queues ONE catch-up run
//! and `skip` queues none; both then wait for the first fire time after now.
//! On time, both queue the run. The trigger payload says which:
//! `{"fire_time": "...", "missed": bool}`.
//!
//! Time comes from a [`Clock`], so tests move it by hand ([`ManualClock`]).

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Timelike, Utc};
use tokio_util::sync::CancellationToken;

use super::{RunRequest, TriggerKind, new_run};
use crate::engine::RunQueue;
use crate::store::{RunId, Store, StoreError, StoredWorkflow};
use crate::workflow::{MissedFires, Trigger, Workflow};

/// A fire time handled later than this after it passed counts as missed.
pub const MISSED_AFTER: Duration = Duration::from_secs(60);

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: SystemTime) -> ManualClock {
        ManualClock(Mutex::new(now))
    }

    /// Show `now` from now on.
    pub fn set(&self, now: SystemTime) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// Move forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cron expression or time zone that cannot be used. The workflow
/// author's; not retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression {cron:?}: {message}")]
    Cron {
        /// The expression.
        cron: String,
        /// Why.
        message: String,
    },
    /// Not an IANA time zone name.
    #[error("unknown time zone {0:?} (expected an IANA name such as \"Europe/Paris\")")]
    TimeZone(String),
    /// The expression never fires after the given time.
    #[error("cron expression {0:?} never fires")]
    NeverFires(String),
}

/// The first fire time of `cron` (read in `timezone`) strictly after `after`.
pub fn next_fire(
    cron: &str,
    timezone: &str,
    after: SystemTime,
) -> Result<SystemTime, ScheduleError> {
    let pattern = croner::Cron::from_str(cron).map_err(|e| ScheduleError::Cron {
        cron: cron.to_owned(),
        message: e.to_string(),
    })?;
    let tz: chrono_tz::Tz = timezone
        .parse()
        .map_err(|_| ScheduleError::TimeZone(timezone.to_owned()))?;
    // Whole seconds: the expression's resolution (a fire time keeps no
    // milliseconds of the moment it was computed at).
    let local = DateTime::<Utc>::from(after)
        .with_nanosecond(0)
        .unwrap_or_else(|| DateTime::<Utc>::from(after))
        .with_timezone(&tz);
    let next = pattern
        .find_next_occurrence(&local, false)
        .map_err(|_| ScheduleError::NeverFires(cron.to_owned()))?;
    Ok(SystemTime::from(next.with_timezone(&Utc)))
}

/// The schedule a workflow definition asks for: (cron, timezone, missed).
fn wanted(definition: &serde_json::Value) -> Option<(String, String, &'static str)> {
    let workflow = Workflow::from_json(&definition.to_string()).ok()?;
    match workflow.trigger {
        Some(Trigger::Schedule {
            cron,
            timezone,
            missed,
        }) => Some((
            cron,
            timezone,
            match missed {
                MissedFires::RunOnce => "run_once",
                MissedFires::Skip => "skip",
            },
        )),
        _ => None,
    }
}

/// Check a workflow's schedule trigger, if it has one.
pub fn check_trigger(workflow: &Workflow) -> Result<(), ScheduleError> {
    if let Some(Trigger::Schedule { cron, timezone, .. }) = &workflow.trigger {
        next_fire(cron, timezone, SystemTime::now())?;
    }
    Ok(())
}

/// Why syncing a schedule failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The definition's schedule is unusable (the author's).
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Make the stored schedule of `workflow` match its definition (newest
/// version): create, update (a changed expression restarts from `now`), or delete.
pub async fn sync_workflow(
    store: &dyn Store,
    workflow: &StoredWorkflow,
    now: SystemTime,
) -> Result<(), SyncError> {
    match wanted(&workflow.definition) {
        None => store.sync_schedule(&workflow.name, None).await?,
        Some((cron, timezone, missed)) => {
            let next = next_fire(&cron, &timezone, now)?;
            store
                .sync_schedule(&workflow.name, Some((&cron, &timezone, missed, next)))
                .await?
        }
    }
    Ok(())
}

/// Fires due schedules.
#[derive(Clone)]
pub struct Scheduler {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    queue: Arc<dyn RunQueue>,
}

impl Scheduler {
    /// A scheduler over `store`, reading time from `clock`, waking `queue`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        queue: Arc<dyn RunQueue>,
    ) -> Scheduler {
        Scheduler {
            store,
            clock,
            queue,
        }
    }

    /// The clock this scheduler reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Sync every workflow's schedule with its definition (start-up).
    pub async fn sync_all(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        for workflow in self.store.list_workflows().await? {
            match sync_workflow(self.store.as_ref(), &workflow, now).await {
                Ok(()) => {}
                Err(SyncError::Store(e)) => return Err(e),
                Err(SyncError::Schedule(e)) => {
                    tracing::warn!(workflow = %workflow.name, "schedule ignored: {e}")
                }
            }
        }
        Ok(())
    }

    /// Handle every due schedule once; returns the runs queued.
    pub async fn tick(&self) -> Result<Vec<RunId>, StoreError> {
        let now = self.clock.now();
        let mut queued = Vec::new();
        for schedule in self.store.due_schedules(now).await? {
            let name = &schedule.workflow_name;
            let Some(workflow) = self.store.get_workflow(name, None).await? else {
                self.store.sync_schedule(name, None).await?;
                continue;
            };
            let fire_at = humantime::parse_rfc3339_weak(&schedule.next_fire_at).unwrap_or(now);
            let missed = now.duration_since(fire_at).unwrap_or_default() > MISSED_AFTER;
            // On time (even a tick late), the next fire time is the one after
            // this one, so no fire time is skipped; after missed ones, the
            // first one after now.
            let after = if missed { now } else { fire_at };
            let next = match next_fire(&schedule.cron, &schedule.timezone, after) {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(workflow = %name, "dropping an unusable schedule: {e}");
                    self.store.sync_schedule(name, None).await?;
                    continue;
                }
            };
            let run = (!missed || schedule.missed != "skip").then(|| {
                let payload =
                    serde_json::json!({ "fire_time": schedule.next_fire_at, "missed": missed });
                new_run(&workflow, RunRequest::new(TriggerKind::Schedule, payload))
            });
            if let Some(run) = self
                .store
                .fire_schedule(name, &schedule.next_fire_at, next, run)
                .await?
            {
                queued.push(run.id);
            }
        }
        if !queued.is_empty() {
            self.queue.wake();
        }
        Ok(queued)
    }

    /// Tick every `every` until `stop`.
    pub async fn run(self, every: Duration, stop: CancellationToken) {
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!("scheduler tick: {e}");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
