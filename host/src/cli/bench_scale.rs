//! `omniflow bench throughput --db postgres://... --processes 1,2,4`:
//! scale-out on one PostgreSQL database. For each process count, that
//! many `omniflow worker` children (this binary) drain N queued
//! single-step runs; then, with the workers idle, runs queued one at a
//! time measure how soon one is claimed (queued → started, through
//! `LISTEN/NOTIFY`). Prints runs/s, claim latency p50/p99, each child's
//! peak RSS and the CPU the children used (cores busy = CPU seconds /
//! wall seconds: on 2 cores, the evidence of where the limit is).
//!
//! The database keeps the bench's runs (workflow `bench-throughput`);
//! progress is read with the store's queue counters, not SQL.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use omniflow::store::{NewRun, RunStatus, Store};

use super::bench::{line, percentile};

const WORKFLOW: &str = "bench-throughput";
/// Runs queued one at a time for the claim latency.
const LATENCY_RUNS: usize = 100;

/// One `omniflow worker` child; killed when dropped.
struct Worker(Child);

impl Worker {
    fn start(url: &str, workers: usize) -> Result<Worker> {
        let exe = std::env::current_exe().context("finding this binary")?;
        let child = Command::new(exe)
            .args(["worker", "--db", url, "--no-scheduler"])
            .args(["--workers", &workers.to_string()])
            .env_remove("OMNIFLOW_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting an omniflow worker")?;
        Ok(Worker(child))
    }

    fn proc_file(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.0.id())).ok()
    }

    /// Peak RSS (VmHWM) in MiB.
    fn peak_rss_mb(&self) -> Option<f64> {
        let status = self.proc_file("status")?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
    }

    /// User + system CPU seconds so far.
    fn cpu_s(&self) -> Option<f64> {
        let stat = self.proc_file("stat")?;
        // Fields after the command name (which may hold spaces).
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        Some(ticks / 100.0) // USER_HZ is 100 on Linux
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn succeeded(store: &Arc<dyn Store>) -> Result<u64> {
    let stats = store.queue_stats(SystemTime::now(), true).await?;
    let count = |s: RunStatus| stats.runs_by_status.get(s.as_str()).copied().unwrap_or(0);
    let bad = count(RunStatus::Failed) + count(RunStatus::Cancelled);
    anyhow::ensure!(bad == 0, "{bad} bench runs did not succeed");
    Ok(count(RunStatus::Succeeded))
}

/// Wait until `target` runs have succeeded in all (10 minutes at most).
async fn wait_succeeded(store: &Arc<dyn Store>, target: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while succeeded(store).await? < target {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the queue did not drain in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn new_runs(version: i64, n: usize) -> Vec<NewRun> {
    (0..n)
        .map(|_| NewRun::manual(WORKFLOW, version, serde_json::json!({})))
        .collect()
}

/// The whole bench: `runs` runs per process count in `processes`, each
/// child executing `workers` runs at once.
pub(crate) async fn throughput(
    url: &str,
    runs: usize,
    workers: usize,
    processes: &[usize],
) -> Result<()> {
    let store = omniflow::store::open(url)
        .await
        .context("opening the database")?;
    let definition = serde_json::json!({"name": WORKFLOW, "steps": [
        {"id": "s0", "piece": "flow@^0.1", "action": "if", "input": {"condition": true}}
    ]});
    let version = store.save_workflow(WORKFLOW, &definition).await?.version;
    for &n in processes {
        let workload = format!("throughput-pg-{n}proc");
        let children = (0..n)
            .map(|_| Worker::start(url, workers))
            .collect::<Result<Vec<_>>>()?;
        // Warm-up: every child up, its pieces loaded.
        let base = succeeded(&store).await?;
        store.create_runs(new_runs(version, 4 * n)).await?;
        wait_succeeded(&store, base + 4 * n as u64).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;

        let cpu_before: f64 = children.iter().filter_map(Worker::cpu_s).sum();
        let base = succeeded(&store).await?;
        let started = Instant::now();
        let mut left = runs;
        while left > 0 {
            let batch = left.min(1000);
            store.create_runs(new_runs(version, batch)).await?;
            left -= batch;
        }
        wait_succeeded(&store, base + runs as u64).await?;
        let wall = started.elapsed();
        let cpu: f64 = children.iter().filter_map(Worker::cpu_s).sum::<f64>() - cpu_before;
        line(&workload, "runs", runs as f64);
        line(&workload, "runs_per_s", runs as f64 / wall.as_secs_f64());
        line(&workload, "worker_cpu_cores", cpu / wall.as_secs_f64());

        // Claim latency: idle workers, one run queued at a time.
        let mut latencies = Vec::with_capacity(LATENCY_RUNS);
        for _ in 0..LATENCY_RUNS {
            let run = store
                .create_runs(new_runs(version, 1))
                .await?
                .pop()
                .context("no run created")?;
            let deadline = Instant::now() + Duration::from_secs(30);
            let record = loop {
                let record = store.get_run(run.id).await?.context("the run vanished")?;
                if record.status.is_terminal() {
                    break record;
                }
                anyhow::ensure!(Instant::now() < deadline, "run {} was not executed", run.id);
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            let created = humantime::parse_rfc3339_weak(&record.created_at)?;
            let started = record
                .started_at
                .as_deref()
                .map(humantime::parse_rfc3339_weak)
                .transpose()?
                .context("a finished run without a start time")?;
            latencies.push(started.duration_since(created).unwrap_or_default());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        line(
            &workload,
            "claim_latency_p50_ms",
            ms(percentile(&latencies, 0.5)),
        );
        line(
            &workload,
            "claim_latency_p99_ms",
            ms(percentile(&latencies, 0.99)),
        );
        let rss: Vec<f64> = children.iter().filter_map(Worker::peak_rss_mb).collect();
        if let Some(max) = rss.iter().copied().reduce(f64::max) {
            line(&workload, "peak_rss_mb_max_per_process", max);
        }
        drop(children);
    }
    Ok(())
}
