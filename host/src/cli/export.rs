//! `omniflow export`: a self-contained deployment bundle for one workflow
//! (a file, or a workflow saved in the database with its pinned pieces;
//! GitHub Actions, docker compose or a systemd unit). The YAML is
//! written as text (no YAML crate is a dependency); every value placed into
//! it is quoted with [`yaml_str`].

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use omniflow::workflow::{Grants, HttpGrant, Trigger, Workflow};
use sha2::{Digest, Sha256};

/// Where `omniflow` is installed from in generated CI jobs (a placeholder:
/// replace it with your fork or a release download).
const REPO_PLACEHOLDER: &str = "https://github.com/OWNER/omniflow";

/// The deployment targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Target {
    /// `.github/workflows/<name>.yml`
    GithubActions,
    /// `docker-compose.yml` + `.env.example`
    DockerCompose,
    /// `omniflow-<name>.service` + `<name>.env.example`
    Systemd,
}

impl Target {
    fn slug(self) -> &'static str {
        match self {
            Target::GithubActions => "github-actions",
            Target::DockerCompose => "docker-compose",
            Target::Systemd => "systemd",
        }
    }
}

/// `omniflow export WORKFLOW`: WORKFLOW is a file, else the name of a
/// workflow saved in `db` (its newest version, with the third-party pieces
/// it pins copied from the store's `piece_blobs` by digest). `pieces` are
/// more piece files to bundle. Writes the bundle; prints its directory.
pub(crate) async fn export(
    workflow: &str,
    db: &super::config::Database,
    target: Target,
    out: Option<PathBuf>,
    pieces: &[PathBuf],
) -> Result<()> {
    let mut blobs = Vec::new();
    for piece in pieces {
        blobs.push(
            std::fs::read(piece).with_context(|| format!("reading piece {}", piece.display()))?,
        );
    }
    let file = Path::new(workflow);
    let text = if file.is_file() {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    } else {
        let (text, pinned) = saved(workflow, db).await?;
        blobs.extend(pinned);
        text
    };
    write_bundle(&text, target, out, &blobs)
}

/// The newest saved version of the workflow `name` in `db` (pretty JSON)
/// and the bytes of the pieces it pins that are not this binary's
/// built-ins.
async fn saved(name: &str, db: &super::config::Database) -> Result<(String, Vec<Vec<u8>>)> {
    if omniflow::names::check(omniflow::names::NameKind::Workflow, name).is_err() {
        bail!("{name:?}: no such file (and not a workflow name either)");
    }
    if let super::config::Database::Sqlite(path) = db
        && !path.exists()
    {
        bail!(
            "{name}: no such file, and no database {} to find a saved workflow {name} in (give --db)",
            path.display()
        );
    }
    let store = super::setup::open_store(db).await?;
    let stored = store.get_workflow(name, None).await?.with_context(|| {
        format!("{name}: no such file, and no workflow {name} is saved in the database {db}")
    })?;
    let builtins: BTreeSet<String> = omniflow::runtime::builtin::BUILTIN_PIECES
        .iter()
        .map(|builtin| builtin.sha256.to_owned())
        .collect();
    let mut blobs = Vec::new();
    let pins = stored.pins.as_ref().and_then(|p| p.as_object());
    for (reference, pin) in pins.into_iter().flatten() {
        let Some(digest) = pin.get("digest").and_then(|d| d.as_str()) else {
            continue;
        };
        let digest = digest.trim_start_matches("sha256:");
        if builtins.contains(digest) {
            continue;
        }
        let bytes = store.piece_bytes(digest).await?.with_context(|| {
            format!(
                "{name} version {} pins {reference} (sha256 {digest}), whose bytes are not in the database (removed with --force?)",
                stored.version
            )
        })?;
        blobs.push(bytes);
    }
    let text = serde_json::to_string_pretty(&stored.definition)? + "\n";
    Ok((text, blobs))
}

/// Write the bundle of the workflow `text` with these piece components;
/// print its directory.
fn write_bundle(
    text: &str,
    target: Target,
    out: Option<PathBuf>,
    pieces: &[Vec<u8>],
) -> Result<()> {
    let workflow = Workflow::from_json(text)?;
    let name = workflow.name.clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("workflow name {name:?}: export needs letters, digits, '-' or '_' only");
    }
    let out = out.unwrap_or_else(|| PathBuf::from(format!("export-{name}-{}", target.slug())));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let wf_file = format!("{name}.json");
    std::fs::write(out.join(&wf_file), text)?;

    let mut piece_files = Vec::new();
    if !pieces.is_empty() {
        std::fs::create_dir_all(out.join("pieces"))?;
    }
    for bytes in pieces {
        let rel = format!("pieces/{:x}.wasm", Sha256::digest(bytes));
        if !piece_files.contains(&rel) {
            std::fs::write(out.join(&rel), bytes)?;
            piece_files.push(rel);
        }
    }
    let secrets = secret_names(&workflow);
    let uses_llm = workflow.piece_names().any(|p| p == "llm");
    let piece_flags: String = piece_files
        .iter()
        .map(|p| format!(" --piece {p}"))
        .collect();

    let mut files = vec![wf_file.clone()];
    files.extend(piece_files.iter().cloned());
    match target {
        Target::GithubActions => {
            let rel = format!(".github/workflows/{name}.yml");
            std::fs::create_dir_all(out.join(".github/workflows"))?;
            let yaml = github_actions(&workflow, &wf_file, &piece_flags, &secrets);
            std::fs::write(out.join(&rel), yaml)?;
            files.push(rel);
        }
        Target::DockerCompose => {
            std::fs::write(
                out.join("docker-compose.yml"),
                compose(&name, &piece_files, uses_llm),
            )?;
            std::fs::write(out.join(".env.example"), env_example(&secrets, uses_llm))?;
            files.push("docker-compose.yml".into());
            files.push(".env.example".into());
        }
        Target::Systemd => {
            let unit = format!("omniflow-{name}.service");
            std::fs::write(out.join(&unit), systemd(&name, &piece_files))?;
            let env = format!("{name}.env.example");
            std::fs::write(out.join(&env), env_example(&secrets, false))?;
            files.push(unit);
            files.push(env);
        }
    }
    std::fs::write(
        out.join("README.md"),
        readme(&name, target, &files, &secrets),
    )?;
    println!("{}", out.display());
    Ok(())
}

/// Every secret named by a grant of any step or handler, sorted.
pub(crate) fn secret_names(workflow: &Workflow) -> BTreeSet<String> {
    let grants = workflow
        .steps
        .iter()
        .map(|s| s.grants.as_ref())
        .chain(
            [&workflow.on_failure, &workflow.on_success]
                .into_iter()
                .map(|h| h.as_ref().and_then(|h| h.grants.as_ref())),
        )
        .flatten();
    let mut names = BTreeSet::new();
    for Grants { http, .. } in grants {
        for grant in http {
            if let HttpGrant::WithSecrets(g) = grant {
                names.extend(g.secrets.iter().cloned());
            }
        }
    }
    if let Some(Trigger::Webhook {
        secret_env: Some(s),
    }) = &workflow.trigger
    {
        names.insert(s.clone());
    }
    names
}

/// A double-quoted YAML scalar.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn github_actions(
    workflow: &Workflow,
    wf_file: &str,
    piece_flags: &str,
    secrets: &BTreeSet<String>,
) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# Generated by `omniflow export` for workflow {:?}.",
        workflow.name
    );
    let _ = writeln!(
        y,
        "name: {}",
        yaml_str(&format!("omniflow {}", workflow.name))
    );
    y.push_str("on:\n");
    match &workflow.trigger {
        Some(Trigger::Schedule { cron, timezone, .. }) => {
            let fields: Vec<&str> = cron.split_whitespace().collect();
            let cron5 = if fields.len() == 6 {
                let _ = writeln!(
                    y,
                    "  # The workflow's cron {cron:?} has a seconds field; GitHub cron has 5 fields, so it is dropped."
                );
                fields[1..].join(" ")
            } else {
                fields.join(" ")
            };
            if timezone != "UTC" {
                let _ = writeln!(
                    y,
                    "  # The workflow's timezone is {timezone:?}; GitHub evaluates cron in UTC."
                );
            }
            y.push_str("  schedule:\n");
            let _ = writeln!(y, "    - cron: {}", yaml_str(&cron5));
            y.push_str("  workflow_dispatch: {}\n");
        }
        _ => y.push_str("  workflow_dispatch: {}\n"),
    }
    y.push_str("jobs:\n  run:\n    runs-on: ubuntu-latest\n");
    y.push_str("    env:\n");
    y.push_str(
        "      # OMNIFLOW_REPO: where omniflow is installed from. Replace the placeholder.\n",
    );
    let _ = writeln!(y, "      OMNIFLOW_REPO: {}", yaml_str(REPO_PLACEHOLDER));
    y.push_str("    steps:\n");
    y.push_str("      - uses: actions/checkout@v4\n");
    y.push_str("      - name: Install omniflow\n");
    y.push_str("        run: cargo install --locked --git \"$OMNIFLOW_REPO\" omniflow\n");
    let _ = writeln!(y, "      - name: Run {}", workflow.name);
    if !secrets.is_empty() {
        y.push_str("        env:\n");
        for s in secrets {
            let _ = writeln!(y, "          OMNIFLOW_SECRET_{s}: ${{{{ secrets.{s} }}}}");
        }
    }
    let _ = writeln!(
        y,
        "        run: omniflow run {wf_file}{piece_flags} --db run.db --json > run.json"
    );
    y.push_str("      - name: Upload the run record\n");
    y.push_str("        if: always()\n");
    y.push_str("        uses: actions/upload-artifact@v4\n");
    y.push_str("        with:\n");
    let _ = writeln!(
        y,
        "          name: {}",
        yaml_str(&format!("{}-run", workflow.name))
    );
    y.push_str("          path: run.json\n");
    y
}

fn compose(name: &str, piece_files: &[String], uses_llm: bool) -> String {
    let mut y = String::new();
    let _ = writeln!(y, "# Generated by `omniflow export` for workflow {name:?}.");
    y.push_str("# The image is built from the OmniFlow repository's Dockerfile:\n");
    y.push_str("#   docker build -t omniflow:latest /path/to/omniflow\n");
    y.push_str("# Then: cp .env.example .env (fill it in); docker compose up -d\n");
    let _ = writeln!(
        y,
        "# Save the workflow: POST {name}.json to http://127.0.0.1:8080/api/v1/workflows"
    );
    y.push_str("services:\n  omniflow:\n    image: omniflow:latest\n");
    y.push_str("    command: [\"serve\", \"--listen\", \"0.0.0.0:8080\"");
    for p in piece_files {
        let _ = write!(y, ", \"--piece\", {}", yaml_str(&format!("/bundle/{p}")));
    }
    y.push_str("]\n");
    y.push_str("    ports:\n      - \"127.0.0.1:8080:8080\"\n");
    y.push_str("    env_file:\n      - path: .env\n        required: false\n");
    y.push_str("    environment:\n      OMNIFLOW_DATABASE_URL: /data/omniflow.db\n");
    if uses_llm {
        y.push_str("      OLLAMA_URL: http://ollama:11434\n");
    }
    y.push_str("    volumes:\n      - omniflow-data:/data\n      - ./:/bundle:ro\n");
    if uses_llm {
        y.push_str("    depends_on:\n      - ollama\n");
    }
    y.push_str("    healthcheck:\n");
    y.push_str("      test: [\"CMD\", \"curl\", \"-fsS\", \"http://127.0.0.1:8080/health\"]\n");
    y.push_str("      interval: 30s\n      timeout: 5s\n      retries: 3\n");
    y.push_str("    restart: unless-stopped\n");
    if uses_llm {
        y.push_str("  ollama:\n    image: ollama/ollama:latest\n");
        y.push_str("    volumes:\n      - ollama-models:/root/.ollama\n");
        y.push_str("    restart: unless-stopped\n");
    }
    y.push_str("volumes:\n  omniflow-data: {}\n");
    if uses_llm {
        y.push_str("  ollama-models: {}\n");
    }
    y
}

fn env_example(secrets: &BTreeSet<String>, uses_llm: bool) -> String {
    let mut e = String::from(
        "# Secrets the workflow's grants name (OMNIFLOW_SECRET_<NAME> is the secret <NAME>).\n",
    );
    for s in secrets {
        let _ = writeln!(e, "OMNIFLOW_SECRET_{s}=");
    }
    if uses_llm {
        e.push_str("# Set by docker-compose.yml: OLLAMA_URL=http://ollama:11434 (the server's default base URL of `ollama` providers without one; steps must still grant it).\n");
    }
    e
}

fn systemd(name: &str, piece_files: &[String]) -> String {
    let pieces: String = piece_files
        .iter()
        .map(|p| format!(" --piece /etc/omniflow/{p}"))
        .collect();
    format!(
        "# Generated by `omniflow export` for workflow {name:?}.
# Install: cp omniflow-{name}.service /etc/systemd/system/;
#          cp {name}.env.example /etc/omniflow/{name}.env (fill it in);
#          systemctl daemon-reload; systemctl enable --now omniflow-{name}
[Unit]
Description=OmniFlow server for workflow {name}
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=/usr/local/bin/omniflow serve --db /var/lib/omniflow/omniflow.db{pieces}
EnvironmentFile=-/etc/omniflow/{name}.env
DynamicUser=yes
StateDirectory=omniflow
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
LockPersonality=yes
Restart=on-failure

[Install]
WantedBy=multi-user.target
"
    )
}

fn readme(name: &str, target: Target, files: &[String], secrets: &BTreeSet<String>) -> String {
    let mut r = format!(
        "# {name}: {} bundle\n\nGenerated by `omniflow export`.\n\nFiles:\n\n",
        target.slug()
    );
    for f in files {
        let _ = writeln!(r, "- `{f}`");
    }
    r.push_str("\nSecrets the workflow needs");
    match target {
        Target::GithubActions => r.push_str(" (repository secrets of these names)"),
        _ => r.push_str(" (as `OMNIFLOW_SECRET_<NAME>` in the env file)"),
    }
    r.push_str(":\n\n");
    if secrets.is_empty() {
        r.push_str("- none\n");
    }
    for s in secrets {
        let _ = writeln!(r, "- `{s}`");
    }
    r
}
