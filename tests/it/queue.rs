//! The run queue under failure: a full disk under a live server.
//!
//! Needs to mount a tmpfs (root or CAP_SYS_ADMIN); fails with a clear
//! message, never skips, when it cannot.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use omniflow::engine::ExecutorConfig;
use omniflow::server::queue::PoolConfig;
use omniflow::server::{Server, ServerConfig};
use omniflow::store::RunStatus;
use serde_json::json;

const TOKEN: &str = "queue-test-token";

/// A tmpfs of `size` mounted on a fresh temporary directory; unmounted
/// (then removed) when dropped.
struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("this test mounts a tmpfs and could not run `mount`: {e}"));
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill the database's disk and needs root \
             (or CAP_SYS_ADMIN): `mount -t tmpfs` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir: Some(dir) }
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().map(tempfile::TempDir::path).unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            // Lazy: SQLite may still hold files open in a task winding down.
            let _ = Command::new("umount").arg("-l").arg(dir.path()).status();
            drop(dir);
        }
    }
}

/// Fill the filesystem holding `dir` to the last byte; the filler file.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    for chunk in [1 << 20, 4096, 1] {
        let bytes = vec![0xa5u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
    let _ = file.sync_all();
    path
}

#[tokio::test]
async fn a_full_disk_leaves_the_server_usable_and_its_stranded_runs_are_taken_over() {
    let disk = Tmpfs::mount("16m");
    let exec = Arc::new(
        crate::support::executor_in(disk.path(), &["flaky"], ExecutorConfig::default()).await,
    );
    let lease = Duration::from_secs(1);
    let server = Server::start(
        exec.clone(),
        ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            pool: PoolConfig {
                workers: 2,
                lease,
                poll_interval: Duration::from_millis(50),
                shutdown_grace: Duration::from_secs(1),
            },
            admin_token: Some(TOKEN.to_owned()),
            ..ServerConfig::default()
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::new();
    let workflow = |value: i64| {
        json!({
            "name": "diskfull",
            "steps": [
                { "id": "slow", "piece": "flaky", "action": "run",
                  "input": { "value": value, "sleep_ms": 2000 } },
                { "id": "after", "piece": "flaky", "action": "run", "needs": ["slow"],
                  "input": { "value": "{{ steps.slow.output.value + 1 }}" } }
            ]
        })
    };
    let put = |value: i64| {
        http.put(format!("{base}/api/v1/workflows/diskfull"))
            .bearer_auth(TOKEN)
            .json(&workflow(value))
            .send()
    };
    assert!(put(1).await.unwrap().status().is_success());
    let r = http
        .post(format!("{base}/api/v1/workflows/diskfull/runs"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    let id: omniflow::store::RunId = body["id"].as_str().unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while exec.store().get_run(id).await.unwrap().unwrap().status != RunStatus::Running {
        assert!(Instant::now() < deadline, "the run never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The disk fills while `slow` runs: its record cannot be written.
    let filler = fill(disk.path());
    let refused = put(2).await.unwrap().status();
    assert!(
        refused.is_server_error(),
        "a write on a full disk answered {refused}"
    );
    // The execution gives up (it is no longer registered in the pool).
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.queue().busy() > 0 {
        assert!(
            Instant::now() < deadline,
            "the execution never stopped after its write failed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stranded = exec.store().get_run(id).await.unwrap().unwrap();
    assert_eq!(stranded.status, RunStatus::Running, "{stranded:?}");

    // Space comes back: every later write works at once (no connection
    // left inside a failed transaction) ...
    std::fs::remove_file(&filler).unwrap();
    for value in 3..8 {
        let response = put(value).await.unwrap();
        let status = response.status();
        assert!(
            status.is_success(),
            "write after the disk was freed: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }
    // ... and the stranded run, whose lease nobody renews any more, is
    // re-queued once it expires and finishes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let run = loop {
        let run = exec.store().get_run(id).await.unwrap().unwrap();
        if run.status.is_terminal() {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the stranded run was never taken over: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let steps = exec.store().steps(id).await.unwrap();
    let after = steps.iter().find(|s| s.step_id == "after").unwrap();
    assert_eq!(after.output.as_ref().unwrap()["value"], 2);
    server.shutdown().await.unwrap();
}
