//! Hardening of the edges (issue 10, items 4-7 and 11): capped error text,
//! step limits bounded at save time, the name grammar, slow and idle
//! clients, failed-authentication limits, time filters as instants. Real
//! components, a real server on 127.0.0.1, real sockets.

use std::sync::Arc;
use std::time::Duration;

use omniflow::api::{ApiConfig, FailureLimit};
use omniflow::engine::{Executor, ExecutorConfig};
use omniflow::runtime::{ERROR_MESSAGE_BYTES, Runtime, RuntimeConfig, StepCall};
use omniflow::server::queue::PoolConfig;
use omniflow::server::{Server, ServerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{cache_dir, guest, load, runtime};

const TOKEN: &str = "edge-admin-token";

struct Edge {
    server: Server,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn start_with(api: ApiConfig) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let exec: Arc<Executor> = Arc::new(
        crate::support::executor_in(
            dir.path(),
            &["hostile_huge_error"],
            ExecutorConfig::default(),
        )
        .await,
    );
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        pool: PoolConfig {
            workers: 2,
            poll_interval: Duration::from_millis(50),
            ..PoolConfig::default()
        },
        api,
        admin_token: Some(TOKEN.to_owned()),
        ..ServerConfig::default()
    };
    let server = Server::start(exec, config).await.unwrap();
    Edge {
        base: format!("http://{}", server.local_addr()),
        server,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

async fn start() -> Edge {
    start_with(ApiConfig::default()).await
}

impl Edge {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.server.local_addr()
    }
}

fn problems(body: &Value) -> Vec<(String, String)> {
    body["error"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {body}"))
        .iter()
        .map(|p| {
            (
                p["at"].as_str().unwrap().to_owned(),
                p["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn assert_capped(what: &str, text: &str) {
    assert!(
        text.len() <= ERROR_MESSAGE_BYTES + 200,
        "{what}: {} bytes stored",
        text.len()
    );
    assert!(
        text.contains("[error message truncated: "),
        "{what}: no marker"
    );
}

// ---- 4. error text is capped ---------------------------------------------

#[tokio::test]
async fn a_huge_error_message_is_capped_at_the_runtime_boundary() {
    let piece = load("hostile_huge_error").await;
    for kind in ["fatal", "retryable", "invalid-input"] {
        let mut call = StepCall::new(
            "run-1",
            "step-1",
            "run",
            json!({ "bytes": 20 << 20, "kind": kind }),
        );
        call.limits.memory_bytes = 256 << 20;
        let report = runtime().run(&piece, call).await;
        let failure = report.outcome.expect_err("it fails");
        assert_capped(kind, &failure.message());
        assert!(failure.message().contains(&format!("{} bytes", 20 << 20)));
    }
}

#[tokio::test]
async fn a_huge_error_message_is_capped_in_every_record_and_the_api() {
    let edge = start().await;
    for (name, step) in [
        (
            "huge-error",
            json!({ "id": "boom", "piece": "hostile-huge-error", "action": "run",
                    "input": { "bytes": 20 << 20 }, "limits": { "memory_mb": 256 } }),
        ),
        (
            "huge-js-error",
            json!({ "id": "js", "piece": "code@^0.1", "action": "run-js",
                    "input": { "code": "throw new Error('J'.repeat(2000000));" },
                    "limits": { "memory_mb": 256 } }),
        ),
    ] {
        let id = step["id"].as_str().unwrap().to_owned();
        let workflow = json!({ "name": name, "steps": [step] });
        let (status, body) = edge.post("/api/v1/workflows", &workflow).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, run) = edge
            .post(
                &format!("/api/v1/workflows/{name}/runs?wait=60s"),
                &json!({}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{run}");
        assert_eq!(run["status"], "failed", "{}", run["status"]);
        assert_capped("run error", run["error"].as_str().unwrap());
        let step = &run["steps"][0];
        assert_eq!(step["step_id"], id.as_str());
        assert_capped(&id, step["error_message"].as_str().unwrap());
        for attempt in step["attempt_details"].as_array().unwrap() {
            assert_capped(&id, attempt["error_message"].as_str().unwrap());
        }
        // The whole document stays small (it held ~20 MiB per record before).
        assert!(run.to_string().len() < 200 << 10);
    }
}

// ---- 5. step limits bounded at save time; the pool ceiling ---------------

#[tokio::test]
async fn step_limits_above_the_servers_maxima_are_refused_at_save_time() {
    let edge = start().await;
    let workflow = json!({
        "name": "greedy",
        "steps": [{ "id": "a", "piece": "flow@^0.1", "action": "if",
                    "input": { "condition": true },
                    "timeout": "2h", "concurrency": 100000,
                    "limits": { "memory_mb": 4096, "fuel": 100000000000000000u64, "output_kb": 1048576 } }]
    });
    let (status, body) = edge.post("/api/v1/workflows", &workflow).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let problems = problems(&body);
    for (field, max) in [
        ("steps[a].limits.memory_mb", "maximum of 512 MiB"),
        ("steps[a].limits.fuel", "maximum of 10000000000000"),
        ("steps[a].limits.output_kb", "maximum of 8192 KiB"),
        ("steps[a].timeout", "maximum of 15m"),
        ("steps[a].concurrency", "maximum of 256"),
    ] {
        assert!(
            problems
                .iter()
                .any(|(at, m)| at == field && m.contains(max)),
            "{field}: {problems:?}"
        );
    }
    // Within the maxima it saves.
    let ok = json!({
        "name": "modest",
        "steps": [{ "id": "a", "piece": "flow@^0.1", "action": "if",
                    "input": { "condition": true }, "limits": { "memory_mb": 512 } }]
    });
    let (status, body) = edge.post("/api/v1/workflows", &ok).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[test]
fn omniflow_validate_names_the_step_and_field_of_a_limit_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("greedy.json");
    std::fs::write(
        &file,
        json!({
            "name": "greedy",
            "steps": [{ "id": "big", "piece": "flow@^0.1", "action": "if",
                        "input": { "condition": true }, "limits": { "memory_mb": 100000 } }]
        })
        .to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_omniflow"))
        .env("OMNIFLOW_CACHE_DIR", cache_dir())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("steps[big].limits.memory_mb"), "{text}");
    assert!(text.contains("maximum of 512 MiB"), "{text}");
}

#[tokio::test]
async fn growing_past_the_pools_memory_ceiling_is_a_memory_limit() {
    // A runtime whose pool slots hold 32 MiB, and a step allowed 1 GiB:
    // the pool refuses the growth, which must read as `memory-limit`
    // (it used to reach the guest as a failed allocation: a retryable trap).
    let small = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache_dir()),
        max_memory_bytes: 32 << 20,
        max_concurrent_instances: 4,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let piece = small.load(&guest("hostile_membomb")).await.unwrap();
    let mut call = StepCall::new("run-1", "step-1", "run", json!({}));
    call.limits.memory_bytes = 1 << 30;
    let report = small.run(&piece, call).await;
    let failure = report.outcome.expect_err("it fails");
    assert_eq!(failure.class(), "memory-limit", "{failure}");
    assert!(failure.message().contains("ceiling"), "{failure}");
}

// ---- 6. the name grammar ---------------------------------------------------

#[tokio::test]
async fn bad_names_are_refused_at_every_entry_point() {
    let edge = start().await;
    let long = "w".repeat(10_000);
    for name in [
        "a/b",
        "..",
        "a..b",
        "evil\nINFO forged",
        long.as_str(),
        " x",
    ] {
        let workflow = json!({
            "name": name,
            "steps": [{ "id": "a", "piece": "flow@^0.1", "action": "if", "input": { "condition": true } }]
        });
        let (status, body) = edge.post("/api/v1/workflows", &workflow).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{name:?}: {body}");
        let text = body.to_string();
        assert!(text.contains("invalid workflow name"), "{text}");
        assert!(text.contains("starting with a letter or digit"), "{text}");
        assert!(text.len() < 2_000, "the message echoes the whole name");
    }
    // Step ids and secret names in grants.
    let workflow = json!({
        "name": "ok-name",
        "steps": [{ "id": "a.b", "piece": "flow@^0.1", "action": "if", "input": { "condition": true },
                    "grants": { "http": [{ "host": "https://example.com", "secrets": ["NOT-A-NAME"] }] } }]
    });
    let (status, body) = edge.post("/api/v1/workflows", &workflow).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let text = body.to_string();
    assert!(text.contains("invalid step id"), "{text}");
    assert!(text.contains("invalid secret name"), "{text}");
    // Path parameters: 400 naming the rule.
    for path in [
        "/api/v1/workflows/a..b",
        "/api/v1/workflows/a%0Ab",
        "/api/v1/workflows/.hidden/versions",
        "/api/v1/pieces/Flow",
    ] {
        let (status, body) = edge.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_name", "{path}: {body}");
    }
    let (status, body) = edge
        .call(
            reqwest::Method::PUT,
            "/api/v1/secrets/A-B",
            Some(&json!({ "value": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_name", "{body}");
    assert!(
        body.to_string().contains("letters, digits or '_'"),
        "{body}"
    );
}

// ---- 7. slow and idle clients, body limits, failed authentication ------------

fn quick_config() -> ApiConfig {
    ApiConfig {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        max_connections: 4,
        auth_failures: FailureLimit {
            max_failures: 5,
            window: Duration::from_secs(60),
        },
        ..ApiConfig::default()
    }
}

/// Read until EOF or error; `true` when the peer closed within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let ended = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    ended.is_ok()
}

#[tokio::test]
async fn a_client_that_sends_half_a_request_head_is_disconnected() {
    let edge = start_with(quick_config()).await;
    let mut stream = TcpStream::connect(edge.addr()).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "still connected 5 s after a 300 ms header timeout"
    );
    // A client that sends nothing at all goes the same way.
    let mut idle = TcpStream::connect(edge.addr()).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn idle_connections_over_the_bound_are_closed_and_health_still_answers() {
    let edge = start_with(quick_config()).await;
    let mut idle = Vec::new();
    for _ in 0..12 {
        idle.push(TcpStream::connect(edge.addr()).await.unwrap());
    }
    // Those beyond the bound (4) are closed at once, not held.
    let mut closed_fast = 0;
    for stream in &mut idle {
        if closed_within(stream, Duration::from_millis(200)).await {
            closed_fast += 1;
        }
    }
    assert!(closed_fast >= 8, "only {closed_fast} of 12 closed promptly");
    // /health answers (at once, or as soon as the idle ones time out).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answered = edge
            .http
            .get(format!("{}/health", edge.base))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map(|r| r.status());
        if let Ok(StatusCode::OK) = answered {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health never answered: {answered:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_oversized_content_length_is_413_before_the_body_is_read() {
    let edge = start_with(quick_config()).await;
    let mut stream = TcpStream::connect(edge.addr()).await.unwrap();
    let head = format!(
        "POST /api/v1/workflows HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        100u64 << 20
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // No body is sent: the answer must not wait for it.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(250), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "no answer before the body: {text}");
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_408() {
    let edge = start_with(quick_config()).await;
    let mut stream = TcpStream::connect(edge.addr()).await.unwrap();
    let head = format!(
        "POST /api/v1/workflows:validate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("answered within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn repeated_bad_tokens_get_429_with_retry_after() {
    let edge = start_with(quick_config()).await;
    let bad = |token: &'static str| {
        edge.http
            .get(format!("{}/api/v1/workflows", edge.base))
            .bearer_auth(token)
            .send()
    };
    for _ in 0..5 {
        assert_eq!(
            bad("wrong").await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = bad("wrong").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // While limited, even a right token from that address waits.
    assert_eq!(
        bad(TOKEN).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // /health needs no token and is not limited.
    let health = edge.http.get(format!("{}/health", edge.base)).send().await;
    assert_eq!(health.unwrap().status(), StatusCode::OK);
}

// ---- 11. time filters compare instants -----------------------------------

#[tokio::test]
async fn since_with_any_offset_compares_instants() {
    let edge = start().await;
    let workflow = json!({
        "name": "timed",
        "steps": [{ "id": "a", "piece": "flow@^0.1", "action": "if", "input": { "condition": true } }]
    });
    let (status, body) = edge.post("/api/v1/workflows", &workflow).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, run) = edge.post("/api/v1/workflows/timed/runs", &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    let (_, full) = edge.get(&format!("/api/v1/runs/{id}")).await;
    let created = chrono::DateTime::parse_from_rfc3339(full["created_at"].as_str().unwrap())
        .unwrap()
        .to_utc();
    let plus2 = chrono::FixedOffset::east_opt(2 * 3600).unwrap();
    let minus5 = chrono::FixedOffset::west_opt(5 * 3600).unwrap();
    let id = id.as_str();
    let listed = |since: String| {
        let edge = &edge;
        async move {
            let url = format!("/api/v1/runs?since={}", url_escape(&since));
            let (status, body) = edge.get(&url).await;
            assert_eq!(status, StatusCode::OK, "{since}: {body}");
            body["runs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == id)
        }
    };
    let second = chrono::Duration::seconds(1);
    for offset in [plus2, minus5] {
        let before = (created - second).with_timezone(&offset).to_rfc3339();
        let after = (created + second).with_timezone(&offset).to_rfc3339();
        assert!(
            listed(before.clone()).await,
            "since {before} misses the run"
        );
        assert!(!listed(after.clone()).await, "since {after} lists the run");
    }
    let (status, body) = edge.get("/api/v1/runs?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("since="),
        "{body}"
    );
}

fn url_escape(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}
