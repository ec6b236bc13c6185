//! The wire documents of the smaller endpoints (health, readiness, stats,
//! schedules, validation, webhook secrets, the secret list): typed like
//! [`super::dto`]'s, so every success body in the OpenAPI document has a
//! schema.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{ScheduleRecord, SealedSecret};
use crate::workflow::ValidationError;

/// `GET /health` (`ok`) and `GET /ready` (`ready`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (the process answers) or `ready` (database and workers too).
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The worker pool's size and load.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkerLoad {
    /// Runs it may execute at once.
    pub capacity: usize,
    /// Runs it executes now.
    pub busy: usize,
}

/// `GET /stats`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Stats {
    /// Queued runs by priority (`critical`, `high`, `normal`, `low`).
    pub queued_by_priority: BTreeMap<String, u64>,
    /// Queued runs in all.
    pub queued: u64,
    /// Runs executing now (in any process).
    pub running: u64,
    /// Every run by status.
    pub runs_by_status: BTreeMap<String, u64>,
    /// Runs finished in the last minute, by status.
    pub finished_last_minute: BTreeMap<String, u64>,
    /// Runs finished per second over the last minute.
    pub throughput_runs_per_s: f64,
    /// This process's worker pool.
    pub workers: WorkerLoad,
    /// Seconds since this process started.
    pub uptime_s: u64,
}

/// A cron trigger with its next fire time.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ScheduleDocument {
    /// The workflow it starts.
    pub workflow_name: String,
    /// The cron expression (`0 */6 * * *`).
    pub cron: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
    /// Missed-fire policy: `run_once` or `skip`.
    pub missed: String,
    /// The next fire time (RFC 3339 UTC).
    pub next_fire_at: String,
    /// The fire time handled last, if any.
    pub last_fired_at: Option<String>,
}

impl From<ScheduleRecord> for ScheduleDocument {
    fn from(r: ScheduleRecord) -> Self {
        ScheduleDocument {
            workflow_name: r.workflow_name,
            cron: r.cron,
            timezone: r.timezone,
            missed: r.missed,
            next_fire_at: r.next_fire_at,
            last_fired_at: r.last_fired_at,
        }
    }
}

/// `GET /schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ScheduleList {
    /// Every cron trigger.
    pub schedules: Vec<ScheduleDocument>,
}

/// One problem of a workflow: where, and what.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Problem {
    /// The step and field (`steps.greet.input.template`) or `workflow`.
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl From<&ValidationError> for Problem {
    fn from(p: &ValidationError) -> Self {
        Problem {
            at: p.at.clone(),
            message: p.message.clone(),
        }
    }
}

/// `POST /workflows:validate`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ValidationReport {
    /// No problems.
    pub valid: bool,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

/// `PUT /workflows/{name}/webhook`: the new secret, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WebhookSecret {
    /// The workflow.
    pub workflow: String,
    /// `whsec_` + 64 hex characters.
    pub secret: String,
    /// Where deliveries go (`/hooks/{name}`).
    pub url: String,
    /// The header carrying the signature.
    pub signature_header: String,
}

/// A stored secret's name and date, never its value.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SecretName {
    /// The secret's name.
    pub name: String,
    /// When it was last written (RFC 3339).
    pub updated_at: String,
}

impl From<&SealedSecret> for SecretName {
    fn from(s: &SealedSecret) -> Self {
        SecretName {
            name: s.name.clone(),
            updated_at: s.updated_at.clone(),
        }
    }
}

/// `GET /secrets`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SecretList {
    /// Every stored secret, names and dates only.
    pub secrets: Vec<SecretName>,
}
