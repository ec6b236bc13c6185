//! `omniflow runs list|show`, and the run summary/JSON shared with `run`
//! (the JSON is the API's run document, `api::dto::RunDocument`).

use super::config::Database;

use anyhow::{Context, Result};
use omniflow::api::dto::RunDocument;
use omniflow::engine::Executor;
use omniflow::store::{RunFilter, RunId, RunStatus, Store};
use serde_json::Value;

/// The run document the API answers `GET /api/v1/runs/{id}` with.
async fn run_doc(store: &dyn Store, id: RunId) -> Result<RunDocument> {
    let run = store
        .get_run(id)
        .await?
        .with_context(|| format!("no run {id}"))?;
    Ok(RunDocument::read(store, &run).await?)
}

pub(crate) async fn run_json(exec: &Executor, id: RunId) -> Result<RunDocument> {
    run_doc(exec.store().as_ref(), id).await
}

pub(crate) async fn print_summary(exec: &Executor, id: RunId) -> Result<()> {
    print_run(exec.store().as_ref(), id, false).await
}

async fn print_run(store: &dyn Store, id: RunId, logs: bool) -> Result<()> {
    let run = store
        .get_run(id)
        .await?
        .with_context(|| format!("no run {id}"))?;
    let steps = store.steps(id).await?;
    let for_each = for_each_steps(store, &run.workflow_name, run.workflow_version).await;
    println!(
        "run {}  {}@v{}  {}  {} ms{}",
        run.id,
        run.workflow_name,
        run.workflow_version,
        run.status.as_str(),
        run.total_time_ms.unwrap_or(0),
        if run.simulated { "  (test run)" } else { "" }
    );
    let width = steps
        .iter()
        .map(|s| s.step_id.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "  {:width$}  {:9}  {:>13}  {:>8}  detail",
        "step", "status", "attempts", "ms"
    );
    for s in &steps {
        let detail = match (&s.error_class, &s.error_message, &s.output) {
            (Some(class), message, _) => {
                format!("{class}: {}", message.clone().unwrap_or_default())
            }
            (None, Some(message), _) => message.clone(),
            (None, None, Some(output)) => {
                let text = output.to_string();
                if text.chars().count() > 80 {
                    format!("{}…", text.chars().take(80).collect::<String>())
                } else {
                    text
                }
            }
            _ => String::new(),
        };
        println!(
            "  {:width$}  {:9}  {:>13}  {:>8}  {detail}",
            s.step_id,
            s.status.as_str(),
            attempts_cell(s, for_each.contains(&s.step_id)),
            s.duration_ms
        );
        if logs && !s.logs.is_empty() {
            for line in s.logs.lines() {
                println!("  {:width$}  | {line}", "");
            }
        }
    }
    if let Some(error) = &run.error {
        println!("error: {error}");
    }
    Ok(())
}

/// Ids of the steps with `for_each` in the run's workflow version (empty if
/// the version cannot be read: the summary then shows plain attempt counts).
async fn for_each_steps(
    store: &dyn Store,
    workflow: &str,
    version: i64,
) -> std::collections::BTreeSet<String> {
    let Ok(Some(stored)) = store.get_workflow(workflow, Some(version)).await else {
        return Default::default();
    };
    stored.definition["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|step| step.get("for_each").is_some())
        .filter_map(|step| step["id"].as_str().map(str::to_string))
        .collect()
}

/// The summary's attempts column: a `for_each` step counts its items, and
/// the retries among its attempts, not every item as an attempt.
fn attempts_cell(step: &omniflow::store::StepRecord, for_each: bool) -> String {
    let items = match (&step.input, for_each) {
        (Some(Value::Array(items)), true) => items.len() as u32,
        _ => return step.attempts.to_string(),
    };
    let noun = if items == 1 { "item" } else { "items" };
    match step.attempts.saturating_sub(items) {
        0 => format!("{items} {noun}"),
        retries => format!("{items} {noun} +{retries}"),
    }
}

pub(crate) async fn list(
    db: &Database,
    workflow: Option<String>,
    status: Option<String>,
    limit: u32,
    json: bool,
) -> Result<bool> {
    let store = super::setup::open_store(db).await?;
    let status = status
        .map(|s| {
            s.parse::<RunStatus>()
                .map_err(|e| anyhow::anyhow!("--status: {e}"))
        })
        .transpose()?;
    let runs = store
        .list_runs(&RunFilter {
            workflow,
            status,
            since: None,
            limit,
            offset: 0,
            ..RunFilter::default()
        })
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(true);
    }
    println!(
        "{:36}  {:20}  {:9}  {:>9}  created",
        "run", "workflow", "status", "ms"
    );
    for run in runs {
        println!(
            "{}  {:20}  {:9}  {:>9}  {}",
            run.id,
            run.workflow_name,
            run.status.as_str(),
            run.total_time_ms.map(|t| t.to_string()).unwrap_or_default(),
            run.created_at
        );
    }
    Ok(true)
}

pub(crate) async fn show(db: &Database, id: &str, json: bool, logs: bool) -> Result<bool> {
    let id: RunId = id
        .parse()
        .with_context(|| format!("{id:?} is not a run id (UUID)"))?;
    let store = super::setup::open_store(db).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&run_doc(store.as_ref(), id).await?)?
        );
    } else {
        print_run(store.as_ref(), id, logs).await?;
    }
    Ok(true)
}

/// `omniflow runs resume`: finish the runs processes that are gone left
/// behind (lease expired, or none, and not parked for later). Refused while
/// a server holds the database: it resumes those runs itself.
pub(crate) async fn resume(
    db: &Database,
    pieces: &[std::path::PathBuf],
    lease: std::time::Duration,
    defaults: &super::config::StepDefaults,
) -> Result<bool> {
    let mut config = omniflow::engine::ExecutorConfig {
        lease,
        ..omniflow::engine::ExecutorConfig::default()
    };
    defaults.apply(&mut config);
    let exec =
        super::setup::executor(db, pieces, config, omniflow::runtime::Compiler::Baseline).await?;
    if let Some(holder) = exec.store().server_holding_lock().await? {
        eprintln!(
            "a server ({holder}) is running on {}: it resumes interrupted runs itself \
             (runs resume is for when no server runs)",
            db
        );
        return Ok(false);
    }
    let resumed = exec.resume_unfinished().await?;
    if resumed.is_empty() {
        println!("no interrupted runs");
    }
    let left = exec.store().unfinished_runs().await?.len();
    if left > 0 {
        println!(
            "left alone: {left} unfinished run(s) held by a live process or parked until later"
        );
    }
    let mut all_ok = true;
    for (id, status) in resumed {
        println!("run {id}: {}", status.as_str());
        all_ok &= status == RunStatus::Succeeded;
    }
    Ok(all_ok)
}

/// `omniflow runs prune --older-than 30d [--status failed,...] [--dry-run]`:
/// delete finished runs (with their steps and attempts) that finished
/// before now minus `older_than`, in batches; never queued, running or
/// parked ones.
pub(crate) async fn prune(
    db: &Database,
    older_than: std::time::Duration,
    statuses: &[String],
    dry_run: bool,
) -> Result<bool> {
    let statuses: Vec<RunStatus> = if statuses.is_empty() {
        vec![
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ]
    } else {
        statuses
            .iter()
            .map(|s| {
                let status = s
                    .parse::<RunStatus>()
                    .map_err(|e| anyhow::anyhow!("--status: {e}"))?;
                anyhow::ensure!(
                    status.is_terminal(),
                    "--status {s}: only finished runs (succeeded, failed, cancelled) are pruned"
                );
                Ok(status)
            })
            .collect::<Result<_>>()?
    };
    let store = super::setup::open_store(db).await?;
    let before = std::time::SystemTime::now() - older_than;
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    if dry_run {
        let n = store
            .prune_runs(before, &statuses, usize::MAX, true)
            .await?;
        println!(
            "would prune {n} run(s) ({}) finished before {}",
            names.join(", "),
            omniflow::store::rfc3339(before)
        );
        return Ok(true);
    }
    let mut total = 0;
    loop {
        let n = store.prune_runs(before, &statuses, 1000, false).await?;
        total += n;
        if n < 1000 {
            break;
        }
    }
    println!(
        "pruned {total} run(s) ({}) finished before {}",
        names.join(", "),
        omniflow::store::rfc3339(before)
    );
    Ok(true)
}
