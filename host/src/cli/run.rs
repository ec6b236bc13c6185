//! `omniflow run FILE`, `omniflow validate FILE`, and the local execution
//! `omniflow test FILE` shares ([`execute_file`]).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use omniflow::engine::{EngineError, Executor, ExecutorConfig, RunEvent};
use omniflow::runtime::Runtime;
use omniflow::store::{RunId, RunStatus, StepStatus};
use omniflow::triggers::{self, RunRequest, Simulation, TriggerKind};
use omniflow::workflow::validate;
use tokio_util::sync::CancellationToken;

use super::setup::{executor, parse_var, read_workflow, registry};

pub(crate) struct RunArgs {
    pub(crate) file: PathBuf,
    pub(crate) db: super::config::Database,
    pub(crate) vars: Vec<String>,
    pub(crate) json: bool,
    pub(crate) pieces: Vec<PathBuf>,
    pub(crate) lease: std::time::Duration,
    pub(crate) defaults: super::config::StepDefaults,
}

fn status_mark(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "✓",
        StepStatus::Failed => "✗",
        StepStatus::Skipped => "-",
        StepStatus::Cancelled => "⊘",
        _ => "·",
    }
}

/// Print events as they come: a progress bar on a terminal, lines otherwise.
fn spawn_progress(exec: &Executor, quiet: bool, until: RunId) -> tokio::task::JoinHandle<()> {
    let mut events = exec.subscribe();
    let tty = std::io::stderr().is_terminal() && !quiet;
    tokio::spawn(async move {
        let bar = if tty {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {pos}/{len} steps {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Some(bar)
        } else {
            None
        };
        let say = |line: String| match &bar {
            Some(bar) => bar.println(line),
            None if !quiet => eprintln!("{line}"),
            None => {}
        };
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            match event {
                RunEvent::RunStarted {
                    run,
                    steps,
                    already_done,
                } => {
                    if let Some(bar) = &bar {
                        bar.set_length(steps as u64);
                        bar.set_position(already_done as u64);
                    }
                    if already_done > 0 {
                        say(format!(
                            "resuming run {run}: {already_done}/{steps} steps already done"
                        ));
                    } else {
                        say(format!("run {run}: {steps} steps"));
                    }
                }
                RunEvent::StepStarted {
                    step, tries, item, ..
                } => {
                    let what = match item {
                        Some(item) => format!("{step} {item}"),
                        None => step,
                    };
                    if let Some(bar) = &bar {
                        bar.set_message(format!("running {what}"));
                    }
                    if tries > 1 {
                        say(format!("  ↻ {what} try {tries}"));
                    }
                }
                RunEvent::StepRetrying {
                    step,
                    item,
                    delay_ms,
                    error,
                    ..
                } => {
                    let what = match item {
                        Some(item) => format!("{step} {item}"),
                        None => step,
                    };
                    say(format!(
                        "  ! {what} failed ({error}); retrying in {delay_ms} ms"
                    ))
                }
                RunEvent::StepWaiting { step, until, .. } => {
                    say(format!("  … {step} waits until {until}"));
                }
                RunEvent::RunParked { .. } => {}
                RunEvent::StepFinished {
                    step,
                    status,
                    duration_ms,
                    error,
                    ..
                } => {
                    if let Some(bar) = &bar {
                        bar.inc(1);
                    }
                    let detail = error.map(|e| format!("  {e}")).unwrap_or_default();
                    say(format!(
                        "  {} {step} {} {duration_ms} ms{detail}",
                        status_mark(status),
                        status.as_str()
                    ));
                }
                RunEvent::RunFinished { run, .. } => {
                    if run == until {
                        if let Some(bar) = &bar {
                            bar.finish_and_clear();
                        }
                        break;
                    }
                }
            }
        }
    })
}

/// A run [`execute_file`] executed to its end.
pub(crate) struct Executed {
    pub(crate) exec: Executor,
    pub(crate) run: RunId,
    pub(crate) status: RunStatus,
}

pub(crate) async fn run(args: RunArgs) -> Result<bool> {
    let Some(done) = execute_file(&args, None).await? else {
        return Ok(false);
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&super::runs::run_json(&done.exec, done.run).await?)?
        );
    } else {
        super::runs::print_summary(&done.exec, done.run).await?;
    }
    Ok(done.status == RunStatus::Succeeded)
}

/// Save the workflow file's definition, create its run (a test run with
/// `simulate`) claimed by this process and execute it with live progress
/// on stderr (quiet with `--json`). `None`: the workflow is invalid (the
/// problems were printed).
pub(crate) async fn execute_file(
    args: &RunArgs,
    simulate: Option<Simulation>,
) -> Result<Option<Executed>> {
    let workflow = read_workflow(&args.file)?;
    let mut vars = serde_json::Map::new();
    for var in &args.vars {
        let (k, v) = parse_var(var)?;
        vars.insert(k, v);
    }
    let mut config = ExecutorConfig {
        lease: args.lease,
        ..ExecutorConfig::default()
    };
    args.defaults.apply(&mut config);
    let exec = executor(
        &args.db,
        &args.pieces,
        config,
        omniflow::runtime::Compiler::Baseline,
    )
    .await?;

    // This command executes the run it creates and nothing else (resuming
    // runs left behind is `omniflow runs resume`). The run is created
    // already claimed under this process's lease, renewed while it runs,
    // so a server on the same database never takes it, and this process
    // never touches the server's runs.
    let request = RunRequest {
        kind: TriggerKind::Manual,
        vars,
        simulate,
        ..RunRequest::default()
    };
    let claimed = match triggers::start_claimed(&exec, &workflow, request).await {
        Ok(claimed) => claimed,
        Err(EngineError::Invalid(errors)) => {
            eprintln!("{}: the workflow is invalid:", args.file.display());
            for e in errors {
                eprintln!("  {e}");
            }
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };

    let run_id = claimed.run.id;
    let progress = spawn_progress(&exec, args.json, run_id);
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        });
    }
    let status = exec.execute_leased(claimed, cancel).await?;
    let _ = progress.await;
    Ok(Some(Executed {
        exec,
        run: run_id,
        status,
    }))
}

pub(crate) async fn validate_file(file: &Path, pieces: &[PathBuf]) -> Result<bool> {
    let workflow = match read_workflow(file) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(false);
        }
    };
    let runtime = Runtime::new(super::setup::runtime_config(
        omniflow::runtime::Compiler::Baseline,
    )?)?;
    let registry = registry(&runtime, pieces).await?;
    registry.prepare(&runtime, workflow.piece_names()).await?;
    match validate(&workflow, registry.as_ref()) {
        Ok(v) => {
            println!(
                "ok: {} ({} steps, order: {})",
                workflow.name,
                workflow.steps.len(),
                v.dag
                    .order
                    .iter()
                    .map(|&i| workflow.steps[i].id.as_str())
                    .collect::<Vec<_>>()
                    .join(" → ")
            );
            Ok(true)
        }
        Err(errors) => {
            eprintln!("{}: {} problem(s):", file.display(), errors.len());
            for e in errors {
                eprintln!("  {e}");
            }
            Ok(false)
        }
    }
}
