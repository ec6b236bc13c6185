//! The router without a socket: `tower::ServiceExt::oneshot` on
//! `api::router(state)` with a stand-in for the queue's workers. For what
//! a socket is not the point of: documents, error bodies, handlers as
//! adapters over `triggers`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use omniflow::api::dto::RunDocument;
use omniflow::api::{ApiConfig, ApiState, hash_token, router, sign_webhook};
use omniflow::engine::{Executor, ExecutorConfig, NoWorkers, RunQueue};
use omniflow::store::RunId;
use omniflow::triggers::schedule::{Scheduler, SystemClock};
use omniflow::triggers::{self, RunRequest};
use omniflow::workflow::Workflow;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const TOKEN: &str = "oneshot-token";

pub(crate) struct Fixture {
    pub(crate) exec: Arc<Executor>,
    pub(crate) state: ApiState,
    _dir: tempfile::TempDir,
}

pub(crate) async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(
        crate::support::executor_in(dir.path(), &["flaky"], ExecutorConfig::default()).await,
    );
    exec.store()
        .create_token("oneshot", &hash_token(TOKEN))
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
    Fixture {
        exec,
        state,
        _dir: dir,
    }
}

impl Fixture {
    /// One request through a fresh router built from the state alone.
    pub(crate) async fn call(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, body)
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(authorized(Method::GET, path).body(Body::empty()).unwrap())
            .await
    }
}

pub(crate) fn authorized(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
}

fn echo(name: &str) -> Workflow {
    Workflow::from_json(
        &json!({
            "name": name,
            "steps": [{ "id": "echo", "piece": "flaky", "action": "run",
                        "input": { "value": "{{ trigger.payload.x }}" } }]
        })
        .to_string(),
    )
    .unwrap()
}

#[tokio::test]
async fn the_openapi_document_references_the_typed_wire_documents() {
    let f = fixture().await;
    let (status, doc) = f
        .call(
            Request::get("/api/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    for name in [
        "RunSummary",
        "RunDocument",
        "StepDocument",
        "AttemptDocument",
        "RunList",
        "RunEventDocument",
        "WorkflowDocument",
        "WorkflowList",
        "PieceDocument",
        "PieceList",
    ] {
        assert!(schemas[name].is_object(), "no schema {name}");
    }
    let step = &schemas["StepDocument"]["properties"];
    for field in [
        "step_id",
        "status",
        "error_class",
        "attempts",
        "attempt_details",
    ] {
        assert!(step[field].is_object(), "StepDocument.{field}");
    }
    // Success bodies name their schema instead of an untyped value.
    let body_of = |path: &str, method: &str, status: &str| {
        let content = &doc["paths"][path][method]["responses"][status]["content"];
        let media = content
            .as_object()
            .and_then(|c| c.values().next())
            .unwrap_or_else(|| panic!("{method} {path} {status} has no body"));
        media["schema"]["$ref"].as_str().unwrap_or("").to_owned()
    };
    for (path, method, status, schema) in [
        ("/api/v1/runs/{id}", "get", "200", "RunDocument"),
        ("/api/v1/runs", "get", "200", "RunList"),
        (
            "/api/v1/workflows/{name}/runs",
            "post",
            "200",
            "RunDocument",
        ),
        ("/api/v1/workflows/{name}/runs", "post", "202", "RunSummary"),
        ("/api/v1/runs:batch", "post", "202", "BatchAccepted"),
        ("/api/v1/runs/{id}/retry", "post", "202", "RunSummary"),
        ("/api/v1/runs/{id}/events", "get", "200", "RunEventDocument"),
        ("/api/v1/workflows", "get", "200", "WorkflowList"),
        ("/api/v1/workflows/{name}", "get", "200", "WorkflowDocument"),
        ("/api/v1/pieces", "get", "200", "PieceList"),
        ("/api/v1/pieces/{name}", "get", "200", "PieceVersions"),
        ("/hooks/{workflow}", "post", "202", "RunSummary"),
    ] {
        assert_eq!(
            body_of(path, method, status),
            format!("#/components/schemas/{schema}"),
            "{method} {path} {status}"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_runs_get_the_json_404_body() {
    let f = fixture().await;
    let (status, body) = f.get("/api/v1/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({ "error": { "code": "not_found", "message": "not found: no such route" } })
    );
    let id = RunId::now_v7();
    let (status, body) = f.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        json!({ "error": { "code": "not_found", "message": format!("not found: run {id}") } })
    );
    let (status, body) = f
        .call(
            authorized(Method::POST, "/api/v1/workflows/missing/runs")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "not found: workflow \"missing\"");
}

#[tokio::test]
async fn the_run_document_is_the_stored_run_with_steps_attempts_and_output() {
    let f = fixture().await;
    let request = RunRequest::new(triggers::TriggerKind::Manual, json!({ "x": 42 }));
    let id = triggers::start(&f.exec, &echo("doc"), request)
        .await
        .unwrap();
    f.exec.execute(id, CancellationToken::new()).await.unwrap();

    let (status, doc) = f.get(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["id"], id.to_string());
    assert_eq!(doc["workflow"], "doc");
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["trigger_type"], "manual");
    assert_eq!(
        doc["trigger"],
        json!({ "type": "manual", "payload": { "x": 42 } })
    );
    assert_eq!(doc["steps"][0]["step_id"], "echo");
    assert_eq!(doc["steps"][0]["attempt_details"][0]["attempt"], 1);
    assert_eq!(doc["outputs"]["echo"], doc["output"]);
    // The same document the CLI prints (`omniflow runs show --json`).
    let run = f.exec.store().get_run(id).await.unwrap().unwrap();
    let read = RunDocument::read(f.exec.store().as_ref(), &run)
        .await
        .unwrap();
    assert_eq!(doc, serde_json::to_value(read).unwrap());

    // The summary form, from the listing.
    let (status, list) = f.get("/api/v1/runs?workflow=doc").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["runs"][0]["id"], id.to_string());
    assert_eq!(list["runs"][0]["trigger_type"], "manual");
    assert!(list["runs"][0].get("steps").is_none(), "{list}");
    assert_eq!(
        (list["limit"].clone(), list["offset"].clone()),
        (json!(50), json!(0))
    );
}

#[tokio::test]
async fn a_webhook_delivery_is_checked_and_started_by_the_triggers_module() {
    let f = fixture().await;
    triggers::start(&f.exec, &echo("hooked"), RunRequest::default())
        .await
        .unwrap();
    let (status, set) = f
        .call(
            authorized(Method::PUT, "/api/v1/workflows/hooked/webhook")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let secret = set["secret"].as_str().unwrap().to_owned();
    let deliver = |signature: Option<String>| {
        let mut request = Request::post("/hooks/hooked");
        if let Some(signature) = signature {
            request = request.header("x-omniflow-signature", signature);
        }
        request.body(Body::from(r#"{"x": 7}"#)).unwrap()
    };
    let (status, body) = f.call(deliver(None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["error"]["message"],
        "missing X-OmniFlow-Signature header"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signature = sign_webhook(&secret, now, br#"{"x": 7}"#);
    let (status, run) = f.call(deliver(Some(signature.clone()))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    assert_eq!(run["trigger_type"], "webhook");
    assert_eq!(run["status"], "queued");
    let (status, body) = f.call(deliver(Some(signature))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "replayed");
    let id: RunId = run["id"].as_str().unwrap().parse().unwrap();
    let stored = f.exec.store().get_run(id).await.unwrap().unwrap();
    assert_eq!(
        stored.trigger,
        json!({ "type": "webhook", "payload": { "x": 7 } })
    );
}

#[tokio::test]
async fn every_success_body_in_the_openapi_document_has_a_schema() {
    let fx = fixture().await;
    let (status, doc) = fx.get("/api/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    let mut untyped = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (code, response) in op["responses"].as_object().unwrap() {
                if !code.starts_with('2') || path == "/api/v1/openapi.json" {
                    continue;
                }
                let Some(json) = response["content"].get("application/json") else {
                    continue; // 204, text/plain, event streams
                };
                if json["schema"]["$ref"].as_str().is_none() {
                    untyped.push(format!("{method} {path} {code}"));
                }
            }
        }
    }
    assert!(untyped.is_empty(), "untyped success bodies: {untyped:?}");
}

#[tokio::test]
async fn the_small_documents_keep_their_shape() {
    let fx = fixture().await;
    let (status, stats) = fx.get("/api/v1/stats").await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    for key in [
        "queued_by_priority",
        "queued",
        "running",
        "runs_by_status",
        "finished_last_minute",
        "throughput_runs_per_s",
        "uptime_s",
    ] {
        assert!(stats.get(key).is_some(), "stats lacks {key}: {stats}");
    }
    assert_eq!(stats["workers"], json!({"capacity": 0, "busy": 0}));
    let (_, schedules) = fx.get("/api/v1/schedules").await;
    assert_eq!(schedules, json!({"schedules": []}));
    let (_, health) = fx.get("/api/v1/health").await;
    assert_eq!(health, json!({"status": "ok"}));
    let (_, secrets) = fx.get("/api/v1/secrets").await;
    assert_eq!(secrets, json!({"secrets": []}));
    let request = authorized(Method::POST, "/api/v1/workflows:validate")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"name": "x", "steps": [{"id": "a", "piece": "nope@^1", "action": "b"}]}"#,
        ))
        .unwrap();
    let (status, report) = fx.call(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["valid"], false);
    let problem = &report["problems"][0];
    assert!(
        problem["at"].is_string() && problem["message"].is_string(),
        "{report}"
    );
}
