//! Health, readiness, queue stats, Prometheus metrics, installed pieces,
//! and the answers for unknown routes.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::dto::{PieceDocument, PieceList, PieceVersions};
use super::dto_system::{Health, Stats, WorkerLoad};
use super::names::PieceName;
use super::openapi::ErrorBody;
use super::{ApiError, ApiState};

/// Window of the "recent throughput" figures.
const THROUGHPUT_WINDOW: Duration = Duration::from_secs(60);

/// `GET /health`: the process answers (no auth).
#[utoipa::path(get, path = "/api/v1/health", tag = "system", security(()), responses((status = 200, description = "The process is alive (no auth; also `/health`)", body = Health)))]
pub(super) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /ready`: the database answers and the worker pool is alive.
#[utoipa::path(get, path = "/api/v1/ready", tag = "system", responses((status = 200, description = "Database reachable, workers alive", body = Health), (status = 503, description = "Not ready", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn ready(State(state): State<ApiState>) -> Result<Json<Health>, ApiError> {
    state.store().get_run(uuid::Uuid::nil()).await?;
    if !state.queue().is_alive() {
        return Err(ApiError::Unavailable(
            "the worker pool is not running".into(),
        ));
    }
    if state.shutdown().is_cancelled() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    Ok(Json(Health { status: "ready" }))
}

/// Query of `GET /stats`: `?include_test=true`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatsQuery {
    #[serde(default)]
    include_test: bool,
}

/// `GET /stats`: queue depth by priority, running, totals, recent
/// throughput; test runs (failure simulation) only with `?include_test=true`.
#[utoipa::path(get, path = "/api/v1/stats", tag = "system", params(("include_test" = Option<bool>, Query, description = "Count test runs (failure simulation) too; default false")), responses((status = 200, description = "Queue depth by priority, running, totals, throughput", body = Stats), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn stats(
    State(state): State<ApiState>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Stats>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    let since = SystemTime::now() - THROUGHPUT_WINDOW;
    let stats = state.store().queue_stats(since, q.include_test).await?;
    let finished: u64 = stats.finished_since.values().sum();
    Ok(Json(Stats {
        queued: stats.queued_by_priority.values().sum::<u64>(),
        running: stats.runs_by_status.get("running").copied().unwrap_or(0),
        queued_by_priority: stats.queued_by_priority,
        runs_by_status: stats.runs_by_status,
        finished_last_minute: stats.finished_since,
        throughput_runs_per_s: finished as f64 / THROUGHPUT_WINDOW.as_secs_f64(),
        workers: WorkerLoad {
            capacity: state.queue().capacity(),
            busy: state.queue().busy(),
        },
        uptime_s: state.inner.started.elapsed().as_secs(),
    }))
}

/// `GET /metrics`: Prometheus text exposition (test runs, failure
/// simulation, are left out).
#[utoipa::path(get, path = "/api/v1/metrics", tag = "system", responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let stats = state
        .store()
        .queue_stats(SystemTime::now() - THROUGHPUT_WINDOW, false)
        .await?;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    family(
        "omniflow_runs",
        "gauge",
        "Runs in the database by status.",
        stats
            .runs_by_status
            .iter()
            .map(|(s, n)| (format!("{{status=\"{s}\"}}"), *n))
            .collect(),
    );
    family(
        "omniflow_runs_pruned_total",
        "counter",
        "Finished runs deleted by retention since this process started.",
        vec![(
            String::new(),
            state
                .config()
                .runs_pruned
                .load(std::sync::atomic::Ordering::Relaxed),
        )],
    );
    family(
        "omniflow_queue_depth",
        "gauge",
        "Queued runs by priority.",
        stats
            .queued_by_priority
            .iter()
            .map(|(p, n)| (format!("{{priority=\"{p}\"}}"), *n))
            .collect(),
    );
    family(
        "omniflow_runs_finished_last_minute",
        "gauge",
        "Runs that finished in the last 60 seconds, by status.",
        stats
            .finished_since
            .iter()
            .map(|(s, n)| (format!("{{status=\"{s}\"}}"), *n))
            .collect(),
    );
    family(
        "omniflow_workers_busy",
        "gauge",
        "Runs this server is executing now.",
        vec![(String::new(), state.queue().busy() as u64)],
    );
    family(
        "omniflow_workers_capacity",
        "gauge",
        "Runs this server executes at most at once.",
        vec![(String::new(), state.queue().capacity() as u64)],
    );
    family(
        "omniflow_step_fuel_used_total",
        "counter",
        "Fuel consumed by every recorded step.",
        vec![(String::new(), stats.fuel_used_total)],
    );
    let caches = state.executor().cache_sizes();
    family(
        "omniflow_cache_entries",
        "gauge",
        "Entries in each in-memory cache that grows with use.",
        caches
            .iter()
            .map(|c| (format!("{{cache=\"{}\"}}", c.name), c.entries as u64))
            .collect(),
    );
    family(
        "omniflow_cache_capacity",
        "gauge",
        "Most entries each cache keeps (0: bounded by installed pieces or open connections, see README).",
        caches
            .iter()
            .map(|c| (format!("{{cache=\"{}\"}}", c.name), c.capacity as u64))
            .collect(),
    );
    let memory = process_memory();
    for (name, help, value) in [
        (
            "omniflow_process_resident_memory_bytes",
            "Resident set size of this process (VmRSS).",
            memory.rss,
        ),
        (
            "omniflow_process_resident_memory_peak_bytes",
            "Peak resident set size of this process (VmHWM).",
            memory.peak,
        ),
    ] {
        if let Some(bytes) = value {
            family(name, "gauge", help, vec![(String::new(), bytes)]);
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// This process's resident memory, from `/proc/self/status` (Linux; `None`
/// elsewhere).
struct ProcessMemory {
    rss: Option<u64>,
    peak: Option<u64>,
}

fn process_memory() -> ProcessMemory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    ProcessMemory {
        rss: kib("VmRSS:"),
        peak: kib("VmHWM:"),
    }
}

/// `GET /pieces`: every installed piece with its actions' schemas.
#[utoipa::path(get, path = "/api/v1/pieces", tag = "pieces", responses((status = 200, description = "Installed pieces with their actions and schemas", body = PieceList), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn pieces(State(state): State<ApiState>) -> Result<Json<PieceList>, ApiError> {
    state.executor().prepare_all_pieces().await?;
    let pieces = state
        .executor()
        .registry()
        .all()
        .iter()
        .map(|p| PieceDocument::from(p.as_ref()))
        .collect();
    Ok(Json(PieceList { pieces }))
}

/// `GET /pieces/{name}`: every installed version of one piece.
#[utoipa::path(get, path = "/api/v1/pieces/{name}", tag = "pieces", params(("name" = String, Path, description = "Piece name")), responses((status = 200, description = "The piece, every installed version", body = PieceVersions), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn piece(
    State(state): State<ApiState>,
    PieceName(name): PieceName,
) -> Result<Json<PieceVersions>, ApiError> {
    state.executor().prepare_all_pieces().await?;
    let versions: Vec<PieceDocument> = state
        .executor()
        .registry()
        .all()
        .iter()
        .filter(|p| p.info().name == name)
        .map(|p| PieceDocument::from(p.as_ref()))
        .collect();
    if versions.is_empty() {
        return Err(ApiError::NotFound(format!("piece {name:?}")));
    }
    Ok(Json(PieceVersions { name, versions }))
}

/// Any unknown path.
pub(super) async fn no_route() -> ApiError {
    ApiError::NotFound("no such route".into())
}

/// A known path with a method it does not take.
pub(super) async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed
}
