//! Bounded memory: the caches that grow with use stay within their bounds
//! when more distinct entries than that pass through, runs still succeed
//! after evictions, and `/metrics` reports each cache and the RSS.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use omniflow::api::{ApiConfig, ApiState, hash_token, router};
use omniflow::engine::{CacheCapacity, ExecutorConfig, NoWorkers, RunQueue};
use omniflow::store::RunStatus;
use omniflow::triggers::schedule::{Scheduler, SystemClock};
use omniflow::triggers::{self, RunRequest};
use omniflow::workflow::Workflow;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Each workflow uses a different action, so the input-validator cache
/// (keyed by piece and action) sees several keys too.
fn workflow(i: usize) -> Workflow {
    let (piece, action, input) = match i % 3 {
        0 => ("flow@^0.1", "if", json!({ "condition": true })),
        1 => (
            "transform@^0.1",
            "template",
            json!({ "template": format!("w{i}") }),
        ),
        _ => (
            "transform@^0.1",
            "pick",
            json!({ "value": { "a": i }, "keys": ["a"] }),
        ),
    };
    Workflow::from_json(
        &json!({
            "name": format!("bounded-{i}"),
            "vars": { "i": i },
            "steps": [{ "id": "s", "piece": piece, "action": action, "input": input }]
        })
        .to_string(),
    )
    .unwrap()
}

#[tokio::test]
async fn caches_stay_within_their_bounds_when_exceeded_and_metrics_report_them() {
    let dir = tempfile::tempdir().unwrap();
    let capacity = CacheCapacity {
        validated_workflows: 4,
        input_validators: 2,
    };
    let exec = Arc::new(
        crate::support::executor_in(
            dir.path(),
            &[],
            ExecutorConfig {
                cache_capacity: capacity,
                ..ExecutorConfig::default()
            },
        )
        .await,
    );
    // 45 distinct versions (three rounds of 15 workflows), each run once;
    // versions evicted in between are read and validated again.
    for round in 0..3 {
        for i in 0..15 {
            let mut wf = workflow(i);
            wf.vars.insert("round".into(), json!(round));
            let run = triggers::start(&exec, &wf, RunRequest::default())
                .await
                .unwrap();
            let status = exec.execute(run, CancellationToken::new()).await.unwrap();
            assert_eq!(status, RunStatus::Succeeded, "run {run}");
        }
    }
    let sizes = exec.cache_sizes();
    let size = |name: &str| {
        sizes
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no cache {name}: {sizes:?}"))
            .clone()
    };
    let validated = size("validated_workflows");
    assert_eq!(validated.capacity, 4);
    assert_eq!(validated.entries, 4, "full, not over: {sizes:?}");
    let validators = size("input_validators");
    assert_eq!(validators.capacity, 2);
    assert_eq!(validators.entries, 2, "{sizes:?}");
    let loaded = size("loaded_pieces");
    assert!(loaded.entries <= loaded.capacity, "{sizes:?}");

    // /metrics reports them (and this process's RSS).
    exec.store()
        .create_token("metrics", &hash_token("m-token"))
        .await
        .unwrap();
    let queue: Arc<dyn RunQueue> = Arc::new(NoWorkers);
    let scheduler = Scheduler::new(exec.store().clone(), Arc::new(SystemClock), queue.clone());
    let state = ApiState::new(
        exec.clone(),
        queue,
        scheduler,
        CancellationToken::new(),
        ApiConfig::default(),
    );
    let response = router(state)
        .oneshot(
            Request::get("/api/v1/metrics")
                .header("authorization", "Bearer m-token")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(response.status().is_success());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    for line in [
        "omniflow_cache_entries{cache=\"validated_workflows\"} 4",
        "omniflow_cache_capacity{cache=\"validated_workflows\"} 4",
        "omniflow_cache_entries{cache=\"input_validators\"} 2",
        "omniflow_cache_capacity{cache=\"input_validators\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    let rss: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("omniflow_process_resident_memory_bytes "))
        .unwrap_or_else(|| panic!("no RSS in:\n{text}"))
        .parse()
        .unwrap();
    assert!(rss > 1 << 20, "RSS {rss} bytes");
}
