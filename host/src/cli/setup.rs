//! Assembling runtime + pieces + store into an executor for a command.

use std::path::{Path, PathBuf};

use super::config::Database;
use std::sync::Arc;

use anyhow::{Context, Result};
use omniflow::capabilities::secrets::{self, SecretCipher};
use omniflow::engine::{Executor, ExecutorConfig, PieceRegistry};
use omniflow::runtime::{Compiler, Runtime, RuntimeConfig, builtin::BUILTIN_PIECES};
use omniflow::workflow::Workflow;

/// Built-in pieces (compiled when a workflow first needs them) plus any
/// `--piece FILE.wasm` (loaded now), all through `Runtime::load`.
pub(crate) async fn registry(runtime: &Runtime, extra: &[PathBuf]) -> Result<Arc<PieceRegistry>> {
    let registry = Arc::new(PieceRegistry::with_builtins(BUILTIN_PIECES));
    registry.set_limit_maxima(&runtime.max_limits());
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

/// The variable that chooses how cache misses are compiled.
const COMPILER_VAR: &str = "OMNIFLOW_COMPILER";

/// The runtime settings of a command: `OMNIFLOW_COMPILER` (`optimized` or
/// `baseline`) when set, else `default` (`baseline` for one-shot commands,
/// whose wall time on an empty cache is mostly compiling; `optimized` for
/// `serve` and benchmarks).
pub(crate) fn runtime_config(default: Compiler) -> Result<RuntimeConfig> {
    let compiler = match std::env::var(COMPILER_VAR) {
        Ok(text) => Compiler::parse(&text).with_context(|| {
            format!(
                "{COMPILER_VAR}={text:?}: expected `optimized` (Cranelift) or `baseline` (Winch)"
            )
        })?,
        Err(_) => default,
    };
    Ok(RuntimeConfig {
        compiler,
        // A one-shot command runs a handful of instances: the on-demand
        // allocator costs it ~40 µs per instantiation and no pool.
        pooling: default == Compiler::Optimized,
        ..RuntimeConfig::default()
    })
}

/// An executor for a local command (`run`, `runs resume`, `bench`), whose
/// cache misses compile with `compiler` unless `OMNIFLOW_COMPILER` says
/// otherwise.
pub(crate) async fn executor(
    db: &Database,
    extra_pieces: &[PathBuf],
    config: ExecutorConfig,
    compiler: Compiler,
) -> Result<Executor> {
    Ok(
        executor_with_secrets(db, extra_pieces, config, compiler, false)
            .await?
            .0,
    )
}

/// An executor whose secrets are resolved as for every command (see
/// [`omniflow::capabilities::secrets::for_process`]): stored secrets of the
/// database (key from `OMNIFLOW_SECRET_KEY` or the key file next to it;
/// `serve` creates that file), then `OMNIFLOW_SECRET_*`, the variables
/// listed in `OMNIFLOW_SECRETS_FROM_ENV`, and `./.env`. With `serve`, the
/// cipher for the secrets API comes back too.
pub(crate) async fn executor_with_secrets(
    db: &Database,
    extra_pieces: &[PathBuf],
    mut config: ExecutorConfig,
    compiler: Compiler,
    serve: bool,
) -> Result<(Executor, Option<SecretCipher>)> {
    let runtime = Arc::new(Runtime::new(runtime_config(compiler)?)?);
    let registry = registry(&runtime, &[]).await?;
    let store = open_store(db).await?;
    let key_file = db.key_file();
    let (secrets, cipher) =
        secrets::for_process(store.as_ref(), key_file.as_deref(), serve).await?;
    config.secrets = secrets;
    let executor = Executor::new(runtime, registry, store, config);
    // `--piece FILE`: installed (durably, so versions that pin it keep
    // finding its bytes), replacing the same name@version.
    for file in extra_pieces {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        executor
            .install_piece(&bytes, true, None)
            .await
            .with_context(|| format!("loading piece {}", file.display()))?;
    }
    Ok((executor, cipher))
}

/// Open (creating or migrating) the store a command names.
pub(crate) async fn open_store(db: &Database) -> Result<Arc<dyn omniflow::store::Store>> {
    omniflow::store::open(&db.url())
        .await
        .with_context(|| format!("opening the database {db}"))
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

/// A fresh private temporary directory (the caller removes it).
pub(crate) fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "omniflow-tmp-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
