//! `omniflow serve` end to end: the server started in-process on
//! 127.0.0.1:0, driven over a real socket with reqwest; real pieces, real
//! SQLite files.

mod browser;
mod console;
mod lang_pieces;
pub(crate) mod oneshot;
mod pieces;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use omniflow::api::{ApiConfig, SIGNATURE_HEADER, sign_webhook};
use omniflow::engine::{Executor, ExecutorConfig, RunEvent};
use omniflow::server::queue::PoolConfig;
use omniflow::server::{Server, ServerConfig};
use omniflow::store::{Priority, RunId, RunStatus};
use omniflow::triggers::schedule::ManualClock;
use omniflow::triggers::{self, RunRequest};
use omniflow::workflow::Workflow;
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "test-admin-token";
/// Upper bound for anything a test waits for (never reached when things work).
const PATIENCE: Duration = Duration::from_secs(60);

struct TestServer {
    server: Option<Server>,
    exec: Arc<Executor>,
    base: String,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

async fn executor(dir: &std::path::Path) -> Arc<Executor> {
    Arc::new(
        crate::support::executor_in(dir, &["flaky", "hostile_loop"], ExecutorConfig::default())
            .await,
    )
}

fn config(workers: usize, admin_token: Option<&str>) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool: PoolConfig {
            workers,
            poll_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(10),
            ..PoolConfig::default()
        },
        api: ApiConfig {
            // These tests send many wrong tokens on purpose (`edge.rs`
            // tests the limit).
            auth_failures: omniflow::api::FailureLimit {
                max_failures: 10_000,
                ..Default::default()
            },
            ..ApiConfig::default()
        },
        admin_token: admin_token.map(str::to_owned),
        ..ServerConfig::default()
    }
}

async fn start(workers: usize) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(dir.path()).await;
    start_on(dir, exec, config(workers, Some(TOKEN))).await
}

async fn start_on(dir: tempfile::TempDir, exec: Arc<Executor>, config: ServerConfig) -> TestServer {
    let server = Server::start(exec.clone(), config).await.unwrap();
    TestServer {
        base: format!("http://{}", server.local_addr()),
        server: Some(server),
        exec,
        http: reqwest::Client::new(),
        dir,
    }
}

impl TestServer {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(TOKEN)
    }

    fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(self.url(path)).bearer_auth(TOKEN).json(body)
    }

    async fn json(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text}"));
        (status, body)
    }

    async fn create_workflow(&self, workflow: &Value) {
        let (status, body) = self.json(self.post("/api/v1/workflows", workflow)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    async fn run(&self, id: &str) -> Value {
        let (status, body) = self.json(self.get(&format!("/api/v1/runs/{id}"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Poll `GET /runs/{id}` until `done` says so (bounded by PATIENCE).
    async fn wait_run(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let run = self.run(id).await;
            if done(&run) {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {id} never got there: {run}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_finished(&self, id: &str) -> Value {
        self.wait_run(id, |r| {
            ["succeeded", "failed", "cancelled"].contains(&r["status"].as_str().unwrap_or(""))
        })
        .await
    }

    async fn stop(mut self) -> tempfile::TempDir {
        self.server.take().unwrap().shutdown().await.unwrap();
        self.dir
    }
}

fn echo_workflow(name: &str) -> Value {
    json!({
        "name": name,
        "steps": [
            { "id": "echo", "piece": "flaky", "action": "run",
              "input": { "value": "{{ trigger.payload.x }}" } }
        ]
    })
}

/// `a` succeeds; `b` (after `a`) fails its first attempt and has no retries.
fn fails_once_workflow(name: &str) -> Value {
    json!({
        "name": name,
        "steps": [
            { "id": "a", "piece": "flaky", "action": "run", "input": { "value": 1 } },
            { "id": "b", "piece": "flaky", "action": "run", "needs": ["a"],
              "input": { "fail_times": 1, "value": "{{ steps.a.output.value + 1 }}" },
              "retry": { "max_attempts": 1 } }
        ]
    })
}

fn spin_workflow(name: &str) -> Value {
    json!({
        "name": name,
        "steps": [{ "id": "spin", "piece": "hostile-loop", "action": "run", "input": {},
                    "timeout": "120s", "limits": { "fuel": 10_000_000_000_000u64 } }]
    })
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {run}"))
}

#[tokio::test]
async fn workflow_crud_versions_and_validate() {
    let s = start(2).await;
    let wf = echo_workflow("crud");
    let (status, created) = s.json(s.post("/api/v1/workflows", &wf)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["version"], 1);

    // Creating it again is a conflict; PUT saves a new version.
    let (status, body) = s.json(s.post("/api/v1/workflows", &wf)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "conflict");
    let mut changed = wf.clone();
    changed["description"] = json!("second version");
    let (status, body) = s
        .json(
            s.http
                .put(s.url("/api/v1/workflows/crud"))
                .bearer_auth(TOKEN)
                .json(&changed),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 2);
    // A PUT whose body names another workflow is refused.
    let (status, _) = s
        .json(
            s.http
                .put(s.url("/api/v1/workflows/other"))
                .bearer_auth(TOKEN)
                .json(&changed),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, got) = s.json(s.get("/api/v1/workflows/crud")).await;
    assert_eq!(got["version"], 2);
    assert_eq!(got["definition"]["description"], "second version");
    let (_, versions) = s.json(s.get("/api/v1/workflows/crud/versions")).await;
    let numbers: Vec<i64> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2]);
    let (_, list) = s.json(s.get("/api/v1/workflows")).await;
    assert_eq!(list["workflows"].as_array().unwrap().len(), 1);

    // An invalid workflow names the problem and is not stored.
    let bad = json!({ "name": "bad", "steps": [{ "id": "x", "piece": "nope", "action": "run", "input": {} }] });
    let (status, body) = s.json(s.post("/api/v1/workflows", &bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "invalid_workflow");
    assert_eq!(body["error"]["problems"][0]["at"], "steps[x]");
    let (status, _) = s.json(s.get("/api/v1/workflows/bad")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = s.json(s.post("/api/v1/workflows:validate", &bad)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["valid"], false);
    assert!(!body["problems"].as_array().unwrap().is_empty());
    let (_, body) = s.json(s.post("/api/v1/workflows:validate", &wf)).await;
    assert_eq!(body["valid"], true);

    // Delete hides it; runs can no longer be triggered.
    let response = s
        .http
        .delete(s.url("/api/v1/workflows/crud"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let (status, body) = s.json(s.get("/api/v1/workflows/crud")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (_, list) = s.json(s.get("/api/v1/workflows")).await;
    assert!(list["workflows"].as_array().unwrap().is_empty());
    let (status, _) = s
        .json(s.post("/api/v1/workflows/crud/runs", &json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test]
async fn trigger_with_wait_returns_the_finished_run() {
    let s = start(4).await;
    s.create_workflow(&echo_workflow("echo")).await;
    let (status, run) = s
        .json(s.post(
            "/api/v1/workflows/echo/runs",
            &json!({ "payload": { "x": "hello" }, "priority": "high", "wait_ms": 60000 }),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["priority"], "high");
    assert_eq!(run["output"]["value"], "hello");
    let echo = step(&run, "echo");
    assert_eq!(echo["input"], json!({ "value": "hello" }));
    assert_eq!(echo["attempts"], 1);
    assert_eq!(echo["attempt_details"].as_array().unwrap().len(), 1);
    assert!(echo["started_at"].is_string() && echo["finished_at"].is_string());

    // Without a wait: 202 and the run id; it finishes on its own.
    let (status, queued) = s
        .json(s.post(
            "/api/v1/workflows/echo/runs?wait=0s",
            &json!({ "payload": { "x": 2 } }),
        ))
        .await;
    assert!(
        status == StatusCode::ACCEPTED || status == StatusCode::OK,
        "{status}"
    );
    let id = queued["id"].as_str().unwrap().to_owned();
    let done = s.wait_finished(&id).await;
    assert_eq!(done["output"]["value"], 2);

    // Listing filters by workflow and status.
    let (_, list) = s
        .json(s.get("/api/v1/runs?workflow=echo&status=succeeded&limit=10"))
        .await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 2);
    let (status, body) = s.json(s.get("/api/v1/runs?status=bogus")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_request");
    let (status, _) = s.json(s.get("/api/v1/runs/not-a-uuid")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = s
        .json(s.get(&format!("/api/v1/runs/{}", RunId::now_v7())))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (_, stats) = s.json(s.get("/api/v1/stats")).await;
    assert_eq!(stats["runs_by_status"]["succeeded"], 2);
    assert_eq!(stats["queued_by_priority"]["critical"], 0);
    let metrics = s
        .get("/api/v1/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("omniflow_runs{status=\"succeeded\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE omniflow_queue_depth gauge"));
    let (status, pieces) = s.json(s.get("/api/v1/pieces")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        pieces["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "flaky")
    );
    let (_, flaky) = s.json(s.get("/api/v1/pieces/flaky")).await;
    assert!(flaky["versions"][0]["actions"][0]["input_schema"].is_object());
    let (status, _) = s.json(s.get("/api/v1/pieces/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.json(s.get("/api/v1/ready")).await;
    assert_eq!(status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn batch_of_40_runs_higher_priority_first_under_contention() {
    // One worker: the queue decides the order.
    let s = start(1).await;
    s.create_workflow(&echo_workflow("batch")).await;
    let mut events = s.exec.subscribe();
    let priorities = ["low", "normal", "high", "critical"];
    let runs: Vec<Value> = (0..40)
        .map(|i| json!({ "workflow": "batch", "priority": priorities[i % 4], "payload": { "x": i } }))
        .collect();
    let (status, body) = s
        .json(s.post("/api/v1/runs:batch", &json!({ "runs": runs })))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let created = body["runs"].as_array().unwrap();
    assert_eq!(created.len(), 40);
    let priority_of: HashMap<RunId, Priority> = created
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().parse().unwrap(),
                serde_json::from_value(r["priority"].clone()).unwrap(),
            )
        })
        .collect();

    let mut finished: Vec<RunId> = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        while finished.len() < 40 {
            if let Ok(RunEvent::RunFinished { run, status, .. }) = events.recv().await {
                assert_eq!(status, RunStatus::Succeeded);
                if priority_of.contains_key(&run) {
                    finished.push(run);
                }
            }
        }
    })
    .await
    .expect("the batch finishes");
    let order: Vec<Priority> = finished.iter().map(|id| priority_of[id]).collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(order, sorted, "critical first, then high, normal, low");
    // FIFO within a priority: ids are UUID v7, so creation order.
    for p in Priority::ALL {
        let same: Vec<&RunId> = finished.iter().filter(|id| priority_of[id] == p).collect();
        assert!(
            same.windows(2).all(|w| w[0] < w[1]),
            "{p} runs out of order"
        );
    }
    let (_, stats) = s.json(s.get("/api/v1/stats")).await;
    assert_eq!(stats["runs_by_status"]["succeeded"], 40);
    assert_eq!(stats["queued"], 0);
    s.stop().await;
}

/// Read an SSE response to its end: (event name, data) pairs.
async fn read_sse(response: reqwest::Response) -> Vec<(String, Value)> {
    let mut text = String::new();
    let mut body = response.bytes_stream();
    tokio::time::timeout(PATIENCE, async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    })
    .await
    .expect("the event stream ends");
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(d.trim()).unwrap());
                }
            }
            Some((name?, data?))
        })
        .collect()
}

#[tokio::test]
async fn sse_stream_is_observed_to_completion() {
    let s = start(2).await;
    s.create_workflow(&json!({
        "name": "events",
        "steps": [
            // A slow first step keeps the run busy while the stream connects.
            { "id": "a", "piece": "flaky", "action": "run", "input": { "value": 1, "sleep_ms": 500 } },
            { "id": "b", "piece": "flaky", "action": "run", "needs": ["a"],
              "input": { "fail_times": 1 },
              "retry": { "max_attempts": 2, "initial_delay": "10ms", "jitter": false } }
        ]
    }))
    .await;
    let (_, run) = s
        .json(s.post("/api/v1/workflows/events/runs", &json!({})))
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    let response = s
        .get(&format!("/api/v1/runs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = read_sse(response).await;
    let names: Vec<(&str, &str)> = events
        .iter()
        .map(|(name, data)| (name.as_str(), data["step"].as_str().unwrap_or("")))
        .collect();
    assert!(names.contains(&("step_finished", "a")), "{names:?}");
    assert!(names.contains(&("step_retrying", "b")), "{names:?}");
    assert!(names.contains(&("step_started", "b")), "{names:?}");
    assert!(names.contains(&("step_finished", "b")), "{names:?}");
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "run_finished");
    assert_eq!(data["status"], "succeeded");
    assert!(events.iter().all(|(_, d)| d["run"] == id.as_str()));

    // A finished run: its final event at once, then the stream ends.
    let response = s
        .get(&format!("/api/v1/runs/{id}/events"))
        .send()
        .await
        .unwrap();
    let events = read_sse(response).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "run_finished");
    assert_eq!(events[0].1["status"], "succeeded");
    s.stop().await;
}

#[tokio::test]
async fn cancel_a_running_and_a_queued_run() {
    let s = start(1).await;
    s.create_workflow(&spin_workflow("spin")).await;
    let (_, a) = s
        .json(s.post("/api/v1/workflows/spin/runs", &json!({})))
        .await;
    let a = a["id"].as_str().unwrap().to_owned();
    s.wait_run(&a, |r| r["status"] == "running").await;
    // The only worker is busy: this one stays queued.
    let (_, b) = s
        .json(s.post("/api/v1/workflows/spin/runs", &json!({})))
        .await;
    let b = b["id"].as_str().unwrap().to_owned();

    let (status, body) = s
        .json(s.post(&format!("/api/v1/runs/{b}/cancel"), &json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");
    let (status, body) = s
        .json(s.post(&format!("/api/v1/runs/{a}/cancel"), &json!({})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = s.wait_finished(&a).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(step(&run, "spin")["status"], "cancelled");
    let run_b = s.run(&b).await;
    assert_eq!(run_b["status"], "cancelled");
    assert!(run_b["steps"].as_array().unwrap().is_empty(), "b never ran");

    let (status, body) = s
        .json(s.post(&format!("/api/v1/runs/{a}/cancel"), &json!({})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "conflict");
    s.stop().await;
}

#[tokio::test]
async fn retry_resumes_from_the_failed_step() {
    let s = start(2).await;
    s.create_workflow(&fails_once_workflow("retry")).await;
    let (_, run) = s
        .json(s.post("/api/v1/workflows/retry/runs", &json!({ "wait_ms": 60000 })))
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let a_before = step(&run, "a").clone();
    assert_eq!(step(&run, "b")["status"], "failed");

    let (status, body) = s
        .json(s.post(&format!("/api/v1/runs/{id}/retry"), &json!({})))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let run = s.wait_finished(&id).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    // `a` was kept, not re-run; `b` ran once more (attempt numbers continue).
    let a_after = step(&run, "a");
    assert_eq!(a_after["attempts"], 1);
    assert_eq!(a_after["finished_at"], a_before["finished_at"]);
    let b = step(&run, "b");
    assert_eq!(b["status"], "succeeded");
    assert_eq!(b["attempts"], 2);
    assert_eq!(b["output"]["value"], 2);
    assert_eq!(b["output"]["attempt"], 2);

    // A succeeded run cannot be retried.
    let (status, body) = s
        .json(s.post(&format!("/api/v1/runs/{id}/retry"), &json!({})))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn retry_failed_requeues_every_failed_run() {
    let s = start(4).await;
    s.create_workflow(&fails_once_workflow("bulk")).await;
    s.create_workflow(&echo_workflow("fine")).await;
    let mut failed = Vec::new();
    for _ in 0..2 {
        let (_, run) = s
            .json(s.post("/api/v1/workflows/bulk/runs", &json!({ "wait_ms": 60000 })))
            .await;
        assert_eq!(run["status"], "failed");
        failed.push(run["id"].as_str().unwrap().to_owned());
    }
    let (_, ok) = s
        .json(s.post(
            "/api/v1/workflows/fine/runs",
            &json!({ "wait_ms": 60000, "payload": { "x": 1 } }),
        ))
        .await;
    assert_eq!(ok["status"], "succeeded");

    let (status, body) = s
        .json(s.post("/api/v1/runs:retry-failed", &json!({ "workflow": "bulk" })))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let mut retried: Vec<String> = body["retried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    retried.sort();
    failed.sort();
    assert_eq!(retried, failed);
    for id in &failed {
        assert_eq!(s.wait_finished(id).await["status"], "succeeded");
    }
    // Nothing failed is left.
    let (_, body) = s
        .json(s.post("/api/v1/runs:retry-failed", &json!({})))
        .await;
    assert!(body["retried"].as_array().unwrap().is_empty());
    s.stop().await;
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn webhook_accepts_good_signatures_once_and_rejects_bad_ones() {
    let s = start(2).await;
    s.create_workflow(&echo_workflow("hook")).await;
    let (status, body) = s
        .json(
            s.http
                .put(s.url("/api/v1/workflows/hook/webhook"))
                .bearer_auth(TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let secret = body["secret"].as_str().unwrap().to_owned();
    let hook = s.url("/hooks/hook");
    let payload = br#"{"x": "from-hook"}"#.to_vec();

    // Good signature, synchronous: the run's output.
    let signature = sign_webhook(&secret, unix_now(), &payload);
    let send = |sig: Option<String>, body: Vec<u8>, query: &str| {
        let mut request = s.http.post(format!("{hook}{query}")).body(body);
        if let Some(sig) = sig {
            request = request.header(SIGNATURE_HEADER, sig);
        }
        s.json(request)
    };
    let (status, run) = send(Some(signature.clone()), payload.clone(), "?wait=true").await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"]["value"], "from-hook");
    assert_eq!(run["trigger"]["type"], "webhook");

    // The same delivery again is a replay.
    let (status, body) = send(Some(signature), payload.clone(), "").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "replayed");

    // Wrong secret, stale timestamp, tampered body, no header: 401.
    let (status, body) = send(
        Some(sign_webhook("wrong", unix_now(), &payload)),
        payload.clone(),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "bad_signature");
    let stale = sign_webhook(&secret, unix_now() - 600, &payload);
    let (status, _) = send(Some(stale), payload.clone(), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let signed = sign_webhook(&secret, unix_now(), &payload);
    let (status, _) = send(Some(signed), br#"{"x": "tampered"}"#.to_vec(), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(None, payload.clone(), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = send(Some("t=abc,v1=zz".into()), payload.clone(), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .json(
            s.http
                .post(s.url("/hooks/nope"))
                .header(SIGNATURE_HEADER, "t=1,v1=00")
                .body("{}"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Asynchronous: 202 and a run id.
    let body2 = br#"{"x": 7}"#.to_vec();
    let (status, queued) = send(Some(sign_webhook(&secret, unix_now(), &body2)), body2, "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let run = s.wait_finished(queued["id"].as_str().unwrap()).await;
    assert_eq!(run["output"]["value"], 7);

    // Only the two accepted deliveries made runs.
    let (_, list) = s.json(s.get("/api/v1/runs?workflow=hook")).await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 2);
    s.stop().await;
}

#[tokio::test]
async fn every_protected_route_requires_a_valid_token() {
    let s = start(1).await;
    let id = RunId::now_v7();
    let routes = [
        ("GET", "/api/v1/workflows".to_owned()),
        ("POST", "/api/v1/workflows".to_owned()),
        ("POST", "/api/v1/workflows:validate".to_owned()),
        ("GET", "/api/v1/workflows/x".to_owned()),
        ("PUT", "/api/v1/workflows/x".to_owned()),
        ("DELETE", "/api/v1/workflows/x".to_owned()),
        ("GET", "/api/v1/workflows/x/versions".to_owned()),
        ("PUT", "/api/v1/workflows/x/webhook".to_owned()),
        ("POST", "/api/v1/workflows/x/runs".to_owned()),
        ("GET", "/api/v1/runs".to_owned()),
        ("POST", "/api/v1/runs:batch".to_owned()),
        ("POST", "/api/v1/runs:retry-failed".to_owned()),
        ("GET", format!("/api/v1/runs/{id}")),
        ("GET", format!("/api/v1/runs/{id}/events")),
        ("POST", format!("/api/v1/runs/{id}/cancel")),
        ("POST", format!("/api/v1/runs/{id}/retry")),
        ("GET", "/api/v1/schedules".to_owned()),
        ("GET", "/api/v1/stats".to_owned()),
        ("GET", "/api/v1/metrics".to_owned()),
        ("GET", "/api/v1/ready".to_owned()),
        ("GET", "/api/v1/pieces".to_owned()),
        ("GET", "/api/v1/pieces/flaky".to_owned()),
    ];
    for (method, path) in &routes {
        for token in [None, Some("wrong-token")] {
            let mut request = s
                .http
                .request(method.parse().unwrap(), s.url(path))
                .body("{}");
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let (status, body) = s.json(request).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
            assert_eq!(body["error"]["code"], "unauthorized", "{method} {path}");
        }
    }
    // Health needs no token.
    for path in ["/health", "/api/v1/health"] {
        let (status, body) = s.json(s.http.get(s.url(path))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "ok");
    }
    // A token created later works until it is revoked.
    let store = s.exec.store().clone();
    let token = omniflow::api::generate_token();
    let record = store
        .create_token("ci", &omniflow::api::hash_token(&token))
        .await
        .unwrap();
    let get = || {
        s.http
            .get(s.url("/api/v1/workflows"))
            .bearer_auth(&token)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    assert!(store.revoke_token(record.id).await.unwrap());
    assert_eq!(get().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    s.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_rejected_and_nothing_is_stored() {
    let s = start(1).await;
    let raw = |path: &str, body: Vec<u8>| {
        s.json(
            s.http
                .post(s.url(path))
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body),
        )
    };
    let (status, body) = raw("/api/v1/workflows", b"{not json".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "malformed_body");
    let mut unknown = echo_workflow("w");
    unknown["bogus"] = json!(1);
    let (status, body) = raw("/api/v1/workflows", unknown.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("bogus"),
        "{body}"
    );
    // Over the 1 MiB limit.
    let mut huge = echo_workflow("w");
    huge["description"] = json!("x".repeat(2 << 20));
    let (status, body) = raw("/api/v1/workflows", huge.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");

    s.create_workflow(&echo_workflow("w")).await;
    for bad in [
        b"{\"payload\": 1, \"bogus\": true}".to_vec(),
        b"[1, 2".to_vec(),
        b"{\"priority\": \"urgent\"}".to_vec(),
    ] {
        let (status, _) = raw("/api/v1/workflows/w/runs", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }
    let big = json!({ "payload": "x".repeat(2 << 20) })
        .to_string()
        .into_bytes();
    let (status, _) = raw("/api/v1/workflows/w/runs", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // A batch is all or nothing: one unknown workflow, no run at all.
    let batch = json!({ "runs": [{ "workflow": "w" }, { "workflow": "missing" }] });
    let (status, _) = raw("/api/v1/runs:batch", batch.to_string().into_bytes()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = raw(
        "/api/v1/runs:batch",
        br#"{"runs": [{"workflow": "w", "extra": 1}]}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = raw("/api/v1/runs:batch", br#"{"runs": []}"#.to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, list) = s.json(s.get("/api/v1/workflows")).await;
    let names: Vec<&str> = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w"]);
    let (_, runs) = s.json(s.get("/api/v1/runs")).await;
    assert!(runs["runs"].as_array().unwrap().is_empty(), "{runs}");
    // Unknown routes and methods answer in the same shape.
    let (status, body) = s.json(s.get("/api/v1/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = s
        .json(s.http.patch(s.url("/api/v1/workflows")).bearer_auth(TOKEN))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "method_not_allowed");
    s.stop().await;
}

#[tokio::test]
async fn first_start_generates_an_admin_token_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(dir.path()).await;
    let s = start_on(dir, exec.clone(), config(1, None)).await;
    let token = s
        .server
        .as_ref()
        .unwrap()
        .generated_admin_token()
        .expect("a token on first start")
        .to_owned();
    assert!(token.starts_with("of_") && token.len() > 40);
    let response = s
        .http
        .get(s.url("/api/v1/workflows"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let dir = s.stop().await;

    // Second start: a token exists, nothing new is generated.
    let s = start_on(dir, exec.clone(), config(1, None)).await;
    assert!(s.server.as_ref().unwrap().generated_admin_token().is_none());
    assert_eq!(exec.store().list_tokens().await.unwrap().len(), 1);
    let dir = s.stop().await;
    for file in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(file.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "the token text must not be stored"
        );
    }
}

#[tokio::test]
async fn runs_left_running_by_a_crash_finish_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(dir.path()).await;
    let wf = Workflow::from_json(&echo_workflow("crash").to_string()).unwrap();
    let mut ids = Vec::new();
    for x in 0..3 {
        let request = RunRequest {
            payload: json!({ "x": x }),
            ..RunRequest::default()
        };
        ids.push(triggers::start(&exec, &wf, request).await.unwrap());
    }
    // A "previous process" claimed one run and died holding its lease
    // (expired since).
    let claimed = exec
        .store()
        .claim_next_run("dead-worker", SystemTime::now() - Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.status, RunStatus::Running);
    // Another process is executing a run under a live lease: start-up
    // must leave it alone.
    let live = exec
        .store()
        .claim_next_run(
            "live-process",
            SystemTime::now() + Duration::from_secs(3600),
        )
        .await
        .unwrap()
        .unwrap();

    let s = start_on(dir, exec.clone(), config(2, Some(TOKEN))).await;
    assert_eq!(s.server.as_ref().unwrap().requeued_at_start(), 1);
    for (x, id) in ids.iter().enumerate() {
        if *id == live.id {
            continue;
        }
        let run = s.wait_finished(&id.to_string()).await;
        assert_eq!(run["status"], "succeeded");
        assert_eq!(run["output"]["value"], x);
        // Exactly once: one attempt of the one step.
        assert_eq!(step(&run, "echo")["attempts"], 1);
    }
    let untouched = exec.store().get_run(live.id).await.unwrap().unwrap();
    assert_eq!(untouched.status, RunStatus::Running);
    assert!(exec.store().steps(live.id).await.unwrap().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn shutdown_releases_runs_that_do_not_finish_in_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(dir.path()).await;
    let mut cfg = config(1, Some(TOKEN));
    cfg.pool.shutdown_grace = Duration::from_millis(100);
    let s = start_on(dir, exec.clone(), cfg).await;
    s.create_workflow(&spin_workflow("long")).await;
    let (_, run) = s
        .json(s.post("/api/v1/workflows/long/runs", &json!({})))
        .await;
    let id: RunId = run["id"].as_str().unwrap().parse().unwrap();
    s.wait_run(&id.to_string(), |r| r["status"] == "running")
        .await;
    let _dir = s.stop().await;
    let run = exec.store().get_run(id).await.unwrap().unwrap();
    assert_eq!(
        run.status,
        RunStatus::Queued,
        "released back to the queue, not lost"
    );
}

fn at(rfc3339: &str) -> SystemTime {
    humantime::parse_rfc3339(rfc3339).unwrap()
}

#[tokio::test]
async fn cron_schedules_fire_once_per_fire_time_on_a_controlled_clock() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(dir.path()).await;
    let clock = Arc::new(ManualClock::new(at("2030-01-01T00:00:30Z")));
    let mut cfg = config(2, Some(TOKEN));
    cfg.clock = clock.clone();
    // The background loop ticks too; exactly-once must hold with it.
    cfg.schedule_tick = Duration::from_millis(20);
    let s = start_on(dir, exec.clone(), cfg).await;
    let scheduler = s.server.as_ref().unwrap().scheduler().clone();
    let scheduled = |name: &str| {
        let mut w = echo_workflow(name);
        w["steps"][0]["input"]["value"] = json!("{{ trigger.payload.fire_time }}");
        w
    };
    let mut every5 = scheduled("every5");
    every5["trigger"] =
        json!({ "type": "schedule", "cron": "*/5 * * * *", "timezone": "Europe/Paris" });
    s.create_workflow(&every5).await;
    let mut skipper = scheduled("skipper");
    skipper["trigger"] = json!({ "type": "schedule", "cron": "0 9 * * *", "timezone": "America/New_York", "missed": "skip" });
    s.create_workflow(&skipper).await;
    let mut bad = echo_workflow("badcron");
    bad["trigger"] = json!({ "type": "schedule", "cron": "61 * * * *" });
    let (status, body) = s.json(s.post("/api/v1/workflows", &bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["problems"][0]["at"], "trigger");

    let (_, list) = s.json(s.get("/api/v1/schedules")).await;
    let next: HashMap<String, String> = list["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["workflow_name"].as_str().unwrap().to_owned(),
                s["next_fire_at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(next["every5"], "2030-01-01T00:05:00.000Z");
    // 09:00 in New York in January is 14:00 UTC.
    assert_eq!(next["skipper"], "2030-01-01T14:00:00.000Z");

    let runs_of = |name: &'static str| {
        let s = &s;
        async move {
            let (_, list) = s
                .json(s.get(&format!("/api/v1/runs?workflow={name}")))
                .await;
            list["runs"].as_array().unwrap().clone()
        }
    };
    // Not yet due.
    clock.set(at("2030-01-01T00:04:59Z"));
    assert!(scheduler.tick().await.unwrap().is_empty());
    // Due: one run, however many ticks (ours and the background loop's) race.
    clock.set(at("2030-01-01T00:05:00Z"));
    let (a, b) = tokio::join!(scheduler.tick(), scheduler.tick());
    let fired = a.unwrap().len() + b.unwrap().len();
    assert!(fired <= 1);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while runs_of("every5").await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(scheduler.tick().await.unwrap().is_empty());
    let runs = runs_of("every5").await;
    assert_eq!(runs.len(), 1, "exactly one run for 00:05");
    let run = s.wait_finished(runs[0]["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["trigger"]["type"], "schedule");
    assert_eq!(
        run["trigger"]["payload"]["fire_time"],
        "2030-01-01T00:05:00.000Z"
    );
    assert_eq!(run["trigger"]["payload"]["missed"], false);
    assert_eq!(run["output"]["value"], "2030-01-01T00:05:00.000Z");

    // Down for a day: run_once catches up with ONE run, skip with none.
    clock.set(at("2030-01-02T15:00:00Z"));
    scheduler.tick().await.unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while runs_of("every5").await.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    scheduler.tick().await.unwrap();
    let runs = runs_of("every5").await;
    assert_eq!(runs.len(), 2);
    let catch_up = s.run(runs[0]["id"].as_str().unwrap()).await;
    assert_eq!(catch_up["trigger"]["payload"]["missed"], true);
    assert!(runs_of("skipper").await.is_empty(), "skip: no catch-up run");
    let (_, list) = s.json(s.get("/api/v1/schedules")).await;
    for schedule in list["schedules"].as_array().unwrap() {
        let next = at(schedule["next_fire_at"].as_str().unwrap());
        assert!(next > at("2030-01-02T15:00:00Z"), "{schedule}");
    }
    s.stop().await;
}

/// The status code of a request (the body is dropped).
async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn secrets_are_write_only_encrypted_at_rest_and_placed_into_granted_requests() {
    const VALUE: &str = "sk-live-very-secret-42";
    let echo = crate::wire::FakeServer::start().await;
    let cipher = || {
        Some(Arc::new(
            omniflow::capabilities::secrets::SecretCipher::from_key(&[9u8; 32]).unwrap(),
        ))
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1, Some(TOKEN));
    cfg.api.secret_cipher = cipher();
    let exec = executor(dir.path()).await;
    let server = start_on(dir, exec, cfg).await;

    // Bad names and bodies are refused; nothing stored.
    let put = |name: &str, body: Value| {
        server
            .http
            .put(server.url(&format!("/api/v1/secrets/{name}")))
            .bearer_auth(TOKEN)
            .json(&body)
    };
    assert_eq!(status_of(put("bad-name", json!({"value": "x"}))).await, 400);
    assert_eq!(status_of(put("OK", json!({"val": "x"}))).await, 400);
    let no_auth = server
        .http
        .put(server.url("/api/v1/secrets/API_KEY"))
        .json(&json!({"value": VALUE}));
    assert_eq!(status_of(no_auth).await, 401);

    assert_eq!(
        status_of(put("API_KEY", json!({"value": VALUE}))).await,
        204
    );
    let (status, list) = server.json(server.get("/api/v1/secrets")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["secrets"][0]["name"], "API_KEY");
    assert!(!list.to_string().contains(VALUE), "{list}");

    // A granted step gets the value placed by the host; the piece sees the marker.
    server
        .create_workflow(&json!({
            "name": "uses-secret",
            "steps": [{ "id": "call", "piece": "http-request", "action": "request",
                "input": { "url": echo.url("/echo"),
                           "headers": { "authorization": "Bearer ${secret:API_KEY}" } },
                "grants": { "http": [{ "host": echo.origin(), "secrets": ["API_KEY"] }] } }]
        }))
        .await;
    let (status, body) = server
        .json(server.post(
            "/api/v1/workflows/uses-secret/runs",
            &json!({ "wait_ms": 30000 }),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "succeeded", "{body}");
    let seen = &echo.requests_to("/echo")[0];
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    assert!(!body.to_string().contains(VALUE), "{body}");

    // Deleting it: the next run's request is refused by name.
    assert_eq!(
        status_of(
            server
                .http
                .delete(server.url("/api/v1/secrets/API_KEY"))
                .bearer_auth(TOKEN)
        )
        .await,
        204
    );
    assert_eq!(
        status_of(
            server
                .http
                .delete(server.url("/api/v1/secrets/API_KEY"))
                .bearer_auth(TOKEN)
        )
        .await,
        404
    );

    // Stored again, then a restart on the same file with the same key finds it.
    assert_eq!(
        status_of(put("API_KEY", json!({"value": VALUE}))).await,
        204
    );
    let dir = server.stop().await;
    let raw = std::fs::read(dir.path().join("omniflow.db")).unwrap();
    let wal = std::fs::read(dir.path().join("omniflow.db-wal")).unwrap_or_default();
    for bytes in [&raw, &wal] {
        assert!(
            !bytes.windows(VALUE.len()).any(|w| w == VALUE.as_bytes()),
            "the clear value is in the database file"
        );
    }
    let exec = executor(dir.path()).await;
    let mut cfg = config(1, Some(TOKEN));
    cfg.api.secret_cipher = cipher();
    let server = start_on(dir, exec, cfg).await;
    let (status, body) = server
        .json(server.post(
            "/api/v1/workflows/uses-secret/runs",
            &json!({ "wait_ms": 30000 }),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "succeeded", "{body}");
    let last = echo.requests_to("/echo").pop().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {VALUE}").as_str())
    );
    server.stop().await;
}

#[tokio::test]
async fn delays_and_retry_waits_park_the_run_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(dir.path()).await;
    // One worker: if a waiting run held it, nothing else could run.
    let s = start_on(dir, exec.clone(), config(1, Some(TOKEN))).await;
    s.create_workflow(&json!({
        "name": "nap",
        "steps": [
            { "id": "nap", "piece": "delay", "action": "sleep", "input": { "duration": "4s" } },
            { "id": "after", "piece": "flaky", "action": "run", "needs": ["nap"],
              "input": { "value": "{{ steps.nap.output.until }}" } }
        ]
    }))
    .await;
    s.create_workflow(&json!({
        "name": "flap",
        "steps": [{ "id": "f", "piece": "flaky", "action": "run",
                    "input": { "fail_times": 1, "value": "ok" },
                    "retry": { "max_attempts": 2, "initial_delay": "3s", "jitter": false } }]
    }))
    .await;
    s.create_workflow(&echo_workflow("echo")).await;

    let triggered = std::time::Instant::now();
    let (_, nap) = s
        .json(s.post("/api/v1/workflows/nap/runs", &json!({})))
        .await;
    let nap = nap["id"].as_str().unwrap().to_owned();
    let (_, flap) = s
        .json(s.post("/api/v1/workflows/flap/runs", &json!({})))
        .await;
    let flap = flap["id"].as_str().unwrap().to_owned();

    // Both park: queued again, their step waiting with a wake-up time.
    for (id, step_id) in [(&nap, "nap"), (&flap, "f")] {
        let run = s
            .wait_run(id, |r| {
                r["status"] == "queued"
                    && r["steps"].as_array().is_some_and(|steps| {
                        steps
                            .iter()
                            .any(|st| st["step_id"] == step_id && st["status"] == "waiting")
                    })
            })
            .await;
        assert!(step(&run, step_id)["wake_at"].is_string(), "{run}");
    }
    // The single worker is free meanwhile.
    let (status, echo) = s
        .json(s.post(
            "/api/v1/workflows/echo/runs?wait=30s",
            &json!({ "payload": { "x": 5 } }),
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["status"], "succeeded");
    // ... it did not wait for either wake-up.
    assert_eq!(s.run(&flap).await["status"], "queued", "still parked");
    assert_eq!(s.run(&nap).await["status"], "queued", "still parked");

    // The retry wakes on time under the same server.
    let run = s.wait_finished(&flap).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(step(&run, "f")["attempts"], 2);
    assert!(triggered.elapsed() >= Duration::from_secs(3));

    // Restart while `nap` is parked: the wait is in the database.
    let dir = s.stop().await;
    let s = start_on(dir, exec.clone(), config(1, Some(TOKEN))).await;
    let run = s.wait_finished(&nap).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(triggered.elapsed() >= Duration::from_secs(4));
    let nap_step = step(&run, "nap");
    assert!(nap_step["output"].get("$wait_until").is_none(), "{run}");
    assert_eq!(nap_step["attempts"], 1, "the piece ran once");
    assert_eq!(
        step(&run, "after")["output"]["value"],
        nap_step["output"]["until"]
    );
    s.stop().await;
}

#[tokio::test]
async fn cancelling_a_parked_run_cancels_its_waiting_step() {
    let s = start(1).await;
    s.create_workflow(&json!({
        "name": "long-nap",
        "steps": [{ "id": "nap", "piece": "delay", "action": "sleep", "input": { "duration": "1h" } }]
    }))
    .await;
    let (_, run) = s
        .json(s.post("/api/v1/workflows/long-nap/runs", &json!({})))
        .await;
    let id = run["id"].as_str().unwrap().to_owned();
    s.wait_run(&id, |r| {
        r["status"] == "queued" && r["steps"].as_array().is_some_and(|v| !v.is_empty())
    })
    .await;
    let (status, body) = s
        .json(s.post(&format!("/api/v1/runs/{id}/cancel"), &json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let run = s.run(&id).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(step(&run, "nap")["status"], "cancelled");
    s.stop().await;
}

#[tokio::test]
async fn openapi_document_covers_every_route_and_every_documented_route_is_served() {
    let s = start(1).await;
    // Public, like /health.
    let (status, doc) = s.json(s.http.get(s.url("/api/v1/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc, serde_json::to_value(omniflow::api::openapi()).unwrap());
    let paths = doc["paths"].as_object().unwrap();
    // Every route of the README's API table is documented.
    let expected = [
        ("post", "/api/v1/workflows"),
        ("get", "/api/v1/workflows"),
        ("post", "/api/v1/workflows:validate"),
        ("get", "/api/v1/workflows/{name}"),
        ("put", "/api/v1/workflows/{name}"),
        ("delete", "/api/v1/workflows/{name}"),
        ("get", "/api/v1/workflows/{name}/versions"),
        ("put", "/api/v1/workflows/{name}/webhook"),
        ("post", "/api/v1/workflows/{name}/runs"),
        ("get", "/api/v1/runs"),
        ("post", "/api/v1/runs:batch"),
        ("post", "/api/v1/runs:retry-failed"),
        ("get", "/api/v1/runs/{id}"),
        ("get", "/api/v1/runs/{id}/events"),
        ("post", "/api/v1/runs/{id}/cancel"),
        ("post", "/api/v1/runs/{id}/retry"),
        ("get", "/api/v1/schedules"),
        ("get", "/api/v1/secrets"),
        ("put", "/api/v1/secrets/{name}"),
        ("delete", "/api/v1/secrets/{name}"),
        ("get", "/api/v1/stats"),
        ("get", "/api/v1/metrics"),
        ("get", "/api/v1/ready"),
        ("get", "/api/v1/health"),
        ("get", "/api/v1/pieces"),
        ("get", "/api/v1/pieces/{name}"),
        ("post", "/api/v1/pieces"),
        ("delete", "/api/v1/pieces/{name}/{version}"),
        ("get", "/api/v1/openapi.json"),
        ("post", "/hooks/{workflow}"),
    ];
    for (method, path) in expected {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, expected.len(), "undocumented extras? {doc}");
    // Request schemas come from the request types.
    let trigger = &doc["components"]["schemas"]["TriggerBody"]["properties"];
    for field in ["vars", "payload", "priority", "wait_ms"] {
        assert!(trigger[field].is_object(), "TriggerBody.{field}: {doc}");
    }
    // Every documented operation is routed, and protected unless it says otherwise.
    let run = RunId::now_v7().to_string();
    for (path, item) in paths {
        let concrete = path
            .replace("{name}", "nope")
            .replace("{workflow}", "nope")
            .replace("{id}", &run);
        for (method, op) in item.as_object().unwrap() {
            let public = op["security"] == json!([{}]);
            let method: reqwest::Method = method.to_uppercase().parse().unwrap();
            let response = s
                .http
                .request(method.clone(), s.url(&concrete))
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status();
            if !public {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            }
            let response = s
                .http
                .request(method.clone(), s.url(&concrete))
                .bearer_auth(TOKEN)
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if status == StatusCode::NOT_FOUND {
                let body: Value = response.json().await.unwrap();
                assert_ne!(
                    body["error"]["message"], "no such route",
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }
    s.stop().await;
}

/// `serve --retention`: finished runs past the window are deleted in the
/// background (with their steps); a queued run is kept; `/metrics` counts
/// what was pruned.
#[tokio::test]
async fn retention_prunes_finished_runs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(dir.path()).await;
    let flow = Workflow::from_json(
        &json!({"name": "old", "steps": [
            {"id": "a", "piece": "flow@^0.1", "action": "if", "input": {"condition": true}}
        ]})
        .to_string(),
    )
    .unwrap();
    let mut finished = Vec::new();
    for _ in 0..3 {
        let claimed = triggers::start_claimed(&exec, &flow, RunRequest::default())
            .await
            .unwrap();
        let id = claimed.run.id;
        let status = exec
            .execute_leased(claimed, Default::default())
            .await
            .unwrap();
        assert_eq!(status, RunStatus::Succeeded);
        finished.push(id);
    }
    let queued = exec
        .store()
        .create_run(omniflow::store::NewRun::manual("old", 1, json!(null)))
        .await
        .unwrap()
        .id;
    let mut cfg = config(0, Some(TOKEN));
    let mut retention = omniflow::server::retention::Retention::new(Duration::ZERO, None);
    retention.every = Duration::from_millis(50);
    cfg.retention = Some(retention);
    let server = start_on(dir, exec.clone(), cfg).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while exec.store().get_run(finished[2]).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "nothing was pruned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &finished {
        assert!(exec.store().get_run(*id).await.unwrap().is_none());
        assert!(exec.store().steps(*id).await.unwrap().is_empty());
    }
    assert!(
        exec.store().get_run(queued).await.unwrap().is_some(),
        "a queued run was pruned"
    );
    let text = server
        .get("/api/v1/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("omniflow_runs_pruned_total 3"), "{text}");
}
