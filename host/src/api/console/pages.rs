//! The list pages: runs (filtered, paged, live), workflows (with the test
//! run form), pieces and the queue.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::Form;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::run::{When, run_duration, short_id, trigger_type};
use super::timeline::parse_time;
use super::{ConsoleError, render};
use crate::api::names::WorkflowName;
use crate::api::wait::next_signal;
use crate::api::{ApiError, ApiState};
use crate::engine::RunEvent;
use crate::store::{RunFilter, RunId, RunRecord, RunStatus, Signal};
use crate::triggers::{self, RunRequest, Simulation, TriggerKind};

/// Rows per page of the runs list.
const PAGE: u32 = 50;

/// The runs list's filters, as the form sends them (empty = no filter).
#[derive(Debug, Default, Deserialize, Serialize, Clone)]
pub(super) struct RunsQuery {
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    status: String,
    /// `15m`, `1h`, `24h`, `7d`: created within that long.
    #[serde(default)]
    range: String,
    /// RFC 3339 (UTC).
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// Text in the run's error.
    #[serde(default)]
    q: String,
    /// `true`: test runs only; `false`: production runs only.
    #[serde(default)]
    test: String,
    /// The last run of the previous page (keyset paging).
    #[serde(default)]
    before: String,
    #[serde(default)]
    fragment: String,
}

fn some(text: &str) -> Option<&str> {
    let t = text.trim();
    (!t.is_empty()).then_some(t)
}

fn instant(field: &str, text: &str) -> Result<Option<SystemTime>, ApiError> {
    some(text)
        .map(|t| {
            parse_time(t).ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "{field}={t:?} is not a time: use RFC 3339 UTC, e.g. 2026-12-03T10:00:00Z"
                ))
            })
        })
        .transpose()
}

impl RunsQuery {
    fn filter(&self, now: SystemTime) -> Result<RunFilter, ApiError> {
        let status = some(&self.status)
            .map(|s| {
                s.parse::<RunStatus>().map_err(|_| {
                    ApiError::InvalidRequest(format!("status={s:?} is not a run status"))
                })
            })
            .transpose()?;
        let mut since = instant("since", &self.since)?;
        if let Some(range) = some(&self.range) {
            let d = humantime::parse_duration(range)
                .map_err(|e| ApiError::InvalidRequest(format!("range={range:?}: {e}")))?;
            let from = now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH);
            since = Some(since.map_or(from, |s| s.max(from)));
        }
        let test = match some(&self.test) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ApiError::InvalidRequest(format!(
                    "test={other:?}: use true or false"
                )));
            }
        };
        let before = some(&self.before)
            .map(|b| {
                b.parse::<RunId>()
                    .map_err(|_| ApiError::InvalidRequest(format!("before={b:?} is not a run id")))
            })
            .transpose()?;
        Ok(RunFilter {
            workflow: some(&self.workflow).map(str::to_owned),
            status,
            since,
            until: instant("until", &self.until)?,
            error_contains: some(&self.q).map(str::to_owned),
            test,
            before,
            limit: PAGE + 1,
            offset: 0,
        })
    }

    /// The query string of these filters (paging and fragment left out).
    fn query_string(&self) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("workflow", &self.workflow),
            ("status", &self.status),
            ("range", &self.range),
            ("since", &self.since),
            ("until", &self.until),
            ("q", &self.q),
            ("test", &self.test),
        ] {
            if some(v).is_some() {
                s.append_pair(k, v.trim());
            }
        }
        s.finish()
    }
}

/// One row of the runs list.
#[derive(Debug, Serialize)]
struct RunRow {
    id: String,
    short: String,
    workflow: String,
    version: i64,
    status: String,
    test: bool,
    trigger_type: String,
    created: Option<When>,
    duration: Option<String>,
    error: Option<String>,
}

fn run_row(run: &RunRecord, now: SystemTime) -> RunRow {
    RunRow {
        id: run.id.to_string(),
        short: short_id(run.id),
        workflow: run.workflow_name.clone(),
        version: run.workflow_version,
        status: run.status.to_string(),
        test: run.simulated,
        trigger_type: trigger_type(run),
        created: When::of(Some(&run.created_at), now),
        duration: run_duration(run),
        error: run.error.as_ref().map(|e| {
            if e.chars().count() > 160 {
                format!("{}…", e.chars().take(160).collect::<String>())
            } else {
                e.clone()
            }
        }),
    }
}

/// `GET /ui/runs`: newest first, filtered, counts by status, live.
pub(super) async fn runs(
    State(state): State<ApiState>,
    q: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ConsoleError> {
    let Query(query) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let now = SystemTime::now();
    let filter = query.filter(now)?;
    let store = state.store();
    let mut found = store.list_runs(&filter).await?;
    let more = found.len() > PAGE as usize;
    found.truncate(PAGE as usize);
    let counts = store.run_counts(filter.workflow.as_deref()).await?;
    let workflows: Vec<String> = store
        .list_workflows()
        .await?
        .into_iter()
        .map(|w| w.name)
        .collect();
    let filters = query.query_string();
    let next = more.then(|| {
        let last = found.last().map(|r| r.id.to_string()).unwrap_or_default();
        if filters.is_empty() {
            format!("/ui/runs?before={last}")
        } else {
            format!("/ui/runs?{filters}&before={last}")
        }
    });
    let statuses: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    let total = counts_total(&counts);
    let context = minijinja::context! {
        title => "Runs",
        nav => "runs",
        f => &query,
        filters => filters,
        paged => some(&query.before).is_some(),
        runs => found.iter().map(|r| run_row(r, now)).collect::<Vec<_>>(),
        counts => counts,
        total => total,
        statuses => statuses,
        workflows => workflows,
        next => next,
    };
    let name = if query.fragment == "1" {
        "runs_body.html"
    } else {
        "runs.html"
    };
    Ok(render(name, context)?.into_response())
}

fn counts_total(counts: &BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

/// `GET /ui/runs/stream`: an SSE `changed` event whenever a run starts,
/// parks or finishes here, or the store signals a queued or finished run
/// (PostgreSQL: in any process). The runs page reloads its list on it.
pub(super) async fn runs_stream(
    State(state): State<ApiState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = state.executor().subscribe();
    let signals = state.store().signals();
    let stream = futures::stream::unfold(
        (events, signals, state),
        |(mut events, mut signals, state)| async move {
            loop {
                let changed = tokio::select! {
                    event = events.recv() => match event {
                        Ok(RunEvent::RunStarted { run, .. } | RunEvent::RunFinished { run, .. } | RunEvent::RunParked { run, .. }) => Some(run.to_string()),
                        Ok(_) => None,
                        Err(RecvError::Lagged(_)) => Some(String::new()),
                        Err(RecvError::Closed) => return None,
                    },
                    signal = next_signal(&mut signals) => match signal {
                        Some(Signal::Finished(run)) => Some(run.to_string()),
                        Some(Signal::Queued | Signal::Resync) => Some(String::new()),
                        Some(Signal::Cancel(_)) | None => None,
                    },
                    () = state.shutdown().cancelled() => return None,
                };
                if let Some(run) = changed {
                    let event = Event::default().event("changed").data(run);
                    return Some((Ok(event), (events, signals, state)));
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Debug, Serialize)]
struct WorkflowRow {
    name: String,
    version: i64,
    description: Option<String>,
    steps: usize,
    trigger: String,
    saved: Option<When>,
}

/// `GET /ui/workflows`.
pub(super) async fn workflows(State(state): State<ApiState>) -> Result<Response, ConsoleError> {
    let now = SystemTime::now();
    let rows: Vec<WorkflowRow> = state
        .store()
        .list_workflows()
        .await?
        .into_iter()
        .map(|w| {
            let def = &w.definition;
            WorkflowRow {
                description: def
                    .get("description")
                    .and_then(|d| d.as_str())
                    .map(str::to_owned),
                steps: def
                    .get("steps")
                    .and_then(|s| s.as_array())
                    .map_or(0, Vec::len),
                trigger: trigger_text(def.get("trigger")),
                saved: When::of(Some(&w.created_at), now),
                name: w.name,
                version: w.version,
            }
        })
        .collect();
    let html = render(
        "workflows.html",
        minijinja::context! { title => "Workflows", nav => "workflows", workflows => rows },
    )?;
    Ok(html.into_response())
}

fn trigger_text(trigger: Option<&serde_json::Value>) -> String {
    match trigger {
        Some(t) => match t.get("type").and_then(|k| k.as_str()) {
            Some("schedule") | Some("cron") => format!(
                "schedule {}",
                t.get("cron").and_then(|c| c.as_str()).unwrap_or("")
            ),
            Some(kind) => kind.to_owned(),
            None => "manual".to_owned(),
        },
        None => "manual".to_owned(),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct VersionQuery {
    #[serde(default)]
    version: Option<i64>,
}

/// What the test-run form holds (also when it comes back with an error).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct TestForm {
    vars: String,
    simulate_failures: String,
    seed: String,
}

#[derive(Debug, Serialize)]
struct PinRow {
    reference: String,
    version: String,
    digest: String,
}

async fn workflow_page(
    state: &ApiState,
    name: &str,
    version: Option<i64>,
    form: Option<TestForm>,
    error: Option<String>,
) -> Result<Response, ConsoleError> {
    let store = state.store();
    let name = name.to_owned();
    let versions = store.workflow_versions(&name).await?;
    let chosen = match version {
        Some(v) => versions.iter().find(|w| w.version == v),
        None => versions.iter().max_by_key(|w| w.version),
    }
    .ok_or_else(|| ApiError::NotFound(format!("workflow {name:?}")))?;
    let now = SystemTime::now();
    let vars = chosen
        .definition
        .get("vars")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    let form = form.unwrap_or_else(|| TestForm {
        vars: serde_json::to_string_pretty(&vars).unwrap_or_default(),
        simulate_failures: "0.3".to_owned(),
        seed: "7".to_owned(),
    });
    let pins: Vec<PinRow> = chosen
        .pins
        .as_ref()
        .and_then(|p| p.as_object())
        .map(|pins| {
            pins.iter()
                .map(|(reference, pin)| PinRow {
                    reference: reference.clone(),
                    version: pin
                        .get("version")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_owned(),
                    digest: pin
                        .get("digest")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    let recent = store
        .list_runs(&RunFilter {
            workflow: Some(name.clone()),
            limit: 10,
            ..RunFilter::default()
        })
        .await?;
    let mut listed: Vec<(i64, Option<When>)> = versions
        .iter()
        .map(|w| (w.version, When::of(Some(&w.created_at), now)))
        .collect();
    listed.sort_by_key(|v| std::cmp::Reverse(v.0));
    let status = if error.is_some() {
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        axum::http::StatusCode::OK
    };
    let html = render(
        "workflow.html",
        minijinja::context! {
            title => format!("Workflow {name}"),
            nav => "workflows",
            name => name,
            version => chosen.version,
            newest => versions.iter().map(|w| w.version).max(),
            versions => listed.into_iter().map(|(v, when)| minijinja::context! { version => v, saved => when }).collect::<Vec<_>>(),
            description => chosen.definition.get("description").and_then(|d| d.as_str()),
            trigger => trigger_text(chosen.definition.get("trigger")),
            definition => serde_json::to_string_pretty(&chosen.definition).unwrap_or_default(),
            pins => pins,
            form => form,
            error => error,
            runs => recent.iter().map(|r| run_row(r, now)).collect::<Vec<_>>(),
        },
    )?;
    Ok((status, html).into_response())
}

/// `GET /ui/workflows/{name}` (`?version=N` for an older version).
pub(super) async fn workflow(
    State(state): State<ApiState>,
    WorkflowName(name): WorkflowName,
    q: Result<Query<VersionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ConsoleError> {
    let version = q.ok().and_then(|Query(v)| v.version);
    workflow_page(&state, &name, version, None, None).await
}

fn parse_test_form(form: &TestForm) -> Result<RunRequest, String> {
    let vars = match serde_json::from_str::<serde_json::Value>(form.vars.trim()) {
        Ok(serde_json::Value::Object(vars)) => vars,
        Ok(_) => return Err("vars: must be a JSON object, e.g. {\"who\": \"ada\"}".to_owned()),
        Err(e) => return Err(format!("vars: not JSON: {e}")),
    };
    let rate: f64 = form.simulate_failures.trim().parse().map_err(|_| {
        format!(
            "simulate failures: {:?} is not a number from 0 to 1",
            form.simulate_failures
        )
    })?;
    let seed: u64 = form
        .seed
        .trim()
        .parse()
        .map_err(|_| format!("seed: {:?} is not a whole number ≥ 0", form.seed))?;
    let simulation = Simulation::new(rate, seed).map_err(|e| format!("simulate failures: {e}"))?;
    Ok(RunRequest {
        kind: TriggerKind::Manual,
        payload: serde_json::json!({}),
        vars,
        priority: crate::store::Priority::Normal,
        simulate: Some(simulation),
    })
}

/// `POST /ui/workflows/{name}/test`: a test run of the newest version with
/// failure simulation; opens the run page.
pub(super) async fn test_run(
    State(state): State<ApiState>,
    WorkflowName(name): WorkflowName,
    Form(form): Form<TestForm>,
) -> Result<Response, ConsoleError> {
    let request = match parse_test_form(&form) {
        Ok(request) => request,
        Err(error) => return workflow_page(&state, &name, None, Some(form), Some(error)).await,
    };
    let run = triggers::start_saved(state.store().as_ref(), &name, request)
        .await
        .map_err(ApiError::from)?;
    state.queue().wake();
    Ok(Redirect::to(&format!("/ui/runs/{}", run.id)).into_response())
}

/// One property of an action's schema, as a table row.
#[derive(Debug, Serialize)]
struct Field {
    name: String,
    kind: String,
    required: bool,
    description: String,
}

fn fields(schema: &serde_json::Value) -> Vec<Field> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let kind = |p: &serde_json::Value| match p.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(serde_json::Value::Array(ts)) => ts
            .iter()
            .filter_map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        _ if p.get("enum").is_some() => "enum".to_owned(),
        _ if p.get("$ref").is_some() || p.get("anyOf").is_some() || p.get("oneOf").is_some() => {
            "object".to_owned()
        }
        _ => "any".to_owned(),
    };
    schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|props| {
            props
                .iter()
                .map(|(name, p)| Field {
                    name: name.clone(),
                    kind: kind(p),
                    required: required.contains(&name.as_str()),
                    description: p
                        .get("description")
                        .and_then(|d| d.as_str())
                        .unwrap_or("")
                        .to_owned(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /ui/pieces`: installed pieces, their actions' schemas as tables,
/// what they ask to be granted.
pub(super) async fn pieces(State(state): State<ApiState>) -> Result<Response, ConsoleError> {
    let axum::Json(list) = crate::api::system::pieces(State(state.clone())).await?;
    let pieces: Vec<_> = list
        .pieces
        .iter()
        .map(|p| {
            minijinja::context! {
                name => &p.name,
                version => &p.version,
                description => &p.description,
                digest => &p.digest,
                http => &p.http_destinations,
                secrets => &p.secrets,
                actions => p.actions.iter().map(|a| minijinja::context! {
                    name => &a.name,
                    description => &a.description,
                    input => fields(&a.input_schema),
                    output => fields(&a.output_schema),
                }).collect::<Vec<_>>(),
            }
        })
        .collect();
    let html = render(
        "pieces.html",
        minijinja::context! { title => "Pieces", nav => "pieces", pieces => pieces },
    )?;
    Ok(html.into_response())
}

/// Minutes shown in the queue page's throughput chart.
const CHART_MINUTES: u64 = 15;

/// `GET /ui/queue`: depth by priority, running, throughput per minute,
/// workers. Index counts only (no table scan), so it stays fast however
/// many runs are kept; test runs are counted too.
pub(super) async fn queue(State(state): State<ApiState>) -> Result<Response, ConsoleError> {
    let store = state.store();
    let queued_by_priority = store.queued_by_priority().await?;
    let counts = store.run_counts(None).await?;
    let now = SystemTime::now();
    let since = now - Duration::from_secs(CHART_MINUTES * 60);
    let per_minute: BTreeMap<String, u64> = store
        .finished_per_minute(since)
        .await?
        .into_iter()
        .collect();
    // Every minute of the window, oldest first, zero when nothing finished.
    let minutes: Vec<String> = (0..CHART_MINUTES)
        .rev()
        .map(|k| {
            let t = now - Duration::from_secs(k * 60);
            crate::store::rfc3339(t)[..16].to_owned()
        })
        .collect();
    let peak = minutes
        .iter()
        .map(|m| per_minute.get(m).copied().unwrap_or(0))
        .max()
        .unwrap_or(0)
        .max(1);
    let bars: Vec<_> = minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let n = per_minute.get(m).copied().unwrap_or(0);
            minijinja::context! {
                minute => &m[11..],
                runs => n,
                x => i as f64 * 100.0 / CHART_MINUTES as f64,
                height => n as f64 * 100.0 / peak as f64,
            }
        })
        .collect();
    // The last whole minute (the current one is still filling).
    let last_minute = minutes
        .iter()
        .rev()
        .nth(1)
        .and_then(|m| per_minute.get(m))
        .copied()
        .unwrap_or(0);
    let owners = state.store().running_by_owner().await?;
    let html = render(
        "queue.html",
        minijinja::context! {
            title => "Queue",
            nav => "queue",
            queued => queued_by_priority.values().sum::<u64>(),
            queued_by_priority => queued_by_priority,
            running => counts.get("running").copied().unwrap_or(0),
            counts => counts,
            busy => state.queue().busy(),
            capacity => state.queue().capacity(),
            throughput => format!("{:.1}", last_minute as f64 / 60.0),
            bars => bars,
            bar_width => 100.0 / CHART_MINUTES as f64,
            peak => peak,
            owners => owners.into_iter().map(|(owner, n)| minijinja::context! { owner => owner, running => n }).collect::<Vec<_>>(),
        },
    )?;
    Ok(html.into_response())
}
