//! The durable store.
//!
//! Every behaviour the store traits promise is a case of ONE contract
//! suite (`runs.rs`: workflows, runs, steps; `leases.rs`: the queue,
//! leases, fencing; `server.rs`: deletes, tokens, webhooks, schedules,
//! secrets, cancel and retry, stats), run against every backend by `store_contract!`: a
//! backend is a function giving a fresh, empty database ([`TestDb`]), and
//! one `store_contract!(name, fresh_db)` line below runs every case on it
//! (test names `store::<backend>::<case>`): SQLite (a file in a temporary
//! directory) and PostgreSQL (a database of its own per test on the server
//! of `OMNIFLOW_TEST_POSTGRES_URL`, see `pg.rs`; unreachable, the
//! tests fail).
//!
//! What only one backend has (SQLite's file, its WAL journal, its server
//! lock file, `sqlite::memory:`) is tested on its own at the end;
//! PostgreSQL's in `pg.rs`.

mod leases;
pub(crate) mod pg;
mod pieces;
mod runs;
mod server;

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use omniflow::store::{
    self, AttemptRecord, NewRun, Priority, RunStatus, RunStore, SqliteStore, StepRecord,
    StepStatus, Store, StoreError, WorkflowStore,
};
use serde_json::json;

/// A fresh, empty database of one backend. Handles opened on it see the
/// same data, as separate processes would; it lives as long as this value.
pub(crate) struct TestDb {
    /// What [`store::open`] takes to reach it.
    pub(crate) url: String,
    /// Whatever must outlive the database (a temporary directory).
    _guard: Box<dyn Any + Send>,
}

impl TestDb {
    /// A new handle on the database.
    pub(crate) async fn open(&self) -> Arc<dyn Store> {
        store::open(&self.url).await.expect("open store")
    }

    /// A new handle on the database, after saving workflow `flow` (one
    /// step, `a`) as version 1.
    async fn with_flow(&self) -> Arc<dyn Store> {
        let store = self.open().await;
        store
            .save_workflow("flow", &json!({"steps": [{"id": "a"}]}))
            .await
            .expect("save");
        store
    }
}

/// Run every contract case against one backend: `store_contract!(name,
/// fresh)` makes the module `name` with one test per case, each on the
/// database `fresh().await` gives. A new case is an `async fn
/// case(db: TestDb)` in `runs.rs` or `leases.rs`, listed here once.
macro_rules! store_contract {
    ($backend:ident, $fresh:expr) => {
        store_contract!(@cases $backend, $fresh;
            #[tokio::test] runs::save_workflow_versions_only_on_change,
            #[tokio::test] runs::create_run_round_trips,
            #[tokio::test] runs::create_run_for_unknown_workflow_version_is_not_found,
            #[tokio::test] runs::status_transitions_set_times,
            #[tokio::test] runs::cancelling_a_queued_run_measures_from_creation,
            #[tokio::test] runs::terminal_run_refuses_further_transitions,
            #[tokio::test] runs::record_step_upserts_and_keeps_attempts_in_order,
            #[tokio::test] runs::record_step_for_unknown_run_is_not_found_and_writes_nothing,
            #[tokio::test] runs::a_failed_step_write_leaves_no_transaction_open_behind_the_next,
            #[tokio::test] runs::list_runs_filters_and_orders_newest_first,
            #[tokio::test] runs::unfinished_runs_are_queued_or_running_oldest_first,
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)] runs::concurrent_writers_do_not_hit_database_is_locked,
            #[tokio::test] leases::parking_needs_the_lease_and_hides_the_run_until_it_wakes,
            #[tokio::test] leases::a_worker_whose_lease_was_taken_over_can_no_longer_write_the_run,
            #[tokio::test] leases::fenced_step_writes_batched_together_each_get_their_own_answer,
            #[tokio::test] leases::the_sweep_recovers_running_runs_without_a_lease_and_claims_respect_live_ones,
            #[tokio::test] leases::claims_take_runs_by_priority_then_age,
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)] leases::concurrent_claimers_take_each_run_once,
            #[tokio::test] server::deleting_a_workflow_hides_it_and_drops_its_webhook_and_schedule,
            #[tokio::test] server::the_first_token_is_created_once_and_revoked_tokens_stop_working,
            #[tokio::test] server::webhook_deliveries_are_replays_until_forgotten,
            #[tokio::test] server::schedules_keep_their_fire_time_and_each_fire_time_fires_once,
            #[tokio::test] server::sealed_secrets_are_replaced_listed_by_name_and_deleted,
            #[tokio::test] server::a_cancelled_run_is_retried_from_where_it_stopped,
            #[tokio::test] server::create_runs_is_all_or_nothing,
            #[tokio::test] server::queue_stats_count_queued_by_priority_runs_by_status_and_fuel,
            #[tokio::test] server::test_runs_are_filtered_and_left_out_of_stats_unless_asked,
            #[tokio::test] pieces::pieces_install_once_refuse_other_bytes_and_keep_pinned_ones,
            #[tokio::test] server::pruning_deletes_old_finished_runs_with_their_steps_only,
        );
    };
    (@cases $backend:ident, $fresh:expr; $(#[$test:meta] $file:ident :: $case:ident,)*) => {
        mod $backend {
            use super::*;
            $(
                #[$test]
                async fn $case() {
                    $file::$case($fresh().await).await;
                }
            )*
        }
    };
}

// The backends. One line per backend.
store_contract!(sqlite, sqlite_db);
store_contract!(postgres, pg::postgres_db);

/// SQLite: a file (not created yet) in a fresh temporary directory.
async fn sqlite_db() -> TestDb {
    let (dir, path) = temp_db();
    TestDb {
        url: path.to_str().expect("utf-8 path").to_owned(),
        _guard: Box::new(dir),
    }
}

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

// SQLite only: its file, WAL journal, lock file and in-memory database;
// and the enums, which need no backend.

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
async fn open_memory_shares_one_database() {
    let store = store::open("sqlite::memory:").await.expect("memory store");
    let saved = store.save_workflow("m", &json!({"a": 1})).await.unwrap();
    // The single in-memory database is shared by every call.
    assert_eq!(store.get_workflow("m", None).await.unwrap(), Some(saved));
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

#[tokio::test]
async fn sqlite_migrate_reports_and_a_newer_schema_is_refused() {
    let (_dir, path) = temp_db();
    let url = path.to_string_lossy().to_string();
    let report = store::migrate(&url).await.unwrap();
    assert_eq!(report.backend, "sqlite");
    assert!(report.applied.len() >= 6, "{report:?}");
    assert!(store::migrate(&url).await.unwrap().applied.is_empty());
    let conn = SqliteStore::open(&url).await.unwrap();
    conn.close().await;
    let mut raw = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!("sqlite:{url}"))
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    let err = store::open(&url).await.err().expect("refused");
    assert!(matches!(err, StoreError::Migration(_)), "{err:?}");
    assert!(err.to_string().contains("version 9999"), "{err}");
}

/// Migration 0009 rebuilds `step_runs` and `attempts` as WITHOUT ROWID
/// tables: rows written under the old schema are all there afterwards,
/// and the foreign keys still cascade.
#[tokio::test]
async fn step_records_survive_the_without_rowid_rebuild() {
    use sqlx::Connection as _;
    let (_dir, path) = temp_db();
    let mut raw = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true),
    )
    .await
    .unwrap();
    let all = sqlx::migrate!("../migrations/sqlite");
    let mut before = sqlx::migrate::Migrator::DEFAULT;
    before.migrations = all
        .migrations
        .iter()
        .filter(|m| m.version < 9)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&mut raw).await.unwrap();
    let run = uuid::Uuid::now_v7().to_string();
    for sql in [
        "INSERT INTO workflows (name, created_at) VALUES ('w', '2026-12-04T00:00:00.000Z')"
            .to_owned(),
        "INSERT INTO workflow_versions (workflow_name, version, definition, created_at) \
         VALUES ('w', 1, '{}', '2026-12-04T00:00:00.000Z')"
            .to_owned(),
        format!(
            "INSERT INTO runs (id, workflow_name, workflow_version, status, priority, trigger, vars, created_at) \
             VALUES ('{run}', 'w', 1, 'failed', 1, '{{\"type\":\"manual\"}}', '{{}}', '2026-12-04T00:00:00.000Z')"
        ),
        format!(
            "INSERT INTO step_runs (run_id, step_id, status, input, output, logs, attempts, fuel_used, \
             duration_ms, started_at, finished_at, tries) VALUES \
             ('{run}', 'b', 'failed', '{{\"n\":2}}', NULL, 'log b', 2, 7, 3, '2026-12-04T00:00:01.000Z', \
              '2026-12-04T00:00:02.000Z', 2), \
             ('{run}', 'a', 'succeeded', '{{\"n\":1}}', '{{\"ok\":true}}', '', 1, 5, 1, \
              '2026-12-04T00:00:00.500Z', '2026-12-04T00:00:00.600Z', 1)"
        ),
        format!(
            "INSERT INTO attempts (run_id, step_id, attempt, status, input, output, error_class, error_message, \
             logs, fuel_used, duration_ms, started_at, finished_at) VALUES \
             ('{run}', 'a', 1, 'succeeded', '{{\"n\":1}}', '{{\"ok\":true}}', NULL, NULL, '', 5, 1, \
              '2026-12-04T00:00:00.500Z', '2026-12-04T00:00:00.600Z'), \
             ('{run}', 'b', 1, 'failed', '{{\"n\":2}}', NULL, 'trap', 'boom', 'log b', 3, 1, \
              '2026-12-04T00:00:01.000Z', '2026-12-04T00:00:01.500Z'), \
             ('{run}', 'b', 2, 'failed', '{{\"n\":2}}', NULL, 'trap', 'boom again', '', 4, 2, \
              '2026-12-04T00:00:01.500Z', '2026-12-04T00:00:02.000Z')"
        ),
    ] {
        sqlx::query(&sql).execute(&mut raw).await.unwrap();
    }
    raw.close().await.unwrap();

    let store = open_at(&path).await;
    let id: omniflow::store::RunId = run.parse().unwrap();
    let steps = store.steps(id).await.unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s.step_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(steps[1].logs, "log b");
    assert_eq!(
        (steps[1].attempts, steps[1].tries, steps[1].fuel_used),
        (2, 2, 7)
    );
    assert_eq!(steps[0].output, Some(json!({"ok": true})));
    let attempts = store.run_attempts(id).await.unwrap();
    let seen: Vec<(String, u32, Option<String>)> = attempts
        .iter()
        .map(|(step, a)| (step.clone(), a.attempt, a.error_message.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("a".to_owned(), 1, None),
            ("b".to_owned(), 1, Some("boom".to_owned())),
            ("b".to_owned(), 2, Some("boom again".to_owned())),
        ]
    );
    drop(store);

    let mut raw = sqlx::SqliteConnection::connect_with(
        &sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .foreign_keys(true),
    )
    .await
    .unwrap();
    for table in ["step_runs", "attempts"] {
        let sql: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = ?")
            .bind(table)
            .fetch_one(&mut raw)
            .await
            .unwrap();
        assert!(sql.contains("WITHOUT ROWID"), "{sql}");
    }
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE name IN ('step_runs_rowid', 'attempts_rowid')",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!(leftovers, 0);
    sqlx::query("DELETE FROM runs")
        .execute(&mut raw)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM step_runs) + (SELECT count(*) FROM attempts)",
    )
    .fetch_one(&mut raw)
    .await
    .unwrap();
    assert_eq!(
        left, 0,
        "deleting the run cascades to its steps and attempts"
    );
}
