//! The run page (`/ui/runs/{id}`): the workflow's graph coloured by step
//! state, the timeline of every attempt, each step's input, output, error,
//! logs and attempts, the trigger and vars; cancel and retry buttons.
//! `?fragment=1` renders only the part that changes while the run
//! executes (the page's script swaps it in on every event of the run's
//! SSE stream, `/ui/runs/{id}/events`, the API's own stream).

use std::collections::HashMap;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::format::{ago, duration_ms, fuel};
use super::graph::{self, Layout};
use super::timeline::{self, parse_time};
use super::{ConsoleError, render};
use crate::api::ApiState;
use crate::api::runs::{existing, run_id};
use crate::store::{AttemptRecord, RunId, RunRecord, RunStatus, StepRecord, StepStatus};
use crate::workflow::Workflow;
use crate::workflow::graph::Dag;

/// `?fragment=1`: only the live part.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Fragment {
    #[serde(default)]
    fragment: Option<String>,
}

impl Fragment {
    pub(super) fn wanted(
        q: Result<Query<Fragment>, axum::extract::rejection::QueryRejection>,
    ) -> bool {
        q.ok()
            .and_then(|Query(f)| f.fragment)
            .is_some_and(|f| f == "1")
    }
}

/// A step's box in the graph.
#[derive(Debug, Serialize)]
struct NodeView {
    id: String,
    /// The id, shortened to fit the box.
    label: String,
    status: String,
    x: f64,
    y: f64,
    w: f64,
    h: f64,
    sub: String,
    sub_short: String,
}

/// `text` cut to `max` characters (an ellipsis marks the cut).
fn fit(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

/// A step's details.
#[derive(Debug, Serialize)]
struct StepView {
    id: String,
    piece: String,
    action: String,
    status: String,
    attempts: u32,
    duration: String,
    fuel: String,
    started: Option<When>,
    input: Option<String>,
    output: Option<String>,
    error_class: Option<String>,
    error_message: Option<String>,
    /// The log line naming the grant a denied request needs.
    grant_hints: Vec<String>,
    logs: String,
    attempt_rows: Vec<AttemptView>,
    open: bool,
}

#[derive(Debug, Serialize)]
struct AttemptView {
    attempt: u32,
    status: String,
    duration: String,
    fuel: String,
    started: Option<When>,
    error: Option<String>,
}

/// A time: relative for reading, exact for the tooltip.
#[derive(Debug, Serialize)]
pub(super) struct When {
    pub(super) ago: String,
    pub(super) exact: String,
}

impl When {
    pub(super) fn of(text: Option<&str>, now: SystemTime) -> Option<When> {
        let text = text?;
        Some(When {
            ago: parse_time(text).map_or_else(|| text.to_owned(), |t| ago(t, now)),
            exact: text.to_owned(),
        })
    }
}

/// The last 8 characters of a run id (UUID v7: the random part), as shown.
pub(super) fn short_id(id: RunId) -> String {
    let text = id.to_string();
    text[text.len() - 8..].to_owned()
}

/// What started the run (`manual`, `webhook`, ...), as stored.
pub(super) fn trigger_type(run: &RunRecord) -> String {
    run.trigger
        .get("type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("manual")
        .to_owned()
}

/// The run's total time, humanised, once it has one.
pub(super) fn run_duration(run: &RunRecord) -> Option<String> {
    run.total_time_ms.map(|ms| duration_ms(ms.max(0) as u64))
}

fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn step_view(
    record: &StepRecord,
    attempts: &[AttemptRecord],
    piece: String,
    action: String,
    now: SystemTime,
) -> StepView {
    let grant_hints = record
        .logs
        .lines()
        .chain(attempts.iter().flat_map(|a| a.logs.lines()))
        .filter(|l| l.contains("grants.http"))
        .map(str::to_owned)
        .fold(Vec::new(), |mut seen, l| {
            if !seen.contains(&l) {
                seen.push(l);
            }
            seen
        });
    StepView {
        id: record.step_id.clone(),
        piece,
        action,
        status: record.status.to_string(),
        attempts: record.attempts,
        duration: duration_ms(record.duration_ms),
        fuel: fuel(record.fuel_used),
        started: When::of(record.started_at.as_deref(), now),
        input: record.input.as_ref().map(pretty),
        output: record.output.as_ref().map(pretty),
        error_class: record.error_class.clone(),
        error_message: record.error_message.clone(),
        open: record.status == StepStatus::Failed || !grant_hints.is_empty(),
        grant_hints,
        logs: record.logs.clone(),
        attempt_rows: attempts
            .iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                status: a.status.to_string(),
                duration: duration_ms(a.duration_ms),
                fuel: fuel(a.fuel_used),
                started: When::of(Some(&a.started_at), now),
                error: a
                    .error_class
                    .as_ref()
                    .map(|c| format!("{c}: {}", a.error_message.as_deref().unwrap_or(""))),
            })
            .collect(),
    }
}

/// Everything the page (or its live fragment) shows.
#[derive(Debug, Serialize)]
struct RunPage {
    title: String,
    nav: &'static str,
    run: RunView,
    graph: Option<Layout>,
    nodes: Vec<NodeView>,
    timeline: timeline::Timeline,
    steps: Vec<StepView>,
    trigger: String,
    vars: String,
}

#[derive(Debug, Serialize)]
struct RunView {
    id: String,
    short: String,
    workflow: String,
    version: i64,
    status: String,
    terminal: bool,
    retryable: bool,
    test: bool,
    trigger_type: String,
    priority: String,
    created: Option<When>,
    started: Option<When>,
    finished: Option<When>,
    duration: Option<String>,
    error: Option<String>,
}

async fn read(state: &ApiState, run: &RunRecord) -> Result<RunPage, ConsoleError> {
    let store = state.store();
    let now = SystemTime::now();
    let workflow = store
        .get_workflow(&run.workflow_name, Some(run.workflow_version))
        .await?
        .and_then(|w| serde_json::from_value::<Workflow>(w.definition).ok());
    let records = store.steps(run.id).await?;
    let mut by_id: HashMap<String, StepRecord> = records
        .into_iter()
        .map(|r| (r.step_id.clone(), r))
        .collect();
    // The workflow's steps in its order (pending ones included), then
    // what else was recorded (the failure/success handlers).
    let mut rows: Vec<(StepRecord, String, String)> = Vec::new();
    if let Some(w) = &workflow {
        for step in &w.steps {
            let record = by_id
                .remove(&step.id)
                .unwrap_or_else(|| StepRecord::pending(&step.id));
            rows.push((record, step.piece.to_string(), step.action.clone()));
        }
    }
    let mut rest: Vec<StepRecord> = by_id.into_values().collect();
    rest.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    for record in rest {
        let (piece, action) = match (&workflow, record.step_id.as_str()) {
            (Some(w), "$on_failure") => w
                .on_failure
                .as_ref()
                .map(|h| (h.piece.to_string(), h.action.clone())),
            (Some(w), "$on_success") => w
                .on_success
                .as_ref()
                .map(|h| (h.piece.to_string(), h.action.clone())),
            _ => None,
        }
        .unwrap_or_default();
        rows.push((record, piece, action));
    }
    let mut attempts_by_step = store.attempts_by_step(run.id).await?;
    let with_attempts: Vec<_> = rows
        .iter()
        .map(|(record, _, _)| {
            let attempts = attempts_by_step.remove(&record.step_id).unwrap_or_default();
            (record.clone(), attempts)
        })
        .collect();
    let timeline = timeline::timeline(run, &with_attempts, now);
    let steps: Vec<StepView> = rows
        .iter()
        .zip(&with_attempts)
        .map(|((record, piece, action), (_, attempts))| {
            step_view(record, attempts, piece.clone(), action.clone(), now)
        })
        .collect();
    let (graph, nodes) = match workflow.as_ref().and_then(|w| Dag::build(&w.steps).ok()) {
        Some(dag) => {
            let layout = graph::layout(&dag);
            let nodes = layout
                .nodes
                .iter()
                .map(|n| {
                    let step = &steps[n.index];
                    let mut sub = format!("{} · {}", step.status, step.piece);
                    if step.attempts > 1 {
                        sub = format!("{} · {} attempts", step.status, step.attempts);
                    }
                    NodeView {
                        label: fit(&step.id, 18),
                        sub_short: fit(&sub, 24),
                        id: step.id.clone(),
                        status: step.status.clone(),
                        x: n.x,
                        y: n.y,
                        w: n.w,
                        h: n.h,
                        sub,
                    }
                })
                .collect();
            (Some(layout), nodes)
        }
        None => (None, Vec::new()),
    };
    let short = short_id(run.id);
    Ok(RunPage {
        title: format!("Run {short}"),
        nav: "runs",
        run: RunView {
            id: run.id.to_string(),
            short,
            workflow: run.workflow_name.clone(),
            version: run.workflow_version,
            status: run.status.to_string(),
            terminal: run.status.is_terminal(),
            retryable: matches!(run.status, RunStatus::Failed | RunStatus::Cancelled),
            test: run.simulated,
            trigger_type: trigger_type(run),
            priority: run.priority.to_string(),
            created: When::of(Some(&run.created_at), now),
            started: When::of(run.started_at.as_deref(), now),
            finished: When::of(run.finished_at.as_deref(), now),
            duration: run_duration(run),
            error: run.error.clone(),
        },
        graph,
        nodes,
        timeline,
        steps,
        trigger: pretty(&run.trigger),
        vars: pretty(&run.vars),
    })
}

/// `GET /ui/runs/{id}`.
pub(super) async fn page(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    q: Result<Query<Fragment>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ConsoleError> {
    let run = existing(&state, run_id(&id)?).await?;
    let page = read(&state, &run).await?;
    let name = if Fragment::wanted(q) {
        "run_body.html"
    } else {
        "run.html"
    };
    Ok(render(name, page)?.into_response())
}

/// `GET /ui/runs/{id}/events`: the API's SSE stream of the run, for the page's script.
pub(super) async fn events(
    state: State<ApiState>,
    id: Path<String>,
) -> Result<Response, ConsoleError> {
    Ok(crate::api::runs::events(state, id).await?.into_response())
}

/// `POST /ui/runs/{id}/cancel`: as `POST /api/v1/runs/{id}/cancel`, then back to the run.
pub(super) async fn cancel(
    state: State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    crate::api::runs::cancel(state, Path(id.clone())).await?;
    Ok(Redirect::to(&format!("/ui/runs/{id}")).into_response())
}

/// `POST /ui/runs/{id}/retry`: as `POST /api/v1/runs/{id}/retry` (from the failed step).
pub(super) async fn retry(
    state: State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    crate::api::runs::retry(state, Path(id.clone())).await?;
    Ok(Redirect::to(&format!("/ui/runs/{id}")).into_response())
}
