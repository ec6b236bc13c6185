//! Contract cases: the queue's claims, leases, parking and the lease sweep
//! (`QueueStore`, fenced `RunStore` writes). Each case takes a fresh
//! database of the backend under test; `store_contract!` in `mod.rs` runs
//! it for every backend.

use omniflow::store::{Lease, Priority, RunStatus, StepStatus, StoreError};

use super::{TestDb, attempt, new_run, step};

pub(super) async fn parking_needs_the_lease_and_hides_the_run_until_it_wakes(db: TestDb) {
    use std::time::{Duration, SystemTime};
    let store = db.with_flow().await;
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

pub(super) async fn a_worker_whose_lease_was_taken_over_can_no_longer_write_the_run(db: TestDb) {
    use std::time::{Duration, SystemTime};
    // Two handles on one file, as two processes would have: A claims the
    // run, its lease expires, the sweep re-queues it and B claims it.
    let a = db.with_flow().await;
    let b = db.open().await;
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

pub(super) async fn fenced_step_writes_batched_together_each_get_their_own_answer(db: TestDb) {
    use std::time::{Duration, SystemTime};
    // Many concurrent writes are group-committed; the stale ones among
    // them must fail alone, the current ones commit.
    let store = db.with_flow().await;
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

pub(super) async fn the_sweep_recovers_running_runs_without_a_lease_and_claims_respect_live_ones(
    db: TestDb,
) {
    use std::time::{Duration, SystemTime};
    let store = db.with_flow().await;
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

pub(super) async fn claims_take_runs_by_priority_then_age(db: TestDb) {
    use std::time::{Duration, SystemTime};
    let store = db.with_flow().await;
    let mut ids = Vec::new();
    for priority in [
        Priority::Low,
        Priority::Critical,
        Priority::Normal,
        Priority::High,
        Priority::Critical,
    ] {
        let run = store.create_run(new_run("flow", priority)).await.unwrap();
        ids.push(run.id);
    }
    let lease = SystemTime::now() + Duration::from_secs(60);
    let first = store.claim_next_runs("w", lease, 3).await.unwrap();
    assert_eq!(
        first.iter().map(|c| c.run.id).collect::<Vec<_>>(),
        [ids[1], ids[4], ids[3]],
        "critical (oldest first), then high"
    );
    assert!(first.iter().all(|c| c.run.status == RunStatus::Running));
    assert!(first.iter().all(|c| c.run.started_at.is_some()));
    let next = store.claim_next_run("w", lease).await.unwrap().unwrap();
    assert_eq!(next.id, ids[2]);
    let last = store.claim_next_runs("w", lease, 10).await.unwrap();
    assert_eq!(last.iter().map(|c| c.run.id).collect::<Vec<_>>(), [ids[0]]);
    assert!(store.claim_next_run("w", lease).await.unwrap().is_none());
}

pub(super) async fn concurrent_claimers_take_each_run_once(db: TestDb) {
    use std::collections::HashSet;
    use std::time::{Duration, SystemTime};
    // Several handles (as several processes would have), several claimers
    // each, all racing for one queue: every run is taken exactly once.
    const RUNS: usize = 40;
    let first = db.with_flow().await;
    let handles = [first.clone(), db.open().await, db.open().await];
    let batch: Vec<_> = (0..RUNS)
        .map(|i| new_run("flow", Priority::ALL[i % Priority::ALL.len()]))
        .collect();
    let created = first.create_runs(batch).await.unwrap();
    assert_eq!(created.len(), RUNS);
    let lease = SystemTime::now() + Duration::from_secs(60);
    let mut claimers = tokio::task::JoinSet::new();
    for (i, store) in handles.iter().cycle().take(6).enumerate() {
        let store = store.clone();
        claimers.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .claim_next_runs(&format!("worker-{i}"), lease, 3)
                    .await?;
                if claimed.is_empty() {
                    return Ok::<_, StoreError>(mine);
                }
                mine.extend(claimed.into_iter().map(|c| (c.run.id, c.lease)));
            }
        });
    }
    let mut seen = HashSet::new();
    while let Some(joined) = claimers.join_next().await {
        for (id, lease) in joined.expect("claimer panicked").expect("claim failed") {
            assert!(seen.insert(id), "run {id} was claimed twice");
            assert_eq!(lease.epoch, 1, "claimed once, so epoch 1: {lease:?}");
        }
    }
    assert_eq!(seen.len(), RUNS);
    let expected: HashSet<_> = created.iter().map(|r| r.id).collect();
    assert_eq!(seen, expected);
}
