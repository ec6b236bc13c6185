//! SQL for [`ScheduleStore`]: cron schedules; each fire time is claimed
//! with a compare-and-set on `next_fire_at` (a concurrent scheduler's
//! `UPDATE` waits for the row, then finds the fire time moved).

use std::time::SystemTime;

use sqlx::postgres::PgRow;

use super::PgStore;
use super::rows::{get, is_foreign_key_violation, sql_error};
use super::runs::insert_run;
use crate::store::{NewRun, RunRecord, ScheduleRecord, ScheduleStore, StoreError, rfc3339};

fn schedule_from_row(row: &PgRow) -> Result<ScheduleRecord, StoreError> {
    Ok(ScheduleRecord {
        workflow_name: get(row, "workflow_name")?,
        cron: get(row, "cron")?,
        timezone: get(row, "timezone")?,
        missed: get(row, "missed")?,
        next_fire_at: get(row, "next_fire_at")?,
        last_fired_at: get(row, "last_fired_at")?,
    })
}

const SCHEDULE_COLUMNS: &str = concat!(
    "workflow_name, cron, timezone, missed, ",
    ts!("", "next_fire_at"),
    ", ",
    ts!("", "last_fired_at")
);

#[async_trait::async_trait]
impl ScheduleStore for PgStore {
    async fn sync_schedule(
        &self,
        workflow: &str,
        schedule: Option<(&str, &str, &str, SystemTime)>,
    ) -> Result<(), StoreError> {
        let Some((cron, timezone, missed, next)) = schedule else {
            sqlx::query("DELETE FROM schedules WHERE workflow_name = $1")
                .bind(workflow)
                .execute(&self.pool)
                .await
                .map_err(sql_error("delete schedule"))?;
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO schedules (workflow_name, cron, timezone, missed, next_fire_at) \
             VALUES ($1, $2, $3, $4, $5::timestamptz) \
             ON CONFLICT (workflow_name) DO UPDATE SET cron = excluded.cron, \
             timezone = excluded.timezone, missed = excluded.missed, \
             next_fire_at = excluded.next_fire_at \
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
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound(format!("workflow {workflow:?}"))
            } else {
                sql_error("save schedule")(e)
            }
        })?;
        Ok(())
    }

    async fn due_schedules(&self, now: SystemTime) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE schedules.next_fire_at <= $1::timestamptz \
             ORDER BY schedules.next_fire_at"
        ))
        .bind(rfc3339(now))
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error("due schedules"))?;
        rows.iter().map(schedule_from_row).collect()
    }

    async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY workflow_name COLLATE \"C\""
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
        let op = "fire schedule";
        let mut tx = self.pool.begin().await.map_err(sql_error(op))?;
        let moved = sqlx::query(
            "UPDATE schedules SET next_fire_at = $3::timestamptz, last_fired_at = $2::timestamptz \
             WHERE workflow_name = $1 AND next_fire_at = $2::timestamptz",
        )
        .bind(workflow)
        .bind(fire_at)
        .bind(rfc3339(next))
        .execute(&mut *tx)
        .await
        .map_err(sql_error(op))?
        .rows_affected();
        if moved == 0 {
            return Ok(None);
        }
        let record = match run {
            Some(run) => Some(insert_run(&mut *tx, run, None).await?),
            None => None,
        };
        tx.commit().await.map_err(sql_error(op))?;
        if record.is_some() {
            self.announce(crate::store::QUEUE_CHANNEL, "").await;
        }
        Ok(record)
    }
}
