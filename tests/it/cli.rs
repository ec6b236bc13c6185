//! The `omniflow` binary, spawned as a user would.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{cache_dir, guest_dir};

pub(crate) fn omniflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omniflow"));
    cmd.env("OMNIFLOW_CACHE_DIR", cache_dir());
    cmd
}

#[test]
fn piece_inspect_shows_requested_destinations_and_secrets() {
    for (file, destination, secret) in [
        (
            "telegram.wasm",
            "https://api.telegram.org",
            "TELEGRAM_BOT_TOKEN",
        ),
        ("llm.wasm", "huggingface.co", "HUGGINGFACE_TOKEN"),
        (
            "discord.wasm",
            "https://discord.com",
            "DISCORD_WEBHOOK_TOKEN",
        ),
    ] {
        let out = omniflow()
            .args(["piece", "inspect"])
            .arg(guest_dir().join(file))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{file}: {stdout}");
        assert!(stdout.contains(destination), "{file}: {stdout}");
        assert!(stdout.contains(secret), "{file}: {stdout}");
    }
}

#[test]
fn piece_inspect_describes_builtin_pieces() {
    for (file, name) in [
        ("transform.wasm", "transform@0.1.0"),
        ("flow.wasm", "flow@0.1.0"),
    ] {
        let out = omniflow()
            .args(["piece", "inspect"])
            .arg(guest_dir().join(file))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with(name), "{stdout}");
        assert!(
            stdout.contains("omniflow:piece/log@0.1.0") || stdout.contains("wasi:"),
            "{stdout}"
        );
        assert!(stdout.contains("input  {"), "{stdout}");
    }
    let out = omniflow()
        .args(["piece", "inspect", "--json"])
        .arg(guest_dir().join("flow.wasm"))
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["info"]["name"], "flow");
    assert!(doc["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn piece_inspect_rejects_bad_files_with_distinct_messages() {
    let dir = tempfile::tempdir().unwrap();
    let random = dir.path().join("random.wasm");
    std::fs::write(&random, b"definitely not wasm").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let mut seen = Vec::new();
    for file in [
        random,
        core,
        guest_dir().join("hostile_import.wasm"),
        guest_dir().join("other-world.wasm"),
    ] {
        let out = omniflow()
            .args(["piece", "inspect"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{} accepted", file.display());
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(&*file.to_string_lossy()), "{stderr}");
        seen.push(
            stderr
                .lines()
                .next()
                .unwrap()
                .split(": ")
                .nth(2)
                .unwrap()
                .to_string(),
        );
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "{seen:?}");
}

fn write_workflow(dir: &std::path::Path, workflow: serde_json::Value) -> std::path::PathBuf {
    let file = dir.join("flow.json");
    std::fs::write(&file, workflow.to_string()).unwrap();
    file
}

#[test]
fn run_prints_a_summary_and_json_and_history_is_queryable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("omniflow.db");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hello.json");
    let out = omniflow()
        .args(["run", example, "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert!(stderr.contains("✓ greet"), "{stderr}");
    assert!(stderr.contains("- short_name skipped"), "{stderr}");

    let out = omniflow()
        .args(["run", example, "--json", "--var", "who=Al", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["status"], "succeeded");
    let steps = doc["steps"].as_array().unwrap();
    // The API's run document (`GET /api/v1/runs/{id}`).
    let short = steps.iter().find(|s| s["step_id"] == "short_name").unwrap();
    assert_eq!(short["status"], "succeeded");
    assert_eq!(short["attempts"], 1);
    assert!(short["duration_ms"].is_number());
    assert!(short["error_class"].is_null());
    assert!(short["error_message"].is_null());
    assert_eq!(short["attempt_details"].as_array().unwrap().len(), 1);
    assert_eq!(doc["trigger_type"], "manual");
    assert_eq!(doc["vars"]["who"], "Al");

    let out = omniflow()
        .args(["runs", "list", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        listing.lines().filter(|l| l.contains("hello")).count(),
        2,
        "{listing}"
    );
    let run_id = doc["id"].as_str().unwrap();
    let out = omniflow()
        .args(["runs", "show", run_id, "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Al is a short name"));
}

#[test]
fn run_and_validate_fail_with_errors_naming_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_workflow(
        dir.path(),
        serde_json::json!({
            "name": "broken",
            "steps": [
                { "id": "a", "piece": "transform", "action": "nope", "input": {} },
                { "id": "b", "piece": "flow", "action": "if", "needs": ["c"], "input": { "condition": 1 } }
            ]
        }),
    );
    let out = omniflow().arg("validate").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("steps[a]"), "{stderr}");
    assert!(stderr.contains("steps[b]"), "{stderr}");
    let out = omniflow()
        .arg("run")
        .arg(&file)
        .arg("--db")
        .arg(dir.path().join("x.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hello.json");
    let out = omniflow().args(["validate", example]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A failing run exits non-zero.
    let file = write_workflow(
        dir.path(),
        serde_json::json!({
            "name": "fails",
            "steps": [{ "id": "t", "piece": "transform", "action": "merge", "input": { "values": [1] } }]
        }),
    );
    let out = omniflow()
        .arg("run")
        .arg(&file)
        .arg("--db")
        .arg(dir.path().join("y.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid-input"));
}

#[tokio::test]
async fn a_run_killed_mid_step_resumes_without_rerunning_finished_steps() {
    use omniflow::store::{RunFilter, StepStatus};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("omniflow.db");
    let flaky = guest_dir().join("flaky.wasm");
    let file = write_workflow(
        dir.path(),
        serde_json::json!({
            "name": "crashy",
            "steps": [
                { "id": "fast", "piece": "flaky", "action": "run", "input": { "value": 1 } },
                { "id": "slow", "piece": "flaky", "action": "run", "needs": ["fast"],
                  "input": { "value": 2, "sleep_ms": 3000 } },
                { "id": "last", "piece": "flaky", "action": "run",
                  "input": { "value": "{{ steps.slow.output.value + steps.fast.output.value }}" } }
            ]
        }),
    );
    // A short lease: the killed process's claim runs out soon.
    let mut child = omniflow()
        .arg("run")
        .arg(&file)
        .arg("--db")
        .arg(&db)
        .arg("--piece")
        .arg(&flaky)
        .args(["--lease", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    // Wait (bounded) until `fast` is persisted and `slow` is running, then SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(120);
    let run_id = loop {
        assert!(
            Instant::now() < deadline,
            "the run never reached the slow step"
        );
        assert!(child.try_wait().unwrap().is_none(), "omniflow exited early");
        if db.exists() {
            let store = omniflow::store::open(&db.to_string_lossy()).await.unwrap();
            let runs = store
                .list_runs(&RunFilter {
                    limit: 5,
                    ..RunFilter::default()
                })
                .await
                .unwrap();
            if let Some(run) = runs.first() {
                let steps = store.steps(run.id).await.unwrap();
                let status = |id: &str| steps.iter().find(|s| s.step_id == id).map(|s| s.status);
                if status("fast") == Some(StepStatus::Succeeded)
                    && status("slow") == Some(StepStatus::Running)
                {
                    break run.id;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // `runs resume` leaves the run alone while the dead process's lease
    // is live, and takes it over once it expired.
    let store = omniflow::store::open(&db.to_string_lossy()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = omniflow()
            .args(["runs", "resume", "--db"])
            .arg(&db)
            .arg("--piece")
            .arg(&flaky)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if store
            .get_run(run_id)
            .await
            .unwrap()
            .unwrap()
            .status
            .is_terminal()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the run was never resumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let run = store.get_run(run_id).await.unwrap().unwrap();
    assert_eq!(run.status.as_str(), "succeeded");
    assert_eq!(
        store.attempts(run_id, "fast").await.unwrap().len(),
        1,
        "fast ran once"
    );
    let slow = store.attempts(run_id, "slow").await.unwrap();
    assert_eq!(
        slow.len(),
        1,
        "the killed attempt was never recorded; one full attempt after resume"
    );
    let last = store
        .steps(run_id)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.step_id == "last")
        .unwrap();
    assert_eq!(last.output.unwrap()["value"], 3);
}

/// `omniflow serve` as a process on a free port, with a fixed admin token.
fn spawn_serve(db: &std::path::Path, port: u16) -> std::process::Child {
    serve_command(db, port)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `omniflow serve` on `db` and `port` (a 2 s lease: a killed server's
/// runs are taken over soon).
fn serve_command(db: &std::path::Path, port: u16) -> Command {
    let mut cmd = omniflow();
    cmd.args(["serve", "--workers", "2", "--lease", "2s", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(db)
        .arg("--piece")
        .arg(guest_dir().join("flaky.wasm"))
        .env("OMNIFLOW_ADMIN_TOKEN", "kill-test-token");
    cmd
}

/// A port nothing listens on now (the OS's pick of a free one).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child when dropped (a failed assertion must not leave a
/// server running).
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) async fn wait_healthy(
    http: &reqwest::Client,
    base: &str,
    child: &mut std::process::Child,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(child.try_wait().unwrap().is_none(), "serve exited early");
        if let Ok(r) = http.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve never became healthy"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serve_killed_with_sigkill_finishes_every_acknowledged_run_exactly_once() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("omniflow.db");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut child = spawn_serve(&db, port);
    wait_healthy(&http, &base, &mut child).await;
    let workflow = serde_json::json!({
        "name": "survivor",
        "steps": [
            { "id": "fast", "piece": "flaky", "action": "run", "input": { "value": "{{ trigger.payload.n }}" } },
            { "id": "slow", "piece": "flaky", "action": "run", "needs": ["fast"],
              "input": { "value": "{{ steps.fast.output.value }}", "sleep_ms": 1500 } }
        ]
    });
    let created = http
        .post(format!("{base}/api/v1/workflows"))
        .bearer_auth("kill-test-token")
        .json(&workflow)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // Acknowledged runs: each answered 202 with an id.
    let mut ids = Vec::new();
    for n in 0..6 {
        let r = http
            .post(format!("{base}/api/v1/workflows/survivor/runs"))
            .bearer_auth("kill-test-token")
            .json(&serde_json::json!({ "payload": { "n": n } }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        ids.push((n, body["id"].as_str().unwrap().to_owned()));
    }
    // Kill it while some run is mid-step (2 workers, 1.5 s steps: the rest queued).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = http
            .get(format!("{base}/api/v1/runs?status=running"))
            .bearer_auth("kill-test-token")
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        if body["runs"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no run ever started: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let mut child = spawn_serve(&db, port);
    wait_healthy(&http, &base, &mut child).await;
    let store = omniflow::store::open(&db.to_string_lossy()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (n, id) in &ids {
        let id: omniflow::store::RunId = id.parse().unwrap();
        let run = loop {
            let run = store
                .get_run(id)
                .await
                .unwrap()
                .expect("acknowledged run exists");
            if run.status.is_terminal() {
                break run;
            }
            assert!(
                Instant::now() < deadline,
                "run {id} never finished: {run:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            run.status.as_str(),
            "succeeded",
            "run {id}: {:?}",
            run.error
        );
        // Exactly once: one recorded attempt per step, none lost or doubled.
        for step in ["fast", "slow"] {
            assert_eq!(
                store.attempts(id, step).await.unwrap().len(),
                1,
                "run {id} step {step}"
            );
        }
        let steps = store.steps(id).await.unwrap();
        let slow = steps.iter().find(|s| s.step_id == "slow").unwrap();
        assert_eq!(slow.output.as_ref().unwrap()["value"], *n);
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_second_serve_on_the_same_file_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("omniflow.db");
    let http = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut first = KillOnDrop(spawn_serve(&db, port));
    wait_healthy(&http, &base, &mut first.0).await;

    let second_port = free_port();
    let mut second = KillOnDrop(
        serve_command(&db, second_port)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = second.0.try_wait().unwrap() {
            break status;
        }
        let healthy = http
            .get(format!("http://127.0.0.1:{second_port}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        assert!(
            !healthy && std::time::Instant::now() < deadline,
            "a second server on the same file kept running"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "a second server started: {stderr}");
    assert!(
        stderr.contains("another OmniFlow server")
            && stderr.contains(&format!("pid {}", first.0.id())),
        "{stderr}"
    );
    assert!(stderr.contains("omniflow.db"), "{stderr}");
    // The first one is unharmed.
    wait_healthy(&http, &base, &mut first.0).await;

    // The lock goes with the process, however it ends.
    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let port = free_port();
    let mut again = KillOnDrop(spawn_serve(&db, port));
    wait_healthy(&http, &format!("http://127.0.0.1:{port}"), &mut again.0).await;
}

#[tokio::test]
async fn run_next_to_serve_executes_its_own_run_only_and_leaves_the_server_s_runs_alone() {
    use omniflow::store::{RunStatus, StepStatus};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("omniflow.db");
    let http = reqwest::Client::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut serve = KillOnDrop(spawn_serve(&db, port));
    wait_healthy(&http, &base, &mut serve.0).await;

    // The server holds a run parked on a 10-minute delay ...
    let sleeper = serde_json::json!({
        "name": "sleeper",
        "steps": [{ "id": "nap", "piece": "delay", "action": "sleep", "input": { "duration": "10m" } }]
    });
    let created = http
        .post(format!("{base}/api/v1/workflows"))
        .bearer_auth("kill-test-token")
        .json(&sleeper)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let r = http
        .post(format!("{base}/api/v1/workflows/sleeper/runs"))
        .bearer_auth("kill-test-token")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    let parked: omniflow::store::RunId = body["id"].as_str().unwrap().parse().unwrap();
    let store = omniflow::store::open(&db.to_string_lossy()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let parked_step = loop {
        let run = store.get_run(parked).await.unwrap().unwrap();
        let steps = store.steps(parked).await.unwrap();
        if run.status == RunStatus::Queued
            && let Some(nap) = steps.iter().find(|s| s.status == StepStatus::Waiting)
        {
            break nap.clone();
        }
        assert!(Instant::now() < deadline, "the run never parked: {run:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // ... and `run` of another workflow on the same file finishes, having
    // executed its own run and nothing else.
    let file = write_workflow(
        dir.path(),
        serde_json::json!({
            "name": "quick",
            "steps": [{ "id": "echo", "piece": "flaky", "action": "run", "input": { "value": 7 } }]
        }),
    );
    let mut quick = KillOnDrop(
        omniflow()
            .arg("run")
            .arg(&file)
            .arg("--db")
            .arg(&db)
            .arg("--piece")
            .arg(guest_dir().join("flaky.wasm"))
            .arg("--json")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Output is small: the pipes do not fill before it exits.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = quick.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "`run` never finished (is it executing the server's parked run?)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    std::io::Read::read_to_string(&mut quick.0.stdout.take().unwrap(), &mut stdout).unwrap();
    std::io::Read::read_to_string(&mut quick.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stdout}{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["steps"][0]["attempts"], 1, "{doc}");

    // The parked run is exactly as the server left it.
    let run = store.get_run(parked).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Queued, "{run:?}");
    assert_eq!(store.steps(parked).await.unwrap(), vec![parked_step]);
    // `runs resume` refuses while the server holds the file.
    let resume = omniflow()
        .args(["runs", "resume", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resume.stderr);
    assert!(!resume.status.success(), "{stderr}");
    assert!(stderr.contains("a server"), "{stderr}");
    assert_eq!(store.get_run(parked).await.unwrap().unwrap(), run);

    // A `run` killed mid-step leaves its run under a lease nobody renews:
    // the server takes it over once it expired and finishes it.
    let file = write_workflow(
        dir.path(),
        serde_json::json!({
            "name": "orphan",
            "steps": [
                { "id": "slow", "piece": "flaky", "action": "run", "input": { "value": 1, "sleep_ms": 3000 } },
                { "id": "next", "piece": "flaky", "action": "run", "needs": ["slow"],
                  "input": { "value": "{{ steps.slow.output.value + 1 }}" } }
            ]
        }),
    );
    let mut child = KillOnDrop(
        omniflow()
            .arg("run")
            .arg(&file)
            .arg("--db")
            .arg(&db)
            .arg("--piece")
            .arg(guest_dir().join("flaky.wasm"))
            .args(["--lease", "1s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let orphan = loop {
        assert!(child.0.try_wait().unwrap().is_none(), "run exited early");
        let runs = store
            .list_runs(&omniflow::store::RunFilter {
                workflow: Some("orphan".into()),
                ..omniflow::store::RunFilter::default()
            })
            .await
            .unwrap();
        if let Some(run) = runs.first()
            && store
                .steps(run.id)
                .await
                .unwrap()
                .iter()
                .any(|s| s.step_id == "slow" && s.status == StepStatus::Running)
        {
            break run.id;
        }
        assert!(
            Instant::now() < deadline,
            "the run never reached its slow step"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let run = store.get_run(orphan).await.unwrap().unwrap();
        if run.status.is_terminal() {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the server never took the killed run over: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(finished.status, RunStatus::Succeeded, "{finished:?}");
    assert!(serve.0.try_wait().unwrap().is_none(), "serve died");
}

/// `omniflow run FILE` in `dir` (its own database), returning (ok, stdout, stderr).
fn run_in(
    dir: &std::path::Path,
    workflow: &serde_json::Value,
    extra: &[&str],
) -> (bool, String, String) {
    let file = dir.join("flow.json");
    std::fs::write(&file, workflow.to_string()).unwrap();
    let out = omniflow()
        .arg("run")
        .arg(&file)
        .arg("--db")
        .arg(dir.join("omniflow.db"))
        .args(extra)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn for_each_items_are_shown_as_items_not_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = guest_dir().join("flaky.wasm");
    let workflow = serde_json::json!({
        "name": "items",
        "vars": { "names": ["a", "b", "c"] },
        "steps": [{
            "id": "shout", "piece": "flaky", "action": "run",
            "for_each": "{{ vars.names }}", "concurrency": 1,
            // Attempts are numbered per step: only the very first one fails.
            "input": { "fail_times": 1, "value": "{{ item }}" },
            "retry": { "max_attempts": 2, "initial_delay": "10ms" }
        }]
    });
    let (ok, stdout, stderr) = run_in(
        dir.path(),
        &workflow,
        &["--piece", &flaky.to_string_lossy()],
    );
    assert!(ok, "{stdout}\n{stderr}");
    // The retry of item 1 is a retry of that item, not "attempt 2" of the step.
    assert!(stderr.contains("shout [1/3] try 2"), "{stderr}");
    assert!(!stderr.contains("attempt 3"), "{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("shout"))
        .unwrap_or_else(|| panic!("no shout row in {stdout}"));
    assert!(row.contains("3 items +1"), "{row}");
}

#[tokio::test]
async fn a_denied_request_names_the_grant_to_add_in_the_summary() {
    let server = crate::wire::FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let workflow = serde_json::json!({
        "name": "denied",
        "steps": [{
            "id": "fetch", "piece": "http-request@^0.1", "action": "request",
            "input": { "method": "GET", "url": server.url("/x") }
        }]
    });
    let path = dir.path().to_path_buf();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || run_in(&path, &workflow, &[]))
        .await
        .unwrap();
    assert!(!ok, "{stdout}\n{stderr}");
    let hint = format!("add \"{}\" to the step's grants.http", server.origin());
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("fetch"))
        .unwrap_or_else(|| panic!("no fetch row in {stdout}"));
    assert!(row.contains(&hint), "{row}");
    assert!(server.requests().is_empty(), "the request must not be sent");
}

/// `omniflow run examples/hello.json` on a database in `dir`, with the
/// compiler setting `compiler` (`None`: unset) and, when given, its own cache.
fn run_hello(
    dir: &std::path::Path,
    cache: Option<&std::path::Path>,
    compiler: Option<&str>,
) -> std::process::Output {
    let mut cmd = omniflow();
    cmd.args([
        "run",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hello.json"),
    ])
    .arg("--db")
    .arg(dir.join("o.db"));
    if let Some(cache) = cache {
        cmd.env("OMNIFLOW_CACHE_DIR", cache);
    }
    match compiler {
        Some(compiler) => cmd.env("OMNIFLOW_COMPILER", compiler),
        None => cmd.env_remove("OMNIFLOW_COMPILER"),
    };
    cmd.output().unwrap()
}

#[test]
fn an_unknown_compiler_is_refused_naming_the_choices() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_hello(dir.path(), None, Some("turbo"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("OMNIFLOW_COMPILER=\"turbo\""), "{stderr}");
    assert!(stderr.contains("`baseline` (Winch)"), "{stderr}");
}

#[test]
fn run_compiles_cache_misses_with_winch_and_caches_them() {
    // An empty cache: `run` compiles with the baseline compiler, and the
    // next `run` finds those artifacts (Winch's cache key, not Cranelift's).
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let artifacts = || {
        std::fs::read_dir(cache.join("compiled"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".cwasm")
            })
            .count()
    };
    let mut counts = Vec::new();
    for _ in 0..2 {
        let out = run_hello(dir.path(), Some(&cache), None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        counts.push(artifacts());
    }
    // hello uses two built-in pieces: written by the first run, reused.
    assert_eq!(counts, [2, 2]);
    // Cranelift's key differs: an optimized run adds a second artifact.
    let out = run_hello(dir.path(), Some(&cache), Some("optimized"));
    assert!(out.status.success());
    assert_eq!(artifacts(), 4);
}

/// `omniflow piece new` in each language: the project builds with its one
/// documented command into a component that `piece inspect` accepts and a
/// workflow runs (Python and JS through `scripts/build-lang-piece.sh`,
/// which installs its toolchain on first use; Rust with cargo).
#[test]
fn piece_new_scaffolds_build_inspect_and_run_in_every_language() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let shared_target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("piece-new-rust");
    for (lang, name) in [
        ("python", "greeter-py"),
        ("js", "greeter-js"),
        ("rust", "greeter-rs"),
    ] {
        let project = dir.path().join(name);
        let mut new = omniflow();
        new.args(["piece", "new", name, "--lang", lang, "--dir"])
            .arg(&project);
        if lang == "rust" {
            new.arg("--sdk-path").arg(repo.join("sdk"));
        }
        let out = new.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wasm = project.join(format!("{name}.wasm"));
        let built = if lang == "rust" {
            let status = Command::new("cargo")
                .args(["build", "--release", "--target", "wasm32-wasip2"])
                .current_dir(&project)
                .env("CARGO_TARGET_DIR", &shared_target)
                .status()
                .unwrap();
            let artifact = shared_target
                .join("wasm32-wasip2/release")
                .join(format!("{}.wasm", name.replace('-', "_")));
            if status.success() {
                std::fs::copy(&artifact, &wasm).unwrap();
            }
            status
        } else {
            Command::new("bash")
                .arg(repo.join("scripts/build-lang-piece.sh"))
                .args([lang, "."])
                .arg(&wasm)
                .current_dir(&project)
                .status()
                .unwrap()
        };
        assert!(built.success(), "building the {lang} scaffold failed");
        let out = omniflow()
            .args(["piece", "inspect"])
            .arg(&wasm)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{lang}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = omniflow()
            .arg("run")
            .arg(project.join("workflow.json"))
            .arg("--piece")
            .arg(&wasm)
            .arg("--db")
            .arg(dir.path().join(format!("{name}.db")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{lang}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A bad name or language is refused before anything is written.
    let out = omniflow()
        .args(["piece", "new", "Bad_Name", "--lang", "js"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = omniflow()
        .args(["piece", "new", "ok", "--lang", "cobol"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("rust, python or js"));
    assert!(!dir.path().join("ok").exists());
}

/// `serve` compiles an uploaded piece first in a child process under an
/// address-space limit (`OMNIFLOW_COMPILE_MEMORY_MB`): with 256 MiB a small
/// piece installs and the 4 MB `code` piece (a compile that needs more) is
/// refused with `compile_limit`, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_upload_whose_compile_needs_more_memory_than_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut server = omniflow()
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-token",
            "t0k",
        ])
        .arg("--db")
        .arg(dir.path().join("o.db"))
        .env("OMNIFLOW_COMPILE_MEMORY_MB", "256")
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "serve never listened");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let http = reqwest::Client::new();
    let upload = |name: &str| {
        http.post(format!("http://127.0.0.1:{port}/api/v1/pieces"))
            .bearer_auth("t0k")
            .header("content-type", "application/wasm")
            .body(std::fs::read(guest_dir().join(format!("{name}.wasm"))).unwrap())
            .send()
    };
    let small = upload("versioned_a").await.unwrap();
    let small_status = small.status();
    let small_body = small.text().await.unwrap();
    let big = upload("code").await.unwrap();
    let big_status = big.status();
    let body: serde_json::Value = big.json().await.unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(small_status.as_u16(), 201, "{small_body}");
    assert_eq!(big_status.as_u16(), 422, "{body}");
    assert_eq!(body["error"]["code"], "compile_limit", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("256 MiB"),
        "{body}"
    );
}

/// `runs prune`: a dry run counts, the real one deletes finished runs
/// older than the window (here: all, with a zero window), bad statuses are
/// refused.
#[test]
fn runs_prune_counts_then_deletes_finished_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db");
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/hello.json");
    for _ in 0..2 {
        let out = omniflow()
            .arg("run")
            .arg(&examples)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let prune = |extra: &[&str]| {
        let mut cmd = omniflow();
        cmd.args(["runs", "prune", "--db"]).arg(&db).args(extra);
        cmd.output().unwrap()
    };
    let out = prune(&["--older-than", "1h"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pruned 0 run(s)"),
        "{out:?}"
    );
    let out = prune(&["--older-than", "0s", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("would prune 2 run(s)"),
        "{out:?}"
    );
    let out = prune(&["--older-than", "0s", "--status", "failed"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pruned 0 run(s) (failed)"),
        "{out:?}"
    );
    let out = prune(&["--older-than", "0s"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pruned 2 run(s)"),
        "{out:?}"
    );
    let out = omniflow()
        .args(["runs", "list", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.as_array().map(Vec::len), Some(0), "{runs}");
    let out = prune(&["--older-than", "0s", "--status", "queued"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("only finished runs"));
}

/// `OMNIFLOW_LOG_FORMAT=json`: one JSON object per log line, carrying the
/// run and step ids from the tracing spans; an unknown format stops start-up
/// naming the variable.
#[test]
fn json_logs_carry_run_and_step_ids() {
    let dir = tempfile::tempdir().unwrap();
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/hello.json");
    let out = omniflow()
        .arg("run")
        .arg(&examples)
        .arg("--db")
        .arg(dir.path().join("j.db"))
        .env("OMNIFLOW_LOG", "omniflow=debug")
        .env("OMNIFLOW_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let step = lines
        .iter()
        .find(|l| l["fields"]["message"] == "step finished")
        .unwrap_or_else(|| panic!("no step line: {stderr}"));
    assert!(
        step["span"]["run"].is_string() && step["span"]["step"].is_string(),
        "{step}"
    );
    let run = lines
        .iter()
        .find(|l| l["fields"]["message"] == "run finished")
        .unwrap_or_else(|| panic!("no run line: {stderr}"));
    assert_eq!(run["span"]["workflow"], "hello", "{run}");
    let out = omniflow()
        .args(["runs", "list", "--db"])
        .arg(dir.path().join("j.db"))
        .env("OMNIFLOW_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("OMNIFLOW_LOG_FORMAT"));
}
