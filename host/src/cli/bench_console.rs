//! `bench console`: server time of each web console page on a database
//! holding many runs (100 000 by default): the router driven in-process
//! (no socket), each request timed until its whole body is read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::BodyExt;
use omniflow::api::{ApiConfig, ApiState};
use omniflow::engine::{NoWorkers, RunQueue};
use omniflow::store::{NewRun, Priority, RunStatus};
use omniflow::triggers::schedule::{Scheduler, SystemClock};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::bench::{line, percentile};
use super::setup::tempfile_dir;

/// Runs written per transaction while filling the database.
const BATCH: usize = 1000;

pub(crate) async fn console(runs: usize, rounds: usize) -> Result<()> {
    let dir = tempfile_dir()?;
    let exec = Arc::new(
        super::setup::executor(
            &super::config::Database::Sqlite(dir.join("bench.db")),
            &[],
            omniflow::engine::ExecutorConfig::default(),
            omniflow::runtime::Compiler::Optimized,
        )
        .await?,
    );
    let store = exec.store().clone();
    // One real run of an 8-step workflow (the run page's subject) ...
    let workflow = omniflow::workflow::Workflow::from_json(
        &serde_json::json!({
            "name": "console-bench",
            "steps": (0..8).map(|i| serde_json::json!({
                "id": format!("s{i}"), "piece": "flow@^0.1", "action": "if",
                "input": { "condition": true },
                "needs": if i == 0 { vec![] } else { vec![format!("s{}", i / 2)] },
            })).collect::<Vec<_>>(),
        })
        .to_string(),
    )?;
    let claimed = omniflow::triggers::start_claimed(
        &exec,
        &workflow,
        omniflow::triggers::RunRequest::default(),
    )
    .await?;
    let real = claimed.run.id;
    let version = claimed.run.workflow_version;
    exec.execute_leased(claimed, CancellationToken::new())
        .await?;
    // ... then `runs` more: every 10th failed with an error, every 2nd succeeded.
    let fill = Instant::now();
    let mut ids = Vec::with_capacity(runs);
    for start in (0..runs).step_by(BATCH) {
        let batch: Vec<NewRun> = (start..runs.min(start + BATCH))
            .map(|i| NewRun {
                priority: Priority::Normal,
                trigger: serde_json::json!({"type": "manual", "payload": {"i": i}}),
                ..NewRun::manual("console-bench", version, serde_json::json!({}))
            })
            .collect();
        ids.extend(store.create_runs(batch).await?.into_iter().map(|r| r.id));
    }
    for (i, id) in ids.iter().enumerate() {
        if i % 10 == 0 {
            let error = format!("step s3 failed: retryable: upstream timeout after {i} ms");
            store
                .set_run_status(*id, RunStatus::Failed, Some(&error))
                .await?;
        } else if i % 2 == 0 {
            store
                .set_run_status(*id, RunStatus::Succeeded, None)
                .await?;
        }
    }
    line("console", "fill_s", fill.elapsed().as_secs_f64());
    line("console", "runs", (runs + 1) as f64);

    let token = store
        .create_token("bench", &omniflow::api::hash_token("bench-token"))
        .await?;
    let cookie = "bench-session";
    store
        .create_session(
            &omniflow::api::hash_token(cookie),
            token.id,
            std::time::SystemTime::now() + Duration::from_secs(3600),
        )
        .await?;
    let queue: Arc<dyn RunQueue> = Arc::new(NoWorkers);
    let scheduler = Scheduler::new(store.clone(), Arc::new(SystemClock), queue.clone());
    let router = omniflow::api::router(ApiState::new(
        exec.clone(),
        queue,
        scheduler,
        CancellationToken::new(),
        ApiConfig::default(),
    ));
    let middle = ids.get(ids.len() / 2).copied().unwrap_or(real);
    let pages = [
        ("runs_first_page", "/ui/runs".to_owned()),
        ("runs_failed", "/ui/runs?status=failed".to_owned()),
        ("runs_error_text", "/ui/runs?q=timeout+after+99".to_owned()),
        (
            "runs_last_hour",
            "/ui/runs?range=1h&workflow=console-bench".to_owned(),
        ),
        ("runs_deep_page", format!("/ui/runs?before={middle}")),
        ("run_page", format!("/ui/runs/{real}")),
        ("workflow_page", "/ui/workflows/console-bench".to_owned()),
        ("workflows", "/ui/workflows".to_owned()),
        ("pieces", "/ui/pieces".to_owned()),
        ("queue", "/ui/queue".to_owned()),
    ];
    for (name, path) in pages {
        let mut times = Vec::with_capacity(rounds);
        for _ in 0..rounds.max(1) {
            let request = http::Request::get(&path)
                .header(http::header::COOKIE, format!("omniflow_session={cookie}"))
                .body(axum::body::Body::empty())?;
            let started = Instant::now();
            let response = router.clone().oneshot(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            times.push(started.elapsed());
            anyhow::ensure!(
                status.is_success(),
                "{path}: {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        line(
            &format!("console_{name}"),
            "p50_ms",
            ms(percentile(&times, 0.5)),
        );
        line(
            &format!("console_{name}"),
            "max_ms",
            ms(*times.last().context("no rounds")?),
        );
    }
    Ok(())
}
