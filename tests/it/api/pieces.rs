//! Pieces as a product over the API: `POST /pieces` installs durably and
//! is usable at once, saved workflow versions pin exact bytes, bad uploads
//! each get their own 4xx and store nothing, removal respects pins.

use super::*;
use crate::support::guest;

impl TestServer {
    pub(super) async fn upload(&self, bytes: Vec<u8>, query: &str) -> (StatusCode, Value) {
        self.json(
            self.http
                .post(self.url(&format!("/api/v1/pieces{query}")))
                .bearer_auth(TOKEN)
                .header("content-type", "application/wasm")
                .body(bytes),
        )
        .await
    }

    /// Trigger `name` and wait for its output.
    pub(super) async fn output_of(&self, name: &str) -> Value {
        let (status, run) = self
            .json(self.post(
                &format!("/api/v1/workflows/{name}/runs?wait=30s"),
                &json!({}),
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{run}");
        run
    }
}

fn versioned_flow() -> Value {
    json!({"name": "pinned", "steps": [
        {"id": "which", "piece": "versioned@*", "action": "which", "input": {}}
    ]})
}

#[tokio::test]
async fn a_saved_version_keeps_running_the_bytes_it_pinned() {
    let server = start(2).await;
    let (status, body) = server.upload(guest("versioned_a"), "").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "installed");
    let digest_a = body["piece"]["digest"].as_str().unwrap().to_owned();
    let (status, body) = server.upload(guest("versioned_a"), "").await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("unchanged"))
    );

    server.create_workflow(&versioned_flow()).await;
    let (_, doc) = server.json(server.get("/api/v1/workflows/pinned")).await;
    assert_eq!(doc["pins"]["versioned@*"]["version"], "0.1.0", "{doc}");
    assert_eq!(doc["pins"]["versioned@*"]["digest"], digest_a.as_str());
    let run = server.output_of("pinned").await;
    assert_eq!(run["output"]["version"], "0.1.0", "{run}");

    // A newer version does not change what the saved version runs.
    let (status, body) = server.upload(guest("versioned_b"), "").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let run = server.output_of("pinned").await;
    assert_eq!(run["output"]["version"], "0.1.0", "{run}");
    // Replacing 0.1.0's bytes is refused unless asked for; even then the
    // saved version keeps its bytes (they stay stored while pinned).
    let (status, body) = server.upload(guest("versioned_c"), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("versioned@0.1.0"),
        "{body}"
    );
    let (status, body) = server.upload(guest("versioned_c"), "?replace=true").await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::CREATED, &json!("replaced")),
        "{body}"
    );
    let run = server.output_of("pinned").await;
    assert_eq!(run["output"], json!({"version": "0.1.0"}), "{run}");

    // Saving again re-resolves: the newest matching version is pinned.
    let (status, doc) = server
        .json(
            server
                .http
                .put(server.url("/api/v1/workflows/pinned"))
                .bearer_auth(TOKEN)
                .json(&versioned_flow()),
        )
        .await;
    assert!(status.is_success(), "{doc}");
    assert_eq!(doc["version"], 2, "{doc}");
    assert_eq!(doc["pins"]["versioned@*"]["version"], "0.2.0", "{doc}");
    let run = server.output_of("pinned").await;
    assert_eq!(run["output"]["version"], "0.2.0", "{run}");

    // Every version, with its digest.
    let (_, list) = server.json(server.get("/api/v1/pieces/versioned")).await;
    let versions: Vec<&str> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["0.1.0", "0.2.0"], "{list}");
}

#[tokio::test]
async fn removing_a_pinned_piece_is_refused_then_its_runs_fail_piece_missing() {
    let server = start(2).await;
    let (status, _) = server.upload(guest("versioned_a"), "").await;
    assert_eq!(status, StatusCode::CREATED);
    server.create_workflow(&versioned_flow()).await;
    let delete = |query: &str| {
        server
            .http
            .delete(server.url(&format!("/api/v1/pieces/versioned/0.1.0{query}")))
            .bearer_auth(TOKEN)
    };
    let response = delete("").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("pinned"),
        "{body}"
    );
    let response = delete("?force=true").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = delete("").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let run = server.output_of("pinned").await;
    assert_eq!(run["status"], "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("piece-missing") && error.contains("versioned@0.1.0"),
        "{run}"
    );
}

#[tokio::test]
async fn bad_uploads_get_distinct_errors_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executor(dir.path()).await;
    let mut cfg = config(1, Some(TOKEN));
    cfg.api.piece_limit = 2 << 20;
    let server = start_on(dir, exec, cfg).await;
    let flow = guest("flow");
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "random bytes",
            b"definitely not wasm".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_wasm",
        ),
        (
            "empty",
            Vec::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_wasm",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "core_module",
        ),
        (
            "truncated",
            flow[..flow.len() / 2].to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed_component",
        ),
        (
            "forbidden import",
            guest("hostile_import"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "forbidden_import",
        ),
        (
            "wrong world",
            guest("other-world"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_world",
        ),
        (
            "oversized",
            vec![0u8; 3 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (what, bytes, status, code) in cases {
        let (got, body) = server.upload(bytes, "").await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {body}"
        );
    }
    // A name outside the grammar in the path.
    let response = server
        .http
        .delete(server.url("/api/v1/pieces/..%2Fetc/0.1.0"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        server.exec.store().list_pieces().await.unwrap().is_empty(),
        "something was stored"
    );
}

/// A component that takes longer to compile than the server allows is
/// refused (`compile_limit`) and nothing is stored: a compile-bomb stand-in
/// (the limit set below any real compile).
#[tokio::test]
async fn a_compile_past_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(
        crate::support::executor_in(
            dir.path(),
            &[],
            ExecutorConfig {
                install_compile_limit: Duration::from_nanos(1),
                ..ExecutorConfig::default()
            },
        )
        .await,
    );
    let server = start_on(dir, exec, config(1, Some(TOKEN))).await;
    // New bytes (a custom section with a fresh id appended), so nothing
    // cached can answer before the compile.
    let mut bytes = guest("versioned_b");
    let marker = uuid::Uuid::now_v7().simple().to_string();
    let mut section = vec![b"fresh".len() as u8];
    section.extend_from_slice(b"fresh");
    section.extend_from_slice(marker.as_bytes());
    bytes.push(0); // custom section
    bytes.push(section.len() as u8); // < 128: one LEB128 byte
    bytes.extend_from_slice(&section);
    let (status, body) = server.upload(bytes, "").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "compile_limit", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than"),
        "{body}"
    );
    assert!(server.exec.store().list_pieces().await.unwrap().is_empty());
}
