//! Servers share a PostgreSQL database: [`QueueStore::lock_for_server`]
//! takes a *shared* session-level advisory lock
//! (`pg_advisory_lock_shared`) on a connection of its own, kept open by the
//! returned [`ServerLock`], so any number of `omniflow serve` and `omniflow
//! worker` processes (on any number of machines) hold it at once. It is a
//! presence marker, not mutual exclusion: PostgreSQL releases it when that
//! session ends, however the process ends, and the connection names its
//! holder as its `application_name` (`omniflow server pid 1234 on host`),
//! which [`QueueStore::server_holding_lock`] reads back from `pg_locks` and
//! `pg_stat_activity` (so `omniflow runs resume` knows servers are there).
//!
//! What keeps the processes from stepping on each other is the database
//! itself: claims with `FOR NO KEY UPDATE SKIP LOCKED`, every write of a
//! run's worker fenced by its lease epoch, each schedule fire time a
//! compare-and-set (see `postgres.rs`).
//!
//! [`QueueStore::lock_for_server`]: crate::store::QueueStore::lock_for_server
//! [`QueueStore::server_holding_lock`]: crate::store::QueueStore::server_holding_lock

use sqlx::{Connection, PgConnection};

use super::PgStore;
use super::rows::sql_error;
use crate::store::{ServerLock, StoreError};

/// The advisory lock key of the server lock ("omniflow" in ASCII, which
/// keeps the sign bit clear).
const SERVER_LOCK_KEY: i64 = 0x6f6d_6e69_666c_6f77;

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
        let op = "announce this server on the database";
        let options = self.options.clone().application_name(&this_process());
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(sql_error(op))?;
        sqlx::query("SELECT pg_advisory_lock_shared($1)")
            .bind(SERVER_LOCK_KEY)
            .execute(&mut conn)
            .await
            .map_err(sql_error(op))?;
        Ok(ServerLock::held(conn))
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
}
