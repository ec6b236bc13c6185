//! `omniflow bench soak`: many runs across many workflows through the
//! server's worker pool, to see that memory plateaus (every cache that
//! grows with use is bounded).
//!
//! The runs go in ten rounds. Each round saves a new version of every
//! workflow (so the validated-version cache sees `rounds × workflows`
//! distinct versions), queues its share of runs spread over the newest
//! versions, and drains them. Printed: RSS before any run, after the first
//! round (`start`), the middle one and the last (`end`), each cache's
//! entries and bound, and the rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use omniflow::server::queue::{PoolConfig, WorkerPool};
use omniflow::store::{NewRun, RunStatus};

use super::bench::line;

/// Rounds the runs are split into.
const ROUNDS: usize = 10;

/// This process's resident set now, MiB.
fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn workflow(i: usize, round: usize) -> Result<omniflow::workflow::Workflow> {
    let doc = serde_json::json!({
        "name": format!("soak-{i}"),
        "vars": { "workflow": i, "round": round },
        "steps": [
            { "id": "pick", "piece": "transform@^0.1", "action": "template",
              "input": { "template": "soak {{ vars.workflow }} round {{ vars.round }}" } },
            { "id": "check", "piece": "flow@^0.1", "action": "if",
              "input": { "condition": true }, "needs": ["pick"] }
        ]
    });
    Ok(omniflow::workflow::Workflow::from_json(&doc.to_string())?)
}

pub(crate) async fn soak(runs: usize, workflows: usize, workers: usize) -> Result<()> {
    let workflows = workflows.max(1);
    let per_round = runs.max(ROUNDS) / ROUNDS;
    let dir = super::setup::tempfile_dir()?;
    let exec = Arc::new(super::bench::bench_executor(&dir, 16).await?);
    line("soak", "rss_mb_before_runs", rss_mb());
    let mut events = exec.subscribe();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let pool = WorkerPool::start(
        exec.clone(),
        PoolConfig {
            workers: workers.max(1),
            poll_interval: Duration::from_millis(20),
            ..PoolConfig::default()
        },
        shutdown.clone(),
    );
    let started = Instant::now();
    let mut done = 0usize;
    let mut queued = 0usize;
    for round in 0..ROUNDS {
        let mut stored = Vec::with_capacity(workflows);
        for i in 0..workflows {
            stored.push(exec.save_workflow(&workflow(i, round)?).await?);
        }
        let mut left = per_round;
        let mut next = 0usize;
        while left > 0 {
            let batch = left.min(1000);
            let new: Vec<NewRun> = (0..batch)
                .map(|k| {
                    let request = omniflow::triggers::RunRequest::new(
                        omniflow::triggers::TriggerKind::Manual,
                        serde_json::json!({}),
                    );
                    omniflow::triggers::new_run(&stored[(next + k) % workflows], request)
                })
                .collect();
            next += batch;
            exec.store().create_runs(new).await?;
            left -= batch;
        }
        queued += per_round;
        while done < queued {
            use tokio::sync::broadcast::error::RecvError;
            match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
                Ok(Ok(omniflow::engine::RunEvent::RunFinished { run, status, .. })) => {
                    anyhow::ensure!(
                        status == RunStatus::Succeeded,
                        "soak run {run} ended {status}"
                    );
                    done += 1;
                }
                Ok(Ok(_)) => {}
                Ok(Err(RecvError::Closed)) => anyhow::bail!("the executor stopped"),
                Ok(Err(RecvError::Lagged(_))) | Err(_) => {
                    let stats = exec
                        .store()
                        .queue_stats(std::time::SystemTime::now(), false)
                        .await?;
                    let count = |s: RunStatus| {
                        stats.runs_by_status.get(s.as_str()).copied().unwrap_or(0) as usize
                    };
                    let failed = count(RunStatus::Failed) + count(RunStatus::Cancelled);
                    anyhow::ensure!(failed == 0, "{failed} soak runs did not succeed");
                    done = count(RunStatus::Succeeded);
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(3600),
                "the soak did not finish in an hour"
            );
        }
        let point = match round {
            0 => Some("start"),
            r if r == ROUNDS / 2 - 1 => Some("middle"),
            r if r == ROUNDS - 1 => Some("end"),
            _ => None,
        };
        if let Some(point) = point {
            line("soak", &format!("rss_mb_{point}"), rss_mb());
            line("soak", &format!("runs_done_{point}"), done as f64);
        }
    }
    let elapsed = started.elapsed();
    for cache in exec.cache_sizes() {
        line(
            "soak",
            &format!("cache_{}_entries", cache.name),
            cache.entries as f64,
        );
        line(
            "soak",
            &format!("cache_{}_capacity", cache.name),
            cache.capacity as f64,
        );
    }
    line("soak", "runs", done as f64);
    line("soak", "workflow_versions", (workflows * ROUNDS) as f64);
    line("soak", "runs_per_s", done as f64 / elapsed.as_secs_f64());
    shutdown.cancel();
    pool.join().await;
    drop(exec);
    let _ = std::fs::remove_dir_all(dir).context("removing the soak's directory");
    Ok(())
}
