//! `omniflow bench ...`: benchmarks printing `workload metric value` lines,
//! the unit in the metric name. Numbers, not pass/fail: targets live in the
//! README's performance section.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use omniflow::runtime::{Runtime, RuntimeConfig, StepCall, builtin::Builtin};

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn line(workload: &str, metric: &str, value: f64) {
    use std::io::Write;
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout().lock(), "{workload} {metric} {value:.2}");
}

fn builtin(name: &str) -> Result<&'static [u8]> {
    Builtin::named(name)
        .map(|b| b.bytes)
        .with_context(|| format!("no built-in piece {name}"))
}

/// instantiate + call of a trivial piece (`flow.if`), pooled and not; compile vs cache load.
pub(crate) async fn instantiate(iterations: usize) -> Result<()> {
    let bytes = builtin("flow")?;
    let cache = tempfile_dir()?;
    for (label, pooling) in [("instantiate", true), ("instantiate_ondemand", false)] {
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(cache.clone()),
            pooling,
            ..RuntimeConfig::default()
        })?;
        let piece = runtime.load(bytes).await?;
        let input = serde_json::json!({ "condition": true });
        let mut times = Vec::with_capacity(iterations);
        for i in 0..iterations + iterations / 10 {
            let call = StepCall::new("bench", "step", "if", input.clone());
            let started = Instant::now();
            let report = runtime.run(&piece, call).await;
            let elapsed = started.elapsed();
            report
                .outcome
                .map_err(|f| anyhow::anyhow!("bench call failed: {f}"))?;
            if i >= iterations / 10 {
                times.push(elapsed); // first 10% is warm-up
            }
        }
        times.sort();
        line(
            label,
            "median_us",
            percentile(&times, 0.5).as_secs_f64() * 1e6,
        );
        line(
            label,
            "p99_us",
            percentile(&times, 0.99).as_secs_f64() * 1e6,
        );
    }

    for name in ["flow", "transform"] {
        let bytes = builtin(name)?;
        let dir = tempfile_dir()?;
        let config = RuntimeConfig {
            cache_dir: Some(dir.clone()),
            ..RuntimeConfig::default()
        };
        let started = Instant::now();
        Runtime::new(config.clone())?.load(bytes).await?;
        let compile = started.elapsed();
        let runtime = Runtime::new(config)?;
        let started = Instant::now();
        let piece = runtime.load(bytes).await?;
        let cached = started.elapsed();
        anyhow::ensure!(piece.from_cache(), "second load did not use the cache");
        line(
            &format!("load_{name}"),
            "compile_ms",
            compile.as_secs_f64() * 1e3,
        );
        line(
            &format!("load_{name}"),
            "from_cache_ms",
            cached.as_secs_f64() * 1e3,
        );
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_dir_all(cache);
    Ok(())
}

use super::setup::tempfile_dir;

/// A workflow of `flow.if` steps: a chain when `chain`, else `n` parallel
/// steps joined by one `flow.merge`.
pub(crate) fn bench_workflow(
    name: &str,
    n: usize,
    chain: bool,
) -> Result<omniflow::workflow::Workflow> {
    let mut steps = Vec::with_capacity(n + 1);
    for i in 0..n {
        let needs: Vec<String> = if chain && i > 0 {
            vec![format!("s{}", i - 1)]
        } else {
            Vec::new()
        };
        steps.push(serde_json::json!({
            "id": format!("s{i}"), "piece": "flow@^0.1", "action": "if",
            "input": { "condition": true }, "needs": needs,
        }));
    }
    if !chain {
        let all: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
        steps.push(serde_json::json!({
            "id": "join", "piece": "flow@^0.1", "action": "merge",
            "input": { "values": [] }, "needs": all,
        }));
    }
    let doc = serde_json::json!({ "name": name, "steps": steps });
    Ok(omniflow::workflow::Workflow::from_json(&doc.to_string())?)
}

pub(crate) async fn bench_executor(
    dir: &std::path::Path,
    parallel: usize,
) -> Result<omniflow::engine::Executor> {
    super::setup::executor(
        &super::config::Database::Sqlite(dir.join("bench.db")),
        &[],
        omniflow::engine::ExecutorConfig {
            max_parallel_steps: parallel,
            ..omniflow::engine::ExecutorConfig::default()
        },
        omniflow::runtime::Compiler::Optimized,
    )
    .await
}

async fn run_once(
    exec: &omniflow::engine::Executor,
    workflow: &omniflow::workflow::Workflow,
) -> Result<()> {
    // The path `omniflow run` takes: the run is created already claimed
    // under this process's lease, then driven.
    let claimed = omniflow::triggers::start_claimed(
        exec,
        workflow,
        omniflow::triggers::RunRequest::default(),
    )
    .await?;
    let id = claimed.run.id;
    let status = exec
        .execute_leased(claimed, tokio_util::sync::CancellationToken::new())
        .await?;
    anyhow::ensure!(
        status == omniflow::store::RunStatus::Succeeded,
        "bench run {id} ended {}",
        status.as_str()
    );
    Ok(())
}

/// Peak resident set size of this process, from `/proc/self/status`.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `bench chain40`: 40 sequential trivial steps per run, every step record
/// persisted to a SQLite file before the next starts.
pub(crate) async fn chain40(runs: usize) -> Result<()> {
    let dir = tempfile_dir()?;
    let exec = bench_executor(&dir, 16).await?;
    let workflow = bench_workflow("chain40", 40, true)?;
    for _ in 0..3 {
        run_once(&exec, &workflow).await?; // warm-up
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        run_once(&exec, &workflow).await?;
        times.push(started.elapsed());
    }
    times.sort();
    line(
        "chain40",
        "wall_ms_median",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
    );
    line(
        "chain40",
        "wall_ms_p99",
        percentile(&times, 0.99).as_secs_f64() * 1e3,
    );
    line(
        "chain40",
        "per_step_us_median",
        percentile(&times, 0.5).as_secs_f64() * 1e6 / 40.0,
    );
    if let Some(mb) = peak_rss_mb() {
        line("chain40", "peak_rss_mb", mb);
    }
    drop(exec);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// `bench fanout`: one run of `n` parallel trivial steps and a join.
pub(crate) async fn fanout(n: usize, parallel: usize) -> Result<()> {
    let dir = tempfile_dir()?;
    let exec = bench_executor(&dir, parallel.max(1)).await?;
    let warm = bench_workflow("fanout-warm", 10, false)?;
    run_once(&exec, &warm).await?;
    let workflow = bench_workflow("fanout", n.max(1), false)?;
    let started = Instant::now();
    run_once(&exec, &workflow).await?;
    let elapsed = started.elapsed();
    let steps = (n.max(1) + 1) as f64;
    line("fanout", "wall_ms", elapsed.as_secs_f64() * 1e3);
    line("fanout", "steps_per_s", steps / elapsed.as_secs_f64());
    if let Some(mb) = peak_rss_mb() {
        line("fanout", "peak_rss_mb", mb);
    }
    drop(exec);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// `bench throughput`: `runs` single-step runs queued at once, drained by
/// the server's worker pool (the same `WorkerPool` `serve` runs) on a
/// SQLite file.
pub(crate) async fn throughput(runs: usize, workers: usize) -> Result<()> {
    use omniflow::server::queue::{PoolConfig, WorkerPool};
    use omniflow::store::{NewRun, RunStatus};

    let runs = runs.max(1);
    let dir = tempfile_dir()?;
    let exec = std::sync::Arc::new(bench_executor(&dir, 16).await?);
    // Save the workflow (one run through it warms the piece up).
    let workflow = bench_workflow("throughput", 1, true)?;
    run_once(&exec, &workflow).await?;
    let stored = exec
        .store()
        .get_workflow("throughput", None)
        .await?
        .context("the bench workflow was not saved")?;
    let mut left = runs;
    while left > 0 {
        let batch = left.min(1000);
        let new: Vec<NewRun> = (0..batch)
            .map(|_| {
                let request = omniflow::triggers::RunRequest::new(
                    omniflow::triggers::TriggerKind::Manual,
                    serde_json::json!({}),
                );
                omniflow::triggers::new_run(&stored, request)
            })
            .collect();
        exec.store().create_runs(new).await?;
        left -= batch;
    }

    // Count finishes from the live events (a store query per check would
    // compete with the workers); re-count from the store after a lag.
    let mut events = exec.subscribe();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let pool = WorkerPool::start(
        exec.clone(),
        PoolConfig {
            workers: workers.max(1),
            poll_interval: Duration::from_millis(20),
            ..PoolConfig::default()
        },
        shutdown.clone(),
    );
    let mut done = 0usize;
    let finished = loop {
        use tokio::sync::broadcast::error::RecvError;
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Ok(Ok(omniflow::engine::RunEvent::RunFinished { run, status, .. })) => {
                anyhow::ensure!(
                    status == RunStatus::Succeeded,
                    "bench run {run} ended {status}"
                );
                done += 1;
            }
            Ok(Ok(_)) => {}
            Ok(Err(RecvError::Closed)) => anyhow::bail!("the executor stopped"),
            Ok(Err(RecvError::Lagged(_))) | Err(_) => {
                let stats = exec
                    .store()
                    .queue_stats(std::time::SystemTime::now(), true)
                    .await?;
                let count = |s: RunStatus| {
                    stats.runs_by_status.get(s.as_str()).copied().unwrap_or(0) as usize
                };
                let failed = count(RunStatus::Failed) + count(RunStatus::Cancelled);
                anyhow::ensure!(failed == 0, "{failed} bench runs did not succeed");
                // -1: the warm-up run.
                done = count(RunStatus::Succeeded).saturating_sub(1);
            }
        }
        if done >= runs {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the queue did not drain in 10 minutes"
        );
    };
    shutdown.cancel();
    pool.join().await;
    line("throughput", "runs", runs as f64);
    line("throughput", "wall_ms", finished.as_secs_f64() * 1e3);
    line(
        "throughput",
        "runs_per_s",
        runs as f64 / finished.as_secs_f64(),
    );
    if let Some(mb) = peak_rss_mb() {
        line("throughput", "peak_rss_mb", mb);
    }
    drop(exec);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
