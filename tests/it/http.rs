//! Network pieces end to end: workflows run through the real `Executor`, the
//! real pieces (`http-request`, `llm`, `telegram`, `discord`) in wasmtime, the
//! host's HTTP policy (grants, private-address checks, secret placement and
//! redaction, no redirects, body cap) and a local fake of each service
//! (`wire.rs`). Nothing leaves 127.0.0.1.

use std::time::{Duration, Instant};

use omniflow::capabilities::secrets::Secrets;
use omniflow::engine::{Executor, ExecutorConfig};
use omniflow::store::{AttemptRecord, RunId, RunStatus, StepRecord, StepStatus};
use omniflow::triggers::{self, RunRequest};
use omniflow::workflow::Workflow;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::runtime;
use crate::wire::{Canned, FakeServer, closed_port};

const TG_TOKEN: &str = "123456:tg-secret-Zq8vX1";
const HF_TOKEN: &str = "hf_secret_Kd93jLmQ";
const API_TOKEN: &str = "api-secret-7f3a9c";
const DISCORD_ID: &str = "98765";
const DISCORD_TOKEN: &str = "discord-secret-Wp4t";

struct Harness {
    exec: Executor,
    dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let secrets = Secrets::empty()
        .with("TELEGRAM_BOT_TOKEN", TG_TOKEN)
        .with("HUGGINGFACE_TOKEN", HF_TOKEN)
        .with("API_TOKEN", API_TOKEN)
        .with("DISCORD_WEBHOOK_ID", DISCORD_ID)
        .with("DISCORD_WEBHOOK_TOKEN", DISCORD_TOKEN);
    let dir = tempfile::tempdir().unwrap();
    let config = ExecutorConfig {
        secrets,
        ..ExecutorConfig::default()
    };
    Harness {
        exec: crate::support::executor_in(dir.path(), &[], config).await,
        dir,
    }
}

impl Harness {
    async fn run(&self, workflow: Value) -> (RunId, RunStatus) {
        let wf = Workflow::from_json(&workflow.to_string()).unwrap();
        let id = triggers::start(&self.exec, &wf, RunRequest::default())
            .await
            .unwrap();
        let status = tokio::time::timeout(
            Duration::from_secs(120),
            self.exec.execute(id, CancellationToken::new()),
        )
        .await
        .expect("the run finishes")
        .unwrap();
        (id, status)
    }

    async fn step(&self, run: RunId, id: &str) -> StepRecord {
        self.exec
            .store()
            .steps(run)
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.step_id == id)
            .unwrap_or_else(|| panic!("no step {id}"))
    }

    async fn attempts(&self, run: RunId, id: &str) -> Vec<AttemptRecord> {
        self.exec.store().attempts(run, id).await.unwrap()
    }

    /// No secret value anywhere: not in the run, its steps, their attempts,
    /// nor in the bytes of the database files.
    async fn assert_no_secret_stored(&self, run: RunId) {
        let (everything, files) =
            crate::support::stored_run(self.exec.store().as_ref(), self.dir.path(), run).await;
        for secret in [TG_TOKEN, HF_TOKEN, API_TOKEN, DISCORD_TOKEN] {
            assert!(
                !everything.contains(secret),
                "{secret} stored: {everything}"
            );
            assert!(
                !files.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is in the database files"
            );
        }
    }
}

/// The error message and the log of a step: where the host's explanation is.
fn explanation(step: &StepRecord) -> String {
    format!(
        "{}\n{}",
        step.error_message.as_deref().unwrap_or(""),
        step.logs
    )
}

/// A one-step workflow.
fn one_step(piece: &str, action: &str, input: Value, grants: Value, retry: Value) -> Value {
    json!({
        "name": format!("{piece}-{action}"),
        "steps": [{
            "id": "s", "piece": piece, "action": action,
            "input": input, "grants": grants, "retry": retry,
        }]
    })
}

fn no_retry() -> Value {
    json!({ "max_attempts": 1 })
}

fn granted(server: &FakeServer) -> Value {
    json!({ "http": [server.origin()] })
}

fn granted_with(server: &FakeServer, secrets: &[&str]) -> Value {
    json!({ "http": [{ "host": server.origin(), "secrets": secrets }] })
}

// ---------------------------------------------------------------- http-request

#[tokio::test]
async fn http_request_sends_method_headers_query_and_body_and_parses_json() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({
        "method": "post",
        "url": server.url("/echo"),
        "headers": { "x-custom": "yes" },
        "query": { "q": "a b&c=d", "n": 2, "tag": ["x", "y"], "skip": null },
        "body": { "k": "v" },
    });
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            granted(&server),
            no_retry(),
        ))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    let out = h.step(run, "s").await.output.unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(out["headers"]["content-type"], "application/json");
    // JSON parsed, not text.
    assert_eq!(out["body"]["method"], "POST");
    assert_eq!(out["body"]["json"], json!({ "k": "v" }));

    let seen = server.requests_to("/echo");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/echo?n=2&q=a%20b%26c%3Dd&tag=x&tag=y");
    assert_eq!(seen[0].header("x-custom"), Some("yes"));
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(seen[0].json(), json!({ "k": "v" }));
}

#[tokio::test]
async fn http_request_text_bodies_stay_text() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({ "url": server.url("/text") });
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            granted(&server),
            no_retry(),
        ))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    let out = h.step(run, "s").await.output.unwrap();
    assert_eq!(out["body"], "just some text");
    let input = json!({ "method": "PUT", "url": server.url("/echo"), "body": "plain words" });
    let (run, _) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            granted(&server),
            no_retry(),
        ))
        .await;
    let out = h.step(run, "s").await.output.unwrap();
    assert_eq!(out["body"]["body"], "plain words");
    assert_eq!(
        out["body"]["headers"]["content-type"],
        "text/plain; charset=utf-8"
    );
}

#[tokio::test]
async fn non_2xx_is_data_unless_fail_on_status() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let retry = json!({ "max_attempts": 2, "initial_delay": "10ms", "jitter": false });

    let input = json!({ "url": server.url("/status/404") });
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            granted(&server),
            retry.clone(),
        ))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    let out = h.step(run, "s").await.output.unwrap();
    assert_eq!(out["status"], 404);
    assert_eq!(out["body"], json!({ "status": 404 }));

    let input = json!({ "url": server.url("/status/404"), "fail_on_status": true });
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            granted(&server),
            retry.clone(),
        ))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let step = h.step(run, "s").await;
    assert_eq!(step.error_class.as_deref(), Some("fatal"));
    assert_eq!(step.attempts, 1, "a 404 is not retried");
    assert!(step.error_message.unwrap().contains("HTTP 404"));

    let input = json!({ "url": server.url("/status/500"), "fail_on_status": true });
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            granted(&server),
            retry,
        ))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let step = h.step(run, "s").await;
    assert_eq!(step.error_class.as_deref(), Some("retryable"));
    assert_eq!(step.attempts, 2, "a 500 is retried");
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_servers_retry_after() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({ "url": server.url("/flaky/rl?fail=1&status=429&retry_after=1") });
    let retry = json!({ "max_attempts": 3, "initial_delay": "10ms", "jitter": false });
    let started = Instant::now();
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            granted(&server),
            retry,
        ))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 is a floor on the 10 ms policy delay"
    );
    let step = h.step(run, "s").await;
    assert_eq!(step.attempts, 2);
    assert_eq!(
        step.output.unwrap()["body"],
        json!({ "ok": true, "calls": 2 })
    );
    let attempts = h.attempts(run, "s").await;
    assert_eq!(attempts[0].error_class.as_deref(), Some("retryable"));
    assert!(
        attempts[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("HTTP 429")
    );
    assert_eq!(server.requests_to("/flaky/rl").len(), 2);
}

#[tokio::test]
async fn redirects_are_returned_as_data_not_followed() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({ "url": server.url("/redirect") });
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            granted(&server),
            no_retry(),
        ))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    let out = h.step(run, "s").await.output.unwrap();
    assert_eq!(out["status"], 302);
    assert_eq!(out["headers"]["location"], "/echo");
    assert!(
        server.requests_to("/echo").is_empty(),
        "the redirect was followed"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn requests_without_a_grant_are_denied_naming_the_grant_to_add() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({ "url": server.url("/echo") });
    // A retry policy that would retry: a denial is fatal and is not retried.
    let retry = json!({ "max_attempts": 3, "initial_delay": "10ms" });
    let (run, status) = h
        .run(one_step("http-request", "request", input, json!({}), retry))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let step = h.step(run, "s").await;
    assert_eq!(step.error_class.as_deref(), Some("fatal"));
    assert_eq!(step.attempts, 1);
    assert!(
        step.error_message.as_deref().unwrap().contains("denied"),
        "{step:?}"
    );
    assert!(
        step.logs.contains(&format!("\"{}\"", server.origin())),
        "the log names the grant to add: {}",
        step.logs
    );
    assert!(server.requests().is_empty(), "nothing reached the server");
}

#[tokio::test]
async fn a_grant_for_another_port_is_denied() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let other = format!("http://127.0.0.1:{}", closed_port());
    let input = json!({ "url": server.url("/echo") });
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            json!({ "http": [other] }),
            no_retry(),
        ))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let step = h.step(run, "s").await;
    assert_eq!(step.error_class.as_deref(), Some("fatal"));
    assert!(step.logs.contains(&server.origin()), "{}", step.logs);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn a_host_name_that_resolves_to_loopback_is_refused() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let origin = format!("http://localhost:{}", server.port());
    let input = json!({ "url": format!("{origin}/echo") });
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            json!({ "http": [origin] }),
            no_retry(),
        ))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let step = h.step(run, "s").await;
    assert_eq!(step.error_class.as_deref(), Some("fatal"));
    assert!(
        explanation(&step).contains("loopback"),
        "{}",
        explanation(&step)
    );
    assert!(server.requests().is_empty(), "nothing reached the server");
}

#[tokio::test]
async fn slow_responses_are_bounded_by_the_step_timeout_and_timeout_ms() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let mut wf = one_step(
        "http-request",
        "request",
        json!({ "url": server.url("/slow") }),
        granted(&server),
        no_retry(),
    );
    wf["steps"][0]["timeout"] = json!("1s");
    let started = Instant::now();
    let (run, status) = h.run(wf).await;
    assert_eq!(status, RunStatus::Failed);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let step = h.step(run, "s").await;
    assert!(
        matches!(step.error_class.as_deref(), Some("timeout" | "retryable")),
        "{step:?}"
    );

    // The piece's own timeout, well inside a generous step timeout.
    let mut wf = one_step(
        "http-request",
        "request",
        json!({ "url": server.url("/slow"), "timeout_ms": 300 }),
        granted(&server),
        no_retry(),
    );
    wf["steps"][0]["timeout"] = json!("20s");
    let started = Instant::now();
    let (run, status) = h.run(wf).await;
    assert_eq!(status, RunStatus::Failed);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "timeout_ms: 300 took {:?}",
        started.elapsed()
    );
    let step = h.step(run, "s").await;
    assert_eq!(step.error_class.as_deref(), Some("retryable"), "{step:?}");
}

#[tokio::test]
async fn huge_bodies_fail_cleanly_instead_of_exhausting_the_piece() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let sent: u64 = 32 * 1024 * 1024;
    let input = json!({ "url": server.url(&format!("/huge?bytes={sent}")) });
    let started = Instant::now();
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            granted(&server),
            no_retry(),
        ))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    let step = h.step(run, "s").await;
    match status {
        RunStatus::Failed => {
            assert_eq!(step.status, StepStatus::Failed);
            assert!(!explanation(&step).trim().is_empty());
        }
        other => {
            // A host that truncates instead must not hand over the whole body.
            assert_eq!(other, RunStatus::Succeeded);
            let body = step.output.unwrap()["body"].as_str().unwrap_or("").len() as u64;
            assert!(body < sent, "the whole {sent}-byte body reached the piece");
        }
    }
    assert_eq!(server.requests_to("/huge").len(), 1);
}

#[tokio::test]
async fn granted_secrets_are_placed_and_echoes_are_redacted() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({
        "url": server.url("/echo"),
        "headers": { "authorization": "Bearer ${secret:API_TOKEN}" },
        "query": { "key": "${secret:API_TOKEN}" },
    });
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            granted_with(&server, &["API_TOKEN"]),
            no_retry(),
        ))
        .await;
    assert_eq!(status, RunStatus::Succeeded, "{:?}", h.step(run, "s").await);
    // The server got the real value, in the header and in the query.
    let seen = &server.requests_to("/echo")[0];
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {API_TOKEN}").as_str())
    );
    assert_eq!(seen.path, format!("/echo?key={API_TOKEN}"));
    // The piece saw only the marker.
    let out = h.step(run, "s").await.output.unwrap();
    assert_eq!(
        out["body"]["headers"]["authorization"],
        "Bearer [redacted:API_TOKEN]"
    );
    assert!(!out.to_string().contains(API_TOKEN));
    h.assert_no_secret_stored(run).await;
}

#[tokio::test]
async fn a_secret_not_granted_to_the_destination_is_refused_by_name() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({
        "url": server.url("/echo"),
        "headers": { "authorization": "Bearer ${secret:API_TOKEN}" },
    });
    // The destination is granted, the secret is not.
    let (run, status) = h
        .run(one_step(
            "http-request",
            "request",
            input,
            granted(&server),
            no_retry(),
        ))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let step = h.step(run, "s").await;
    assert_eq!(step.error_class.as_deref(), Some("fatal"));
    assert!(
        explanation(&step).contains("API_TOKEN"),
        "{}",
        explanation(&step)
    );
    assert!(server.requests().is_empty());
    h.assert_no_secret_stored(run).await;
}

#[tokio::test]
async fn unknown_input_fields_are_rejected_before_anything_is_sent() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let wf = one_step(
        "http-request",
        "request",
        json!({ "url": server.url("/echo"), "verb": "GET" }),
        granted(&server),
        no_retry(),
    );
    let wf = Workflow::from_json(&wf.to_string()).unwrap();
    let err = triggers::start(&h.exec, &wf, RunRequest::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("verb"), "{err}");
    assert!(server.requests().is_empty());
}

// ------------------------------------------------------------------------- llm

#[tokio::test]
async fn llm_ollama_chat_and_generate() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let provider = json!([{ "name": "ollama", "base_url": server.origin() }]);
    let wf = json!({
        "name": "ollama",
        "steps": [
            { "id": "chat", "piece": "llm", "action": "chat", "grants": granted(&server), "retry": no_retry(),
              "input": { "providers": provider, "system": "be brief", "temperature": 0.2, "max_tokens": 64,
                         "messages": [{ "role": "user", "content": "hi there" }] } },
            { "id": "gen", "piece": "llm", "action": "generate", "grants": granted(&server), "retry": no_retry(),
              "input": { "providers": provider, "model": "mistral", "prompt": "once upon" } }
        ]
    });
    let (run, status) = h.run(wf).await;
    assert_eq!(status, RunStatus::Succeeded);
    let chat = h.step(run, "chat").await.output.unwrap();
    assert_eq!(
        chat,
        json!({ "text": "ollama chat reply to: hi there", "model": "llama3.2", "provider": "ollama", "tokens_used": 12 })
    );
    let gen_out = h.step(run, "gen").await.output.unwrap();
    assert_eq!(gen_out["text"], "ollama generate reply to: once upon");
    assert_eq!(gen_out["model"], "mistral");
    assert_eq!(gen_out["tokens_used"], 7);

    let sent = server.requests_to("/api/chat")[0].json();
    assert_eq!(sent["stream"], false);
    assert_eq!(sent["model"], "llama3.2");
    assert_eq!(
        sent["messages"],
        json!([{ "role": "system", "content": "be brief" }, { "role": "user", "content": "hi there" }])
    );
    assert_eq!(
        sent["options"],
        json!({ "temperature": 0.2, "num_predict": 64 })
    );
    let sent = server.requests_to("/api/generate")[0].json();
    assert_eq!(sent["prompt"], "once upon");
    assert_eq!(sent["stream"], false);
    assert!(
        server.requests_to("/api/generate")[0]
            .header("authorization")
            .is_none()
    );
}

#[tokio::test]
async fn llm_huggingface_router_gets_the_token_the_piece_never_sees_it() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({
        "providers": [{ "name": "huggingface", "base_url": server.origin() }],
        "prompt": "summarize this",
        "max_tokens": 32,
    });
    let (run, status) = h
        .run(one_step(
            "llm",
            "chat",
            input,
            granted_with(&server, &["HUGGINGFACE_TOKEN"]),
            no_retry(),
        ))
        .await;
    assert_eq!(status, RunStatus::Succeeded, "{:?}", h.step(run, "s").await);
    let out = h.step(run, "s").await.output.unwrap();
    assert_eq!(out["provider"], "huggingface");
    assert_eq!(out["model"], "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(out["tokens_used"], 15);
    assert_eq!(
        out["text"],
        "hf reply to: summarize this (authorization: Bearer [redacted:HUGGINGFACE_TOKEN])"
    );
    let seen = &server.requests_to("/v1/chat/completions")[0];
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {HF_TOKEN}").as_str())
    );
    assert_eq!(seen.json()["max_tokens"], 32);
    assert_eq!(
        seen.json()["messages"],
        json!([{ "role": "user", "content": "summarize this" }])
    );
    h.assert_no_secret_stored(run).await;
}

#[tokio::test]
async fn llm_huggingface_legacy_endpoint() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({
        "providers": [{ "name": "huggingface-legacy", "base_url": server.origin(), "model": "gpt2-org/gpt2" }],
        "prompt": "The sky is",
        "temperature": 0.5,
        "max_tokens": 20,
    });
    let (run, status) = h
        .run(one_step(
            "llm",
            "generate",
            input,
            granted_with(&server, &["HUGGINGFACE_TOKEN"]),
            no_retry(),
        ))
        .await;
    assert_eq!(status, RunStatus::Succeeded, "{:?}", h.step(run, "s").await);
    let out = h.step(run, "s").await.output.unwrap();
    assert_eq!(out["text"], "legacy gpt2-org/gpt2 continues: The sky is");
    assert_eq!(out["provider"], "huggingface-legacy");
    let seen = &server.requests_to("/models/gpt2-org/gpt2")[0];
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {HF_TOKEN}").as_str())
    );
    assert_eq!(
        seen.json(),
        json!({ "inputs": "The sky is",
                "parameters": { "return_full_text": false, "temperature": 0.5, "max_new_tokens": 20 } })
    );
}

#[tokio::test]
async fn llm_waits_for_a_loading_model_then_succeeds() {
    let server = FakeServer::start().await;
    server.then(
        "/v1/chat/completions",
        [Canned::Loading {
            estimated_time: 1.0,
        }],
    );
    let h = harness().await;
    let input = json!({
        "providers": [{ "name": "huggingface", "base_url": server.origin() }],
        "messages": [{ "role": "user", "content": "hello" }],
    });
    let retry = json!({ "max_attempts": 3, "initial_delay": "10ms", "jitter": false });
    let started = Instant::now();
    let (run, status) = h
        .run(one_step(
            "llm",
            "chat",
            input,
            granted_with(&server, &["HUGGINGFACE_TOKEN"]),
            retry,
        ))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "estimated_time is a floor on the wait"
    );
    let step = h.step(run, "s").await;
    assert!(step.attempts >= 2);
    let attempts = h.attempts(run, "s").await;
    assert_eq!(attempts[0].error_class.as_deref(), Some("retryable"));
    assert!(
        attempts[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("loading")
    );
    assert_eq!(server.requests_to("/v1/chat/completions").len(), 2);
}

#[tokio::test]
async fn llm_rate_limits_and_ollama_503_are_retryable() {
    let server = FakeServer::start().await;
    server.then(
        "/api/generate",
        [Canned::Status(503, json!({ "error": "server busy" }))],
    );
    server.then(
        "/v1/chat/completions",
        [Canned::RateLimited { retry_after: 1 }],
    );
    let h = harness().await;
    let retry = json!({ "max_attempts": 2, "initial_delay": "10ms", "jitter": false });
    let wf = json!({
        "name": "llm-retry",
        "steps": [
            { "id": "ollama", "piece": "llm", "action": "generate", "grants": granted(&server), "retry": retry,
              "input": { "providers": [{ "name": "ollama", "base_url": server.origin() }], "prompt": "x" } },
            { "id": "hf", "piece": "llm", "action": "generate", "retry": retry,
              "grants": granted_with(&server, &["HUGGINGFACE_TOKEN"]),
              "input": { "providers": [{ "name": "huggingface", "base_url": server.origin() }], "prompt": "y" } }
        ]
    });
    let started = Instant::now();
    let (run, status) = h.run(wf).await;
    assert_eq!(status, RunStatus::Succeeded);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    for id in ["ollama", "hf"] {
        let attempts = h.attempts(run, id).await;
        assert_eq!(attempts.len(), 2, "{id}");
        assert_eq!(
            attempts[0].error_class.as_deref(),
            Some("retryable"),
            "{id}"
        );
    }
}

#[tokio::test]
async fn llm_falls_back_to_huggingface_when_ollama_is_unreachable() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let input = json!({
        "providers": [
            { "name": "ollama", "base_url": dead },
            { "name": "huggingface", "base_url": server.origin() }
        ],
        "prompt": "anyone there?",
    });
    let grants =
        json!({ "http": [dead, { "host": server.origin(), "secrets": ["HUGGINGFACE_TOKEN"] }] });
    let (run, status) = h
        .run(one_step("llm", "chat", input, grants, no_retry()))
        .await;
    assert_eq!(status, RunStatus::Succeeded, "{:?}", h.step(run, "s").await);
    let step = h.step(run, "s").await;
    assert_eq!(step.output.as_ref().unwrap()["provider"], "huggingface");
    assert!(
        step.logs.contains("ollama"),
        "the failed provider is logged: {}",
        step.logs
    );
    assert_eq!(server.requests_to("/v1/chat/completions").len(), 1);
}

#[tokio::test]
async fn llm_reports_every_provider_when_all_fail() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let input = json!({
        "providers": [
            { "name": "ollama", "base_url": dead },
            // Granted destination, secret not granted: denied, fatal.
            { "name": "huggingface", "base_url": server.origin() }
        ],
        "prompt": "anyone?",
    });
    let grants = json!({ "http": [dead, server.origin()] });
    let (run, status) = h
        .run(one_step("llm", "chat", input, grants, no_retry()))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let step = h.step(run, "s").await;
    // Retryable because one provider's failure (connection refused) was.
    assert_eq!(step.error_class.as_deref(), Some("retryable"));
    let message = step.error_message.unwrap();
    assert!(message.contains("ollama (llama3.2): "), "{message}");
    // The POST body was refused with the request: still reported as a denial.
    assert!(
        message.contains("huggingface (meta-llama/Llama-3.1-8B-Instruct): HTTP request")
            && message.contains("denied"),
        "{message}"
    );
    assert!(server.requests().is_empty());
}

// ------------------------------------------------------------ telegram, discord

#[tokio::test]
async fn telegram_send_message_puts_the_token_in_the_path() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({ "chat_id": "4242", "text": "*hello*", "parse_mode": "MarkdownV2", "base_url": server.origin() });
    let (run, status) = h
        .run(one_step(
            "telegram",
            "send-message",
            input,
            granted_with(&server, &["TELEGRAM_BOT_TOKEN"]),
            no_retry(),
        ))
        .await;
    assert_eq!(status, RunStatus::Succeeded, "{:?}", h.step(run, "s").await);
    assert_eq!(
        h.step(run, "s").await.output.unwrap(),
        json!({ "message_id": 1, "chat_id": 4242 })
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/bot{TG_TOKEN}/sendMessage"));
    assert_eq!(
        seen[0].json(),
        json!({ "chat_id": "4242", "text": "*hello*", "parse_mode": "MarkdownV2" })
    );
    h.assert_no_secret_stored(run).await;
}

#[tokio::test]
async fn telegram_without_its_secret_grant_is_denied_not_retried() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({ "chat_id": 1, "text": "hi", "base_url": server.origin() });
    let retry = json!({ "max_attempts": 3, "initial_delay": "10ms" });
    let (run, status) = h
        .run(one_step(
            "telegram",
            "send-message",
            input,
            granted(&server),
            retry,
        ))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let step = h.step(run, "s").await;
    assert_eq!(step.error_class.as_deref(), Some("fatal"), "{step:?}");
    assert_eq!(step.attempts, 1);
    assert!(step.error_message.as_deref().unwrap().contains("denied"));
    assert!(step.logs.contains("TELEGRAM_BOT_TOKEN"), "{}", step.logs);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn telegram_rate_limit_is_retried_after_its_retry_after() {
    let server = FakeServer::start().await;
    server.then("/bot", [Canned::RateLimited { retry_after: 1 }]);
    let h = harness().await;
    let input = json!({ "chat_id": 7, "text": "again", "base_url": server.origin() });
    let retry = json!({ "max_attempts": 2, "initial_delay": "10ms", "jitter": false });
    let started = Instant::now();
    let (run, status) = h
        .run(one_step(
            "telegram",
            "send-message",
            input,
            granted_with(&server, &["TELEGRAM_BOT_TOKEN"]),
            retry,
        ))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    assert!(started.elapsed() >= Duration::from_secs(1));
    let attempts = h.attempts(run, "s").await;
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("Too Many Requests")
    );

    // Any other refusal is fatal, with Telegram's description.
    let input = json!({ "chat_id": 7, "text": "x", "base_url": server.origin() });
    server.then(
        "/bot",
        [Canned::Status(
            400,
            json!({ "ok": false, "error_code": 400, "description": "Bad Request: chat not found" }),
        )],
    );
    let (run, status) = h
        .run(one_step(
            "telegram",
            "send-message",
            input,
            granted_with(&server, &["TELEGRAM_BOT_TOKEN"]),
            json!({ "max_attempts": 3 }),
        ))
        .await;
    assert_eq!(status, RunStatus::Failed);
    let step = h.step(run, "s").await;
    assert_eq!(step.error_class.as_deref(), Some("fatal"));
    assert_eq!(step.attempts, 1);
    assert!(step.error_message.unwrap().contains("chat not found"));
}

#[tokio::test]
async fn discord_post_uses_both_webhook_secrets() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let input = json!({ "content": "@everyone deploy done", "username": "omniflow", "base_url": server.origin() });
    let grants = granted_with(&server, &["DISCORD_WEBHOOK_ID", "DISCORD_WEBHOOK_TOKEN"]);
    let (run, status) = h
        .run(one_step("discord", "post", input, grants, no_retry()))
        .await;
    assert_eq!(status, RunStatus::Succeeded, "{:?}", h.step(run, "s").await);
    let out = h.step(run, "s").await.output.unwrap();
    assert_eq!(out["status"], 200);
    assert!(out["id"].as_str().unwrap().starts_with("11"));
    let seen = server.requests();
    assert_eq!(
        seen[0].path,
        format!("/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}?wait=true")
    );
    assert_eq!(
        seen[0].json(),
        json!({ "content": "@everyone deploy done", "username": "omniflow", "allowed_mentions": { "parse": [] } })
    );
    h.assert_no_secret_stored(run).await;
}

#[tokio::test]
async fn discord_rate_limit_is_retryable() {
    let server = FakeServer::start().await;
    server.then("/api/webhooks/", [Canned::RateLimited { retry_after: 1 }]);
    let h = harness().await;
    let input = json!({ "content": "hi", "base_url": server.origin() });
    let grants = granted_with(&server, &["DISCORD_WEBHOOK_ID", "DISCORD_WEBHOOK_TOKEN"]);
    let retry = json!({ "max_attempts": 2, "initial_delay": "10ms", "jitter": false });
    let started = Instant::now();
    let (run, status) = h
        .run(one_step("discord", "post", input, grants, retry))
        .await;
    assert_eq!(status, RunStatus::Succeeded);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(h.step(run, "s").await.attempts, 2);
}

// -------------------------------------------------------------------- handlers

#[tokio::test]
async fn on_failure_posts_to_telegram_and_on_success_to_discord() {
    let server = FakeServer::start().await;
    let h = harness().await;
    let tg_grants = granted_with(&server, &["TELEGRAM_BOT_TOKEN"]);
    let wf = json!({
        "name": "notify-on-failure",
        "steps": [{
            "id": "fetch", "piece": "http-request", "action": "request", "retry": no_retry(),
            "input": { "url": server.url("/status/500"), "fail_on_status": true },
            "grants": granted(&server)
        }],
        "on_failure": {
            "piece": "telegram", "action": "send-message", "grants": tg_grants,
            "input": { "chat_id": 99, "base_url": server.origin(),
                       "text": "run {{ run.id }} failed: {{ trigger.error }}" }
        }
    });
    let (run, status) = h.run(wf).await;
    assert_eq!(status, RunStatus::Failed);
    let handler = h.step(run, "$on_failure").await;
    assert_eq!(handler.status, StepStatus::Succeeded, "{handler:?}");
    let sent = server.requests_to("/bot");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, format!("/bot{TG_TOKEN}/sendMessage"));
    let text = sent[0].json()["text"].as_str().unwrap().to_string();
    assert!(text.starts_with(&format!("run {run} failed: ")), "{text}");
    assert!(
        text.contains("fetch") && text.contains("HTTP 500"),
        "{text}"
    );
    h.assert_no_secret_stored(run).await;

    let wf = json!({
        "name": "notify-on-success",
        "steps": [{
            "id": "fetch", "piece": "http-request", "action": "request", "retry": no_retry(),
            "input": { "url": server.url("/echo") }, "grants": granted(&server)
        }],
        "on_success": {
            "piece": "discord", "action": "post",
            "grants": granted_with(&server, &["DISCORD_WEBHOOK_ID", "DISCORD_WEBHOOK_TOKEN"]),
            "input": { "base_url": server.origin(),
                       "content": "run {{ run.id }}: fetch said {{ steps.fetch.output.status }}" }
        }
    });
    let (run, status) = h.run(wf).await;
    assert_eq!(status, RunStatus::Succeeded);
    assert_eq!(
        h.step(run, "$on_success").await.status,
        StepStatus::Succeeded
    );
    let posted = server.requests_to("/api/webhooks/");
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0].json()["content"],
        format!("run {run}: fetch said 200")
    );
}

#[tokio::test]
async fn network_pieces_declare_their_destinations_and_secrets() {
    let pieces = runtime().load_builtins().await.unwrap();
    let info = |name: &str| {
        pieces
            .iter()
            .map(|p| p.info().clone())
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no built-in {name}"))
    };
    let telegram = info("telegram");
    assert_eq!(telegram.http_destinations, ["https://api.telegram.org"]);
    assert_eq!(telegram.secrets, ["TELEGRAM_BOT_TOKEN"]);
    let discord = info("discord");
    assert_eq!(
        discord.secrets,
        ["DISCORD_WEBHOOK_ID", "DISCORD_WEBHOOK_TOKEN"]
    );
    let llm = info("llm");
    assert_eq!(llm.secrets, ["HUGGINGFACE_TOKEN"]);
    assert!(
        llm.http_destinations
            .contains(&"https://router.huggingface.co".to_string())
    );
    let mut actions: Vec<String> = llm.actions.iter().map(|a| a.name.clone()).collect();
    actions.sort();
    assert_eq!(actions, ["chat", "generate"]);
    assert!(info("http-request").action("request").is_some());
}

#[tokio::test]
async fn summarize_example_validates() {
    let h = harness().await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/summarize.json"
    ))
    .unwrap();
    let wf = Workflow::from_json(&text).unwrap();
    // Validation only (pieces, actions, DAG, grants): it needs real services to run.
    triggers::start(&h.exec, &wf, RunRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}
