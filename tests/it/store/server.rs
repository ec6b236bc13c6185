//! Contract cases: what the server needs besides the queue — deleting
//! workflows, API tokens, webhook secrets and replays, schedules, sealed
//! secrets, cancellation and retries, queue statistics (`WorkflowStore`,
//! `TokenStore`, `WebhookStore`, `ScheduleStore`, `SecretStore`,
//! `QueueStore`). Each case takes a fresh database of the backend under
//! test; `store_contract!` in `mod.rs` runs it for every backend.

use std::time::{Duration, SystemTime};

use omniflow::store::{
    Priority, RunFilter, RunStatus, SealedSecret, StepRecord, StepStatus, StoreError, now_rfc3339,
};
use serde_json::json;

use super::{TestDb, new_run, step};

fn at(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).expect("RFC 3339")
}

pub(super) async fn deleting_a_workflow_hides_it_and_drops_its_webhook_and_schedule(db: TestDb) {
    let store = db.with_flow().await;
    let v2 = store
        .save_workflow("flow", &json!({"steps": [{"id": "b"}]}))
        .await
        .unwrap();
    store.set_webhook_secret("flow", "s3cret").await.unwrap();
    assert_eq!(
        store.webhook_secret("flow").await.unwrap().as_deref(),
        Some("s3cret")
    );
    store
        .sync_schedule(
            "flow",
            Some(("0 0 * * *", "UTC", "skip", at("2030-01-01T00:00:00Z"))),
        )
        .await
        .unwrap();

    assert!(store.delete_workflow("flow").await.unwrap());
    assert!(
        !store.delete_workflow("flow").await.unwrap(),
        "already deleted"
    );
    assert!(!store.delete_workflow("never").await.unwrap());
    assert_eq!(store.get_workflow("flow", None).await.unwrap(), None);
    assert_eq!(
        store
            .get_workflow("flow", Some(1))
            .await
            .unwrap()
            .map(|w| w.version),
        Some(1),
        "a pinned version stays readable"
    );
    assert!(store.list_workflows().await.unwrap().is_empty());
    assert!(store.workflow_versions("flow").await.unwrap().is_empty());
    assert_eq!(store.webhook_secret("flow").await.unwrap(), None);
    assert!(store.list_schedules().await.unwrap().is_empty());
    for name in ["flow", "never"] {
        let err = store.set_webhook_secret(name, "x").await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{name}: {err:?}");
    }

    // Saving it again brings it back, with its versions.
    let again = store
        .save_workflow("flow", &json!({"steps": [{"id": "b"}]}))
        .await
        .unwrap();
    assert_eq!(again, v2);
    assert_eq!(store.workflow_versions("flow").await.unwrap().len(), 2);
    assert_eq!(store.list_workflows().await.unwrap(), [v2]);
}

pub(super) async fn the_first_token_is_created_once_and_revoked_tokens_stop_working(db: TestDb) {
    let store = db.open().await;
    let first = store
        .create_first_token("admin", "hash-1")
        .await
        .unwrap()
        .expect("no token yet");
    assert_eq!(first.name, "admin");
    assert_eq!(first.revoked_at, None);
    assert!(first.created_at.ends_with('Z') && first.created_at.len() == 24);
    assert_eq!(
        store.create_first_token("other", "hash-2").await.unwrap(),
        None,
        "a token exists"
    );
    let ci = store.create_token("ci", "hash-3").await.unwrap();
    assert!(ci.id > first.id);
    let dup = store.create_token("dup", "hash-3").await.unwrap_err();
    assert!(matches!(dup, StoreError::Constraint(_)), "{dup:?}");

    assert_eq!(
        store.active_token("hash-1").await.unwrap(),
        Some(first.clone())
    );
    assert!(store.revoke_token(first.id).await.unwrap());
    assert!(
        !store.revoke_token(first.id).await.unwrap(),
        "already revoked"
    );
    assert!(!store.revoke_token(9_999).await.unwrap());
    assert_eq!(store.active_token("hash-1").await.unwrap(), None);
    assert_eq!(store.active_token("nope").await.unwrap(), None);

    let tokens = store.list_tokens().await.unwrap();
    assert_eq!(
        tokens.iter().map(|t| t.id).collect::<Vec<_>>(),
        [first.id, ci.id]
    );
    assert!(tokens[0].revoked_at.is_some() && tokens[1].revoked_at.is_none());
    // With every token revoked, a first start creates one again.
    assert!(store.revoke_token(ci.id).await.unwrap());
    assert!(
        store
            .create_first_token("again", "hash-4")
            .await
            .unwrap()
            .is_some()
    );
}

pub(super) async fn webhook_deliveries_are_replays_until_forgotten(db: TestDb) {
    let store = db.with_flow().await;
    let now = SystemTime::now();
    let window = Duration::from_secs(300);
    assert!(
        store
            .record_delivery("sig-1", "flow", now, now - window)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_delivery("sig-1", "flow", now, now - window)
            .await
            .unwrap(),
        "a replay"
    );
    assert!(
        store
            .record_delivery("sig-2", "flow", now, now - window)
            .await
            .unwrap()
    );
    // Ten minutes later the first delivery is out of the window: pruned.
    let later = now + Duration::from_secs(600);
    assert!(
        store
            .record_delivery("sig-1", "flow", later, later - window)
            .await
            .unwrap()
    );
    store.set_webhook_secret("flow", "one").await.unwrap();
    store.set_webhook_secret("flow", "two").await.unwrap();
    assert_eq!(
        store.webhook_secret("flow").await.unwrap().as_deref(),
        Some("two")
    );
}

pub(super) async fn schedules_keep_their_fire_time_and_each_fire_time_fires_once(db: TestDb) {
    let store = db.with_flow().await;
    let (t1, t2, t3) = (
        at("2030-01-01T00:00:00Z"),
        at("2030-01-02T00:00:00Z"),
        at("2030-01-03T00:00:00.250Z"),
    );
    store
        .sync_schedule("flow", Some(("0 0 * * *", "UTC", "run_once", t1)))
        .await
        .unwrap();
    // Unchanged cron, timezone and policy: the stored fire time stays.
    store
        .sync_schedule("flow", Some(("0 0 * * *", "UTC", "run_once", t2)))
        .await
        .unwrap();
    let listed = store.list_schedules().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].cron.as_str(), listed[0].timezone.as_str()),
        ("0 0 * * *", "UTC")
    );
    assert_eq!(listed[0].missed, "run_once");
    assert_eq!(listed[0].next_fire_at, "2030-01-01T00:00:00.000Z");
    assert_eq!(listed[0].last_fired_at, None);
    // A changed one takes the new fire time.
    store
        .sync_schedule("flow", Some(("0 0 * * *", "Europe/Paris", "run_once", t2)))
        .await
        .unwrap();
    let listed = store.list_schedules().await.unwrap();
    assert_eq!(listed[0].next_fire_at, "2030-01-02T00:00:00.000Z");
    assert_eq!(listed[0].timezone, "Europe/Paris");

    assert!(store.due_schedules(t1).await.unwrap().is_empty());
    let due = store.due_schedules(t2).await.unwrap();
    assert_eq!(due, listed);

    let fire_at = due[0].next_fire_at.clone();
    let run = store
        .fire_schedule(
            "flow",
            &fire_at,
            t3,
            Some(new_run("flow", Priority::Normal)),
        )
        .await
        .unwrap()
        .expect("this fire time is ours");
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(store.get_run(run.id).await.unwrap(), Some(run));
    // Another scheduler with the same fire time: nothing, no second run.
    assert_eq!(
        store
            .fire_schedule(
                "flow",
                &fire_at,
                t3,
                Some(new_run("flow", Priority::Normal))
            )
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.list_runs(&RunFilter::default()).await.unwrap().len(),
        1
    );
    let listed = store.list_schedules().await.unwrap();
    assert_eq!(listed[0].next_fire_at, "2030-01-03T00:00:00.250Z");
    assert_eq!(listed[0].last_fired_at.as_deref(), Some(fire_at.as_str()));

    let err = store
        .sync_schedule("missing", Some(("0 0 * * *", "UTC", "skip", t1)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    store.sync_schedule("flow", None).await.unwrap();
    assert!(store.list_schedules().await.unwrap().is_empty());
}

pub(super) async fn sealed_secrets_are_replaced_listed_by_name_and_deleted(db: TestDb) {
    let store = db.open().await;
    let sealed = |name: &str, byte: u8| SealedSecret {
        name: name.to_owned(),
        nonce: vec![byte; 12],
        ciphertext: vec![byte, 0, 255, byte],
        updated_at: now_rfc3339(),
    };
    let b = sealed("B_TOKEN", 1);
    store.put_secret(&b).await.unwrap();
    store.put_secret(&sealed("A_TOKEN", 2)).await.unwrap();
    let a = sealed("A_TOKEN", 3);
    store.put_secret(&a).await.unwrap();
    let fields = |s: &SealedSecret| {
        (
            s.name.clone(),
            s.nonce.clone(),
            s.ciphertext.clone(),
            s.updated_at.clone(),
        )
    };
    let listed = |all: Vec<SealedSecret>| all.iter().map(fields).collect::<Vec<_>>();
    assert_eq!(
        listed(store.sealed_secrets().await.unwrap()),
        [fields(&a), fields(&b)]
    );
    assert!(store.delete_secret("A_TOKEN").await.unwrap());
    assert!(!store.delete_secret("A_TOKEN").await.unwrap());
    assert_eq!(listed(store.sealed_secrets().await.unwrap()), [fields(&b)]);
}

pub(super) async fn a_cancelled_run_is_retried_from_where_it_stopped(db: TestDb) {
    let store = db.with_flow().await;
    let run = store
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();
    let done = step(
        "a",
        StepStatus::Succeeded,
        1,
        Some("2026-01-01T00:00:01.000Z"),
    );
    let mut waiting = step(
        "b",
        StepStatus::Waiting,
        1,
        Some("2026-01-01T00:00:02.000Z"),
    );
    waiting.wake_at = Some("2030-01-01T00:00:00.000Z".to_owned());
    waiting.tries = 1;
    let handler = step("$on_failure", StepStatus::Failed, 1, None);
    for s in [&done, &waiting, &handler] {
        store.record_step(run.id, s, None).await.unwrap();
    }

    assert!(store.cancel_queued_run(run.id).await.unwrap());
    let cancelled = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert_eq!(cancelled.error.as_deref(), Some("cancelled"));
    assert!(cancelled.finished_at.is_some() && cancelled.total_time_ms.is_some());
    let steps = store.steps(run.id).await.unwrap();
    let b = steps.iter().find(|s| s.step_id == "b").unwrap();
    assert_eq!(
        (b.status, b.wake_at.as_deref()),
        (StepStatus::Cancelled, None)
    );
    assert!(
        !store.cancel_queued_run(run.id).await.unwrap(),
        "not queued"
    );
    let err = store
        .cancel_queued_run(uuid::Uuid::now_v7())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");

    let retried = store.requeue_for_retry(run.id).await.unwrap();
    assert_eq!(retried.status, RunStatus::Queued);
    assert_eq!(
        (retried.error, retried.finished_at, retried.total_time_ms),
        (None, None, None)
    );
    assert_eq!(
        store.get_run(run.id).await.unwrap().unwrap().status,
        RunStatus::Queued
    );
    let steps = store.steps(run.id).await.unwrap();
    let by_id = |id: &str| steps.iter().find(|s| s.step_id == id).unwrap().clone();
    assert_eq!(by_id("a"), done, "succeeded steps are kept");
    let b = by_id("b");
    assert_eq!((b.status, b.tries, b.attempts), (StepStatus::Pending, 0, 1));
    assert_eq!(by_id("$on_failure").status, StepStatus::Failed, "history");

    match store.requeue_for_retry(run.id).await {
        Err(StoreError::InvalidTransition { from, to, .. }) => {
            assert_eq!((from, to), (RunStatus::Queued, RunStatus::Queued));
        }
        other => panic!("retried a queued run: {other:?}"),
    }
    let err = store
        .requeue_for_retry(uuid::Uuid::now_v7())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
}

pub(super) async fn create_runs_is_all_or_nothing(db: TestDb) {
    let store = db.with_flow().await;
    let mut bad = new_run("flow", Priority::Normal);
    bad.workflow_version = 9;
    let err = store
        .create_runs(vec![new_run("flow", Priority::High), bad])
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
    let made = store
        .create_runs(vec![
            new_run("flow", Priority::High),
            new_run("flow", Priority::Low),
        ])
        .await
        .unwrap();
    assert_eq!(made.len(), 2);
    for run in made {
        assert_eq!(store.get_run(run.id).await.unwrap(), Some(run));
    }
}

pub(super) async fn queue_stats_count_queued_by_priority_runs_by_status_and_fuel(db: TestDb) {
    let store = db.with_flow().await;
    for priority in [Priority::High, Priority::High, Priority::Low] {
        store.create_run(new_run("flow", priority)).await.unwrap();
    }
    let done = store
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();
    store
        .set_run_status(done.id, RunStatus::Running, None)
        .await
        .unwrap();
    for (id, attempts) in [("a", 1), ("b", 2)] {
        let record: StepRecord = step(id, StepStatus::Succeeded, attempts, None);
        store.record_step(done.id, &record, None).await.unwrap();
    }
    store
        .set_run_status(done.id, RunStatus::Succeeded, None)
        .await
        .unwrap();

    let stats = store
        .queue_stats(SystemTime::now() - Duration::from_secs(60), false)
        .await
        .unwrap();
    let queued: Vec<_> = stats
        .queued_by_priority
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        queued,
        [("critical", 0), ("high", 2), ("low", 1), ("normal", 0)]
    );
    let by_status: Vec<_> = stats
        .runs_by_status
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        by_status,
        [
            ("cancelled", 0),
            ("failed", 0),
            ("queued", 3),
            ("running", 0),
            ("succeeded", 1)
        ]
    );
    let finished: Vec<_> = stats
        .finished_since
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        finished,
        [("cancelled", 0), ("failed", 0), ("succeeded", 1)]
    );
    assert_eq!(stats.fuel_used_total, 3_000);

    let later = store
        .queue_stats(SystemTime::now() + Duration::from_secs(60), false)
        .await
        .unwrap();
    assert!(later.finished_since.values().all(|n| *n == 0));
}

/// Test runs (failure simulation, `simulated`): listed by the `test`
/// filter, counted in stats (runs, queue, throughput, fuel) only when asked.
pub(super) async fn test_runs_are_filtered_and_left_out_of_stats_unless_asked(db: TestDb) {
    let store = db.with_flow().await;
    let plain = store
        .create_run(new_run("flow", Priority::Normal))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for priority in [Priority::High, Priority::Normal] {
        let run = store
            .create_run(omniflow::store::NewRun {
                simulated: true,
                ..new_run("flow", priority)
            })
            .await
            .unwrap();
        assert!(run.simulated);
        ids.push(run.id);
    }
    // One test run finishes with fuel used.
    store
        .set_run_status(ids[1], RunStatus::Running, None)
        .await
        .unwrap();
    store
        .record_step(ids[1], &step("a", StepStatus::Succeeded, 2, None), None)
        .await
        .unwrap();
    store
        .set_run_status(ids[1], RunStatus::Succeeded, None)
        .await
        .unwrap();

    let listed = |test: Option<bool>| {
        let store = store.clone();
        async move {
            let mut ids: Vec<_> = store
                .list_runs(&RunFilter {
                    test,
                    ..RunFilter::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.id, r.simulated))
                .collect();
            ids.sort();
            ids
        }
    };
    let mut all = vec![(plain.id, false), (ids[0], true), (ids[1], true)];
    all.sort();
    assert_eq!(listed(None).await, all);
    assert_eq!(listed(Some(false)).await, vec![(plain.id, false)]);
    let mut tests = vec![(ids[0], true), (ids[1], true)];
    tests.sort();
    assert_eq!(listed(Some(true)).await, tests);

    let since = SystemTime::now() - Duration::from_secs(60);
    let production = store.queue_stats(since, false).await.unwrap();
    assert_eq!(production.runs_by_status["queued"], 1);
    assert_eq!(production.runs_by_status["succeeded"], 0);
    assert_eq!(production.queued_by_priority["normal"], 1);
    assert_eq!(production.queued_by_priority["high"], 0);
    assert_eq!(production.finished_since["succeeded"], 0);
    assert_eq!(production.fuel_used_total, 0);
    let everything = store.queue_stats(since, true).await.unwrap();
    assert_eq!(everything.runs_by_status["queued"], 2);
    assert_eq!(everything.runs_by_status["succeeded"], 1);
    assert_eq!(everything.queued_by_priority["high"], 1);
    assert_eq!(everything.finished_since["succeeded"], 1);
    assert_eq!(everything.fuel_used_total, 2_000);
}

pub(super) async fn pruning_deletes_old_finished_runs_with_their_steps_only(db: TestDb) {
    let store = db.with_flow().await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            store
                .create_run(new_run("flow", Priority::Normal))
                .await
                .unwrap()
                .id,
        );
    }
    // 0 succeeded (with a step and attempt), 1 failed, 2 running, 3 queued.
    store
        .set_run_status(ids[0], RunStatus::Running, None)
        .await
        .unwrap();
    store
        .record_step(
            ids[0],
            &step("a", StepStatus::Succeeded, 1, Some(&now_rfc3339())),
            Some(&super::attempt(1, StepStatus::Succeeded)),
        )
        .await
        .unwrap();
    store
        .set_run_status(ids[0], RunStatus::Succeeded, None)
        .await
        .unwrap();
    store
        .set_run_status(ids[1], RunStatus::Running, None)
        .await
        .unwrap();
    store
        .set_run_status(ids[1], RunStatus::Failed, Some("boom"))
        .await
        .unwrap();
    store
        .set_run_status(ids[2], RunStatus::Running, None)
        .await
        .unwrap();
    let all = [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::Running,
        RunStatus::Queued,
    ];
    let past = SystemTime::now() - Duration::from_secs(3600);
    let future = SystemTime::now() + Duration::from_secs(3600);
    // Nothing finished an hour ago.
    assert_eq!(store.prune_runs(past, &all, 100, false).await.unwrap(), 0);
    // A dry run counts the finished ones only (running and queued never).
    assert_eq!(store.prune_runs(future, &all, 100, true).await.unwrap(), 2);
    assert_eq!(
        store.get_run(ids[0]).await.unwrap().map(|r| r.status),
        Some(RunStatus::Succeeded)
    );
    // Only failed ones.
    assert_eq!(
        store
            .prune_runs(future, &[RunStatus::Failed], 100, false)
            .await
            .unwrap(),
        1
    );
    assert!(store.get_run(ids[1]).await.unwrap().is_none());
    assert!(store.get_run(ids[0]).await.unwrap().is_some());
    // The rest, steps and attempts with them; running and queued stay.
    assert_eq!(store.prune_runs(future, &all, 100, false).await.unwrap(), 1);
    assert!(store.get_run(ids[0]).await.unwrap().is_none());
    assert!(store.steps(ids[0]).await.unwrap().is_empty());
    assert!(store.attempts(ids[0], "a").await.unwrap().is_empty());
    assert!(store.get_run(ids[2]).await.unwrap().is_some());
    assert!(store.get_run(ids[3]).await.unwrap().is_some());
}
