//! `omniflow bench cold-start`: what a first run costs on an empty compiled-
//! piece cache (a fresh container, CI job or worker), as a user meets it: this
//! binary started as a child process, timed from spawn to exit, with its peak
//! RSS (the child reports its own `VmHWM` at exit, see `report_peak_rss`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::bench::line;
use super::setup::tempfile_dir;

/// The README's first example, embedded so the bench runs from any directory.
const HELLO: &str = include_str!("../../../examples/hello.json");

/// One `code` step: the first JS step a user runs.
const ONE_CODE_STEP: &str = r#"{
  "name": "cold-code",
  "steps": [
    { "id": "sum", "piece": "code@^0.1", "action": "run-js",
      "input": { "code": "return input.a + input.b;", "input": { "a": 1, "b": 2 } } }
  ]
}"#;

/// Set in a child's environment: it prints `peak_rss_kb N` on stderr at exit.
pub(crate) const REPORT_RSS_VAR: &str = "OMNIFLOW_BENCH_REPORT_RSS";

/// Print this process's peak RSS when [`REPORT_RSS_VAR`] is set (Linux).
pub(crate) fn report_peak_rss() {
    if std::env::var_os(REPORT_RSS_VAR).is_none() {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(kb) = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    {
        eprintln!("peak_rss_kb {kb}");
    }
}

/// `omniflow run FILE` in a child with its own cache dir and database,
/// compiling cache misses with `compiler`: (wall ms, peak RSS MB).
fn timed_run(dir: &Path, workflow: &Path, cache: &Path, compiler: &str) -> Result<(f64, f64)> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let started = Instant::now();
    let out = Command::new(exe)
        .arg("run")
        .arg(workflow)
        .arg("--db")
        .arg(dir.join("cold.db"))
        .env("OMNIFLOW_CACHE_DIR", cache)
        .env(REPORT_RSS_VAR, "1")
        .env("OMNIFLOW_COMPILER", compiler)
        .env_remove("OMNIFLOW_DATABASE_URL")
        .current_dir(dir)
        .output()
        .context("starting `omniflow run`")?;
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "`omniflow run {}` failed:\n{}{stderr}",
            workflow.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let rss_kb: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    Ok((wall_ms, rss_kb / 1024.0))
}

/// Each workload on an empty cache, then again with the cache it filled;
/// first as `run` compiles by default (baseline, Winch), then with
/// `OMNIFLOW_COMPILER=optimized` (Cranelift, what `serve` uses), whose
/// lines carry `-optimized` in the workload name.
pub(crate) fn cold_start(rounds: usize) -> Result<()> {
    let dir = tempfile_dir()?;
    let cases = [("hello", HELLO), ("code_step", ONE_CODE_STEP)];
    for (compiler, suffix) in [("baseline", ""), ("optimized", "-optimized")] {
        for (name, text) in cases {
            let file = dir.join(format!("{name}.json"));
            std::fs::write(&file, text)?;
            for round in 0..rounds.max(1) {
                let cache = dir.join(format!("cache-{compiler}-{name}-{round}"));
                let (cold_ms, cold_rss) = timed_run(&dir, &file, &cache, compiler)?;
                let (warm_ms, warm_rss) = timed_run(&dir, &file, &cache, compiler)?;
                line(&format!("cold-start{suffix}_{name}"), "wall_ms", cold_ms);
                line(
                    &format!("cold-start{suffix}_{name}"),
                    "peak_rss_mb",
                    cold_rss,
                );
                line(&format!("warm-start{suffix}_{name}"), "wall_ms", warm_ms);
                line(
                    &format!("warm-start{suffix}_{name}"),
                    "peak_rss_mb",
                    warm_rss,
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
