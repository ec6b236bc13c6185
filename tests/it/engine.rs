//! The workflow engine end to end: real pieces, real SQLite files.

use std::sync::Arc;
use std::time::{Duration, Instant};

use omniflow::engine::{Executor, ExecutorConfig};
use omniflow::store::{RunId, RunStatus, StepRecord, StepStatus, Store};
use omniflow::triggers::{self, RunRequest};
use omniflow::workflow::Workflow;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Harness {
    exec: Executor,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    Harness {
        exec: crate::support::executor_in(
            dir.path(),
            &["flaky", "hostile_loop"],
            ExecutorConfig::default(),
        )
        .await,
        _dir: dir,
    }
}

impl Harness {
    async fn run(&self, workflow: Value) -> (RunId, RunStatus) {
        self.run_with(workflow, RunRequest::default()).await
    }

    async fn run_with(&self, workflow: Value, request: RunRequest) -> (RunId, RunStatus) {
        let wf = Workflow::from_json(&workflow.to_string()).unwrap();
        let id = triggers::start(&self.exec, &wf, request).await.unwrap();
        let status = self
            .exec
            .execute(id, CancellationToken::new())
            .await
            .unwrap();
        (id, status)
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.exec.store()
    }

    async fn step(&self, run: RunId, id: &str) -> StepRecord {
        self.store()
            .steps(run)
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.step_id == id)
            .unwrap_or_else(|| panic!("no step {id}"))
    }
}

/// A workflow from `examples/`.
fn example(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn hello_example_runs_with_branch_join_and_for_each() {
    let h = harness().await;
    let workflow = example("hello.json");
    let (run, status) = h.run(workflow.clone()).await;
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!(h.step(run, "long_name").await.status, StepStatus::Succeeded);
    assert_eq!(h.step(run, "short_name").await.status, StepStatus::Skipped);
    let summary = h.step(run, "summary").await.output.unwrap();
    assert_eq!(
        summary,
        json!({
            "greeting": "Hello, world!",
            "verdict": "world is a long name",
            "shouts": ["HI ADA", "HI GRACE", "HI LINUS"],
        })
    );

    // The other branch, through a variable override.
    let mut vars = serde_json::Map::new();
    vars.insert("who".into(), json!("Al"));
    let (run, status) = h
        .run_with(
            workflow,
            RunRequest {
                vars,
                ..RunRequest::default()
            },
        )
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!(h.step(run, "long_name").await.status, StepStatus::Skipped);
    let summary = h.step(run, "summary").await.output.unwrap();
    assert_eq!(summary["verdict"], "Al is a short name");
    let record = h.store().get_run(run).await.unwrap().unwrap();
    assert!(record.total_time_ms.is_some());
    assert_eq!(record.workflow_version, 1, "same definition, same version");
}

#[tokio::test]
async fn skip_propagates_to_steps_that_need_only_skipped_steps() {
    let h = harness().await;
    let (run, status) = h
        .run(json!({
            "name": "skips",
            "steps": [
                { "id": "check", "piece": "flow", "action": "if", "input": { "condition": false } },
                { "id": "then1", "piece": "flow", "action": "if", "needs": ["check.then"], "input": { "condition": true } },
                { "id": "then2", "piece": "flow", "action": "if", "needs": ["then1"], "input": { "condition": true } },
                { "id": "gated", "piece": "flow", "action": "if", "when": "{{ 1 > 2 }}", "input": { "condition": true } },
                { "id": "after_gated", "piece": "flow", "action": "if", "needs": ["gated"], "input": { "condition": true } },
                { "id": "else1", "piece": "flow", "action": "if", "needs": ["check.else"], "input": { "condition": true } }
            ]
        }))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    for id in ["then1", "then2", "gated", "after_gated"] {
        assert_eq!(h.step(run, id).await.status, StepStatus::Skipped, "{id}");
    }
    assert_eq!(h.step(run, "else1").await.status, StepStatus::Succeeded);
}

#[tokio::test]
async fn for_each_keeps_item_order_with_bounded_concurrency() {
    let h = harness().await;
    let (run, status) = h
        .run(json!({
            "name": "each",
            "vars": { "items": [5, 1, 4, 2, 3] },
            "steps": [{
                "id": "echo", "piece": "flaky", "action": "run",
                "for_each": "{{ vars.items }}", "concurrency": 2,
                "input": { "value": "{{ item * 10 }}", "sleep_ms": "{{ item * 10 }}" }
            }]
        }))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    let step = h.step(run, "echo").await;
    let values: Vec<Value> = step
        .output
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].clone())
        .collect();
    assert_eq!(
        values,
        [json!(50), json!(10), json!(40), json!(20), json!(30)]
    );
    assert_eq!(step.attempts, 5);
    assert_eq!(h.store().attempts(run, "echo").await.unwrap().len(), 5);
}

#[tokio::test]
async fn retries_back_off_then_succeed() {
    let h = harness().await;
    let started = Instant::now();
    let (run, status) = h
        .run(json!({
            "name": "retry",
            "steps": [{
                "id": "flaky", "piece": "flaky", "action": "run",
                "input": { "fail_times": 2, "value": "done" },
                "retry": { "max_attempts": 3, "initial_delay": "100ms", "factor": 2, "jitter": false }
            }]
        }))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    // 100 ms after the first failure, 200 ms after the second.
    assert!(started.elapsed() >= Duration::from_millis(300));
    let step = h.step(run, "flaky").await;
    assert_eq!(step.attempts, 3);
    assert_eq!(step.output.unwrap()["attempt"], 3);
    let attempts = h.store().attempts(run, "flaky").await.unwrap();
    let classes: Vec<Option<String>> = attempts.iter().map(|a| a.error_class.clone()).collect();
    assert_eq!(
        classes,
        [Some("retryable".into()), Some("retryable".into()), None]
    );
    // Same idempotency key across attempts.
    assert_eq!(attempts.len(), 3);
}

#[tokio::test]
async fn retry_after_is_a_floor_on_the_policy_delay() {
    let h = harness().await;
    let started = Instant::now();
    let (_, status) = h
        .run(json!({
            "name": "retry-after",
            "steps": [{
                "id": "slow", "piece": "flaky", "action": "run",
                "input": { "fail_times": 1, "retry_after_ms": 400 },
                "retry": { "initial_delay": "10ms", "jitter": false }
            }]
        }))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn fatal_is_not_retried_and_fails_the_run() {
    let h = harness().await;
    let (run, status) = h
        .run(json!({
            "name": "fatal",
            "steps": [
                { "id": "boom", "piece": "flaky", "action": "run", "input": { "fail_times": 9, "mode": "fatal" },
                  "retry": { "initial_delay": "10ms" } },
                { "id": "after", "piece": "flow", "action": "if", "needs": ["boom"], "input": { "condition": true } }
            ],
            "on_failure": { "piece": "transform", "action": "template",
                            "input": { "template": "run {{ run.id }} failed" } }
        }))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let boom = h.step(run, "boom").await;
    assert_eq!(boom.attempts, 1);
    assert_eq!(boom.error_class.as_deref(), Some("fatal"));
    let after = h.step(run, "after").await;
    assert_eq!(after.status, StepStatus::Skipped);
    assert_eq!(after.attempts, 0);
    let handler = h.step(run, "$on_failure").await;
    assert_eq!(handler.status, StepStatus::Succeeded);
    assert_eq!(handler.output.unwrap()["text"], format!("run {run} failed"));
    let record = h.store().get_run(run).await.unwrap().unwrap();
    assert!(record.error.unwrap().contains("boom"));
}

#[tokio::test]
async fn retries_stop_at_max_attempts() {
    let h = harness().await;
    let (run, status) = h
        .run(json!({
            "name": "exhaust",
            "steps": [{ "id": "never", "piece": "flaky", "action": "run", "input": { "fail_times": 99 },
                        "retry": { "max_attempts": 4, "initial_delay": "5ms", "jitter": false } }]
        }))
        .await;
    assert_eq!(status, RunStatus::Failed);
    assert_eq!(h.step(run, "never").await.attempts, 4);
    assert_eq!(h.store().attempts(run, "never").await.unwrap().len(), 4);
}

#[tokio::test]
async fn step_timeout_is_classified_and_retried_per_policy() {
    let h = harness().await;
    let (run, status) = h
        .run(json!({
            "name": "timeout",
            "steps": [{ "id": "spin", "piece": "hostile-loop", "action": "run", "input": {},
                        "timeout": "200ms", "limits": { "fuel": 10_000_000_000_000u64 },
                        "retry": { "max_attempts": 2, "initial_delay": "10ms" } }]
        }))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let step = h.step(run, "spin").await;
    assert_eq!(step.error_class.as_deref(), Some("timeout"));
    assert_eq!(step.attempts, 2);
}

#[tokio::test]
async fn cancellation_stops_a_running_step_and_the_run() {
    let h = harness().await;
    let wf = Workflow::from_json(
        &json!({
            "name": "cancel",
            "steps": [{ "id": "spin", "piece": "hostile-loop", "action": "run", "input": {},
                        "timeout": "60s", "limits": { "fuel": 10_000_000_000_000u64 } }]
        })
        .to_string(),
    )
    .unwrap();
    let run = triggers::start(&h.exec, &wf, RunRequest::default())
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let status = h.exec.execute(run, cancel).await.unwrap();
    assert_eq!(status, RunStatus::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(h.step(run, "spin").await.status, StepStatus::Cancelled);
}

#[tokio::test]
async fn dependents_start_after_the_dependency_is_persisted() {
    let h = harness().await;
    let (run, status) = h
        .run(json!({
            "name": "order",
            "steps": [
                { "id": "a", "piece": "flaky", "action": "run", "input": { "value": 1, "sleep_ms": 20 } },
                { "id": "b", "piece": "flaky", "action": "run", "input": { "value": "{{ steps.a.output.value + 1 }}" } },
                { "id": "c", "piece": "flaky", "action": "run", "input": { "value": "{{ steps.b.output.value + 1 }}" } }
            ]
        }))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    let (a, b, c) = (
        h.step(run, "a").await,
        h.step(run, "b").await,
        h.step(run, "c").await,
    );
    assert!(b.started_at.as_deref().unwrap() >= a.finished_at.as_deref().unwrap());
    assert!(c.started_at.as_deref().unwrap() >= b.finished_at.as_deref().unwrap());
    assert_eq!(c.output.unwrap()["value"], 3);
}

#[tokio::test]
async fn resume_skips_steps_that_already_succeeded() {
    let h = harness().await;
    let wf = Workflow::from_json(
        &json!({
            "name": "resume",
            "steps": [
                { "id": "first", "piece": "flaky", "action": "run", "input": { "value": "fresh" } },
                { "id": "second", "piece": "flaky", "action": "run", "input": { "value": "{{ steps.first.output.value }}" } }
            ]
        })
        .to_string(),
    )
    .unwrap();
    let run = triggers::start(&h.exec, &wf, RunRequest::default())
        .await
        .unwrap();
    // As if a previous process finished `first` and died.
    let now = "2026-01-01T00:00:00.000Z".to_string();
    let done = StepRecord {
        step_id: "first".into(),
        status: StepStatus::Succeeded,
        input: Some(json!({ "value": "fresh" })),
        output: Some(json!({ "value": "from before the crash", "attempt": 1 })),
        error_class: None,
        error_message: None,
        logs: String::new(),
        attempts: 1,
        fuel_used: 1,
        duration_ms: 1,
        started_at: Some(now.clone()),
        finished_at: Some(now),
        wake_at: None,
        tries: 0,
    };
    h.store().record_step(run, &done, None).await.unwrap();
    h.store()
        .set_run_status(run, RunStatus::Running, None)
        .await
        .unwrap();
    let resumed = h.exec.resume_unfinished().await.unwrap();
    assert_eq!(resumed, vec![(run, RunStatus::Succeeded)]);
    assert_eq!(h.step(run, "first").await.attempts, 1);
    assert!(
        h.store().attempts(run, "first").await.unwrap().is_empty(),
        "first was not re-run"
    );
    assert_eq!(
        h.step(run, "second").await.output.unwrap()["value"],
        "from before the crash"
    );
}

#[tokio::test]
async fn invalid_workflows_are_rejected_before_anything_is_stored() {
    let h = harness().await;
    let wf = Workflow::from_json(
        &json!({ "name": "bad", "steps": [{ "id": "a", "piece": "nope", "action": "x" }] })
            .to_string(),
    )
    .unwrap();
    let err = triggers::start(&h.exec, &wf, RunRequest::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("steps[a]: unknown piece `nope`"),
        "{err}"
    );
    assert!(h.store().get_workflow("bad", None).await.unwrap().is_none());
}

#[tokio::test]
async fn template_errors_fail_the_step_without_retrying() {
    let h = harness().await;
    let (run, status) = h
        .run(json!({
            "name": "tmpl",
            // Declared, so validation passes; the field inside is only missed at run time.
            "vars": { "config": {} },
            "steps": [{ "id": "a", "piece": "flaky", "action": "run", "input": { "value": "{{ vars.config.missing }}" } }]
        }))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let a = h.step(run, "a").await;
    assert_eq!(a.error_class.as_deref(), Some("template-error"));
    assert_eq!(a.attempts, 0);
}

#[tokio::test]
async fn delay_holds_the_step_then_succeeds_without_the_wait_field() {
    let h = harness().await;
    let started = Instant::now();
    let (run, status) = h
        .run(json!({
            "name": "nap",
            "steps": [
                { "id": "nap", "piece": "delay@^0.1", "action": "sleep",
                  "input": { "duration": "300ms" } },
                { "id": "after", "piece": "flaky", "action": "run",
                  "input": { "value": "{{ steps.nap.output.wait_ms }}" } },
                { "id": "past", "piece": "delay", "action": "until",
                  "input": { "time": "2001-01-01T00:00:00+02:00" } }
            ]
        }))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the delay was not waited"
    );
    let nap = h.step(run, "nap").await;
    assert_eq!(nap.status, StepStatus::Succeeded);
    assert_eq!(nap.wake_at, None);
    let output = nap.output.unwrap();
    assert!(output.get("$wait_until").is_none(), "{output}");
    assert!(output["until"].as_str().unwrap().ends_with('Z'), "{output}");
    let waited = output["wait_ms"].as_u64().unwrap();
    assert!((250..=300).contains(&waited), "{output}");
    // Dependents see the output the step finally recorded.
    let after = h.step(run, "after").await;
    assert_eq!(after.output.unwrap()["value"], waited);
    // A time in the past continues at once.
    let past = h.step(run, "past").await.output.unwrap();
    assert_eq!(past["wait_ms"], 0);
}

#[tokio::test]
async fn bad_delays_are_invalid_input_naming_the_value() {
    let h = harness().await;
    for (action, input, needle) in [
        ("sleep", json!({ "duration": "soon" }), "\"soon\""),
        ("until", json!({ "time": "tomorrow" }), "\"tomorrow\""),
    ] {
        let (run, status) = h
            .run(json!({
                "name": "bad-nap",
                "steps": [{ "id": "nap", "piece": "delay", "action": action, "input": input }]
            }))
            .await;
        assert_eq!(status, RunStatus::Failed);
        let nap = h.step(run, "nap").await;
        assert_eq!(nap.error_class.as_deref(), Some("invalid-input"));
        assert!(
            nap.error_message.as_deref().unwrap_or("").contains(needle),
            "{:?}",
            nap.error_message
        );
        assert_eq!(nap.attempts, 1, "invalid input is not retried");
    }
}

#[tokio::test]
async fn a_waiting_step_resumes_its_retry_budget_after_a_restart() {
    let h = harness().await;
    let wf = Workflow::from_json(
        &json!({
            "name": "budget",
            "steps": [{ "id": "f", "piece": "flaky", "action": "run",
                        "input": { "fail_times": 2, "value": 7 },
                        "retry": { "max_attempts": 3, "initial_delay": "10ms", "jitter": false } }]
        })
        .to_string(),
    )
    .unwrap();
    let run = triggers::start(&h.exec, &wf, RunRequest::default())
        .await
        .unwrap();
    // As if a previous process made attempts 1 and 2 (both failed) and died
    // while waiting for the third: the budget has one attempt left.
    let waiting = StepRecord {
        status: StepStatus::Waiting,
        attempts: 2,
        tries: 2,
        error_class: Some("retryable".into()),
        error_message: Some("planned failure on attempt 2".into()),
        wake_at: Some("2001-01-01T00:00:00.000Z".into()),
        logs: "from before the crash\n".into(),
        started_at: Some("2001-01-01T00:00:00.000Z".into()),
        ..StepRecord::pending("f")
    };
    h.store().record_step(run, &waiting, None).await.unwrap();
    let status = h.exec.execute(run, CancellationToken::new()).await.unwrap();
    assert_eq!(status, RunStatus::Succeeded);
    let f = h.step(run, "f").await;
    assert_eq!(f.attempts, 3, "one more attempt, numbered on");
    assert_eq!(f.output.unwrap()["attempt"], 3);
    assert!(f.logs.starts_with("from before the crash\n"), "{}", f.logs);
    assert_eq!(f.started_at.as_deref(), Some("2001-01-01T00:00:00.000Z"));
    assert_eq!(f.wake_at, None);

    // With the budget used up, a failing attempt after the wait ends the step.
    let run = triggers::start(&h.exec, &wf, RunRequest::default())
        .await
        .unwrap();
    let spent = StepRecord {
        tries: 3,
        attempts: 1,
        ..waiting
    };
    h.store().record_step(run, &spent, None).await.unwrap();
    let status = h.exec.execute(run, CancellationToken::new()).await.unwrap();
    assert_eq!(status, RunStatus::Failed);
    let f = h.step(run, "f").await;
    assert_eq!(f.attempts, 2);
    assert_eq!(f.error_class.as_deref(), Some("retryable"));
}

#[tokio::test]
async fn independent_steps_respect_the_per_run_parallel_limit() {
    let dir = tempfile::tempdir().unwrap();
    let exec = crate::support::executor_in(
        dir.path(),
        &["flaky"],
        ExecutorConfig {
            max_parallel_steps: 2,
            ..ExecutorConfig::default()
        },
    )
    .await;
    let steps: Vec<Value> = (0..6)
        .map(|i| {
            json!({ "id": format!("s{i}"), "piece": "flaky", "action": "run",
                    "input": { "value": i, "sleep_ms": 300 } })
        })
        .collect();
    let wf =
        Workflow::from_json(&json!({ "name": "limited", "steps": steps }).to_string()).unwrap();
    let id = triggers::start(&exec, &wf, RunRequest::default())
        .await
        .unwrap();
    let started = Instant::now();
    let status = exec.execute(id, CancellationToken::new()).await.unwrap();
    assert_eq!(status, RunStatus::Succeeded);
    // Six 300 ms steps, two at a time: at least three rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "more than 2 steps ran at once: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reminder_example_waits_then_renders() {
    let h = harness().await;
    let workflow = example("reminder.json");
    let request = RunRequest {
        vars: serde_json::from_value(json!({ "after": "200ms" })).unwrap(),
        ..RunRequest::default()
    };
    let (run, status) = h.run_with(workflow, request).await;
    assert_eq!(status, RunStatus::Succeeded);
    let until = h.step(run, "wait").await.output.unwrap()["until"].clone();
    let text = h.step(run, "remind").await.output.unwrap()["text"].clone();
    assert_eq!(
        text,
        format!(
            "Time to stretch, Ada (waited until {}).",
            until.as_str().unwrap()
        )
    );
}
