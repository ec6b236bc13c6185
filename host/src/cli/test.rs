//! `omniflow test FILE`: failure simulation (SPEC §6). The workflow runs
//! locally exactly as with `omniflow run` ([`super::run::execute_file`]), as
//! a *test* run whose attempts get retryable faults injected (before the
//! piece is called) into `--simulate-failures` of them, chosen from
//! `--seed`. Afterwards the stored attempts tell which were injected and
//! which retry recovered each: printed as lines, then a summary.

use anyhow::{Context, Result};
use omniflow::store::{AttemptRecord, RunStatus, StepRecord, Store};
use omniflow::triggers::Simulation;
use serde::Serialize;
use serde_json::Value;

use super::run::{RunArgs, execute_file};

/// The failure class of an injected fault.
const SIMULATED: &str = "simulated";

pub(crate) struct TestArgs {
    pub(crate) run: RunArgs,
    pub(crate) simulate_failures: f64,
    pub(crate) seed: u64,
}

/// One injected fault and what became of it.
#[derive(Debug, Serialize)]
struct Fault {
    step: String,
    /// The `for_each` item (0-based), for a step with items.
    item: Option<usize>,
    attempt: u32,
    /// The later attempt of the same step (item) that succeeded, if any.
    recovered_on: Option<u32>,
}

/// What `--json` prints: the simulation, its faults and the run document.
#[derive(Serialize)]
struct TestReport<'a> {
    simulation: Simulation,
    faults: &'a [Fault],
    injected: usize,
    recovered: usize,
    run: omniflow::api::dto::RunDocument,
}

pub(crate) async fn test(args: TestArgs) -> Result<bool> {
    let simulation = Simulation::new(args.simulate_failures, args.seed)
        .map_err(|e| anyhow::anyhow!("--simulate-failures: {e}"))?;
    if !args.run.json {
        eprintln!(
            "test run: retryable faults injected into {}% of attempts (seed {}), never into a step's last allowed attempt",
            simulation.failure_rate * 100.0,
            simulation.seed
        );
    }
    let Some(done) = execute_file(&args.run, Some(simulation)).await? else {
        return Ok(false);
    };
    let store = done.exec.store().as_ref();
    let faults = faults(store, done.run).await?;
    let injected = faults.len();
    let recovered = faults.iter().filter(|f| f.recovered_on.is_some()).count();
    let run = store
        .get_run(done.run)
        .await?
        .with_context(|| format!("no run {}", done.run))?;
    if args.run.json {
        let report = TestReport {
            simulation,
            faults: &faults,
            injected,
            recovered,
            run: omniflow::api::dto::RunDocument::read(store, &run).await?,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        super::runs::print_summary(&done.exec, done.run).await?;
        println!();
        print_faults(&faults);
        println!(
            "test run {}: {injected} simulated fault(s) injected, {recovered} recovered; run {} in {} ms (failure rate {}, seed {})",
            run.id,
            run.status.as_str(),
            run.total_time_ms.unwrap_or(0),
            simulation.failure_rate,
            simulation.seed
        );
    }
    Ok(done.status == RunStatus::Succeeded)
}

/// `step X attempt N: simulated fault` per fault, then `step X recovered on
/// attempt M` after the faults that attempt recovered.
fn print_faults(faults: &[Fault]) {
    for (i, fault) in faults.iter().enumerate() {
        let what = match fault.item {
            Some(item) => format!("step {} item {item}", fault.step),
            None => format!("step {}", fault.step),
        };
        println!("{what} attempt {}: simulated fault", fault.attempt);
        let last_of_its_series = faults.get(i + 1).is_none_or(|next| {
            next.step != fault.step
                || next.item != fault.item
                || next.recovered_on != fault.recovered_on
        });
        if last_of_its_series {
            match fault.recovered_on {
                Some(attempt) => println!("{what} recovered on attempt {attempt}"),
                None => println!("{what} did not recover"),
            }
        }
    }
}

/// The injected faults of run `id`, step by step, from its stored attempts.
async fn faults(store: &dyn Store, id: omniflow::store::RunId) -> Result<Vec<Fault>> {
    let mut faults = Vec::new();
    let mut attempts_by_step = store.attempts_by_step(id).await?;
    for step in store.steps(id).await? {
        let attempts = attempts_by_step.remove(&step.step_id).unwrap_or_default();
        faults.extend(faults_of(&step, &attempts));
    }
    Ok(faults)
}

/// The faults among one step's `attempts` (oldest first), by item then
/// attempt. Attempts of a `for_each` item are told apart by their input
/// (the item's place in the step's input array); each fault is recovered
/// by the next succeeded attempt of the same item, if any.
fn faults_of(step: &StepRecord, attempts: &[AttemptRecord]) -> Vec<Fault> {
    let item_of = |attempt: &AttemptRecord| -> Option<usize> {
        let input = attempt.input.as_ref()?;
        if step.input.as_ref() == Some(input) {
            return None;
        }
        match &step.input {
            Some(Value::Array(items)) => items.iter().position(|i| i == input),
            _ => None,
        }
    };
    let mut faults = Vec::new();
    for (i, attempt) in attempts.iter().enumerate() {
        if attempt.error_class.as_deref() != Some(SIMULATED) {
            continue;
        }
        let item = item_of(attempt);
        let recovered_on = attempts[i + 1..]
            .iter()
            .find(|later| {
                item_of(later) == item && later.status == omniflow::store::StepStatus::Succeeded
            })
            .map(|later| later.attempt);
        faults.push(Fault {
            step: step.step_id.clone(),
            item,
            attempt: attempt.attempt,
            recovered_on,
        });
    }
    // An item's faults together (items' attempts interleave).
    faults.sort_by_key(|f| (f.item, f.attempt));
    faults
}

#[cfg(test)]
mod tests {
    use super::*;
    use omniflow::store::StepStatus;
    use serde_json::json;

    fn attempt(n: u32, input: Value, class: Option<&str>) -> AttemptRecord {
        AttemptRecord {
            attempt: n,
            status: if class.is_some() {
                StepStatus::Failed
            } else {
                StepStatus::Succeeded
            },
            input: Some(input),
            output: None,
            error_class: class.map(str::to_owned),
            error_message: None,
            logs: String::new(),
            fuel_used: 0,
            duration_ms: 0,
            started_at: String::new(),
            finished_at: String::new(),
        }
    }

    #[test]
    fn faults_are_matched_with_the_attempt_that_recovered_them() {
        let step = StepRecord {
            input: Some(json!({"x": 1})),
            ..StepRecord::pending("s")
        };
        let attempts = [
            attempt(1, json!({"x": 1}), Some(SIMULATED)),
            attempt(2, json!({"x": 1}), Some("retryable")),
            attempt(3, json!({"x": 1}), Some(SIMULATED)),
            attempt(4, json!({"x": 1}), None),
        ];
        let found: Vec<(u32, Option<u32>)> = faults_of(&step, &attempts)
            .iter()
            .map(|f| (f.attempt, f.recovered_on))
            .collect();
        assert_eq!(found, [(1, Some(4)), (3, Some(4))]);
    }

    #[test]
    fn for_each_items_recover_on_their_own_attempts() {
        let step = StepRecord {
            input: Some(json!(["a", "b"])),
            ..StepRecord::pending("s")
        };
        let attempts = [
            attempt(1, json!("a"), Some(SIMULATED)),
            attempt(2, json!("b"), Some(SIMULATED)),
            attempt(3, json!("a"), Some(SIMULATED)),
            attempt(4, json!("b"), None),
            attempt(5, json!("a"), None),
        ];
        let found: Vec<(Option<usize>, u32, Option<u32>)> = faults_of(&step, &attempts)
            .iter()
            .map(|f| (f.item, f.attempt, f.recovered_on))
            .collect();
        assert_eq!(
            found,
            [
                (Some(0), 1, Some(5)),
                (Some(0), 3, Some(5)),
                (Some(1), 2, Some(4))
            ]
        );
    }
}
