//! Configuration: README's table against the variables the code reads, the
//! seed's variables (`HUGGINGFACE_TOKEN`, `USE_OLLAMA`, `OLLAMA_URL`,
//! `REQUEST_TIMEOUT`, `MAX_RETRIES`) through the real binary, from the
//! environment and `./.env`, and their refusals.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{cache_dir, guest_dir};
use crate::wire::FakeServer;

/// The binary's own list of the variables it reads.
#[path = "../../host/src/cli/env_vars.rs"]
#[allow(dead_code)]
mod env_vars;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The variables of README's Configuration table (first column).
fn documented() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("README has a Configuration section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .collect()
}

#[test]
fn readme_configuration_table_matches_the_variables_the_code_reads() {
    let table: BTreeSet<String> = env_vars::ENV_VARS
        .iter()
        .filter(|v| v.documented)
        .map(|v| v.name.to_string())
        .collect();
    let readme = documented();
    let missing: Vec<_> = table.difference(&readme).collect();
    let extra: Vec<_> = readme.difference(&table).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README's Configuration table and host/src/cli/env_vars.rs differ:\n  read but not documented: {missing:?}\n  documented but not read: {extra:?}"
    );
    for seed in [
        "HUGGINGFACE_TOKEN",
        "USE_OLLAMA",
        "OLLAMA_URL",
        "REQUEST_TIMEOUT",
        "MAX_RETRIES",
    ] {
        assert!(readme.contains(seed), "{seed} is not in README's table");
    }
}

/// Source files under `host/src`, each without its `#[cfg(test)]` tail.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap().to_string();
                out.push((path, code));
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("host/src"), &mut out);
    out
}

/// `"OMNIFLOW_..."` string literals (the name up to the closing quote).
fn omniflow_literals(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("\"OMNIFLOW_") {
        let tail = &rest[at + 1..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if tail[end..].starts_with('"') {
            found.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    found
}

#[test]
fn every_variable_named_in_the_code_is_in_the_binary_s_list() {
    let known: BTreeSet<&str> = env_vars::ENV_VARS
        .iter()
        .map(|v| v.name)
        .chain(env_vars::NOT_SETTINGS.iter().copied())
        .collect();
    let mut unknown = Vec::new();
    let mut seen = BTreeSet::new();
    for (path, code) in sources() {
        let mut names = omniflow_literals(&code);
        // clap's `env = "NAME"` and `std::env::var("NAME")` of any name.
        for marker in ["env = \"", "env::var(\"", "env::var_os(\""] {
            for piece in code.split(marker).skip(1) {
                names.push(piece.split('"').next().unwrap().to_string());
            }
        }
        for name in names {
            // The process's own environment that is not ours to document.
            if ["HOME", "XDG_CACHE_HOME", "HOSTNAME"].contains(&name.as_str()) {
                continue;
            }
            seen.insert(name.clone());
            if !known.contains(name.as_str()) {
                unknown.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "variables read but missing from host/src/cli/env_vars.rs: {unknown:?}"
    );
    // The scan finds what it must (so it cannot pass by finding nothing).
    for name in [
        "OMNIFLOW_DATABASE_URL",
        "OMNIFLOW_LOG_FORMAT",
        "OMNIFLOW_CACHE_DIR",
    ] {
        assert!(seen.contains(name), "the scan missed {name}: {seen:?}");
    }
    // The seed's names are read through the table's constants.
    let config = std::fs::read_to_string(repo().join("host/src/cli/config.rs")).unwrap();
    for constant in ["REQUEST_TIMEOUT", "MAX_RETRIES", "USE_OLLAMA", "OLLAMA_URL"] {
        assert!(
            config.contains(&format!("env = super::env_vars::{constant}")),
            "cli/config.rs does not read {constant} through env_vars.rs"
        );
    }
}

fn omniflow(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omniflow"));
    cmd.current_dir(dir)
        .env("OMNIFLOW_CACHE_DIR", cache_dir())
        .env_remove("OMNIFLOW_DATABASE_URL")
        .env_remove("OMNIFLOW_SECRETS_FROM_ENV");
    for var in [
        "HUGGINGFACE_TOKEN",
        "USE_OLLAMA",
        "OLLAMA_URL",
        "REQUEST_TIMEOUT",
        "MAX_RETRIES",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// The command's output; killed (and the test failed) if it runs 60 s.
fn output_within(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after 60 s (the bad value was accepted?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

const HELLO: &str = r#"{ "name": "hello", "steps": [ { "id": "s", "piece": "flow@^0.1", "action": "if", "input": { "condition": true } } ] }"#;

#[test]
fn invalid_seed_settings_stop_every_command_that_uses_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.json"), HELLO).unwrap();
    let commands: [&[&str]; 4] = [
        &["run", "hello.json"],
        &["runs", "resume"],
        &["serve", "--listen", "127.0.0.1:0", "--admin-token", "t"],
        &["worker"],
    ];
    for (var, value) in [
        ("MAX_RETRIES", "abc"),
        ("MAX_RETRIES", "0"),
        ("REQUEST_TIMEOUT", "-1"),
        ("REQUEST_TIMEOUT", "soon"),
        ("USE_OLLAMA", "maybe"),
        ("OLLAMA_URL", "not a url"),
        ("OLLAMA_URL", "ftp://127.0.0.1:11434"),
    ] {
        for args in commands {
            let mut cmd = omniflow(dir.path());
            cmd.args(args).env(var, value);
            let out = output_within(cmd);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} with {var}={value} started");
            assert!(
                stderr.contains(&format!("{var}={value:?}")),
                "{args:?} with {var}={value}: the message names neither: {stderr}"
            );
        }
    }
    // The same from ./.env.
    std::fs::write(dir.path().join(".env"), "MAX_RETRIES=abc\n").unwrap();
    let mut cmd = omniflow(dir.path());
    cmd.args(["run", "hello.json"]);
    let out = output_within(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("MAX_RETRIES=\"abc\""), "{stderr}");
    // Commands that do not run steps do not read them.
    let mut cmd = omniflow(dir.path());
    cmd.args(["validate", "hello.json"]);
    let out = output_within(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `omniflow run FILE --json` of a one-step `flaky` workflow; its step.
fn run_flaky(dir: &Path, step: Value, env: &[(&str, &str)], args: &[&str]) -> Value {
    let workflow = json!({ "name": "flaky-config", "steps": [step] });
    std::fs::write(dir.join("wf.json"), workflow.to_string()).unwrap();
    let mut cmd = omniflow(dir);
    cmd.args(["run", "wf.json", "--json", "--piece"])
        .arg(guest_dir().join("flaky.wasm"))
        .args(args)
        .envs(env.iter().copied());
    let out = output_within(cmd);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no run JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    doc["steps"][0].clone()
}

#[test]
fn max_retries_and_request_timeout_are_the_defaults_of_steps_that_set_none() {
    let dir = tempfile::tempdir().unwrap();
    let fails_once =
        json!({ "id": "f", "piece": "flaky", "action": "run", "input": { "fail_times": 1 } });
    // MAX_RETRIES=1: the first failure is final.
    let step = run_flaky(dir.path(), fails_once.clone(), &[("MAX_RETRIES", "1")], &[]);
    assert_eq!(step["status"], "failed", "{step}");
    assert_eq!(step["attempts"], 1, "{step}");
    // A flag wins over the variable (whose bad value is then not read).
    let step = run_flaky(
        dir.path(),
        fails_once.clone(),
        &[("MAX_RETRIES", "abc")],
        &["--max-retries", "2"],
    );
    assert_eq!(step["status"], "succeeded", "{step}");
    assert_eq!(step["attempts"], 2, "{step}");
    // A step's own retry policy is kept.
    let mut own = fails_once;
    own["retry"] = json!({ "max_attempts": 2, "initial_delay": "10ms" });
    std::fs::write(dir.path().join(".env"), "MAX_RETRIES=1\n").unwrap();
    let step = run_flaky(dir.path(), own, &[], &[]);
    assert_eq!(step["status"], "succeeded", "{step}");
    std::fs::remove_file(dir.path().join(".env")).unwrap();
    // REQUEST_TIMEOUT: a step with no timeout of its own ends at it.
    let slow = json!({ "id": "f", "piece": "flaky", "action": "run",
                       "input": { "sleep_ms": 5000 }, "retry": { "max_attempts": 1 } });
    let step = run_flaky(dir.path(), slow, &[("REQUEST_TIMEOUT", "1")], &[]);
    assert_eq!(step["status"], "failed", "{step}");
    assert_eq!(step["error_class"], "timeout", "{step}");
}

#[tokio::test]
async fn use_ollama_ollama_url_and_huggingface_token_reach_llm_steps() {
    let server = FakeServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let origin = server.origin();
    let grant = json!({ "http": [{ "host": origin, "secrets": ["HUGGINGFACE_TOKEN"] }] });
    // No providers in the step: USE_OLLAMA=true gives Ollama (at
    // OLLAMA_URL), then Hugging Face.
    let ollama = json!({ "id": "s", "piece": "llm@^0.1", "action": "chat",
                         "input": { "prompt": "hi" }, "grants": { "http": [origin] },
                         "retry": { "max_attempts": 1 } });
    let path = dir.path().to_path_buf();
    let step = tokio::task::spawn_blocking({
        let origin = origin.clone();
        move || {
            run_flaky(
                &path,
                ollama,
                &[("USE_OLLAMA", "true"), ("OLLAMA_URL", origin.as_str())],
                &[],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(step["status"], "succeeded", "{step}");
    assert_eq!(step["output"]["provider"], "ollama", "{step}");
    assert_eq!(
        step["input"]["providers"],
        json!([{ "name": "ollama", "base_url": origin }, "huggingface"]),
        "the record shows the providers the piece got"
    );
    assert_eq!(server.requests_to("/api/chat").len(), 1);
    // HUGGINGFACE_TOKEN from the environment, without OMNIFLOW_SECRETS_FROM_ENV.
    let hf = json!({ "id": "s", "piece": "llm@^0.1", "action": "chat",
                     "input": { "prompt": "hi", "providers": [{ "name": "huggingface", "base_url": origin }] },
                     "grants": grant, "retry": { "max_attempts": 1 } });
    let path = dir.path().to_path_buf();
    let step = tokio::task::spawn_blocking(move || {
        run_flaky(&path, hf, &[("HUGGINGFACE_TOKEN", "hf_from_env_Q7")], &[])
    })
    .await
    .unwrap();
    assert_eq!(step["status"], "succeeded", "{step}");
    let seen = &server.requests_to("/v1/chat/completions")[0];
    assert_eq!(seen.header("authorization"), Some("Bearer hf_from_env_Q7"));
}
