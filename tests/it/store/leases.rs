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
