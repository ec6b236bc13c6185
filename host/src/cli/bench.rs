//! `omniflow bench ...`: benchmarks printing `workload metric value` lines,
//! the unit in the metric name. Numbers, not pass/fail: targets live in the
//! README's performance section.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use omniflow::runtime::{Runtime, RuntimeConfig, StepCall, builtin::BUILTIN_PIECES};

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn line(workload: &str, metric: &str, value: f64) {
    println!("{workload} {metric} {value:.2}");
}

fn builtin(name: &str) -> Result<&'static [u8]> {
    BUILTIN_PIECES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
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
        line(label, "median_us", percentile(&times, 0.5).as_secs_f64() * 1e6);
        line(label, "p99_us", percentile(&times, 0.99).as_secs_f64() * 1e6);
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
        line(&format!("load_{name}"), "compile_ms", compile.as_secs_f64() * 1e3);
        line(&format!("load_{name}"), "from_cache_ms", cached.as_secs_f64() * 1e3);
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_dir_all(cache);
    Ok(())
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "omniflow-bench-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
