//! One server per database: [`QueueStore::lock_for_server`] takes a
//! session-level advisory lock (`pg_try_advisory_lock`) on a connection of
//! its own, kept open by the returned [`ServerLock`]. PostgreSQL releases
//! it when that session ends, however the process ends (the socket
//! closes). The connection announces the holder as its `application_name`
//! (`omniflow server pid 1234 on host`), which
//! [`QueueStore::server_holding_lock`] reads back from `pg_locks` and
//! `pg_stat_activity`.
//!
//! Why a lock and not none (which the trait allows, relying on fencing
//! alone): `omniflow serve` runs the scheduler, the lease sweep and the
//! API together and assumes it is alone, as on SQLite; the scale-out
//! workers (`omniflow worker`, not built yet) are meant to share the
//! database without this lock, protected by fencing. The lock is as good
//! as its connection: should the connection drop, the lock is gone
//! (fencing by lease epoch still protects every run).
//!
//! [`QueueStore::lock_for_server`]: crate::store::QueueStore::lock_for_server
//! [`QueueStore::server_holding_lock`]: crate::store::QueueStore::server_holding_lock

use std::time::Duration;

use sqlx::{Connection, PgConnection};

use super::PgStore;
use super::rows::sql_error;
use crate::store::{ServerLock, StoreError};

/// The advisory lock key of the server lock ("omniflow" in ASCII, which
/// keeps the sign bit clear).
const SERVER_LOCK_KEY: i64 = 0x6f6d_6e69_666c_6f77;
/// Tries at taking the lock: a server that just stopped releases it when
/// PostgreSQL notices its session ended, a moment later.
const LOCK_TRIES: u32 = 25;
const LOCK_RETRY: Duration = Duration::from_millis(20);

/// This process as the lock's holder names it.
fn this_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    let mut name = format!("omniflow server pid {}", std::process::id());
    if let Some(host) = host {
        name.push_str(" on ");
        name.push_str(&host);
    }
    // PostgreSQL keeps at most 63 bytes of an application_name.
    name.chars().take(60).collect()
}

impl PgStore {
    /// [`QueueStore::lock_for_server`](crate::store::QueueStore::lock_for_server).
    pub(super) async fn take_server_lock(&self) -> Result<ServerLock, StoreError> {
        let op = "lock the database for this server";
        let options = self.options.clone().application_name(&this_process());
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(sql_error(op))?;
        for _ in 0..LOCK_TRIES {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(SERVER_LOCK_KEY)
                .fetch_one(&mut conn)
                .await
                .map_err(sql_error(op))?;
            if locked {
                return Ok(ServerLock::held(conn));
            }
            tokio::time::sleep(LOCK_RETRY).await;
        }
        let holder = self
            .probe_server_lock()
            .await?
            .unwrap_or_else(|| "holder unknown".to_owned());
        let _ = conn.close().await;
        Err(StoreError::Locked(format!(
            "another OmniFlow server ({holder}) is running on the PostgreSQL database {}: \
             stop it first, or start this one on another database",
            self.database_name()
        )))
    }

    /// [`QueueStore::server_holding_lock`](crate::store::QueueStore::server_holding_lock).
    pub(super) async fn probe_server_lock(&self) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>, i32)> = sqlx::query_as(
            "SELECT a.application_name, l.pid FROM pg_locks l \
             LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND ((l.classid::bigint << 32) | l.objid::bigint) = $1 \
             LIMIT 1",
        )
        .bind(SERVER_LOCK_KEY)
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error("probe the server lock"))?;
        Ok(
            row.map(|(name, backend)| match name.filter(|n| !n.is_empty()) {
                Some(name) => format!("{name}, PostgreSQL backend {backend}"),
                None => format!("PostgreSQL backend {backend}"),
            }),
        )
    }

    /// The database's name, for messages.
    fn database_name(&self) -> String {
        let host = self.options.get_host();
        match self.options.get_database() {
            Some(db) => format!("{db:?} on {host}"),
            None => format!("on {host}"),
        }
    }
}
