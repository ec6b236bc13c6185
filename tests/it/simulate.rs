//! Failure simulation (SPEC §6, "sandbox test" mode): test runs whose
//! attempts get retryable faults injected by the host before the piece is
//! called. Through the real engine (the `http-request` piece against a
//! local fake server, so every call the piece makes is counted), the API
//! (router without a socket) and the `omniflow test` binary.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use omniflow::engine::{Executor, ExecutorConfig, RunEvent};
use omniflow::store::{AttemptRecord, RunId, RunStatus};
use omniflow::triggers::{self, RunRequest, Simulation};
use omniflow::workflow::Workflow;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::api::oneshot::{authorized, fixture};
use crate::wire::FakeServer;

/// Items of the `for_each` step.
const ITEMS: u32 = 8;

/// Fast retries: `max_attempts` tries 5 ms apart.
fn fast_retry(max_attempts: u32) -> Value {
    json!({ "max_attempts": max_attempts, "initial_delay": "5ms", "factor": 1, "jitter": false })
}

/// `call` (one request) and `each` (one request per item), both through
/// `http-request` to the fake server's `/echo`.
fn http_workflow(server: &FakeServer, max_attempts: u32) -> Workflow {
    let items: Vec<u32> = (0..ITEMS).collect();
    Workflow::from_json(
        &json!({
            "name": "sim-http",
            "vars": { "items": items },
            "steps": [
                { "id": "call", "piece": "http-request", "action": "request",
                  "input": { "url": server.url("/echo?step=call") },
                  "grants": { "http": [server.origin()] },
                  "retry": fast_retry(max_attempts) },
                { "id": "each", "piece": "http-request", "action": "request",
                  "for_each": "{{ vars.items }}", "concurrency": 4,
                  "input": { "url": server.url("/echo?step=each&item={{ item }}") },
                  "grants": { "http": [server.origin()] },
                  "retry": fast_retry(max_attempts) }
            ]
        })
        .to_string(),
    )
    .unwrap()
}

async fn executor(dir: &std::path::Path) -> Executor {
    crate::support::executor_in(dir, &["flaky"], ExecutorConfig::default()).await
}

/// Start `workflow` with `simulate` and execute it to its end.
async fn run(exec: &Executor, workflow: &Workflow, simulate: Option<Simulation>) -> RunId {
    let request = RunRequest {
        simulate,
        ..RunRequest::default()
    };
    let id = triggers::start(exec, workflow, request).await.unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(120),
        exec.execute(id, CancellationToken::new()),
    )
    .await
    .expect("the run finishes")
    .unwrap();
    assert_eq!(status, RunStatus::Succeeded, "simulation never fails a run");
    id
}

/// The chain an attempt of `step` belongs to: `None` for `call`, the item
/// index (read back from the URL the attempt was given) for `each`.
fn item_of(attempt: &AttemptRecord) -> Option<u32> {
    let url = attempt.input.as_ref()?["url"].as_str()?.to_owned();
    url.split("item=").nth(1).map(|i| i.parse().unwrap())
}

/// Injected faults by (step, item): the count, checked to be the leading
/// attempts of that chain, each followed by exactly one real attempt.
async fn faults(exec: &Executor, run: RunId) -> BTreeMap<(String, Option<u32>), u32> {
    let mut out = BTreeMap::new();
    for step in ["call", "each"] {
        let attempts = exec.store().attempts(run, step).await.unwrap();
        let mut chains: BTreeMap<Option<u32>, Vec<&AttemptRecord>> = BTreeMap::new();
        for a in &attempts {
            chains.entry(item_of(a)).or_default().push(a);
        }
        for (item, chain) in chains {
            let (last, faults) = chain.split_last().unwrap();
            assert_eq!(last.error_class, None, "{step} {item:?}: {last:?}");
            for fault in faults {
                assert_eq!(fault.error_class.as_deref(), Some("simulated"), "{fault:?}");
                assert_eq!(fault.fuel_used, 0, "the piece did not run");
                let message = fault.error_message.as_deref().unwrap_or("");
                assert!(message.starts_with("simulated fault (seed "), "{message}");
            }
            out.insert((step.to_owned(), item), faults.len() as u32);
        }
    }
    out
}

/// What the simulation should inject: per chain, the leading tries that draw a fault.
fn predicted(sim: &Simulation, max_attempts: u32) -> BTreeMap<(String, Option<u32>), u32> {
    let leading = |step: &str, item: Option<u32>| {
        (1..=max_attempts)
            .take_while(|&t| sim.injects_into(step, item, t, max_attempts))
            .count() as u32
    };
    let mut out = BTreeMap::new();
    out.insert(("call".to_owned(), None), leading("call", None));
    for i in 0..ITEMS {
        out.insert(("each".to_owned(), Some(i)), leading("each", Some(i)));
    }
    out
}

/// Requests the piece made per chain, counted by the fake server.
fn requests(server: &FakeServer) -> BTreeMap<(String, Option<u32>), u32> {
    let mut out = BTreeMap::new();
    for r in server.requests_to("/echo") {
        let key = match r.path.split("item=").nth(1) {
            Some(i) => ("each".to_owned(), Some(i.parse().unwrap())),
            None => ("call".to_owned(), None),
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

#[tokio::test]
async fn faults_are_injected_before_the_piece_deterministically_and_retried_to_success() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(dir.path()).await;
    let workflow = http_workflow(&server, 4);
    let seven = Simulation::new(0.5, 7).unwrap();
    let eight = Simulation::new(0.5, 8).unwrap();
    assert_ne!(predicted(&seven, 4), predicted(&eight, 4));
    assert!(predicted(&seven, 4).values().sum::<u32>() > 0);

    let mut events = exec.subscribe();
    let first = run(&exec, &workflow, Some(seven)).await;
    let injected = faults(&exec, first).await;
    assert_eq!(injected, predicted(&seven, 4));
    // The piece ran once per chain: only the real (last) attempt called it.
    let one_each: BTreeMap<_, _> = injected.keys().map(|k| (k.clone(), 1)).collect();
    assert_eq!(requests(&server), one_each);
    // Each fault went through the retry path (a `step_retrying` event).
    let mut retried = 0;
    while let Ok(event) = events.try_recv() {
        if let RunEvent::StepRetrying { error, .. } = event {
            assert!(error.starts_with("simulated: simulated fault"), "{error}");
            retried += 1;
        }
    }
    assert_eq!(retried, injected.values().sum::<u32>());

    // The run is a test run, its parameters in its trigger document.
    let record = exec.store().get_run(first).await.unwrap().unwrap();
    assert!(record.simulated);
    assert_eq!(
        record.trigger["simulate"],
        json!({ "failure_rate": 0.5, "seed": 7 })
    );
    assert_eq!(Simulation::from_trigger(&record.trigger), Some(seven));

    // The same seed: the same attempts; another seed: others.
    let again = run(&exec, &workflow, Some(seven)).await;
    assert_eq!(faults(&exec, again).await, injected);
    let other = run(&exec, &workflow, Some(eight)).await;
    assert_eq!(faults(&exec, other).await, predicted(&eight, 4));
    assert_ne!(faults(&exec, other).await, injected);
}

#[tokio::test]
async fn rate_one_faults_every_attempt_but_the_last_and_rate_zero_none() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(dir.path()).await;
    let workflow = http_workflow(&server, 3);

    let all = run(&exec, &workflow, Some(Simulation::new(1.0, 7).unwrap())).await;
    let injected = faults(&exec, all).await;
    assert_eq!(injected.len(), 1 + ITEMS as usize);
    assert!(injected.values().all(|&n| n == 2), "{injected:?}");
    let step = exec
        .store()
        .steps(all)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.step_id == "call")
        .unwrap();
    assert_eq!(step.attempts, 3);
    assert!(step.logs.contains("injected before the piece was called"));
    assert_eq!(requests(&server).values().sum::<u32>(), 1 + ITEMS);

    let none = run(&exec, &workflow, Some(Simulation::new(0.0, 7).unwrap())).await;
    assert!(faults(&exec, none).await.values().all(|&n| n == 0));
    assert!(exec.store().get_run(none).await.unwrap().unwrap().simulated);
    assert_eq!(requests(&server).values().sum::<u32>(), 2 * (1 + ITEMS));

    // A step allowed one attempt gets no fault at all.
    let once = run(
        &exec,
        &http_workflow(&server, 1),
        Some(Simulation::new(1.0, 7).unwrap()),
    )
    .await;
    assert!(faults(&exec, once).await.values().all(|&n| n == 0));
}

// ------------------------------------------------------------------- API

/// A workflow of one `flaky` step: fails fatally (no retry, so no fault is
/// injected either) when `fail`, else succeeds after retries of the simulation.
fn flaky(name: &str, fail: bool) -> Value {
    let input = if fail {
        json!({ "fail_times": 100, "mode": "fatal" })
    } else {
        json!({ "value": 1 })
    };
    let retry = if fail { fast_retry(1) } else { fast_retry(3) };
    json!({
        "name": name,
        "steps": [{ "id": "s", "piece": "flaky", "action": "run", "input": input, "retry": retry }]
    })
}

fn post(path: &str, body: Value) -> Request<Body> {
    authorized(Method::POST, path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn the_api_starts_test_runs_and_keeps_them_out_of_stats_and_retry_failed() {
    let f = fixture().await;
    for (name, fail) in [("ok", false), ("bad", true)] {
        let (status, body) = f.call(post("/api/v1/workflows", flaky(name, fail))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // Bad parameters: 422 naming the field.
    for (body, field) in [
        (json!({ "simulate_failures": 1.5 }), "simulate_failures"),
        (
            json!({ "simulate_failures": -0.1, "seed": 1 }),
            "simulate_failures",
        ),
        (json!({ "seed": 7 }), "seed"),
    ] {
        let (status, answer) = f.call(post("/api/v1/workflows/ok/runs", body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_field");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{field}: ")), "{message}");
    }
    let (status, answer) = f
        .call(post(
            "/api/v1/workflows/ok/runs",
            json!({ "simulate_failures": "lots" }),
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // One test run and one production run of each workflow, executed here.
    let mut ids = BTreeMap::new();
    for (name, simulate) in [("ok", true), ("ok", false), ("bad", true), ("bad", false)] {
        let body = if simulate {
            json!({ "simulate_failures": 1.0, "seed": 3 })
        } else {
            json!({})
        };
        let (status, summary) = f
            .call(post(&format!("/api/v1/workflows/{name}/runs"), body))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{summary}");
        assert_eq!(summary["test"], simulate, "{summary}");
        let id: RunId = summary["id"].as_str().unwrap().parse().unwrap();
        f.exec.execute(id, CancellationToken::new()).await.unwrap();
        ids.insert((name, simulate), id);
    }

    // The test run's document: marked, its faults recorded, recovered.
    let (status, doc) = f.get(&format!("/api/v1/runs/{}", ids[&("ok", true)])).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["test"], true);
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(
        doc["trigger"]["simulate"],
        json!({ "failure_rate": 1.0, "seed": 3 })
    );
    let classes: Vec<Value> = doc["steps"][0]["attempt_details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error_class"].clone())
        .collect();
    assert_eq!(
        classes,
        [json!("simulated"), json!("simulated"), Value::Null]
    );
    // flaky echoes the attempt number it ran as: only the third called it.
    assert_eq!(doc["output"]["attempt"], 3);
    let (_, plain) = f
        .get(&format!("/api/v1/runs/{}", ids[&("ok", false)]))
        .await;
    assert_eq!(plain["test"], false);
    assert!(plain["trigger"].get("simulate").is_none(), "{plain}");

    // Listing: both by default, or one kind.
    let listed = |query: &'static str| {
        let f = &f;
        async move {
            let (status, list) = f.get(&format!("/api/v1/runs{query}")).await;
            assert_eq!(status, StatusCode::OK, "{list}");
            let mut ids: Vec<(String, bool)> = list["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["id"].as_str().unwrap().to_owned(),
                        r["test"].as_bool().unwrap(),
                    )
                })
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(listed("").await.len(), 4);
    let tests = listed("?test=true").await;
    assert_eq!(tests.len(), 2);
    assert!(tests.iter().all(|(_, test)| *test));
    let others = listed("?test=false").await;
    assert_eq!(others.len(), 2);
    assert!(others.iter().all(|(_, test)| !*test));

    // Stats: production runs only, unless asked.
    let (_, stats) = f.get("/api/v1/stats").await;
    assert_eq!(stats["runs_by_status"]["succeeded"], 1, "{stats}");
    assert_eq!(stats["runs_by_status"]["failed"], 1, "{stats}");
    let (_, stats) = f.get("/api/v1/stats?include_test=true").await;
    assert_eq!(stats["runs_by_status"]["succeeded"], 2, "{stats}");
    assert_eq!(stats["runs_by_status"]["failed"], 2, "{stats}");
    let (status, _) = f.get("/api/v1/stats?include_test=maybe").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let metrics = text(&f, "/api/v1/metrics").await;
    assert!(
        metrics.contains("omniflow_runs{status=\"succeeded\"} 1\n"),
        "{metrics}"
    );

    // retry-failed: the production run; the test run only when asked.
    let (status, body) = f.call(post("/api/v1/runs:retry-failed", json!({}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["retried"], json!([ids[&("bad", false)].to_string()]));
    let (_, body) = f
        .call(post(
            "/api/v1/runs:retry-failed",
            json!({ "include_test": true }),
        ))
        .await;
    assert_eq!(body["retried"], json!([ids[&("bad", true)].to_string()]));
}

/// A text answer (`/metrics`).
async fn text(f: &crate::api::oneshot::Fixture, path: &str) -> String {
    let request = authorized(Method::GET, path).body(Body::empty()).unwrap();
    let response = omniflow::api::router(f.state.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

// ------------------------------------------------------------------- CLI

#[test]
fn omniflow_test_prints_each_fault_its_recovery_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.json");
    std::fs::write(
        &file,
        json!({
            "name": "cli-sim",
            "vars": { "who": "world" },
            "steps": [
                { "id": "greet", "piece": "transform@^0.1", "action": "template",
                  "input": { "template": "Hello, {{ vars.who }}!" }, "retry": fast_retry(3) },
                { "id": "shout", "piece": "transform@^0.1", "action": "template",
                  "for_each": "{{ ['a', 'b'] }}",
                  "input": { "template": "{{ item | upper }}" }, "retry": fast_retry(2) }
            ]
        })
        .to_string(),
    )
    .unwrap();
    let db = dir.path().join("t.db");
    let out = crate::cli::omniflow()
        .arg("test")
        .arg(&file)
        .args([
            "--var",
            "who=Ada",
            "--simulate-failures",
            "1",
            "--seed",
            "7",
        ])
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "step greet attempt 1: simulated fault\n",
        "step greet attempt 2: simulated fault\n",
        "step greet recovered on attempt 3\n",
        "step shout item 0 attempt ",
        "step shout item 1 attempt ",
        "step shout item 0 recovered on attempt ",
        "step shout item 1 recovered on attempt ",
        ": 4 simulated fault(s) injected, 4 recovered; run succeeded in ",
        "(failure rate 1, seed 7)",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}");
    }
    assert!(stdout.contains("(test run)"), "{stdout}");
    // Live progress shows the retries.
    assert!(
        stderr.contains("simulated: simulated fault (seed 7"),
        "{stderr}"
    );

    // The stored run is a test run, in `runs show --json` too.
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test run ")?.split(':').next())
        .unwrap()
        .to_owned();
    let out = crate::cli::omniflow()
        .args(["runs", "show", &id, "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["test"], true, "{doc}");
    assert_eq!(doc["output"], json!([{ "text": "A" }, { "text": "B" }]));

    // --json: the faults, counts and the run document.
    let out = crate::cli::omniflow()
        .arg("test")
        .arg(&file)
        .args(["--simulate-failures", "1", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["injected"], 4, "{report}");
    assert_eq!(report["recovered"], 4);
    assert_eq!(
        report["simulation"],
        json!({ "failure_rate": 1.0, "seed": 0 })
    );
    let greet: Vec<&Value> = report["faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["step"] == "greet")
        .collect();
    assert_eq!(
        greet,
        [
            &json!({ "step": "greet", "item": null, "attempt": 1, "recovered_on": 3 }),
            &json!({ "step": "greet", "item": null, "attempt": 2, "recovered_on": 3 }),
        ]
    );
    assert_eq!(report["run"]["test"], true);

    // A rate outside 0..=1 is refused, naming the flag.
    let out = crate::cli::omniflow()
        .arg("test")
        .arg(&file)
        .args(["--simulate-failures", "2", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--simulate-failures"), "{stderr}");
    assert!(stderr.contains("not 2"), "{stderr}");
}

#[test]
fn omniflow_test_exits_non_zero_when_the_run_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fails.json");
    std::fs::write(&file, flaky("cli-fails", true).to_string()).unwrap();
    let out = crate::cli::omniflow()
        .arg("test")
        .arg(&file)
        .arg("--piece")
        .arg(crate::support::guest_dir().join("flaky.wasm"))
        .arg("--db")
        .arg(dir.path().join("t.db"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(": 0 simulated fault(s) injected, 0 recovered; run failed in "),
        "{stdout}"
    );
}
