//! Contract cases: workflows, runs, steps and attempts (`WorkflowStore`,
//! `RunStore`). Each case takes a fresh database of the backend under
//! test; `store_contract!` in `mod.rs` runs it for every backend.

use omniflow::store::{Priority, RunFilter, RunStatus, StepRecord, StepStatus, StoreError};
use serde_json::json;

use super::{TestDb, attempt, new_run, step};

pub(super) async fn save_workflow_versions_only_on_change(db: TestDb) {
    let store = db.open().await;

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

pub(super) async fn create_run_round_trips(db: TestDb) {
    let store = db.with_flow().await;
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

pub(super) async fn create_run_for_unknown_workflow_version_is_not_found(db: TestDb) {
    let store = db.with_flow().await;
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

pub(super) async fn status_transitions_set_times(db: TestDb) {
    let store = db.with_flow().await;
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

pub(super) async fn cancelling_a_queued_run_measures_from_creation(db: TestDb) {
    let store = db.with_flow().await;
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

pub(super) async fn terminal_run_refuses_further_transitions(db: TestDb) {
    let store = db.with_flow().await;
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

pub(super) async fn record_step_upserts_and_keeps_attempts_in_order(db: TestDb) {
    let store = db.with_flow().await;
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

    // All of a run's attempts in one read: by step id, then attempt number.
    let all = store.run_attempts(run.id).await.unwrap();
    let keys: Vec<(&str, u32)> = all.iter().map(|(s, a)| (s.as_str(), a.attempt)).collect();
    assert_eq!(keys, [("early", 1), ("fetch", 1), ("fetch", 2)]);
    assert_eq!(all[2].1, attempts[1]);
    let by_step = store.attempts_by_step(run.id).await.unwrap();
    assert_eq!(by_step["fetch"], attempts);
    assert!(!by_step.contains_key("after"));
}

pub(super) async fn record_step_for_unknown_run_is_not_found_and_writes_nothing(db: TestDb) {
    let store = db.with_flow().await;
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

pub(super) async fn a_failed_step_write_leaves_no_transaction_open_behind_the_next(db: TestDb) {
    // A step write is one multi-statement transaction on the shared write
    // connection: after one fails midway, the next must still commit (seen
    // from another connection), not land in a transaction left open.
    let store = db.with_flow().await;
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
    let other = db.open().await;
    let steps = other.steps(run.id).await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, StepStatus::Succeeded);
    assert_eq!(other.attempts(run.id, "a").await.unwrap().len(), 1);
    drop(db);
}

pub(super) async fn list_runs_filters_and_orders_newest_first(db: TestDb) {
    let store = db.with_flow().await;
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

pub(super) async fn unfinished_runs_are_queued_or_running_oldest_first(db: TestDb) {
    let store = db.with_flow().await;
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

pub(super) async fn concurrent_writers_do_not_hit_database_is_locked(db: TestDb) {
    let store = db.with_flow().await;
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
