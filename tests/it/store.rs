//! The durable store against real SQLite files in a temporary directory.

use std::path::PathBuf;
use std::sync::Arc;

use omniflow::store::{
    self, AttemptRecord, Lease, NewRun, Priority, RunFilter, RunStatus, RunStore, SqliteStore,
    StepRecord, StepStatus, Store, StoreError, WorkflowStore,
};
use serde_json::json;

/// A fresh directory and a database path inside it (the file does not exist yet).
fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("omniflow.db");
    (dir, path)
}

async fn open_at(path: &std::path::Path) -> Arc<dyn Store> {
    store::open(path.to_str().expect("utf-8 path"))
        .await
        .expect("open store")
}

/// A store holding workflow `flow` version 1.
async fn store_with_flow() -> (tempfile::TempDir, Arc<dyn Store>) {
    let (dir, path) = temp_db();
    (dir, store_with_flow_at(&path).await)
}

/// A store at `path` holding workflow `flow` (one step, `a`).
async fn store_with_flow_at(path: &std::path::Path) -> Arc<dyn Store> {
    let store = open_at(path).await;
    store
        .save_workflow("flow", &json!({"steps": [{"id": "a"}]}))
        .await
        .expect("save");
    store
}

fn new_run(workflow: &str, priority: Priority) -> NewRun {
    NewRun {
        workflow_name: workflow.to_owned(),
        workflow_version: 1,
        priority,
        trigger: json!({"type": "manual", "payload": {"n": 1}}),
        vars: json!({"who": "world"}),
        simulated: false,
    }
}

fn step(step_id: &str, status: StepStatus, attempts: u32, started_at: Option<&str>) -> StepRecord {
    StepRecord {
        status,
        attempts,
        input: Some(json!({"x": 1})),
        output: (status == StepStatus::Succeeded)
            .then(|| json!({"text": format!("hi from {step_id}")})),
        logs: format!("log of {step_id}\n"),
        fuel_used: 1_000 * u64::from(attempts),
        duration_ms: 7,
        started_at: started_at.map(str::to_owned),
        ..StepRecord::pending(step_id)
    }
}

fn attempt(n: u32, status: StepStatus) -> AttemptRecord {
    AttemptRecord {
        attempt: n,
        status,
        input: Some(json!({"x": 1})),
        output: (status == StepStatus::Succeeded).then(|| json!({"ok": n})),
        error_class: (status == StepStatus::Failed).then(|| "retryable".to_owned()),
        error_message: (status == StepStatus::Failed).then(|| format!("attempt {n} failed")),
        logs: format!("attempt {n}\n"),
        fuel_used: 1_000,
        duration_ms: 3,
        started_at: format!("2026-01-01T00:00:0{n}.000Z"),
        finished_at: format!("2026-01-01T00:00:0{n}.500Z"),
    }
}

#[tokio::test]
async fn open_creates_the_file_and_reopening_is_idempotent() {
    let (_dir, path) = temp_db();
    assert!(!path.exists());
    {
        let store = SqliteStore::open(path.to_str().unwrap())
            .await
            .expect("first open");
        assert!(store.list_workflows().await.unwrap().is_empty());
        store.close().await;
    }
    assert!(path.exists(), "open must create the database file");
    // Migrations already applied: opening again (twice, also via a URL) works.
    for url in [
        path.to_str().unwrap().to_owned(),
        format!("sqlite://{}", path.display()),
    ] {
        let store = store::open(&url).await.expect("reopen");
        assert!(store.list_workflows().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn concurrent_first_opens_of_one_file_all_migrate() {
    // Separate pools are separate connections, as separate processes would
    // be: all race to apply the same migrations to a fresh file.
    for _ in 0..5 {
        let (_dir, path) = temp_db();
        let url = path.to_str().unwrap().to_owned();
        let opens = (0..6).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { SqliteStore::open(&url).await })
        });
        for joined in futures::future::join_all(opens).await {
            let store = joined.unwrap().expect("every concurrent opener succeeds");
            assert!(store.list_workflows().await.unwrap().is_empty());
            store.close().await;
        }
    }
}

#[tokio::test]
async fn open_memory_and_refuses_postgres() {
    let store = store::open("sqlite::memory:").await.expect("memory store");
    let saved = store.save_workflow("m", &json!({"a": 1})).await.unwrap();
    // The single in-memory database is shared by every call.
    assert_eq!(store.get_workflow("m", None).await.unwrap(), Some(saved));

    let err = store::open("postgres://localhost/omniflow")
        .await
        .err()
        .expect("postgres is not built yet");
    assert!(matches!(err, StoreError::Unsupported(_)), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn save_workflow_versions_only_on_change() {
    let (_dir, path) = temp_db();
    let store = open_at(&path).await;

    let v1 = store
        .save_workflow("greet", &json!({"a": 1, "b": [1, 2]}))
        .await
        .unwrap();
    assert_eq!((v1.name.as_str(), v1.version), ("greet", 1));
    assert!(
        v1.created_at.ends_with('Z') && v1.created_at.len() == "2026-11-23T19:30:07.123Z".len()
    );

    // Same definition (keys in another order): same version.
    let again = store
        .save_workflow("greet", &json!({"b": [1, 2], "a": 1}))
        .await
        .unwrap();
    assert_eq!(again, v1);

    let v2 = store
        .save_workflow("greet", &json!({"a": 2, "b": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    // Going back to the first definition is a change relative to the newest: version 3.
    let v3 = store
        .save_workflow("greet", &json!({"a": 1, "b": [1, 2]}))
        .await
        .unwrap();
    assert_eq!(v3.version, 3);

    let other = store
        .save_workflow("other", &json!({"z": true}))
        .await
        .unwrap();
    assert_eq!(other.version, 1, "versions are per workflow");

    assert_eq!(
        store
            .get_workflow("greet", None)
            .await
            .unwrap()
            .unwrap()
            .version,
        3
    );
    let got_v2 = store.get_workflow("greet", Some(2)).await.unwrap().unwrap();
    assert_eq!(got_v2.definition, json!({"a": 2, "b": [1, 2]}));
    assert_eq!(got_v2, v2);
    assert_eq!(store.get_workflow("greet", Some(9)).await.unwrap(), None);
    assert_eq!(store.get_workflow("nope", None).await.unwrap(), None);

    let listed = store.list_workflows().await.unwrap();
    let summary: Vec<_> = listed
        .iter()
        .map(|w| (w.name.as_str(), w.version))
        .collect();
    assert_eq!(summary, [("greet", 3), ("other", 1)]);
}

#[tokio::test]
async fn create_run_round_trips() {
    let (_dir, store) = store_with_flow().await;
    let mut new = new_run("flow", Priority::High);
    new.simulated = true;
    let run = store.create_run(new.clone()).await.unwrap();
    assert_eq!(run.id.get_version_num(), 7);
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(
        (
            run.started_at.as_deref(),
            run.finished_at.as_deref(),
            run.total_time_ms
        ),
        (None, None, None)
    );

    let got = store.get_run(run.id).await.unwrap().expect("stored");
    assert_eq!(got, run);
    assert_eq!(got.priority, Priority::High);
    assert_eq!(got.trigger, new.trigger);
    assert_eq!(got.vars, new.vars);
    assert!(got.simulated);

    assert_eq!(store.get_run(uuid::Uuid::now_v7()).await.unwrap(), None);
}

#[tokio::test]
async fn create_run_for_unknown_workflow_version_is_not_found() {
    let (_dir, store) = store_with_flow().await;
    let mut new = new_run("flow", Priority::Normal);
    new.workflow_version = 2;
    let err = store.create_run(new).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let err = store
        .create_run(new_run("missing", Priority::Normal))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert!(
        store
            .list_runs(&RunFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn status_transitions_set_times() {
    let (_dir, store) = store_with_flow().await;
    let run = store
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();

    store
        .set_run_status(run.id, RunStatus::Running, None)
        .await
        .unwrap();
    let running = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(running.status, RunStatus::Running);
    let started = running.started_at.clone().expect("started_at set");
    assert!(started >= run.created_at);
    assert_eq!(running.finished_at, None);

    // Running again (e.g. resumed after a crash) keeps the first start time.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .set_run_status(run.id, RunStatus::Running, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_run(run.id)
            .await
            .unwrap()
            .unwrap()
            .started_at
            .as_deref(),
        Some(started.as_str())
    );

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store
        .set_run_status(run.id, RunStatus::Failed, Some("step `a` failed: boom"))
        .await
        .unwrap();
    let failed = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("step `a` failed: boom"));
    let finished = failed.finished_at.clone().expect("finished_at set");
    assert!(finished > started);
    let total = failed.total_time_ms.expect("total_time_ms set");
    assert!((20..60_000).contains(&total), "total_time_ms = {total}");
}

#[tokio::test]
async fn cancelling_a_queued_run_measures_from_creation() {
    let (_dir, store) = store_with_flow().await;
    let run = store
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    store
        .set_run_status(run.id, RunStatus::Cancelled, None)
        .await
        .unwrap();
    let cancelled = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(cancelled.started_at, None);
    assert!(cancelled.finished_at.is_some());
    assert!(cancelled.total_time_ms.unwrap() >= 10, "{cancelled:?}");
}

#[tokio::test]
async fn terminal_run_refuses_further_transitions() {
    let (_dir, store) = store_with_flow().await;
    let run = store
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();
    store
        .set_run_status(run.id, RunStatus::Running, None)
        .await
        .unwrap();
    store
        .set_run_status(run.id, RunStatus::Succeeded, None)
        .await
        .unwrap();
    let done = store.get_run(run.id).await.unwrap().unwrap();

    for to in [
        RunStatus::Running,
        RunStatus::Failed,
        RunStatus::Succeeded,
        RunStatus::Queued,
    ] {
        let err = store
            .set_run_status(run.id, to, Some("late"))
            .await
            .unwrap_err();
        match err {
            StoreError::InvalidTransition {
                run: id,
                from,
                to: refused,
            } => {
                assert_eq!((id, from, refused), (run.id, RunStatus::Succeeded, to));
            }
            other => panic!("expected InvalidTransition, got {other:?}"),
        }
    }
    assert_eq!(
        store.get_run(run.id).await.unwrap().unwrap(),
        done,
        "a refused change must not write"
    );

    let err = store
        .set_run_status(uuid::Uuid::now_v7(), RunStatus::Running, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn record_step_upserts_and_keeps_attempts_in_order() {
    let (_dir, store) = store_with_flow().await;
    let run = store
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();

    // Attempt 1 fails, the step waits for its retry.
    let mut fetch = step(
        "fetch",
        StepStatus::Waiting,
        1,
        Some("2026-01-01T00:00:01.000Z"),
    );
    fetch.error_class = Some("retryable".to_owned());
    store
        .record_step(run.id, &fetch, Some(&attempt(1, StepStatus::Failed)))
        .await
        .unwrap();
    // Attempt 2 succeeds: same step row, overwritten.
    let mut fetch_done = step(
        "fetch",
        StepStatus::Succeeded,
        2,
        Some("2026-01-01T00:00:01.000Z"),
    );
    fetch_done.finished_at = Some("2026-01-01T00:00:02.500Z".to_owned());
    store
        .record_step(
            run.id,
            &fetch_done,
            Some(&attempt(2, StepStatus::Succeeded)),
        )
        .await
        .unwrap();
    // Another step that started earlier, and one not started yet (no attempt).
    let early = step(
        "early",
        StepStatus::Succeeded,
        1,
        Some("2026-01-01T00:00:00.000Z"),
    );
    store
        .record_step(run.id, &early, Some(&attempt(1, StepStatus::Succeeded)))
        .await
        .unwrap();
    store
        .record_step(run.id, &StepRecord::pending("after"), None)
        .await
        .unwrap();

    let steps = store.steps(run.id).await.unwrap();
    let order: Vec<_> = steps.iter().map(|s| s.step_id.as_str()).collect();
    assert_eq!(
        order,
        ["early", "fetch", "after"],
        "by started_at, not-started last"
    );
    assert_eq!(steps[1], fetch_done, "the latest write wins, whole");
    assert_eq!(steps[1].output, Some(json!({"text": "hi from fetch"})));
    assert_eq!(steps[2], StepRecord::pending("after"));

    let attempts = store.attempts(run.id, "fetch").await.unwrap();
    assert_eq!(
        attempts,
        [
            attempt(1, StepStatus::Failed),
            attempt(2, StepStatus::Succeeded)
        ]
    );
    // Re-recording an attempt (at-least-once execution) replaces it instead of failing.
    let mut again = attempt(2, StepStatus::Succeeded);
    again.logs = "replayed\n".to_owned();
    store
        .record_step(run.id, &fetch_done, Some(&again))
        .await
        .unwrap();
    let attempts = store.attempts(run.id, "fetch").await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[1].logs, "replayed\n");

    assert!(store.attempts(run.id, "after").await.unwrap().is_empty());
    assert!(store.steps(uuid::Uuid::now_v7()).await.unwrap().is_empty());
}

#[tokio::test]
async fn record_step_for_unknown_run_is_not_found_and_writes_nothing() {
    let (_dir, store) = store_with_flow().await;
    let ghost = uuid::Uuid::now_v7();
    let err = store
        .record_step(
            ghost,
            &step("a", StepStatus::Failed, 1, None),
            Some(&attempt(1, StepStatus::Failed)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(store.steps(ghost).await.unwrap().is_empty());
    assert!(store.attempts(ghost, "a").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_step_write_leaves_no_transaction_open_behind_the_next() {
    // A step write is one multi-statement transaction on the shared write
    // connection: after one fails midway, the next must still commit (seen
    // from another connection), not land in a transaction left open.
    let (dir, path) = temp_db();
    let store = store_with_flow_at(&path).await;
    let run = store
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();
    for _ in 0..3 {
        let ghost = uuid::Uuid::now_v7();
        let failed = store
            .record_step(
                ghost,
                &step("a", StepStatus::Failed, 1, None),
                Some(&attempt(1, StepStatus::Failed)),
            )
            .await;
        assert!(matches!(failed, Err(StoreError::NotFound(_))), "{failed:?}");
    }
    store
        .record_step(
            run.id,
            &step("a", StepStatus::Succeeded, 1, None),
            Some(&attempt(1, StepStatus::Succeeded)),
        )
        .await
        .unwrap();
    let other = open_at(&path).await;
    let steps = other.steps(run.id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, StepStatus::Succeeded);
    assert_eq!(other.attempts(run.id, "a").await.unwrap().len(), 1);
    drop(dir);
}

#[tokio::test]
async fn list_runs_filters_and_orders_newest_first() {
    let (_dir, store) = store_with_flow().await;
    store
        .save_workflow("second", &json!({"steps": []}))
        .await
        .unwrap();

    let mut ids = Vec::new();
    for i in 0..6 {
        let workflow = if i % 2 == 0 { "flow" } else { "second" };
        ids.push(
            store
                .create_run(new_run(workflow, Priority::Normal))
                .await
                .unwrap()
                .id,
        );
    }
    store
        .set_run_status(ids[0], RunStatus::Running, None)
        .await
        .unwrap();
    store
        .set_run_status(ids[0], RunStatus::Failed, Some("x"))
        .await
        .unwrap();
    store
        .set_run_status(ids[3], RunStatus::Failed, Some("y"))
        .await
        .unwrap();

    let listed = |filter: RunFilter| {
        let store = store.clone();
        async move {
            store
                .list_runs(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<_> = ids.iter().rev().copied().collect();
    assert_eq!(listed(RunFilter::default()).await, newest_first);
    assert_eq!(
        listed(RunFilter {
            limit: 2,
            ..RunFilter::default()
        })
        .await,
        newest_first[..2]
    );
    assert_eq!(
        listed(RunFilter {
            limit: 2,
            offset: 2,
            ..RunFilter::default()
        })
        .await,
        newest_first[2..4]
    );
    assert_eq!(
        listed(RunFilter {
            status: Some(RunStatus::Failed),
            ..RunFilter::default()
        })
        .await,
        [ids[3], ids[0]]
    );
    assert_eq!(
        listed(RunFilter {
            workflow: Some("flow".to_owned()),
            ..RunFilter::default()
        })
        .await,
        [ids[4], ids[2], ids[0]]
    );
    assert_eq!(
        listed(RunFilter {
            workflow: Some("second".to_owned()),
            status: Some(RunStatus::Queued),
            ..RunFilter::default()
        })
        .await,
        [ids[5], ids[1]]
    );
    assert_eq!(
        listed(RunFilter {
            since: Some(humantime::parse_rfc3339("2999-01-01T00:00:00Z").unwrap()),
            ..RunFilter::default()
        })
        .await,
        Vec::<uuid::Uuid>::new()
    );
    assert_eq!(
        listed(RunFilter {
            since: Some(humantime::parse_rfc3339("2000-01-01T00:00:00Z").unwrap()),
            ..RunFilter::default()
        })
        .await,
        newest_first
    );
}

#[tokio::test]
async fn unfinished_runs_are_queued_or_running_oldest_first() {
    let (_dir, store) = store_with_flow().await;
    let mut ids = Vec::new();
    for priority in [
        Priority::Low,
        Priority::Critical,
        Priority::Normal,
        Priority::High,
    ] {
        ids.push(
            store
                .create_run(new_run("flow", priority))
                .await
                .unwrap()
                .id,
        );
    }
    store
        .set_run_status(ids[0], RunStatus::Running, None)
        .await
        .unwrap();
    store
        .set_run_status(ids[1], RunStatus::Running, None)
        .await
        .unwrap();
    store
        .set_run_status(ids[1], RunStatus::Succeeded, None)
        .await
        .unwrap();
    store
        .set_run_status(ids[2], RunStatus::Cancelled, None)
        .await
        .unwrap();

    let unfinished = store.unfinished_runs().await.unwrap();
    let summary: Vec<_> = unfinished.iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(
        summary,
        [(ids[0], RunStatus::Running), (ids[3], RunStatus::Queued)]
    );
}

#[tokio::test]
async fn data_survives_closing_and_reopening() {
    let (_dir, path) = temp_db();
    let (run_id, recorded) = {
        let store = SqliteStore::open(path.to_str().unwrap()).await.unwrap();
        store
            .save_workflow("flow", &json!({"steps": [{"id": "a"}]}))
            .await
            .unwrap();
        let run = store
            .create_run(new_run("flow", Priority::Critical))
            .await
            .unwrap();
        store
            .set_run_status(run.id, RunStatus::Running, None)
            .await
            .unwrap();
        let recorded = step(
            "a",
            StepStatus::Succeeded,
            1,
            Some("2026-01-01T00:00:01.000Z"),
        );
        store
            .record_step(run.id, &recorded, Some(&attempt(1, StepStatus::Succeeded)))
            .await
            .unwrap();
        let wal = path.with_file_name("omniflow.db-wal");
        assert!(wal.exists(), "journal mode must be WAL");
        store.close().await;
        (run.id, recorded)
    };

    let store = open_at(&path).await;
    assert_eq!(
        store
            .get_workflow("flow", None)
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    let run = store.get_run(run_id).await.unwrap().expect("run survived");
    assert_eq!(
        (run.status, run.priority),
        (RunStatus::Running, Priority::Critical)
    );
    assert_eq!(store.steps(run_id).await.unwrap(), [recorded]);
    assert_eq!(
        store.attempts(run_id, "a").await.unwrap(),
        [attempt(1, StepStatus::Succeeded)]
    );
    assert_eq!(
        store.unfinished_runs().await.unwrap().len(),
        1,
        "a crash leaves it for resumption"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_do_not_hit_database_is_locked() {
    let (_dir, store) = store_with_flow().await;
    const TASKS: usize = 20;
    const STEPS: u32 = 10;

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let run = store.create_run(new_run("flow", Priority::Normal)).await?;
            store
                .set_run_status(run.id, RunStatus::Running, None)
                .await?;
            for n in 0..STEPS {
                let step_id = format!("s{n:02}");
                let started = format!("2026-01-01T00:00:{n:02}.000Z");
                store
                    .record_step(
                        run.id,
                        &step(&step_id, StepStatus::Running, 1, Some(&started)),
                        None,
                    )
                    .await?;
                let attempt = attempt(1, StepStatus::Succeeded);
                let done = step(&step_id, StepStatus::Succeeded, 1, Some(&started));
                store.record_step(run.id, &done, Some(&attempt)).await?;
                // Readers interleave with writers (WAL).
                store.steps(run.id).await?;
            }
            store
                .set_run_status(run.id, RunStatus::Succeeded, None)
                .await?;
            Ok::<_, StoreError>(run.id)
        });
    }
    let mut run_ids = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        run_ids.push(joined.expect("task panicked").expect("store call failed"));
    }

    assert_eq!(run_ids.len(), TASKS);
    for id in run_ids {
        let steps = store.steps(id).await.unwrap();
        assert_eq!(steps.len(), STEPS as usize);
        assert!(steps.iter().all(|s| s.status == StepStatus::Succeeded));
        assert_eq!(
            store.get_run(id).await.unwrap().unwrap().status,
            RunStatus::Succeeded
        );
    }
    let succeeded = RunFilter {
        status: Some(RunStatus::Succeeded),
        limit: 100,
        ..RunFilter::default()
    };
    assert_eq!(store.list_runs(&succeeded).await.unwrap().len(), TASKS);
}

#[test]
fn enums_round_trip_through_text() {
    for status in RunStatus::ALL {
        assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
    }
    for status in StepStatus::ALL {
        assert_eq!(status.as_str().parse::<StepStatus>(), Ok(status));
    }
    for priority in Priority::ALL {
        assert_eq!(priority.as_str().parse::<Priority>(), Ok(priority));
        assert_eq!(Priority::from_i64(priority.as_i64()), Some(priority));
    }
    assert!(
        "done"
            .parse::<RunStatus>()
            .unwrap_err()
            .to_string()
            .contains("queued")
    );
    assert!(Priority::Critical > Priority::High && Priority::Normal > Priority::Low);
    assert_eq!(Priority::default(), Priority::Normal);
    assert!(RunStatus::Cancelled.is_terminal() && !RunStatus::Running.is_terminal());
    assert_eq!(serde_json::to_value(Priority::High).unwrap(), json!("high"));
    assert_eq!(
        serde_json::to_value(StepStatus::Waiting).unwrap(),
        json!("waiting")
    );
}

#[tokio::test]
async fn parking_needs_the_lease_and_hides_the_run_until_it_wakes() {
    use std::time::{Duration, SystemTime};
    let (_dir, store) = store_with_flow().await;
    let run = store
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();
    let lease = SystemTime::now() + Duration::from_secs(60);
    let claimed = store.claim_next_runs("worker-a", lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].run.id, run.id);
    assert!(!claimed[0].has_steps, "a fresh run has no step records");
    assert_eq!(claimed[0].lease.owner, "worker-a");

    let wake = SystemTime::now() + Duration::from_millis(400);
    // A claim this is not (another epoch) cannot park it.
    let stale = Lease {
        epoch: claimed[0].lease.epoch - 1,
        ..claimed[0].lease.clone()
    };
    let refused = store.park_run(&stale, wake).await;
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store.get_run(run.id).await.unwrap().unwrap().status,
        RunStatus::Running
    );
    store.park_run(&claimed[0].lease, wake).await.unwrap();
    assert_eq!(
        store.get_run(run.id).await.unwrap().unwrap().status,
        RunStatus::Queued
    );
    // Not claimable before its wake-up time, claimable after it.
    assert!(
        store
            .claim_next_runs("worker-b", lease, 10)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    let again = store.claim_next_runs("worker-b", lease, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].run.id, run.id);
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_over_can_no_longer_write_the_run() {
    use std::time::{Duration, SystemTime};
    // Two handles on one file, as two processes would have: A claims the
    // run, its lease expires, the sweep re-queues it and B claims it.
    let (_dir, path) = temp_db();
    let a = store_with_flow_at(&path).await;
    let b = open_at(&path).await;
    let run = a
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();
    let short = SystemTime::now() + Duration::from_millis(50);
    let a_claim = a.claim_next_runs("worker-a", short, 1).await.unwrap();
    let a_lease = a_claim[0].lease.clone();
    a.record_leased_step(
        &a_lease,
        &step(
            "a",
            StepStatus::Running,
            1,
            Some("2026-01-01T00:00:01.000Z"),
        ),
        None,
    )
    .await
    .unwrap();

    // B's sweep leaves A's live lease alone ...
    assert_eq!(
        b.requeue_expired_leases(SystemTime::now()).await.unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    // ... and re-queues it once it expired; B claims it: a new epoch.
    assert_eq!(
        b.requeue_expired_leases(SystemTime::now()).await.unwrap(),
        1
    );
    let long = SystemTime::now() + Duration::from_secs(60);
    let b_claim = b.claim_next_runs("worker-b", long, 1).await.unwrap();
    let b_lease = b_claim[0].lease.clone();
    assert!(b_claim[0].has_steps);
    assert!(
        b_lease.epoch > a_lease.epoch,
        "{b_lease:?} after {a_lease:?}"
    );
    b.record_leased_step(
        &b_lease,
        &step(
            "a",
            StepStatus::Succeeded,
            2,
            Some("2026-01-01T00:00:02.000Z"),
        ),
        Some(&attempt(2, StepStatus::Succeeded)),
    )
    .await
    .unwrap();

    // Every write A still makes is refused, typed, not retryable, and
    // changes nothing of B's.
    let lost = |r: Result<(), StoreError>| match r {
        Err(e @ StoreError::LeaseLost { .. }) => assert!(!e.is_retryable()),
        other => panic!("expected lease lost, got {other:?}"),
    };
    lost(
        a.record_leased_step(
            &a_lease,
            &step("a", StepStatus::Failed, 2, Some("2026-01-01T00:00:09.000Z")),
            Some(&attempt(2, StepStatus::Failed)),
        )
        .await,
    );
    lost(a.finish_run(&a_lease, RunStatus::Failed, Some("a")).await);
    lost(a.park_run(&a_lease, SystemTime::now()).await);
    lost(a.release_run(&a_lease).await);
    assert!(
        a.extend_leases(std::slice::from_ref(&a_lease), long)
            .await
            .unwrap()
            .is_empty(),
        "a lost lease is not extended"
    );
    let steps = b.steps(run.id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, StepStatus::Succeeded);
    assert_eq!(steps[0].attempts, 2);
    let attempts = b.attempts(run.id, "a").await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, StepStatus::Succeeded);
    assert_eq!(
        b.get_run(run.id).await.unwrap().unwrap().status,
        RunStatus::Running
    );

    // B's own writes still go through, and a fenced write to an unknown
    // run is NotFound, not a lost lease.
    assert_eq!(
        b.extend_leases(std::slice::from_ref(&b_lease), long)
            .await
            .unwrap(),
        vec![run.id]
    );
    b.finish_run(&b_lease, RunStatus::Succeeded, None)
        .await
        .unwrap();
    let ghost = Lease {
        run: uuid::Uuid::now_v7(),
        ..b_lease.clone()
    };
    let missing = b
        .record_leased_step(&ghost, &step("a", StepStatus::Succeeded, 1, None), None)
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn fenced_step_writes_batched_together_each_get_their_own_answer() {
    use std::time::{Duration, SystemTime};
    // Many concurrent writes are group-committed; the stale ones among
    // them must fail alone, the current ones commit.
    let (_dir, path) = temp_db();
    let store = store_with_flow_at(&path).await;
    let mut leases = Vec::new();
    for _ in 0..8 {
        store
            .create_run(new_run("flow", Priority::Normal))
            .await
            .unwrap();
    }
    let long = SystemTime::now() + Duration::from_secs(60);
    for claimed in store.claim_next_runs("w", long, 8).await.unwrap() {
        leases.push(claimed.lease);
    }
    assert_eq!(leases.len(), 8);
    let writes = leases.iter().enumerate().map(|(i, lease)| {
        let store = store.clone();
        // Odd runs are written with a stale epoch.
        let lease = Lease {
            epoch: lease.epoch - (i as i64 % 2),
            ..lease.clone()
        };
        async move {
            store
                .record_leased_step(
                    &lease,
                    &step("a", StepStatus::Succeeded, 1, None),
                    Some(&attempt(1, StepStatus::Succeeded)),
                )
                .await
        }
    });
    let results = futures::future::join_all(writes).await;
    for (i, (result, lease)) in results.into_iter().zip(&leases).enumerate() {
        let steps = store.steps(lease.run).await.unwrap();
        if i % 2 == 0 {
            assert!(result.is_ok(), "run {i}: {result:?}");
            assert_eq!(steps.len(), 1, "run {i}");
            assert_eq!(store.attempts(lease.run, "a").await.unwrap().len(), 1);
        } else {
            assert!(
                matches!(result, Err(StoreError::LeaseLost { .. })),
                "run {i}: {result:?}"
            );
            assert!(steps.is_empty(), "run {i}: a stale write wrote {steps:?}");
            assert!(store.attempts(lease.run, "a").await.unwrap().is_empty());
        }
    }
}

#[tokio::test]
async fn the_sweep_recovers_running_runs_without_a_lease_and_claims_respect_live_ones() {
    use std::time::{Duration, SystemTime};
    let (_dir, store) = store_with_flow().await;
    // Set running by hand (no lease): nothing would ever renew it.
    let orphan = store
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();
    store
        .set_run_status(orphan.id, RunStatus::Running, None)
        .await
        .unwrap();
    // Running under a live lease of another process.
    let live = store
        .create_claimed_run(
            new_run("flow", Priority::Normal),
            "other-process",
            SystemTime::now() + Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(live.run.status, RunStatus::Running);
    assert_eq!(live.lease.owner, "other-process");
    // Parked until later.
    let parked = store
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();
    let claimed = store
        .claim_run(parked.id, "w", SystemTime::now() + Duration::from_secs(60))
        .await
        .unwrap();
    store
        .park_run(&claimed.lease, SystemTime::now() + Duration::from_secs(600))
        .await
        .unwrap();

    let resumable = store.resumable_runs(SystemTime::now()).await.unwrap();
    assert_eq!(
        resumable.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![orphan.id],
        "only the run no live process holds"
    );
    for (id, what) in [
        (live.run.id, "running in another process"),
        (parked.id, "parked until"),
    ] {
        match store
            .claim_run(id, "me", SystemTime::now() + Duration::from_secs(60))
            .await
        {
            Err(StoreError::NotClaimable { reason, .. }) => {
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("claimed {id}: {other:?}"),
        }
    }
    assert_eq!(
        store
            .requeue_expired_leases(SystemTime::now())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.get_run(orphan.id).await.unwrap().unwrap().status,
        RunStatus::Queued
    );
    assert_eq!(
        store.get_run(live.run.id).await.unwrap().unwrap().status,
        RunStatus::Running
    );
}

#[tokio::test]
async fn a_second_server_lock_on_one_file_is_refused_until_the_first_is_dropped() {
    let (_dir, path) = temp_db();
    let a = open_at(&path).await;
    let b = open_at(&path).await;
    assert_eq!(b.server_holding_lock().await.unwrap(), None);
    let held = a.lock_for_server().await.unwrap();
    let holder = b.server_holding_lock().await.unwrap();
    assert!(
        holder
            .as_deref()
            .is_some_and(|h| h.contains(&std::process::id().to_string())),
        "{holder:?}"
    );
    match b.lock_for_server().await {
        Err(e @ StoreError::Locked(_)) => {
            let message = e.to_string();
            assert!(message.contains("another OmniFlow server"), "{message}");
            assert!(message.contains("omniflow.db"), "{message}");
            assert!(!e.is_retryable());
        }
        other => panic!("a second lock was granted: {other:?}"),
    }
    drop(held);
    let again = b.lock_for_server().await.unwrap();
    drop(again);
}
