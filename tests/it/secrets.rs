//! Secrets end to end: where values come from (never the server's own
//! configuration), redaction of every encoded echo from everything a run
//! stores, and the same resolution for `run` and `serve`. Real processes,
//! real sockets on 127.0.0.1, real SQLite files.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use omniflow::capabilities::secrets::Secrets;
use omniflow::engine::ExecutorConfig;
use omniflow::store::RunStatus;
use omniflow::triggers::{self, RunRequest};
use omniflow::workflow::Workflow;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::support::cache_dir;
use crate::wire::FakeServer;

fn omniflow(cwd: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omniflow"));
    cmd.env("OMNIFLOW_CACHE_DIR", cache_dir()).current_dir(cwd);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OMNIFLOW_SECRET") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Every byte a server received, as text (lossy).
fn everything_received(server: &FakeServer) -> String {
    server
        .requests()
        .iter()
        .map(|r| format!("{} {} {:?} {}", r.method, r.path, r.headers, r.body))
        .collect::<Vec<_>>()
        .join("\n")
}

// ------------------------------------------------ 1. server configuration

/// `omniflow serve` with secret-looking configuration in its environment:
/// a workflow naming it is refused at save time, the secrets API refuses the
/// name, and a plain variable of the server's environment is not a secret
/// either: neither value ever reaches the workflow's server.
#[tokio::test]
async fn server_configuration_is_never_a_secret() {
    const KEY: &str = "5ec0e7a1c0ffee5ec0e7a1c0ffee5ec0e7a1c0ffee5ec0e7a1c0ffee00000042";
    const ADMIN: &str = "admin-token-Hq4Lw9";
    const PLAIN: &str = "plain-server-var-Zx81";
    let dir = tempfile::tempdir().unwrap();
    let target = FakeServer::start().await;
    let port = crate::cli::free_port();
    let child = omniflow(dir.path())
        .args(["serve", "--workers", "1", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(dir.path().join("omniflow.db"))
        .env("OMNIFLOW_SECRET_KEY", KEY)
        .env("OMNIFLOW_ADMIN_TOKEN", ADMIN)
        .env("PLAIN_SERVER_VAR", PLAIN)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut child = crate::cli::KillOnDrop(child);
    crate::cli::wait_healthy(&http, &base, &mut child.0).await;
    let auth = format!("Bearer {ADMIN}");
    let workflow = |name: &str, secret: &str| {
        json!({
            "name": name,
            "steps": [{
                "id": "leak", "piece": "http-request", "action": "request",
                "input": { "url": target.url("/echo"),
                           "headers": { "x-leak": format!("${{secret:{secret}}}") } },
                "grants": { "http": [{ "host": target.origin(), "secrets": [secret] }] },
                "retry": { "max_attempts": 1 }
            }]
        })
    };

    for reserved in [
        "OMNIFLOW_SECRET_KEY",
        "OMNIFLOW_ADMIN_TOKEN",
        "omniflow_secret_key",
    ] {
        let r = http
            .post(format!("{base}/api/v1/workflows"))
            .header("authorization", &auth)
            .json(&workflow("steal", reserved))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{reserved}");
        let body: Value = r.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(reserved) && message.contains("reserved"),
            "{body}"
        );

        let r = http
            .put(format!("{base}/api/v1/secrets/{reserved}"))
            .header("authorization", &auth)
            .json(&json!({ "value": "x" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{reserved}");
    }

    // A plain variable of the server's environment: the workflow is valid,
    // but the variable is no secret, so the request is refused.
    let r = http
        .post(format!("{base}/api/v1/workflows"))
        .header("authorization", &auth)
        .json(&workflow("plain", "PLAIN_SERVER_VAR"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http
        .post(format!("{base}/api/v1/workflows/plain/runs?wait=60s"))
        .header("authorization", &auth)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let run: Value = r.json().await.unwrap();
    assert_eq!(run["status"], "failed", "{run}");

    let received = everything_received(&target);
    for value in [KEY, ADMIN, PLAIN] {
        assert!(
            !received.contains(value),
            "{value} reached the server: {received}"
        );
    }
}

// ------------------------------------------------ 2. redaction

const TOKEN: &str = "sk/Live&Tok<en>+42";

/// A server that echoes the `authorization` bearer value back in every
/// common encoding, in the body and in headers (one of them not UTF-8), and
/// keeps the `x-store` header of `/store` to hand it back on `/read`.
async fn echo_server() -> (String, tokio::task::JoinHandle<()>) {
    #[derive(Default)]
    struct Kept(Mutex<Vec<u8>>);
    async fn handle(State(kept): State<Arc<Kept>>, request: Request) -> Response {
        let headers = request.headers().clone();
        match request.uri().path() {
            "/store" => {
                if let Some(v) = headers.get("x-store") {
                    *kept.0.lock().unwrap() = v.as_bytes().to_vec();
                }
                "stored".into_response()
            }
            "/read" => {
                let value = kept.0.lock().unwrap().clone();
                let mut body = b"{\"kept\": \"".to_vec();
                body.extend_from_slice(&value);
                body.extend_from_slice(b"\"}");
                ([("content-type", "application/json")], Bytes::from(body)).into_response()
            }
            _ => encoded_echo(&headers),
        }
    }
    fn encoded_echo(headers: &HeaderMap) -> Response {
        let secret = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_string();
        let [slash, unicode, percent] = encodings(&secret);
        let b64 = base64::engine::general_purpose::STANDARD;
        let basic = b64.encode(format!("user:{secret}"));
        let alone = b64.encode(&secret);
        let body = format!(
            r#"{{"raw": "{secret}", "slash": "{slash}", "unicode": "{unicode}", "percent": "{percent}", "basic": "Basic {basic}", "alone": "{alone}"}}"#
        );
        let mut response = ([("content-type", "application/json")], body).into_response();
        let h = response.headers_mut();
        h.insert("x-raw", HeaderValue::from_str(&secret).unwrap());
        h.insert("x-percent", HeaderValue::from_str(&percent).unwrap());
        let mut bytes = vec![0xff, b' '];
        bytes.extend_from_slice(secret.as_bytes());
        bytes.extend_from_slice(&[b' ', 0xfe]);
        h.insert("x-bytes", HeaderValue::from_bytes(&bytes).unwrap());
        response
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::new(Kept::default()));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (origin, task)
}

/// `secret` JSON-escaped with `\/`, JSON-escaped with `\/` and `\uXXXX`
/// for everything else not alphanumeric, and percent-encoded.
fn encodings(secret: &str) -> [String; 3] {
    let escape = |c: char, unicode: bool| match c {
        '/' => "\\/".to_string(),
        c if unicode && !c.is_ascii_alphanumeric() => format!("\\u{:04x}", c as u32),
        c => c.to_string(),
    };
    let slash: String = secret.chars().map(|c| escape(c, false)).collect();
    let unicode: String = secret.chars().map(|c| escape(c, true)).collect();
    let percent: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    [slash, unicode, percent]
}

/// Every form of [`TOKEN`] the echo server writes.
fn token_forms() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let basic = b64.encode(format!("user:{TOKEN}"));
    let [slash, unicode, percent] = encodings(TOKEN);
    vec![
        TOKEN.to_string(),
        slash,
        unicode,
        percent,
        // The part of the base64 forms that depends on the token only.
        basic[8..basic.len() - 4].to_string(),
        b64.encode(TOKEN)[..16].to_string(),
    ]
}

/// No form of the token in the run, its steps and attempts, nor in the
/// bytes of the database files.
async fn assert_no_token_stored(
    exec: &omniflow::engine::Executor,
    dir: &std::path::Path,
    run: omniflow::store::RunId,
) {
    let (everything, files) = crate::support::stored_run(exec.store().as_ref(), dir, run).await;
    let files = String::from_utf8_lossy(&files);
    for form in token_forms() {
        assert!(!everything.contains(&form), "{form} stored: {everything}");
        assert!(!files.contains(&form), "{form} is in the database files");
    }
}

async fn run_workflow(
    exec: &omniflow::engine::Executor,
    workflow: Value,
) -> (omniflow::store::RunId, RunStatus) {
    let wf = Workflow::from_json(&workflow.to_string()).unwrap();
    let id = triggers::start(exec, &wf, RunRequest::default())
        .await
        .unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(120),
        exec.execute(id, CancellationToken::new()),
    )
    .await
    .expect("the run finishes")
    .unwrap();
    (id, status)
}

#[tokio::test]
async fn encoded_echoes_and_read_backs_of_secrets_are_redacted_everywhere() {
    let (origin, _server) = echo_server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = ExecutorConfig {
        secrets: Secrets::empty().with("TOKEN", TOKEN),
        ..ExecutorConfig::default()
    };
    let exec = crate::support::executor_in(dir.path(), &[], config).await;
    let workflow = json!({
        "name": "echoes",
        "steps": [
            { "id": "echo", "piece": "http-request", "action": "request",
              "input": { "url": format!("{origin}/echo"),
                         "headers": { "authorization": "Bearer ${secret:TOKEN}" } },
              "grants": { "http": [{ "host": origin, "secrets": ["TOKEN"] }] },
              "retry": { "max_attempts": 1 } },
            { "id": "store", "piece": "http-request", "action": "request",
              "input": { "method": "POST", "url": format!("{origin}/store"),
                         "headers": { "x-store": "${secret:TOKEN}" } },
              "grants": { "http": [{ "host": origin, "secrets": ["TOKEN"] }] },
              "retry": { "max_attempts": 1 } },
            // No placeholder and no secret in this step's grant: the value
            // comes back from the upstream alone.
            { "id": "read", "piece": "http-request", "action": "request",
              "needs": ["store"],
              "input": { "url": format!("{origin}/read") },
              "grants": { "http": [origin] },
              "retry": { "max_attempts": 1 } }
        ]
    });
    let (run, status) = run_workflow(&exec, workflow).await;
    let steps = exec.store().steps(run).await.unwrap();
    assert_eq!(status, RunStatus::Succeeded, "{steps:?}");
    let output = |id: &str| {
        steps
            .iter()
            .find(|s| s.step_id == id)
            .unwrap()
            .output
            .clone()
            .unwrap()
    };
    let echo = output("echo");
    let marker = "[redacted:TOKEN]";
    for field in ["raw", "slash", "unicode", "percent"] {
        assert_eq!(echo["body"][field], marker, "{field}: {echo}");
    }
    for field in ["basic", "alone"] {
        let text = echo["body"][field].as_str().unwrap();
        assert!(text.contains(marker), "{field}: {echo}");
    }
    for header in ["x-raw", "x-percent", "x-bytes"] {
        let text = echo["headers"][header].as_str().unwrap_or_default();
        assert!(text.contains(marker), "{header}: {echo}");
    }
    assert!(!echo.to_string().contains("Tok"), "{echo}");
    assert_eq!(output("read")["body"]["kept"], marker);
    assert_no_token_stored(&exec, dir.path(), run).await;
}

// ------------------------------------------------ 11.5 stored secrets in `run`

/// A secret stored through the store API (as `PUT /api/v1/secrets` does,
/// key file next to the database as `serve` creates it) is placed by a
/// later `omniflow run` on the same database.
#[tokio::test]
async fn run_uses_secrets_stored_for_serve_on_the_same_database() {
    const STORED: &str = "stored-secret-Pq7Rw2";
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("omniflow.db");
    let target = FakeServer::start().await;
    {
        let store = omniflow::store::open(&db.to_string_lossy()).await.unwrap();
        let key_file = omniflow::capabilities::secrets::key_file_for(&db);
        let cipher = omniflow::capabilities::secrets::SecretCipher::from_key(&[0x42; 32]).unwrap();
        std::fs::write(&key_file, hex::encode([0x42u8; 32])).unwrap();
        let (nonce, ciphertext) = cipher
            .seal("STORED_TOKEN", &secrecy::SecretString::from(STORED))
            .unwrap();
        store
            .put_secret(&omniflow::store::SealedSecret {
                name: "STORED_TOKEN".into(),
                nonce,
                ciphertext,
                updated_at: omniflow::store::now_rfc3339(),
            })
            .await
            .unwrap();
    }
    let file = dir.path().join("flow.json");
    std::fs::write(
        &file,
        json!({
            "name": "uses-stored",
            "steps": [{
                "id": "send", "piece": "http-request", "action": "request",
                "input": { "url": target.url("/echo"),
                           "headers": { "authorization": "Bearer ${secret:STORED_TOKEN}" } },
                "grants": { "http": [{ "host": target.origin(), "secrets": ["STORED_TOKEN"] }] },
                "retry": { "max_attempts": 1 }
            }]
        })
        .to_string(),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        omniflow(dir.path())
            .args(["run", "--json", "--db"])
            .arg(&db)
            .arg(&file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let seen = target.requests_to("/echo");
    assert_eq!(seen.len(), 1, "{stdout}\n{stderr}");
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {STORED}").as_str())
    );
    assert!(!stdout.contains(STORED), "{stdout}");
}
