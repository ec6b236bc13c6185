//! `omniflow bench chain40 --http`: the chain40 workflow (and a one-step
//! workflow, the API path's own floor) triggered through a real server
//! over loopback, `POST /api/v1/workflows/{name}/runs?wait=30s`, one run at
//! a time: the path an integrator's request takes (HTTP, trigger, queue,
//! wake-up, claim, execution, wait for the committed end).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::bench::{bench_executor, bench_workflow, line, percentile};
use super::setup::tempfile_dir;

const TOKEN: &str = "bench-admin-token";

/// Time `runs` runs of `name` through the API; returns the sorted walls.
async fn time_runs(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    runs: usize,
) -> Result<Vec<Duration>> {
    let url = format!("{base}/api/v1/workflows/{name}/runs?wait=30s");
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs + 3 {
        let started = Instant::now();
        let response = http.post(&url).bearer_auth(TOKEN).send().await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        let elapsed = started.elapsed();
        anyhow::ensure!(
            status.is_success() && body["status"] == "succeeded",
            "bench run of {name} answered {status}: {body}"
        );
        // The first three warm the pieces, the connection and the caches.
        if i >= 3 {
            times.push(elapsed);
        }
    }
    times.sort();
    Ok(times)
}

fn report(workload: &str, steps: usize, times: &[Duration]) {
    let median = percentile(times, 0.5);
    line(workload, "wall_ms_median", median.as_secs_f64() * 1e3);
    line(
        workload,
        "wall_ms_p99",
        percentile(times, 0.99).as_secs_f64() * 1e3,
    );
    line(
        workload,
        "per_step_us_median",
        median.as_secs_f64() * 1e6 / steps as f64,
    );
}

pub(crate) async fn chain40_http(runs: usize) -> Result<()> {
    use omniflow::server::queue::PoolConfig;
    use omniflow::server::{Server, ServerConfig};

    let dir = tempfile_dir()?;
    let exec = Arc::new(bench_executor(&dir, 16).await?);
    let server = Server::start(
        exec.clone(),
        ServerConfig {
            listen: "127.0.0.1:0".parse()?,
            pool: PoolConfig {
                workers: 16,
                ..PoolConfig::default()
            },
            admin_token: Some(TOKEN.to_owned()),
            run_scheduler: false,
            ..ServerConfig::default()
        },
    )
    .await
    .context("starting the bench server")?;
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    for (name, steps) in [("chain40", 40), ("one-step", 1)] {
        let workflow = bench_workflow(name, steps, true)?;
        let response = http
            .post(format!("{base}/api/v1/workflows"))
            .bearer_auth(TOKEN)
            .json(&serde_json::to_value(&workflow)?)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "saving {name}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let runs = runs.max(1);
    let chain = time_runs(&http, &base, "chain40", runs).await?;
    report("chain40-http", 40, &chain);
    let one = time_runs(&http, &base, "one-step", runs).await?;
    report("one-step-http", 1, &one);
    server.shutdown().await?;
    drop(exec);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
