//! The docs run as written: every `sh` command and every JSON snippet of
//! `README.md` and `examples/README.md` is extracted and run here, in a fresh
//! directory holding a copy of `examples/`, with `omniflow` on `PATH` (the
//! binary under test; `cargo run [--release] --` is read as `omniflow`).
//!
//! Conventions (an HTML comment on the line before a fenced block):
//! - `<!-- readme-test: skip: REASON -->`: not run, and the reason is required
//!   (the set-up commands CI runs itself, benchmarks, real third-party services).
//! - `<!-- readme-test: fragment -->`: a JSON piece of a workflow (steps, one
//!   step, grants): it must parse; steps are wrapped into a workflow and validated.
//! - `<!-- readme-test: fails -->`: the commands must exit non-zero.
//! - `<!-- readme-test: postgres -->`: run like any block, on a PostgreSQL
//!   database of its own (see `store::pg`) put in place of the block's
//!   [`README_POSTGRES_URL`].
//!
//! In `sh` blocks: a line starting with `omniflow serve` starts a server in the
//! background for the rest of its block (stopped after it), on a free port put
//! in place of the block's `8080`; a line starting with `omniflow worker`
//! starts a worker in the background the same way; `<RUN_ID>` is the newest run's id; text
//! after `  #` is a comment. A JSON block that is a whole workflow is
//! validated and run (only validated when it grants HTTP: tests never reach
//! the internet). Everything else must exit 0.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::free_port;
use crate::support::cache_dir;

#[derive(Debug)]
struct Block {
    at: String,
    lang: String,
    marker: Marker,
    text: String,
}

/// The database URL the README's PostgreSQL examples use.
const README_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/omniflow";

#[derive(Debug, PartialEq)]
enum Marker {
    Run,
    Postgres,
    Skip(String),
    Fragment,
    Fails,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn blocks(file: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(lang) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let start = i;
        let marker = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!-- readme-test:"))
            .map(|m| {
                let m = m.trim().trim_end_matches("-->").trim();
                if let Some(reason) = m.strip_prefix("skip:") {
                    assert!(
                        !reason.trim().is_empty(),
                        "{file}:{}: a skip needs a reason",
                        i + 1
                    );
                    Marker::Skip(reason.trim().to_string())
                } else if m == "fragment" {
                    Marker::Fragment
                } else if m == "fails" {
                    Marker::Fails
                } else if m == "postgres" {
                    Marker::Postgres
                } else {
                    panic!("{file}:{}: unknown readme-test marker {m:?}", i + 1)
                }
            })
            .unwrap_or(Marker::Run);
        i += 1;
        let mut body = String::new();
        while i < lines.len() && !lines[i].trim_start().starts_with("```") {
            body.push_str(lines[i]);
            body.push('\n');
            i += 1;
        }
        i += 1;
        out.push(Block {
            at: format!("{file}:{}", start + 1),
            lang: lang.trim().to_string(),
            marker,
            text: body,
        });
    }
    out
}

/// A scratch directory like a fresh clone's root: `examples/` and `omniflow`
/// on `PATH`.
struct Sandbox {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let examples = dir.path().join("examples");
        std::fs::create_dir_all(&examples).unwrap();
        for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), examples.join(entry.file_name())).unwrap();
            }
        }
        let bin = dir.path().join(".bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_omniflow"), bin.join("omniflow")).unwrap();
        Sandbox { dir, bin }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, line: &str) -> Command {
        let mut cmd = Command::new("bash");
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.arg("-c")
            .arg(line)
            .current_dir(self.path())
            .env("PATH", path)
            .env("OMNIFLOW_CACHE_DIR", cache_dir())
            .env_remove("OMNIFLOW_DATABASE_URL")
            .env_remove("OMNIFLOW_DB")
            .stdin(Stdio::null());
        cmd
    }

    /// `line` started in the background, its stderr in `log`.
    fn background(&self, line: &str, log: &Path) -> Child {
        let log = std::fs::File::create(log).unwrap();
        self.command(&format!("exec {line}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn newest_run(&self) -> Option<String> {
        let out = self
            .command("omniflow runs list --json --limit 1")
            .output()
            .ok()?;
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        runs[0]["id"].as_str().map(str::to_string)
    }
}

/// Command lines of an `sh` block: `\` continuations joined, comments and
/// `cargo run [--release] --` removed.
fn commands(text: &str) -> Vec<String> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head.trim_end());
            current.push(' ');
            continue;
        }
        let line = if current.is_empty() {
            line
        } else {
            line.trim_start()
        };
        current.push_str(line);
        joined.push(std::mem::take(&mut current));
    }
    joined
        .into_iter()
        .map(|line| {
            let line = match line.find("  #") {
                Some(at) => line[..at].to_string(),
                None => line,
            };
            line.trim()
                .replace("cargo run --release -- ", "omniflow ")
                .replace("cargo run -- ", "omniflow ")
        })
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

fn wait_for_health(port: u16, server: &mut Child, at: &str, server_log: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = server.try_wait() {
            panic!(
                "{at}: `omniflow serve` exited early: {status}\n{}",
                server_log()
            );
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "{at}: the server never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until the background process's log shows `ready`.
fn wait_for_log(child: &mut Child, log: &Path, ready: &str, at: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(ready) {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{at}: the background command exited early: {status}\n{text}");
        }
        assert!(Instant::now() < deadline, "{at}: never ready:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_sh(sandbox: &Sandbox, block: &Block) {
    let port = free_port().to_string();
    let mut background: Vec<Child> = Vec::new();
    let database = (block.marker == Marker::Postgres).then(|| {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(crate::store::pg::postgres_db())
    });
    for (n, line) in commands(&block.text).into_iter().enumerate() {
        let mut line = line.replace("8080", &port);
        if let Some(db) = &database {
            line = line.replace(README_POSTGRES_URL, &db.url);
        }
        if line.starts_with("omniflow worker") {
            let log_file = sandbox.path().join(format!("worker-{n}.log"));
            let mut child = sandbox.background(&line, &log_file);
            wait_for_log(&mut child, &log_file, "omniflow worker pid", &block.at);
            background.push(child);
            continue;
        }
        if line.contains("<RUN_ID>") {
            let id = sandbox
                .newest_run()
                .unwrap_or_else(|| panic!("{}: `{line}` needs a run, none exists", block.at));
            line = line.replace("<RUN_ID>", &id);
        }
        if line.starts_with("omniflow serve") {
            let log_file = sandbox.path().join("serve.log");
            let mut child = sandbox.background(&line, &log_file);
            wait_for_health(port.parse().unwrap(), &mut child, &block.at, || {
                std::fs::read_to_string(&log_file).unwrap_or_default()
            });
            background.push(child);
            continue;
        }
        let out = sandbox.command(&line).output().unwrap();
        let shown = format!(
            "{}: `{line}` exited {}\nstdout:\n{}\nstderr:\n{}",
            block.at,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        match block.marker {
            Marker::Fails => assert!(!out.status.success(), "{shown}"),
            _ => assert!(out.status.success(), "{shown}"),
        }
    }
    for mut child in background {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    drop(database);
}

/// A fragment as JSON: one value, or several separated by commas.
fn parse_fragment(text: &str) -> serde_json::Value {
    serde_json::from_str(text)
        .or_else(|_| serde_json::from_str(&format!("[{text}]")))
        .unwrap_or_else(|e| panic!("does not parse as JSON ({e}):\n{text}"))
}

fn is_step(value: &serde_json::Value) -> bool {
    value.get("piece").is_some() && value.get("id").is_some()
}

fn run_json(sandbox: &Sandbox, block: &Block, n: usize) {
    let value = match block.marker {
        Marker::Fragment => parse_fragment(&block.text),
        _ => serde_json::from_str(&block.text)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}):\n{}", block.at, block.text)),
    };
    let steps: Vec<serde_json::Value> = match &value {
        v if is_step(v) => vec![v.clone()],
        serde_json::Value::Array(items) if items.iter().all(is_step) => items.clone(),
        _ => Vec::new(),
    };
    let workflow = if value.get("steps").is_some() && value.get("name").is_some() {
        value.clone()
    } else if !steps.is_empty() {
        serde_json::json!({ "name": format!("readme-fragment-{n}"), "steps": steps })
    } else {
        return; // another document (a request body, a trigger): it parsed
    };
    let file = sandbox.path().join(format!("snippet-{n}.json"));
    std::fs::write(&file, serde_json::to_string_pretty(&workflow).unwrap()).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let check = |line: &str| {
        let out = sandbox.command(line).output().unwrap();
        assert!(
            out.status.success(),
            "{}: `{line}` exited {}\n{}\n{}{}",
            block.at,
            out.status,
            block.text,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check(&format!("omniflow validate {name}"));
    let grants_http = workflow.to_string().contains("\"grants\"");
    if block.marker == Marker::Run && !grants_http {
        check(&format!("omniflow run {name} --db snippets.db"));
    }
}

fn check_doc(file: &str) -> (usize, usize) {
    let sandbox = Sandbox::new();
    let (mut ran, mut skipped) = (0, 0);
    for (n, block) in blocks(file).iter().enumerate() {
        if let Marker::Skip(_) = block.marker {
            skipped += 1;
            continue;
        }
        match block.lang.as_str() {
            "sh" | "bash" | "console" => run_sh(&sandbox, block),
            "json" => run_json(&sandbox, block, n),
            _ => continue,
        }
        ran += 1;
    }
    (ran, skipped)
}

#[test]
fn readme_runs_as_written() {
    let (ran, skipped) = check_doc("README.md");
    assert!(ran >= 8, "only {ran} README blocks ran ({skipped} skipped)");
}

#[test]
fn examples_readme_runs_as_written() {
    let (ran, skipped) = check_doc("examples/README.md");
    assert!(
        ran + skipped >= 2,
        "examples/README.md has {ran} runnable blocks"
    );
}

#[test]
fn the_harness_reads_commands_like_a_shell_user() {
    let cmds = commands(
        "cargo run -- run a.json   # comment\n# only a comment\n\ncargo run --release -- bench x \\\n  --n 3\n",
    );
    assert_eq!(cmds, ["omniflow run a.json", "omniflow bench x --n 3"]);
    let fragment =
        parse_fragment("{ \"id\": \"a\", \"piece\": \"p\" },\n{ \"id\": \"b\", \"piece\": \"p\" }");
    assert_eq!(fragment.as_array().map(Vec::len), Some(2));
}
