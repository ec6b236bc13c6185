//! Schema migrations, shared by both backends: each applies its own
//! embedded set (`migrations/sqlite/`, `migrations/postgres/`) with sqlx's
//! migrator on open; this module refuses a database migrated by a newer
//! OmniFlow (a version this binary does not know) before anything is
//! applied, and describes what was applied ([`migrate`], `omniflow migrate`).

use sqlx::migrate::Migrator;

use super::StoreError;

/// What applying the migrations did to one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Migrations applied now: (version, description), in order.
    pub applied: Vec<(i64, String)>,
    /// The schema version the database is at now.
    pub version: i64,
}

/// The newest version `migrator` knows.
pub(crate) fn latest(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Refuse a database whose applied versions (`applied`, read from
/// `_sqlx_migrations`; empty for a new database) include one `migrator`
/// does not know: a newer OmniFlow migrated it, and this one would
/// misread its tables.
pub(crate) fn refuse_newer(migrator: &Migrator, applied: &[i64]) -> Result<(), StoreError> {
    let known = latest(migrator);
    match applied
        .iter()
        .filter(|v| !migrator.iter().any(|m| m.version == **v))
        .max()
    {
        Some(unknown) => Err(StoreError::Migration(format!(
            "the database's schema is at version {unknown}, which this omniflow ({}) does not \
             know (it knows versions up to {known}): a newer OmniFlow migrated it; run that \
             version, or upgrade this one",
            env!("CARGO_PKG_VERSION")
        ))),
        None => Ok(()),
    }
}

/// The report after migrating: `before` the versions applied before,
/// `after` those applied now.
pub(crate) fn report(
    backend: &'static str,
    migrator: &Migrator,
    before: &[i64],
    after: &[i64],
) -> MigrationReport {
    let applied = migrator
        .iter()
        .filter(|m| after.contains(&m.version) && !before.contains(&m.version))
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    MigrationReport {
        backend,
        applied,
        version: after.iter().copied().max().unwrap_or(0),
    }
}

/// Apply the pending migrations of the database at `url_or_path` (either
/// backend, as [`super::open`] takes it) and say what was done.
pub async fn migrate(url_or_path: &str) -> Result<MigrationReport, StoreError> {
    if super::is_postgres_url(url_or_path) {
        Ok(super::PgStore::open(url_or_path).await?.migration_report())
    } else {
        Ok(super::SqliteStore::open(url_or_path)
            .await?
            .migration_report())
    }
}
