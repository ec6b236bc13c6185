//! Third-party pieces written in Python and JavaScript, as an author ships
//! them: built from `examples/pieces/` with `scripts/build-lang-piece.sh`
//! (which installs componentize-py / ComponentizeJS under
//! `~/.cache/omniflow-toolchains` on first use: never skipped, a missing
//! toolchain is installed or the test fails saying why), installed through
//! `POST /pieces`, pinned by the example workflow, and run.

use std::path::PathBuf;
use std::process::Command;

use super::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Build `examples/pieces/<dir>` as `lang` into the tests' temp dir.
fn build(lang: &str, dir: &str) -> Vec<u8> {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("lang-pieces")
        .join(format!("{dir}.wasm"));
    let status = Command::new("bash")
        .arg(repo().join("scripts/build-lang-piece.sh"))
        .arg(lang)
        .arg(repo().join("examples/pieces").join(dir))
        .arg(&out)
        .status()
        .expect("running scripts/build-lang-piece.sh");
    assert!(
        status.success(),
        "building examples/pieces/{dir} ({lang}) failed"
    );
    std::fs::read(&out).unwrap()
}

async fn install_and_run(server: &TestServer, bytes: Vec<u8>, workflow: &str) -> Value {
    let (status, body) = server.upload(bytes, "").await;
    assert!(status.is_success(), "{body}");
    let text = std::fs::read_to_string(repo().join(workflow)).unwrap();
    let definition: Value = serde_json::from_str(&text).unwrap();
    server.create_workflow(&definition).await;
    let name = definition["name"].as_str().unwrap();
    let (_, doc) = server
        .json(server.get(&format!("/api/v1/workflows/{name}")))
        .await;
    let pinned = doc["pins"].as_object().map(|p| p.len()).unwrap_or(0);
    assert!(pinned >= 2, "the example's pieces are pinned: {doc}");
    let run = server.output_of(name).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_pieces_install_pin_and_run() {
    let python = tokio::task::spawn_blocking(|| build("python", "sentiment-py"));
    let js = tokio::task::spawn_blocking(|| build("js", "feed-js"));
    let (python, js) = (python.await.unwrap(), js.await.unwrap());
    let server = start(4).await;

    let run = install_and_run(
        &server,
        python,
        "examples/pieces/sentiment-py/workflow.json",
    )
    .await;
    let scores = &run["outputs"]["score"];
    let labels: Vec<&str> = scores
        .as_array()
        .unwrap_or_else(|| panic!("{run}"))
        .iter()
        .map(|s| s["label"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(labels.len(), 4, "{run}");
    assert_eq!(labels[0], "positive", "{run}");
    assert_eq!(labels[2], "negative", "{run}");

    let run = install_and_run(&server, js, "examples/pieces/feed-js/workflow.json").await;
    let news = &run["outputs"]["news"]["items"];
    assert_eq!(news[0]["title"], "Pieces in Python & JavaScript", "{run}");
    assert_eq!(news.as_array().map(Vec::len), Some(2), "limit 2: {run}");
}
