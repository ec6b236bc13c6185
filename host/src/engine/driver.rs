//! Driving one run: [`RunDriver`], the scheduler loop over the DAG, one
//! method per phase: [`load`](RunDriver::load) the pinned workflow,
//! [`resume`](RunDriver::resume) the stored step records, then in a loop
//! [`wake_due`](RunDriver::wake_due) (waits whose time came),
//! [`schedule`](RunDriver::schedule) (ready steps, in topological order),
//! [`run_lone_step`](RunDriver::run_lone_step) (inline) or
//! [`spawn_starting`](RunDriver::spawn_starting), and
//! [`wait_next`](RunDriver::wait_next) (a step's end, a wake-up, the run's
//! deadline; [`park_or_sleep`](RunDriver::park_or_sleep) when nothing
//! runs), and at the end [`finalize`](RunDriver::finalize) (which runs the
//! handlers). The readiness rule and the slots are in `run.rs`.
//!
//! Fencing: every write carries the run's lease. A write refused as stale
//! ([`StoreError::LeaseLost`]) or any other store error stops the run: a
//! phase returns it at once, or a step's error is kept in `store_error`
//! (the steps in flight are cancelled) and returned before anything more
//! is written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::context::{ExecHandle, sleep_until_opt};
use super::handler::run_handler;
use super::run::{
    LoadFailure, Slot, dep_context, load_workflow, parse_time, should_run, skipped, step_failed,
};
use super::simulate::Simulation;
use super::step::{StepPlan, finish_hold, run_step};
use super::{EngineError, Executor, RunEvent};
use crate::store::{
    ClaimedRun, Lease, RunRecord, RunStatus, StepRecord, StepStatus, StoreError, now_rfc3339,
    rfc3339,
};
use crate::workflow::ValidatedWorkflow;

/// How [`drive`] left a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driven {
    /// The run reached this terminal status.
    Finished(RunStatus),
    /// Only waits were left: the run is queued again and is not claimed
    /// before `until` (only when driving with parking allowed).
    Parked {
        /// When a worker may claim it again.
        until: SystemTime,
    },
}

/// Drive a run claimed under `claimed.lease` to its end (or, with `park`,
/// until only long waits are left). Every write carries the lease
/// (fencing): once one is refused ([`StoreError::LeaseLost`]), or `lost`
/// is cancelled (the lease renewal found it gone), the run is no longer
/// ours and this returns that error without writing anything more. Any
/// other store error also stops the run (steps in flight are cancelled)
/// and is returned, so the caller stops renewing the lease and the run
/// is taken over once it expires.
pub(super) async fn drive(
    exec: &Executor,
    claimed: ClaimedRun,
    cancel: CancellationToken,
    lost: CancellationToken,
    park: bool,
) -> Result<Driven, EngineError> {
    use tracing::Instrument;
    let span = tracing::info_span!(
        "run",
        run = %claimed.run.id,
        workflow = %claimed.run.workflow_name
    );
    async move {
        let driven = drive_traced(exec, claimed, cancel, lost, park).await;
        match &driven {
            Ok(Driven::Finished(status)) => {
                tracing::debug!(status = status.as_str(), "run finished")
            }
            Ok(Driven::Parked { .. }) => tracing::debug!("run parked"),
            Err(e) => tracing::debug!("run stopped: {e}"),
        }
        driven
    }
    .instrument(span)
    .await
}

async fn drive_traced(
    exec: &Executor,
    claimed: ClaimedRun,
    cancel: CancellationToken,
    lost: CancellationToken,
    park: bool,
) -> Result<Driven, EngineError> {
    let Some(mut driver) = RunDriver::load(exec, claimed, cancel, lost, park).await? else {
        return Ok(Driven::Finished(RunStatus::Failed));
    };
    driver.resume().await?;
    loop {
        driver.wake_due().await?;
        driver.schedule().await?;
        if driver.run_lone_step().await {
            continue;
        }
        driver.spawn_starting();
        match driver.wait_next().await? {
            Next::Loop => {}
            Next::Finish => break,
            Next::Parked(until) => return Ok(Driven::Parked { until }),
        }
    }
    driver.finalize().await
}

/// What the loop does after [`RunDriver::wait_next`].
enum Next {
    /// Go round again (a step ended, a wait is due, the deadline passed).
    Loop,
    /// Nothing runs and nothing waits (or may be woken): finalize.
    Finish,
    /// The run was parked until then; the driving ends.
    Parked(SystemTime),
}

/// One run being driven under its lease.
struct RunDriver<'a> {
    exec: &'a Executor,
    /// The claim the run is driven under; every write carries it.
    lease: Lease,
    run: Arc<RunRecord>,
    validated: Arc<ValidatedWorkflow>,
    /// Just claimed with no step records: nothing to read back.
    fresh: bool,
    /// The steps' ids, by index.
    ids: Vec<String>,
    slots: Vec<Slot>,
    /// Attempts a step made before this drive (from its stored record).
    prior_attempts: Vec<u32>,
    /// A step's record left `running`/`pending` (a crash, a manual retry):
    /// it runs again, carrying its retry budget, logs and fuel on.
    resumed: Vec<Option<StepRecord>>,
    /// The caller's cancel (the user's, or the lease found lost).
    cancel: CancellationToken,
    /// Cancelled when the lease renewal found the lease gone.
    lost: CancellationToken,
    /// Whether a run left with only long waits is parked.
    park: bool,
    /// Cancels the steps of this run (a child of `cancel`).
    run_cancel: CancellationToken,
    /// The run's budget ends here (counted from its first start, across
    /// parks and resumes).
    deadline: Option<SystemTime>,
    running: JoinSet<(usize, Result<StepRecord, EngineError>)>,
    /// Steps planned in this round, started at its end.
    starting: Vec<(usize, StepPlan)>,
    /// Why the run fails (the first failed step, a panic, a store error).
    failure: Option<String>,
    /// A store error of a step: the run stops and returns it.
    store_error: Option<EngineError>,
    timed_out: bool,
    handle: ExecHandle,
    /// A test run's failure simulation (from its trigger document).
    simulation: Option<Simulation>,
}

impl<'a> RunDriver<'a> {
    /// Load the run's pinned workflow version. When it cannot be (missing,
    /// no longer valid), the run is finished as failed here and `None` is
    /// returned.
    async fn load(
        exec: &'a Executor,
        claimed: ClaimedRun,
        cancel: CancellationToken,
        lost: CancellationToken,
        park: bool,
    ) -> Result<Option<Self>, EngineError> {
        // Just claimed: the claim returned the row (and whether it has steps),
        // no need to read them again. The claim set it `running`.
        let fresh = !claimed.has_steps;
        let lease = claimed.lease;
        let run = Arc::new(claimed.run);
        let validated = match load_workflow(exec, &run).await {
            Ok(v) => v,
            // The database blinked: the caller gives the run back.
            Err(LoadFailure::Store(e)) => return Err(e),
            Err(LoadFailure::Invalid(message)) => {
                let error = crate::runtime::cap_error_message(format!("cannot run: {message}"));
                exec.store
                    .finish_run(&lease, RunStatus::Failed, Some(&error))
                    .await?;
                exec.emit(RunEvent::RunFinished {
                    run: run.id,
                    status: RunStatus::Failed,
                    error: Some(error),
                });
                return Ok(None);
            }
        };
        let steps = validated.workflow.steps.len();
        let first_start = parse_time(run.started_at.as_deref());
        let simulation = if run.simulated {
            Simulation::from_trigger(&run.trigger)
        } else {
            None
        };
        Ok(Some(RunDriver {
            simulation,
            exec,
            handle: ExecHandle::new(exec, lease.clone()),
            lease,
            ids: validated
                .workflow
                .steps
                .iter()
                .map(|s| s.id.clone())
                .collect(),
            slots: vec![Slot::Pending; steps],
            prior_attempts: vec![0; steps],
            resumed: vec![None; steps],
            fresh,
            run_cancel: cancel.child_token(),
            cancel,
            lost,
            park,
            deadline: exec.config.run_timeout.map(|t| first_start + t),
            running: JoinSet::new(),
            starting: Vec::new(),
            failure: None,
            store_error: None,
            timed_out: false,
            run,
            validated,
        }))
    }

    /// Take the stored step records: final ones are kept, waiting ones
    /// wait on, anything else runs (again). Emits `RunStarted`.
    async fn resume(&mut self) -> Result<(), EngineError> {
        let index: HashMap<&str, usize> = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let records = if self.fresh {
            Vec::new()
        } else {
            self.exec.store.steps(self.run.id).await?
        };
        for record in records {
            let Some(&i) = index.get(record.step_id.as_str()) else {
                continue;
            };
            self.prior_attempts[i] = record.attempts;
            match record.status {
                StepStatus::Succeeded | StepStatus::Skipped | StepStatus::Failed => {
                    self.slots[i] = Slot::Done(Box::new(record));
                }
                StepStatus::Waiting => {
                    let until = parse_time(record.wake_at.as_deref());
                    self.slots[i] = Slot::Waiting(Box::new(record), until);
                }
                // Left `running`/`pending` by a crash or a manual retry: it runs
                // again, carrying its retry budget, logs and fuel on.
                _ => self.resumed[i] = Some(record),
            }
        }
        let already_done = self
            .slots
            .iter()
            .filter(|s| matches!(s, Slot::Done(_)))
            .count();
        self.exec.emit(RunEvent::RunStarted {
            run: self.run.id,
            steps: self.slots.len(),
            already_done,
        });
        self.failure = self.slots.iter().find_map(|s| match s {
            Slot::Done(r) if r.status == StepStatus::Failed => Some(step_failed(r)),
            _ => None,
        });
        Ok(())
    }

    /// Steps running or about to start.
    fn busy(&self) -> usize {
        self.running.len() + self.starting.len()
    }

    /// The plan of step `i`, with its dependencies' records as context.
    fn plan(&self, i: usize, prior_attempts: u32, previous: Option<StepRecord>) -> StepPlan {
        StepPlan {
            run: self.run.clone(),
            workflow: self.validated.clone(),
            index: i,
            // A step without templates, `when` or `for_each` reads nothing
            // of the run: its context is not built.
            context: self.validated.workflow.steps[i].reads_run_data().then(|| {
                dep_context(
                    &self.run,
                    &self.validated,
                    &self.validated.dag.deps[i],
                    &self.slots,
                    &self.ids,
                )
            }),
            prior_attempts,
            previous,
            cancel: self.run_cancel.clone(),
            simulation: self.simulation,
        }
    }

    /// Waits whose time came: a hold succeeds, a retry runs again.
    async fn wake_due(&mut self) -> Result<(), EngineError> {
        let scheduling = self.failure.is_none() && !self.run_cancel.is_cancelled();
        let now = SystemTime::now();
        for i in 0..self.slots.len() {
            if !scheduling || self.busy() >= self.exec.config.max_parallel_steps {
                break;
            }
            let Slot::Waiting(record, until) = &self.slots[i] else {
                continue;
            };
            if *until > now {
                continue;
            }
            let record = (**record).clone();
            if record.error_class.is_none() && record.output.is_some() {
                let done = finish_hold(&self.handle, record).await?;
                self.slots[i] = Slot::Done(Box::new(done));
                continue;
            }
            let plan = self.plan(i, record.attempts, Some(record));
            self.starting.push((i, plan));
            self.slots[i] = Slot::Running;
        }
        Ok(())
    }

    /// Schedule everything that is ready, in topological order; a ready
    /// step whose dependencies are not met is skipped (and recorded).
    async fn schedule(&mut self) -> Result<(), EngineError> {
        let validated = self.validated.clone();
        let mut progressed = true;
        while progressed && self.failure.is_none() && !self.run_cancel.is_cancelled() {
            progressed = false;
            for &i in &validated.dag.order {
                if !matches!(self.slots[i], Slot::Pending) {
                    continue;
                }
                let deps = &validated.dag.deps[i];
                if !deps
                    .iter()
                    .all(|d| matches!(self.slots[d.step], Slot::Done(_)))
                {
                    continue;
                }
                if let Err(reason) = should_run(deps, &self.slots, &self.ids) {
                    self.skip(i, reason).await?;
                    progressed = true;
                    continue;
                }
                if self.busy() >= self.exec.config.max_parallel_steps {
                    continue;
                }
                let previous = self.resumed[i].take();
                let plan = self.plan(i, self.prior_attempts[i], previous);
                self.starting.push((i, plan));
                self.slots[i] = Slot::Running;
                progressed = true;
            }
        }
        Ok(())
    }

    /// Record step `i` as skipped for `reason`.
    async fn skip(&mut self, i: usize, reason: String) -> Result<(), EngineError> {
        let record = skipped(&self.ids[i], reason);
        self.handle.record_step(&record, None).await?;
        self.exec.emit(RunEvent::StepFinished {
            run: self.run.id,
            step: self.ids[i].clone(),
            status: StepStatus::Skipped,
            attempts: 0,
            duration_ms: 0,
            error: None,
        });
        self.slots[i] = Slot::Done(Box::new(record));
        Ok(())
    }

    /// A lone step with nothing else running or waiting (a chain) runs
    /// inline in this task: no spawn, no cross-thread wake-up to join it.
    /// True when it ran one.
    async fn run_lone_step(&mut self) -> bool {
        let waits = self.slots.iter().any(|s| matches!(s, Slot::Waiting(..)));
        if let [_] = self.starting.as_slice()
            && self.running.is_empty()
            && !waits
            && let Some((i, plan)) = self.starting.pop()
        {
            self.run_inline(i, plan).await;
            return true;
        }
        false
    }

    async fn run_inline(&mut self, i: usize, plan: StepPlan) {
        let result = {
            // A panic is caught as a spawned task's would be.
            let step = std::panic::AssertUnwindSafe(run_step(&self.handle, plan)).catch_unwind();
            tokio::pin!(step);
            tokio::select! {
                result = &mut step => result,
                () = sleep_until_opt(self.deadline), if !self.timed_out => {
                    self.timed_out = true;
                    self.run_cancel.cancel();
                    step.await
                }
            }
        };
        match result {
            Ok(result) => self.settle(i, result),
            Err(_) => {
                self.failure
                    .get_or_insert_with(|| "internal error in a step: it panicked".into());
            }
        }
    }

    /// Start the steps planned in this round as tasks.
    fn spawn_starting(&mut self) {
        for (i, plan) in self.starting.drain(..) {
            let handle = self.handle.clone();
            self.running
                .spawn(async move { (i, run_step(&handle, plan).await) });
        }
    }

    /// The earliest wait to wake for, when one may be taken up now.
    /// (With every slot busy, a due wait is taken up after the next join.)
    fn next_wake(&self) -> Option<SystemTime> {
        if self.failure.is_none()
            && !self.run_cancel.is_cancelled()
            && self.running.len() < self.exec.config.max_parallel_steps
        {
            self.slots
                .iter()
                .filter_map(|s| match s {
                    Slot::Waiting(_, until) => Some(*until),
                    _ => None,
                })
                .min()
        } else {
            None
        }
    }

    /// Wait for what comes first: a step task's end (taken into the run's
    /// state), the next wake-up, the run's deadline. With nothing running,
    /// [`park_or_sleep`](Self::park_or_sleep), or finish when nothing waits.
    async fn wait_next(&mut self) -> Result<Next, EngineError> {
        let next_wake = self.next_wake();
        if self.running.is_empty() {
            let Some(wake) = next_wake else {
                return Ok(Next::Finish);
            };
            return self.park_or_sleep(wake).await;
        }
        let joined = tokio::select! {
            joined = self.running.join_next() => joined,
            () = sleep_until_opt(next_wake) => return Ok(Next::Loop),
            () = sleep_until_opt(self.deadline), if !self.timed_out => {
                self.timed_out = true;
                self.run_cancel.cancel();
                return Ok(Next::Loop);
            }
        };
        let Some(joined) = joined else {
            return Ok(Next::Finish);
        };
        match joined {
            Ok((i, result)) => self.settle(i, result),
            Err(join_error) => {
                // A panicking step task is a host bug; fail the run loudly.
                self.failure
                    .get_or_insert(format!("internal error in a step task: {join_error}"));
            }
        }
        Ok(Next::Loop)
    }

    /// Nothing runs, everything left waits until `wake` at the earliest:
    /// park the run (only when driving with `park`, the wait is long enough
    /// and ends before the deadline), or sleep until then (or the deadline,
    /// or a cancel).
    async fn park_or_sleep(&mut self, wake: SystemTime) -> Result<Next, EngineError> {
        let left = wake.duration_since(SystemTime::now()).unwrap_or_default();
        if self.park
            && left >= self.exec.config.park_after
            && self.deadline.is_none_or(|d| wake < d)
            && !self.run_cancel.is_cancelled()
        {
            // Nothing runs, everything left waits: free the worker.
            self.exec.store.park_run(&self.lease, wake).await?;
            self.exec.emit(RunEvent::RunParked {
                run: self.run.id,
                until: rfc3339(wake),
            });
            return Ok(Next::Parked(wake));
        }
        tokio::select! {
            () = sleep_until_opt(Some(wake)) => {}
            () = sleep_until_opt(self.deadline) => {
                self.timed_out = true;
                self.run_cancel.cancel();
            }
            () = self.run_cancel.cancelled() => {}
        }
        Ok(Next::Loop)
    }

    /// Take a step's result into the run's state. A store error stops the
    /// run: the steps in flight are cancelled and nothing more is written.
    fn settle(&mut self, i: usize, result: Result<StepRecord, EngineError>) {
        match result {
            Ok(record) if record.status == StepStatus::Waiting => {
                let until = parse_time(record.wake_at.as_deref());
                self.slots[i] = Slot::Waiting(Box::new(record), until);
            }
            Ok(record) => {
                if record.status == StepStatus::Failed && self.failure.is_none() {
                    self.failure = Some(step_failed(&record));
                }
                self.slots[i] = Slot::Done(Box::new(record));
            }
            Err(err) => {
                // The store failed: stop scheduling, leave the run resumable.
                self.failure.get_or_insert(format!("store error: {err}"));
                self.store_error.get_or_insert(err);
                self.slots[i] = Slot::Pending;
            }
        }
        if self.store_error.is_some() {
            // The run's state cannot be written (or is no longer ours):
            // stop the steps in flight, write nothing more.
            self.run_cancel.cancel();
        }
    }

    fn lease_lost(&self) -> EngineError {
        EngineError::Store(StoreError::LeaseLost { run: self.run.id })
    }

    /// The run's end: unless the lease is lost or a store error stopped
    /// it, the steps left are recorded, the handlers run, and the run's
    /// final status is written.
    async fn finalize(mut self) -> Result<Driven, EngineError> {
        if self.lost.is_cancelled() {
            return Err(self.lease_lost());
        }
        if let Some(err) = self.store_error.take() {
            return Err(err);
        }
        let (status, error) = self.outcome();
        self.record_unfinished(status).await?;
        if self.lost.is_cancelled() {
            return Err(self.lease_lost());
        }
        self.run_handlers(status, error.as_deref()).await;
        self.exec
            .store
            .finish_run(&self.lease, status, error.as_deref())
            .await?;
        self.exec.emit(RunEvent::RunFinished {
            run: self.run.id,
            status,
            error,
        });
        Ok(Driven::Finished(status))
    }

    /// The run's final status and error.
    fn outcome(&mut self) -> (RunStatus, Option<String>) {
        if self.timed_out {
            (RunStatus::Failed, Some("run timed out".to_string()))
        } else if self.cancel.is_cancelled() {
            (RunStatus::Cancelled, Some("cancelled".to_string()))
        } else if let Some(f) = self.failure.take() {
            (
                RunStatus::Failed,
                Some(crate::runtime::cap_error_message(f)),
            )
        } else {
            (RunStatus::Succeeded, None)
        }
    }

    /// Steps never started (or left waiting) are recorded so the run reads completely.
    async fn record_unfinished(&self, status: RunStatus) -> Result<(), EngineError> {
        for (i, slot) in self.slots.iter().enumerate() {
            let record = match slot {
                Slot::Pending => {
                    let mut record = skipped(
                        &self.ids[i],
                        format!("not run: the run {}", status.as_str()),
                    );
                    if status == RunStatus::Cancelled {
                        record.status = StepStatus::Cancelled;
                    }
                    record
                }
                Slot::Waiting(waiting, _) => {
                    let mut record = (**waiting).clone();
                    record.status = StepStatus::Cancelled;
                    record.wake_at = None;
                    record.finished_at = Some(now_rfc3339());
                    record.error_message = Some(format!(
                        "stopped while waiting: the run {}",
                        status.as_str()
                    ));
                    record
                }
                _ => continue,
            };
            self.handle.record_step(&record, None).await?;
        }
        Ok(())
    }

    /// `on_failure` / `on_success`, when the workflow has them.
    async fn run_handlers(&self, status: RunStatus, error: Option<&str>) {
        run_handler(&self.handle, &self.run, &self.validated, status, error).await;
    }
}
