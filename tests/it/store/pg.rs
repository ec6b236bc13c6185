//! The PostgreSQL backend's test databases ([`postgres_db`]) and what only
//! PostgreSQL has (its server lock, connection errors).
//!
//! The server is `OMNIFLOW_TEST_POSTGRES_URL` (default
//! [`DEFAULT_POSTGRES_URL`]: trust auth, user `postgres`, database `test`).
//! Each test gets a database of its own, `omniflow_test_<uuid>`, created
//! through that URL and dropped (`WITH (FORCE)`) when the test's
//! [`TestDb`] goes. An unreachable server fails the test, saying so: these
//! tests never skip.

use omniflow::store::{self, StoreError};
use sqlx::Connection;

use super::TestDb;

/// Where the PostgreSQL tests run unless `OMNIFLOW_TEST_POSTGRES_URL` says otherwise.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server's URL (its maintenance database).
fn server_url() -> String {
    std::env::var("OMNIFLOW_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A connection to the server's maintenance database, or a failed test
/// saying how to get one.
async fn admin_connection(url: &str) -> sqlx::PgConnection {
    match sqlx::PgConnection::connect(url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "the PostgreSQL store tests need a PostgreSQL server: could not connect to {url}: {e}. \
             Start one (trust auth, user `postgres`, database `test`) or point \
             OMNIFLOW_TEST_POSTGRES_URL at one"
        ),
    }
}

/// PostgreSQL: a new, empty database on the test server (the tables are
/// created by the first `store::open`).
pub(crate) async fn postgres_db() -> TestDb {
    let server = server_url();
    let name = format!("omniflow_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = admin_connection(&server).await;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("creating the test database {name} on {server}: {e}"));
    let _ = admin.close().await;
    let mut url = url::Url::parse(&server).expect("OMNIFLOW_TEST_POSTGRES_URL is a URL");
    url.set_path(&name);
    TestDb {
        url: url.to_string(),
        _guard: Box::new(DropDatabase { server, name }),
    }
}

/// Drops the test database `name` when dropped.
struct DropDatabase {
    server: String,
    name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // A thread and runtime of its own: this may run inside the test's
        // runtime, which cannot block on a future.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                // FORCE: the store's pools may still hold connections.
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<_, String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop the test database {}: panicked", self.name),
        }
    }
}

#[tokio::test]
async fn servers_share_one_database_and_announce_themselves_until_dropped() {
    let db = postgres_db().await;
    let a = db.open().await;
    let b = db.open().await;
    assert_eq!(b.server_holding_lock().await.unwrap(), None);
    let held = a.lock_for_server().await.unwrap();
    let holder = b.server_holding_lock().await.unwrap();
    assert!(
        holder
            .as_deref()
            .is_some_and(|h| h.contains(&format!("pid {}", std::process::id()))),
        "{holder:?}"
    );
    // Scale-out: a second server (or worker) on the same database is welcome.
    let second = b.lock_for_server().await.unwrap();
    drop(held);
    assert!(b.server_holding_lock().await.unwrap().is_some());
    drop(second);
    // PostgreSQL releases the lock once it sees the session end.
    let mut gone = false;
    for _ in 0..100 {
        if b.server_holding_lock().await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "the lock outlived its sessions");
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_a_bad_url_is_config() {
    // Nothing listens on port 1.
    let err = store::open("postgres://postgres@127.0.0.1:1/omniflow")
        .await
        .err()
        .expect("no server there");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());

    let err = store::open("postgresql://postgres@127.0.0.1:5432/db?sslmode=sometimes")
        .await
        .err()
        .expect("an invalid option");
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
}

#[tokio::test]
async fn reopening_a_migrated_database_is_idempotent() {
    let db = postgres_db().await;
    let opens = (0..4).map(|_| store::open(&db.url));
    for opened in futures::future::join_all(opens).await {
        let store = opened.expect("every concurrent opener succeeds");
        assert!(store.list_workflows().await.unwrap().is_empty());
    }
    let again = db.open().await;
    assert!(again.list_workflows().await.unwrap().is_empty());
}

/// Claims skip what another transaction holds instead of waiting for it
/// (`SKIP LOCKED`): with the oldest queued run locked by another session, a
/// claim returns the next one at once. (Checked to fail without `SKIP
/// LOCKED`: the claim then waits for the lock and times out here.)
#[tokio::test]
async fn a_claim_skips_runs_another_transaction_holds() {
    use std::time::{Duration, SystemTime};

    use omniflow::store::Priority;

    let db = postgres_db().await;
    let store = db.with_flow().await;
    let first = store
        .create_run(super::new_run("flow", Priority::Normal))
        .await
        .unwrap();
    let second = store
        .create_run(super::new_run("flow", Priority::Normal))
        .await
        .unwrap();
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = other.begin().await.unwrap();
    sqlx::query("SELECT id FROM runs WHERE id = $1::uuid FOR UPDATE")
        .bind(first.id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let lease = SystemTime::now() + Duration::from_secs(60);
    let claimed = tokio::time::timeout(
        Duration::from_secs(3),
        store.claim_next_runs("worker", lease, 10),
    )
    .await
    .expect("the claim waited for the other transaction's lock")
    .unwrap();
    let ids: Vec<_> = claimed.iter().map(|c| c.run.id).collect();
    assert_eq!(ids, [second.id]);
    tx.rollback().await.unwrap();
    let rest = store.claim_next_runs("worker", lease, 10).await.unwrap();
    assert_eq!(
        rest.iter().map(|c| c.run.id).collect::<Vec<_>>(),
        [first.id]
    );
}

/// Another process's changes arrive as signals: a queued run, a finished
/// run (its id), a cancel request (its id).
#[tokio::test]
async fn queue_changes_are_signalled_to_other_processes() {
    use std::time::{Duration, SystemTime};

    use omniflow::store::{Priority, RunStatus, Signal};

    let db = postgres_db().await;
    let listener = db.open().await;
    let mut signals = listener.signals().expect("PostgreSQL has signals");
    let writer = db.with_flow().await;
    let mut next = async || loop {
        let signal = tokio::time::timeout(Duration::from_secs(5), signals.recv())
            .await
            .expect("no signal within 5 s")
            .unwrap();
        if signal != Signal::Resync {
            return signal;
        }
    };
    let run = writer
        .create_run(super::new_run("flow", Priority::Normal))
        .await
        .unwrap();
    assert_eq!(next().await, Signal::Queued);
    let claimed = writer
        .claim_next_runs("w", SystemTime::now() + Duration::from_secs(60), 1)
        .await
        .unwrap();
    assert!(writer.request_cancel(run.id).await.unwrap());
    assert_eq!(next().await, Signal::Cancel(run.id));
    assert_eq!(writer.cancel_requested(&[run.id]).await.unwrap(), [run.id]);
    writer
        .finish_run(&claimed[0].lease, RunStatus::Cancelled, Some("cancelled"))
        .await
        .unwrap();
    assert_eq!(next().await, Signal::Finished(run.id));
    assert!(
        !writer.request_cancel(run.id).await.unwrap(),
        "already finished"
    );
}

/// A database migrated by a newer OmniFlow is refused before anything
/// changes; `migrate` reports what it applied.
#[tokio::test]
async fn a_newer_schema_is_refused_and_migrate_reports() {
    let db = postgres_db().await;
    let report = store::migrate(&db.url).await.unwrap();
    assert_eq!(report.backend, "postgres");
    assert!(report.applied.len() >= 6, "{report:?}");
    let again = store::migrate(&db.url).await.unwrap();
    assert!(again.applied.is_empty());
    assert_eq!(again.version, report.version);
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let err = store::open(&db.url).await.err().expect("refused");
    assert!(matches!(err, StoreError::Migration(_)), "{err:?}");
    assert!(err.to_string().contains("version 9999"), "{err}");
}
