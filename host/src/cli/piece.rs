//! `omniflow piece inspect|install|list|remove` and `omniflow workflow upgrade`.

use std::path::Path;

use anyhow::{Context, Result};
use omniflow::runtime::{Compiler, Runtime};
use omniflow::store::PieceWrite;

use super::config::Database;

pub(crate) async fn inspect(file: &Path, json: bool) -> Result<bool> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = Runtime::new(super::setup::runtime_config(Compiler::Baseline)?)?;
    let piece = match runtime.load(&bytes).await {
        Ok(piece) => piece,
        Err(err) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "file": file.display().to_string(), "error": err.to_string() })
                );
            } else {
                eprintln!("error: {}: {err}", file.display());
            }
            return Ok(false);
        }
    };
    let info = piece.info();
    if json {
        let doc = serde_json::json!({
            "file": file.display().to_string(),
            "digest": piece.digest().to_string(),
            "size": piece.size(),
            "info": info,
            "imports": piece.imports(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(true);
    }
    println!("{}@{}  {}", info.name, info.version, info.description);
    println!("  digest   {}", piece.digest());
    println!("  size     {} bytes", piece.size());
    println!("  imports");
    for import in piece.imports() {
        println!("    {import}");
    }
    println!("  requested capabilities");
    if info.http_destinations.is_empty() && info.secrets.is_empty() {
        println!("    none");
    }
    for dest in &info.http_destinations {
        println!("    http     {dest}");
    }
    for secret in &info.secrets {
        println!("    secret   {secret}");
    }
    println!("  actions");
    for action in &info.actions {
        println!("    {}  {}", action.name, action.description);
        println!("      input  {}", action.input_schema);
        println!("      output {}", action.output_schema);
    }
    Ok(true)
}

/// An executor for a one-shot piece command (baseline compiler).
async fn local_executor(db: &Database) -> Result<omniflow::engine::Executor> {
    super::setup::executor(
        db,
        &[],
        omniflow::engine::ExecutorConfig::default(),
        Compiler::Baseline,
    )
    .await
}

/// `omniflow piece install FILE.wasm [--replace]`: validate, compile and
/// store a piece in the database (every process sharing it can use it).
pub(crate) async fn install(db: &Database, file: &Path, replace: bool) -> Result<bool> {
    let source = file.to_string_lossy();
    let bytes = if source.starts_with("oci://") {
        let reference = super::oci::OciRef::parse(&source)?;
        let bytes = super::oci::pull(&reference).await?;
        eprintln!(
            "pulled {reference} ({} bytes, {})",
            bytes.len(),
            super::oci::digest_of(&bytes)
        );
        bytes
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
    };
    let exec = local_executor(db).await?;
    let (piece, write) = exec
        .install_piece(&bytes, replace, None)
        .await
        .with_context(|| format!("installing {}", file.display()))?;
    let what = match write {
        PieceWrite::Installed => "installed",
        PieceWrite::Replaced => "replaced",
        PieceWrite::Unchanged => "already installed (same bytes)",
    };
    println!(
        "{}@{} {what}  sha256 {}  {} bytes",
        piece.name, piece.version, piece.digest, piece.size
    );
    Ok(true)
}

/// `omniflow piece push FILE.wasm oci://REGISTRY/REPO:TAG`: validate the
/// piece like an install, then push it as a Wasm OCI artifact.
pub(crate) async fn push(file: &Path, reference: &str) -> Result<bool> {
    let reference = super::oci::OciRef::parse(reference)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = Runtime::new(super::setup::runtime_config(Compiler::Baseline)?)?;
    let piece = runtime
        .load(&bytes)
        .await
        .with_context(|| format!("{} is not a valid piece", file.display()))?;
    let info = piece.info();
    let manifest =
        super::oci::push(&reference, &bytes, &info.name, &info.version.to_string()).await?;
    println!(
        "pushed {}@{} to {reference}  layer {}  manifest {manifest}",
        info.name,
        info.version,
        super::oci::digest_of(&bytes)
    );
    Ok(true)
}

/// `omniflow piece list [--json]`: every installed piece version.
pub(crate) async fn list(db: &Database, json: bool) -> Result<bool> {
    let store = super::setup::open_store(db).await?;
    let pieces = store.list_pieces().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&pieces)?);
        return Ok(true);
    }
    println!(
        "{:<20} {:<10} {:<8} {:<12} installed",
        "piece", "version", "builtin", "sha256"
    );
    for p in &pieces {
        println!(
            "{:<20} {:<10} {:<8} {:<12} {}",
            p.name,
            p.version,
            if p.builtin { "yes" } else { "" },
            &p.digest[..12.min(p.digest.len())],
            p.installed_at
        );
    }
    Ok(true)
}

/// `omniflow piece remove NAME@VERSION [--force]`.
pub(crate) async fn remove(db: &Database, reference: &str, force: bool) -> Result<bool> {
    let (name, version) = reference
        .split_once('@')
        .with_context(|| format!("{reference:?}: expected NAME@VERSION (e.g. sentiment@0.1.0)"))?;
    let version: semver::Version = version
        .parse()
        .with_context(|| format!("{reference:?}: the version is not an exact semver version"))?;
    let store = super::setup::open_store(db).await?;
    if store
        .remove_piece(name, &version.to_string(), force)
        .await?
    {
        println!("removed {name}@{version}");
        Ok(true)
    } else {
        eprintln!("error: piece {name}@{version} is not installed");
        Ok(false)
    }
}

/// `omniflow workflow upgrade NAME`: save the newest definition again,
/// resolving every piece reference to the newest installed version (a new
/// version when a pin changes).
pub(crate) async fn upgrade(db: &Database, name: &str) -> Result<bool> {
    let exec = local_executor(db).await?;
    let stored = exec
        .store()
        .get_workflow(name, None)
        .await?
        .with_context(|| format!("no workflow named {name:?}"))?;
    let workflow = omniflow::workflow::Workflow::from_json(&stored.definition.to_string())?;
    let saved = exec.save_workflow(&workflow).await?;
    if saved.version == stored.version {
        println!("{name}: pins unchanged (version {})", saved.version);
    } else {
        println!("{name}: version {} saved with new pins", saved.version);
    }
    if let Some(pins) = saved.pins.as_ref().and_then(|p| p.as_object()) {
        for (reference, pin) in pins {
            println!(
                "  {reference} -> {}@{}  sha256 {}",
                pin["name"].as_str().unwrap_or_default(),
                pin["version"].as_str().unwrap_or_default(),
                pin["digest"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(true)
}

/// `omniflow __compile-check FILE --max-memory-mb N` (hidden): compile
/// FILE with the serving engine's settings in this process, limited to N MiB
/// of address space; exit 0 when it compiles. `serve` runs it in a child
/// process before installing an uploaded component, so a compile bomb hits
/// the child's limit, not the server.
pub(crate) fn compile_check(file: &Path, max_memory_mb: u64) -> Result<bool> {
    let limit = max_memory_mb.saturating_mul(1 << 20);
    rustix::process::setrlimit(
        rustix::process::Resource::As,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .context("setting the address-space limit")?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = Runtime::new(omniflow::runtime::RuntimeConfig {
        compiler: Compiler::Optimized,
        pooling: false,
        cache_dir: None,
        ..omniflow::runtime::RuntimeConfig::default()
    })?;
    runtime
        .engine()
        .precompile_component(&bytes)
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    Ok(true)
}

/// The guard `serve` installs ([`omniflow::engine::CompileGuard`]): the
/// upload compiled by `__compile-check` in a child process limited to
/// `max_memory_mb` of address space (killed when the install gives up).
pub(crate) fn compile_guard(max_memory_mb: u64) -> Result<omniflow::engine::CompileGuard> {
    let exe = std::env::current_exe().context("finding this binary")?;
    Ok(omniflow::engine::CompileGuard(std::sync::Arc::new(
        move |bytes: Vec<u8>| {
            let exe = exe.clone();
            Box::pin(async move {
                let dir = super::setup::tempfile_dir().map_err(|e| e.to_string())?;
                let file = dir.join("upload.wasm");
                tokio::fs::write(&file, &bytes)
                    .await
                    .map_err(|e| format!("staging the upload: {e}"))?;
                let out = tokio::process::Command::new(&exe)
                    .arg("__compile-check")
                    .arg(&file)
                    .arg("--max-memory-mb")
                    .arg(max_memory_mb.to_string())
                    .env("OMNIFLOW_LOG", "error")
                    .kill_on_drop(true)
                    .output()
                    .await;
                let _ = tokio::fs::remove_dir_all(&dir).await;
                let out = out.map_err(|e| format!("starting the compile check: {e}"))?;
                if out.status.success() {
                    return Ok(());
                }
                let stderr = String::from_utf8_lossy(&out.stderr);
                let why = stderr.lines().last().unwrap_or("").trim().to_owned();
                Err(format!(
                    "compiling it in a process limited to {max_memory_mb} MiB failed ({}){}",
                    out.status,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(": {why}")
                    }
                ))
            })
        },
    )))
}
