//! `omniflow export` bundles, and the repository's Dockerfile (no container
//! runtime here: its COPY/ADD sources are checked to exist).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn omniflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_omniflow"))
}

fn export(file: &Path, to: &str, out: &Path, extra: &[&str]) {
    let output = omniflow()
        .arg("export")
        .arg(file)
        .args(["--to", to, "--out"])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "export {to}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The bundled workflow JSON validates with the local binary.
fn validates(bundle: &Path, name: &str) {
    let output = omniflow()
        .arg("validate")
        .arg(bundle.join(format!("{name}.json")))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "validate {name}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

const SUMMARIZE_SECRETS: [&str; 4] = [
    "DISCORD_WEBHOOK_ID",
    "DISCORD_WEBHOOK_TOKEN",
    "HUGGINGFACE_TOKEN",
    "TELEGRAM_BOT_TOKEN",
];

/// `examples/reminder.json` with a cron trigger (no example has one).
fn scheduled_reminder(dir: &Path, cron: &str) -> PathBuf {
    let mut wf: serde_json::Value =
        serde_json::from_str(&read(repo().join("examples/reminder.json"))).unwrap();
    wf["trigger"] = serde_json::json!({ "type": "schedule", "cron": cron });
    let path = dir.join("reminder.json");
    std::fs::write(&path, serde_json::to_string_pretty(&wf).unwrap()).unwrap();
    path
}

#[test]
fn export_github_actions_secrets_and_dispatch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gh");
    export(
        &repo().join("examples/summarize.json"),
        "github-actions",
        &out,
        &[],
    );
    let yml = read(out.join(".github/workflows/summarize.yml"));
    assert!(yml.contains("on:\n  workflow_dispatch: {}\n"), "{yml}");
    assert!(!yml.contains("schedule:"), "{yml}");
    assert!(yml.contains("OMNIFLOW_REPO:"), "{yml}");
    assert!(yml.contains("omniflow run summarize.json"), "{yml}");
    assert!(yml.contains("--json > run.json"), "{yml}");
    assert!(yml.contains("uses: actions/upload-artifact@v4"), "{yml}");
    let readme = read(out.join("README.md"));
    for s in SUMMARIZE_SECRETS {
        let line = format!("          OMNIFLOW_SECRET_{s}: ${{{{ secrets.{s} }}}}\n");
        assert!(yml.contains(&line), "{line} missing in\n{yml}");
        assert!(readme.contains(&format!("- `{s}`")), "{readme}");
    }
    validates(&out, "summarize");
}

#[test]
fn export_github_actions_cron_drops_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let five = scheduled_reminder(dir.path(), "0 */6 * * *");
    let out = dir.path().join("gh5");
    export(&five, "github-actions", &out, &[]);
    let yml = read(out.join(".github/workflows/reminder.yml"));
    assert!(
        yml.contains("  schedule:\n    - cron: \"0 */6 * * *\"\n"),
        "{yml}"
    );
    assert!(!yml.contains("seconds field"), "{yml}");
    assert!(!yml.contains("OMNIFLOW_SECRET_"), "{yml}");
    validates(&out, "reminder");

    let six = scheduled_reminder(dir.path(), "30 0 */6 * * *");
    let out = dir.path().join("gh6");
    export(&six, "github-actions", &out, &[]);
    let yml = read(out.join(".github/workflows/reminder.yml"));
    assert!(
        yml.contains("  schedule:\n    - cron: \"0 */6 * * *\"\n"),
        "{yml}"
    );
    assert!(yml.contains("seconds field"), "{yml}");
}

#[test]
fn export_docker_compose_ollama_and_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dc");
    export(
        &repo().join("examples/summarize.json"),
        "docker-compose",
        &out,
        &[],
    );
    let yml = read(out.join("docker-compose.yml"));
    for want in [
        "services:\n  omniflow:\n    image: omniflow:latest\n",
        "command: [\"serve\", \"--listen\", \"0.0.0.0:8080\"]",
        "OMNIFLOW_DATABASE_URL: /data/omniflow.db",
        "- omniflow-data:/data",
        "http://127.0.0.1:8080/health",
        "OLLAMA_URL: http://ollama:11434",
        "\n  ollama:\n    image: ollama/ollama",
        "volumes:\n  omniflow-data: {}\n",
    ] {
        assert!(yml.contains(want), "{want:?} missing in\n{yml}");
    }
    let env = read(out.join(".env.example"));
    for s in SUMMARIZE_SECRETS {
        assert!(env.contains(&format!("\nOMNIFLOW_SECRET_{s}=\n")), "{env}");
    }
    validates(&out, "summarize");

    // No llm step: no ollama service.
    let out = dir.path().join("dc2");
    export(
        &repo().join("examples/reminder.json"),
        "docker-compose",
        &out,
        &[],
    );
    let yml = read(out.join("docker-compose.yml"));
    assert!(!yml.contains("ollama"), "{yml}");
    assert!(
        yml.contains("OMNIFLOW_DATABASE_URL: /data/omniflow.db"),
        "{yml}"
    );
    let env = read(out.join(".env.example"));
    assert!(
        !env.lines().any(|l| l.starts_with("OMNIFLOW_SECRET_")),
        "{env}"
    );
    validates(&out, "reminder");
}

#[test]
fn export_systemd_hardened_unit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sd");
    export(&repo().join("examples/reminder.json"), "systemd", &out, &[]);
    let unit_path = out.join("omniflow-reminder.service");
    let unit = read(unit_path.clone());
    for want in [
        "[Unit]",
        "[Service]",
        "[Install]",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=omniflow",
        "PrivateTmp=yes",
        "ExecStart=/usr/local/bin/omniflow serve --db /var/lib/omniflow/omniflow.db",
        "EnvironmentFile=-/etc/omniflow/reminder.env",
    ] {
        assert!(
            unit.lines().any(|l| l == want),
            "{want:?} missing in\n{unit}"
        );
    }
    assert!(out.join("reminder.env.example").exists());
    validates(&out, "reminder");

    let out = dir.path().join("sd2");
    export(
        &repo().join("examples/summarize.json"),
        "systemd",
        &out,
        &[],
    );
    let env = read(out.join("summarize.env.example"));
    for s in SUMMARIZE_SECRETS {
        assert!(env.contains(&format!("\nOMNIFLOW_SECRET_{s}=\n")), "{env}");
    }

    // systemd-analyze verify: ExecStart's binary must exist, so point a copy
    // of the unit at the binary under test.
    let have = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .unwrap()
        .status
        .success();
    if !have {
        println!("systemd-analyze not found: the unit's text was checked, not verified");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_omniflow");
    let local = dir.path().join("omniflow-reminder.service");
    std::fs::write(&local, unit.replace("/usr/local/bin/omniflow", bin)).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Messages about the machine's own units are not this unit's problem.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("omniflow-reminder"))
        .collect();
    assert!(
        output.status.success() && ours.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn export_bundles_pieces_by_digest() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let piece = dir.path().join("my.wasm");
    std::fs::write(&piece, b"\0asm not really").unwrap();
    let digest = format!("{:x}", sha2::Sha256::digest(b"\0asm not really"));
    let out = dir.path().join("p");
    let piece_arg = piece.to_str().unwrap();
    export(
        &repo().join("examples/reminder.json"),
        "systemd",
        &out,
        &["--piece", piece_arg],
    );
    let rel = format!("pieces/{digest}.wasm");
    assert!(out.join(&rel).exists());
    assert!(
        read(out.join("omniflow-reminder.service"))
            .contains(&format!("--piece /etc/omniflow/{rel}"))
    );
    assert!(read(out.join("README.md")).contains(&rel));
}

#[test]
fn export_dockerfile_sources_exist() {
    let dockerfile = read(repo().join("Dockerfile"));
    let mut checked = 0;
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = words.first() else { continue };
        if !first.eq_ignore_ascii_case("COPY") && !first.eq_ignore_ascii_case("ADD") {
            continue;
        }
        // From another stage: not a repository path.
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        let paths: Vec<&&str> = words[1..].iter().filter(|w| !w.starts_with("--")).collect();
        assert!(paths.len() >= 2, "{line}");
        for src in &paths[..paths.len() - 1] {
            assert!(
                repo().join(src).exists(),
                "{line}: {src} is not in the repository"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "no COPY sources in the Dockerfile");
    let ignore = read(repo().join(".dockerignore"));
    assert!(ignore.lines().any(|l| l.trim_end_matches('/') == "target"));
    assert!(ignore.lines().any(|l| l == ".git"));
    let compose = read(repo().join("docker-compose.yml"));
    assert!(compose.contains("profiles: [\"ollama\"]"), "{compose}");
}

/// `omniflow export NAME --db DB`: the newest saved version, with the
/// third-party pieces it pins copied from the database by digest (not the
/// built-ins), runnable elsewhere with the local binary.
#[test]
fn export_a_saved_workflow_by_name_with_its_pinned_pieces() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("saved.db");
    let flaky = crate::support::guest_dir().join("flaky.wasm");
    let digest = format!("{:x}", sha2::Sha256::digest(std::fs::read(&flaky).unwrap()));
    let wf = serde_json::json!({
        "name": "saved-flow",
        "steps": [
            { "id": "a", "piece": "flaky", "action": "run", "input": { "value": 1 } },
            { "id": "b", "piece": "flow@^0.1", "action": "if", "input": { "condition": true }, "needs": ["a"] }
        ]
    });
    let file = dir.path().join("saved-flow.json");
    std::fs::write(&file, wf.to_string()).unwrap();
    // `run` saves the workflow (pinning flaky and flow) and installs flaky.
    let ran = omniflow()
        .env("OMNIFLOW_CACHE_DIR", crate::support::cache_dir())
        .arg("run")
        .arg(&file)
        .arg("--db")
        .arg(&db)
        .arg("--piece")
        .arg(&flaky)
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    std::fs::remove_file(&file).unwrap();

    let out = dir.path().join("bundle");
    let db_arg = db.to_string_lossy().into_owned();
    export(Path::new("saved-flow"), "systemd", &out, &["--db", &db_arg]);
    let saved: serde_json::Value =
        serde_json::from_str(&read(out.join("saved-flow.json"))).unwrap();
    assert!(
        saved["steps"][0]["piece"]
            .as_str()
            .unwrap()
            .starts_with("flaky"),
        "{saved}"
    );
    let pieces: Vec<String> = std::fs::read_dir(out.join("pieces"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        pieces,
        [format!("{digest}.wasm")],
        "only the third-party pin"
    );
    assert_eq!(
        std::fs::read(out.join("pieces").join(format!("{digest}.wasm"))).unwrap(),
        std::fs::read(&flaky).unwrap()
    );
    let unit = read(out.join("omniflow-saved-flow.service"));
    assert!(
        unit.contains(&format!("--piece /etc/omniflow/pieces/{digest}.wasm")),
        "{unit}"
    );
    // The bundle runs elsewhere with the local binary.
    let ran = omniflow()
        .current_dir(&out)
        .env("OMNIFLOW_CACHE_DIR", crate::support::cache_dir())
        .args(["run", "saved-flow.json", "--db", "elsewhere.db", "--piece"])
        .arg(format!("pieces/{digest}.wasm"))
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );

    // Neither a file nor a saved workflow: the message names it.
    let missing = omniflow()
        .args(["export", "no-such-flow", "--to", "systemd", "--db", &db_arg])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("no workflow no-such-flow is saved"),
        "{stderr}"
    );
    let no_db = omniflow()
        .args(["export", "saved-flow", "--to", "systemd", "--db"])
        .arg(dir.path().join("absent.db"))
        .output()
        .unwrap();
    assert!(!no_db.status.success());
    let stderr = String::from_utf8_lossy(&no_db.stderr);
    assert!(stderr.contains("no database"), "{stderr}");
    assert!(
        !dir.path().join("absent.db").exists(),
        "export created a database"
    );
}
