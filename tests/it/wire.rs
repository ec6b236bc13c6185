//! A local fake of the services the network pieces talk to, on 127.0.0.1 and a
//! random port: Ollama, the Hugging Face router and legacy inference API, the
//! Telegram Bot API, Discord webhooks, plus generic endpoints for
//! `http-request`. It speaks each service's wire format, records every request
//! (method, path with query, headers, body) for assertions, and can be told per
//! test to answer the next requests to a path with a canned failure
//! ([`FakeServer::then`]).
//!
//! Routes (anything else is 404):
//!
//! | route | answer |
//! |---|---|
//! | `ANY /echo` | 200 JSON `{method, path, query, headers, body, json}` of the request — headers include `authorization`, so secrets come back |
//! | `ANY /status/{code}[?retry_after=N]` | that status, JSON `{"status": code}`, `Retry-After: N` when asked |
//! | `ANY /flaky/{key}?fail=N&status=S[&retry_after=R]` | the first N calls for `key` answer S (with `Retry-After: R`), then 200 `{"ok": true, "calls": n}` |
//! | `ANY /redirect` | 302, `Location: /echo` |
//! | `ANY /text` | 200 `text/plain` |
//! | `ANY /slow` | 200 at once, then one byte every 500 ms for two minutes |
//! | `ANY /huge?bytes=N` | 200, N bytes streamed in 64 KiB chunks (chunked, no length) |
//! | `POST /api/chat`, `/api/generate` | Ollama (`stream` must be `false`) |
//! | `POST /v1/chat/completions` | HF router, OpenAI-compatible; 401 without `Bearer`; the reply text echoes the `authorization` header |
//! | `POST /models/{owner}/{name}` | HF legacy: `[{"generated_text": ...}]`; 401 without `Bearer` |
//! | `POST /bot{token}/sendMessage` | Telegram: `{"ok": true, "result": {"message_id", "chat": {"id"}, "text"}}` |
//! | `POST /api/webhooks/{id}/{token}[?wait=true]` | Discord: 200 message JSON with `wait=true`, else 204 |

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One request as the fake server received it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    /// `GET`, `POST`, ...
    pub(crate) method: String,
    /// Path with query, as sent: `/bot123:abc/sendMessage`, `/echo?q=a%20b`.
    pub(crate) path: String,
    /// Headers, names lowercase, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8).
    pub(crate) body: String,
}

impl Recorded {
    /// The first header with this (lowercase) name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (`Null` when it is not JSON).
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A canned answer for the next request to a path (see [`FakeServer::then`]).
#[derive(Debug, Clone)]
pub(crate) enum Canned {
    /// Hugging Face's model-loading answer: 503
    /// `{"error": "Model <id> is currently loading", "estimated_time": secs}`.
    Loading {
        /// Seconds the model needs, as HF reports it.
        estimated_time: f64,
    },
    /// 429 with `Retry-After: retry_after`, in the route's format (Telegram's
    /// `parameters.retry_after`, Discord's `retry_after`, else `{"error"}`).
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// This status with this JSON body.
    Status(u16, Value),
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    canned: Mutex<Vec<(String, VecDeque<Canned>)>>,
    counters: Mutex<HashMap<String, u64>>,
}

/// Poisoning only happens after a panic elsewhere in a test; keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn next_canned(&self, path: &str) -> Option<Canned> {
        let mut canned = lock(&self.canned);
        canned
            .iter_mut()
            .find(|(prefix, queue)| path.starts_with(prefix.as_str()) && !queue.is_empty())
            .and_then(|(_, queue)| queue.pop_front())
    }

    fn count(&self, key: &str) -> u64 {
        let mut counters = lock(&self.counters);
        let n = counters.entry(key.to_string()).or_insert(0);
        *n += 1;
        *n
    }
}

/// The fake server; stops when dropped.
pub(crate) struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Listen on 127.0.0.1, a random port.
    pub(crate) async fn start() -> FakeServer {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake server");
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeServer { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`: what a grant names.
    pub(crate) fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// Answer the next requests whose path starts with `path_prefix` with
    /// `replies`, in order; afterwards the route answers normally.
    pub(crate) fn then(&self, path_prefix: &str, replies: impl IntoIterator<Item = Canned>) {
        lock(&self.shared.canned).push((path_prefix.to_string(), replies.into_iter().collect()));
    }

    /// Every request received so far, in order.
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// The requests whose path starts with `prefix`.
    pub(crate) fn requests_to(&self, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }
}

/// A port on 127.0.0.1 where nothing listens (connection refused).
pub(crate) fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| path.clone()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    lock(&shared.requests).push(recorded.clone());
    let params = query_params(&query);
    if let Some(canned) = shared.next_canned(&path) {
        return canned_reply(&path, &recorded, canned);
    }

    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["echo"] => echo(&recorded, &query, &parts.headers),
        ["status", code] => {
            let status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok());
            let Some(status) = status else {
                return (StatusCode::BAD_REQUEST, "bad status").into_response();
            };
            let mut response =
                (status, axum::Json(json!({ "status": status.as_u16() }))).into_response();
            if let Some(wait) = params.get("retry_after") {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, wait.parse().unwrap());
            }
            response
        }
        ["flaky", key] => {
            let calls = shared.count(key);
            let fail: u64 = params.get("fail").and_then(|f| f.parse().ok()).unwrap_or(1);
            if calls <= fail {
                let status = params
                    .get("status")
                    .and_then(|s| s.parse::<u16>().ok())
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                let mut response =
                    (status, axum::Json(json!({ "ok": false, "calls": calls }))).into_response();
                if let Some(wait) = params.get("retry_after") {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, wait.parse().unwrap());
                }
                response
            } else {
                axum::Json(json!({ "ok": true, "calls": calls })).into_response()
            }
        }
        ["redirect"] => (StatusCode::FOUND, [(header::LOCATION, "/echo")], "moved").into_response(),
        ["text"] => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "just some text",
        )
            .into_response(),
        ["slow"] => {
            let stream = futures::stream::unfold(0u32, |n| async move {
                if n >= 240 {
                    return None;
                }
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), n + 1))
            });
            (
                [(header::CONTENT_TYPE, "text/plain")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        ["huge"] => {
            let total: u64 = params
                .get("bytes")
                .and_then(|b| b.parse().ok())
                .unwrap_or(64 * 1024 * 1024);
            const CHUNK: usize = 64 * 1024;
            let chunk = Bytes::from(vec![b'a'; CHUNK]);
            let stream = futures::stream::unfold(0u64, move |sent| {
                let chunk = chunk.clone();
                async move {
                    if sent >= total {
                        return None;
                    }
                    let n = (total - sent).min(CHUNK as u64) as usize;
                    Some((Ok::<_, std::io::Error>(chunk.slice(..n)), sent + n as u64))
                }
            });
            (
                [(header::CONTENT_TYPE, "text/plain")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        ["api", "chat"] => ollama(&recorded, true),
        ["api", "generate"] => ollama(&recorded, false),
        ["v1", "chat", "completions"] => hf_router(&recorded),
        ["models", model @ ..] if !model.is_empty() => hf_legacy(&recorded, &model.join("/")),
        [bot, "sendMessage"] if bot.starts_with("bot") => telegram(&shared, &recorded, &bot[3..]),
        ["api", "webhooks", id, token] => discord(&shared, &recorded, id, token, &params),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "no such route" })),
        )
            .into_response(),
    }
}

/// `a=1&b=x` → map (values percent-decoded; `+` is a space).
fn query_params(query: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn echo(recorded: &Recorded, query: &str, headers: &HeaderMap) -> Response {
    let headers: serde_json::Map<String, Value> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                json!(String::from_utf8_lossy(v.as_bytes())),
            )
        })
        .collect();
    axum::Json(json!({
        "method": recorded.method,
        "path": recorded.path,
        "query": query,
        "headers": headers,
        "body": recorded.body,
        "json": recorded.json(),
    }))
    .into_response()
}

fn canned_reply(path: &str, recorded: &Recorded, canned: Canned) -> Response {
    match canned {
        Canned::Loading { estimated_time } => {
            let model = recorded
                .json()
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| path.trim_start_matches("/models/").to_string());
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({
                    "error": format!("Model {model} is currently loading"),
                    "estimated_time": estimated_time,
                })),
            )
                .into_response()
        }
        Canned::RateLimited { retry_after } => {
            let body = if path.starts_with("/bot") {
                json!({
                    "ok": false,
                    "error_code": 429,
                    "description": format!("Too Many Requests: retry after {retry_after}"),
                    "parameters": { "retry_after": retry_after },
                })
            } else if path.starts_with("/api/webhooks/") {
                json!({ "message": "You are being rate limited.", "retry_after": retry_after as f64, "global": false })
            } else {
                json!({ "error": "rate limited" })
            };
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after.to_string())],
                axum::Json(body),
            )
                .into_response()
        }
        Canned::Status(code, body) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(body),
        )
            .into_response(),
    }
}

fn bad_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

/// The content of the last message of a chat request.
fn last_content(body: &Value) -> String {
    body.get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn ollama(recorded: &Recorded, chat: bool) -> Response {
    let body = recorded.json();
    if body.get("stream") != Some(&Value::Bool(false)) {
        return bad_request("this fake only answers stream: false");
    }
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return bad_request("model is required");
    };
    if chat {
        axum::Json(json!({
            "model": model,
            "created_at": "2026-01-01T00:00:00Z",
            "message": { "role": "assistant", "content": format!("ollama chat reply to: {}", last_content(&body)) },
            "done": true,
            "prompt_eval_count": 7,
            "eval_count": 5,
        }))
        .into_response()
    } else {
        let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or("");
        axum::Json(json!({
            "model": model,
            "created_at": "2026-01-01T00:00:00Z",
            "response": format!("ollama generate reply to: {prompt}"),
            "done": true,
            "prompt_eval_count": 3,
            "eval_count": 4,
        }))
        .into_response()
    }
}

fn bearer(recorded: &Recorded) -> Option<&str> {
    recorded
        .header("authorization")
        .filter(|a| a.starts_with("Bearer ") && a.len() > "Bearer ".len())
}

fn hf_router(recorded: &Recorded) -> Response {
    let Some(authorization) = bearer(recorded) else {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "Invalid credentials in Authorization header" })),
        )
            .into_response();
    };
    let body = recorded.json();
    let Some(model) = body.get("model").and_then(Value::as_str) else {
        return bad_request("model is required");
    };
    axum::Json(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": model,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": format!("hf reply to: {} (authorization: {authorization})", last_content(&body)),
            },
            "finish_reason": "stop",
        }],
        "usage": { "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15 },
    }))
    .into_response()
}

fn hf_legacy(recorded: &Recorded, model: &str) -> Response {
    if bearer(recorded).is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "Authorization header is invalid" })),
        )
            .into_response();
    }
    let body = recorded.json();
    let Some(inputs) = body.get("inputs").and_then(Value::as_str) else {
        return bad_request("inputs is required");
    };
    axum::Json(json!([{ "generated_text": format!("legacy {model} continues: {inputs}") }]))
        .into_response()
}

fn telegram(shared: &Shared, recorded: &Recorded, token: &str) -> Response {
    if token.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "ok": false, "error_code": 404, "description": "Not Found" })),
        )
            .into_response();
    }
    let body = recorded.json();
    let text = body.get("text").and_then(Value::as_str).unwrap_or("");
    if text.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "ok": false, "error_code": 400, "description": "Bad Request: message text is empty" })),
        )
            .into_response();
    }
    let chat_id = match body.get("chat_id") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.parse::<i64>().unwrap_or(-1_001),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({ "ok": false, "error_code": 400, "description": "Bad Request: chat not found" })),
            )
                .into_response();
        }
    };
    let message_id = shared.count("telegram");
    axum::Json(json!({
        "ok": true,
        "result": { "message_id": message_id, "chat": { "id": chat_id }, "date": 0, "text": text },
    }))
    .into_response()
}

fn discord(
    shared: &Shared,
    recorded: &Recorded,
    id: &str,
    token: &str,
    params: &HashMap<String, String>,
) -> Response {
    if id.is_empty() || token.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "message": "Unknown Webhook", "code": 10015 })),
        )
            .into_response();
    }
    let body = recorded.json();
    let Some(content) = body
        .get("content")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    else {
        return bad_request("Cannot send an empty message");
    };
    if params.get("wait").map(String::as_str) != Some("true") {
        return StatusCode::NO_CONTENT.into_response();
    }
    let n = shared.count("discord");
    axum::Json(json!({
        "id": format!("11000000000000000{n}"),
        "channel_id": "42",
        "webhook_id": id,
        "content": content,
    }))
    .into_response()
}
