//! Assembling runtime + pieces + store into an executor for a command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use omniflow::engine::{Executor, ExecutorConfig, PieceRegistry};
use omniflow::runtime::{Runtime, RuntimeConfig};
use omniflow::workflow::Workflow;

/// Built-in pieces plus any `--piece FILE.wasm`, all through `Runtime::load`.
pub(crate) async fn registry(runtime: &Runtime, extra: &[PathBuf]) -> Result<Arc<PieceRegistry>> {
    let registry = Arc::new(PieceRegistry::new());
    registry.set_limit_maxima(&runtime.max_limits());
    for piece in runtime.load_builtins().await? {
        registry.add(piece);
    }
    for file in extra {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        let piece = runtime
            .load(&bytes)
            .await
            .with_context(|| format!("loading piece {}", file.display()))?;
        registry.add(piece);
    }
    Ok(registry)
}

pub(crate) async fn executor(
    db: &Path,
    extra_pieces: &[PathBuf],
    mut config: ExecutorConfig,
) -> Result<Executor> {
    // Secrets for granted HTTP requests: the environment and ./.env.
    config.secrets = omniflow::capabilities::secrets::Secrets::from_env();
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default())?);
    let registry = registry(&runtime, extra_pieces).await?;
    let store = omniflow::store::open(&db.to_string_lossy())
        .await
        .with_context(|| format!("opening the database {}", db.display()))?;
    Ok(Executor::new(runtime, registry, store, config))
}

pub(crate) fn read_workflow(file: &Path) -> Result<Workflow> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Workflow::from_json(&text).with_context(|| format!("{}", file.display()))
}

/// `K=V` → (K, V as JSON when it parses as JSON, else as a string).
pub(crate) fn parse_var(text: &str) -> Result<(String, serde_json::Value)> {
    let (key, value) = text
        .split_once('=')
        .with_context(|| format!("--var {text:?}: expected KEY=VALUE"))?;
    anyhow::ensure!(!key.is_empty(), "--var {text:?}: the key is empty");
    let value = serde_json::from_str(value)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    Ok((key.to_string(), value))
}
