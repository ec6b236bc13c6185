//! SQL for [`ScheduleStore`]: cron schedules; each fire time is claimed
//! with a compare-and-set on `next_fire_at`.

use std::time::SystemTime;

use sqlx::sqlite::SqliteRow;

use super::SqliteStore;
use super::rows::{get, sql_error};
use super::runs::{insert_run, new_record, unknown_workflow};
use crate::store::{NewRun, RunRecord, ScheduleRecord, ScheduleStore, StoreError, rfc3339};

fn schedule_from_row(row: &SqliteRow) -> Result<ScheduleRecord, StoreError> {
    Ok(ScheduleRecord {
        workflow_name: get(row, "workflow_name")?,
        cron: get(row, "cron")?,
        timezone: get(row, "timezone")?,
        missed: get(row, "missed")?,
        next_fire_at: get(row, "next_fire_at")?,
        last_fired_at: get(row, "last_fired_at")?,
    })
}

const SCHEDULE_COLUMNS: &str = "workflow_name, cron, timezone, missed, next_fire_at, last_fired_at";

#[async_trait::async_trait]
impl ScheduleStore for SqliteStore {
    async fn sync_schedule(
        &self,
        workflow: &str,
        schedule: Option<(&str, &str, &str, SystemTime)>,
    ) -> Result<(), StoreError> {
        let Some((cron, timezone, missed, next)) = schedule else {
            sqlx::query("DELETE FROM schedules WHERE workflow_name = ?1")
                .bind(workflow)
                .execute(&self.pool)
                .await
                .map_err(sql_error("delete schedule"))?;
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO schedules (workflow_name, cron, timezone, missed, next_fire_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (workflow_name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, \
             missed = excluded.missed, next_fire_at = excluded.next_fire_at \
             WHERE schedules.cron <> excluded.cron OR schedules.timezone <> excluded.timezone \
             OR schedules.missed <> excluded.missed",
        )
        .bind(workflow)
        .bind(cron)
        .bind(timezone)
        .bind(missed)
        .bind(rfc3339(next))
        .execute(&self.pool)
        .await
        .map_err(|e| match sql_error("save schedule")(e) {
            StoreError::Constraint(_) => StoreError::NotFound(format!("workflow {workflow:?}")),
            other => other,
        })?;
        Ok(())
    }

    async fn due_schedules(&self, now: SystemTime) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE next_fire_at <= ?1 ORDER BY next_fire_at"
        ))
        .bind(rfc3339(now))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("due schedules"))?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY workflow_name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("list schedules"))?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn fire_schedule(
        &self,
        workflow: &str,
        fire_at: &str,
        next: SystemTime,
        run: Option<NewRun>,
    ) -> Result<Option<RunRecord>, StoreError> {
        let record = run.map(|run| new_record(run, false));
        let next = rfc3339(next);
        let moved = self
            .direct("fire schedule", |conn| {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let moved = tx
                    .prepare_cached(
                        "UPDATE schedules SET next_fire_at = ?3, last_fired_at = ?2 \
                         WHERE workflow_name = ?1 AND next_fire_at = ?2",
                    )?
                    .execute(rusqlite::params![workflow, fire_at, next])?;
                if moved == 0 {
                    return Ok(false);
                }
                if let Some(record) = &record {
                    insert_run(&tx, record, None)?;
                }
                tx.commit()?;
                Ok(true)
            })
            .await;
        let moved = match (&record, moved) {
            (Some(record), Err(e)) => return Err(unknown_workflow(record)(e)),
            (None, Err(e)) => return Err(e),
            (_, Ok(moved)) => moved,
        };
        Ok(if moved { record } else { None })
    }
}
