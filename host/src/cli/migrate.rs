//! `omniflow migrate`: apply a database's pending migrations and say what
//! was done (either backend; a database migrated by a newer OmniFlow is
//! refused before anything changes).

use anyhow::{Context, Result};

use super::config::Database;

pub(crate) async fn migrate(db: &Database) -> Result<bool> {
    let report = omniflow::store::migrate(&db.url())
        .await
        .with_context(|| format!("migrating the database {db}"))?;
    if report.applied.is_empty() {
        println!(
            "{db} ({}): up to date at schema version {}",
            report.backend, report.version
        );
    } else {
        for (version, description) in &report.applied {
            println!("applied {version} {description}");
        }
        println!(
            "{db} ({}): {} migration(s) applied, now at schema version {}",
            report.backend,
            report.applied.len(),
            report.version
        );
    }
    Ok(true)
}
