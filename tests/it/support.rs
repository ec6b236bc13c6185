//! Shared fixtures: one runtime for the whole test binary (the pooling
//! allocator reserves address space per runtime), and guest component bytes.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use omniflow::runtime::{LoadedPiece, Runtime, RuntimeConfig};

/// Directory holding the compiled test components and pieces.
pub(crate) fn guest_dir() -> PathBuf {
    PathBuf::from(env!("OMNIFLOW_GUEST_DIR"))
}

/// Bytes of a compiled guest (`hostile_loop`, `flow`, `other-world`, ...).
pub(crate) fn guest(name: &str) -> Vec<u8> {
    let path = guest_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The compiled-piece cache for tests: under cargo's per-target temp dir, so
/// tests never touch the user's cache and later runs skip recompiling.
pub(crate) fn cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("piece-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The shared runtime (pieces loaded by one runtime only run on it).
pub(crate) fn shared_runtime() -> &'static Arc<Runtime> {
    static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Arc::new(
            Runtime::new(RuntimeConfig {
                cache_dir: Some(cache_dir()),
                max_concurrent_instances: 300,
                ..RuntimeConfig::default()
            })
            .expect("runtime starts"),
        )
    })
}

/// A second shared runtime whose cache misses compile with Winch
/// ([`Compiler::Baseline`], what `omniflow run` uses), with its own cache
/// directory so that it really compiles with Winch instead of finding the
/// optimized artifacts of [`shared_runtime`].
///
/// [`Compiler::Baseline`]: omniflow::runtime::Compiler::Baseline
pub(crate) fn baseline_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("piece-cache-baseline");
        // Start empty: every load below compiles with Winch.
        let _ = std::fs::remove_dir_all(&dir);
        Runtime::new(RuntimeConfig {
            cache_dir: Some(dir),
            max_concurrent_instances: 50,
            compiler: omniflow::runtime::Compiler::Baseline,
            ..RuntimeConfig::default()
        })
        .expect("baseline runtime starts")
    })
}

/// The shared runtime, borrowed.
pub(crate) fn runtime() -> &'static Runtime {
    shared_runtime()
}

/// Load a guest by file name through the normal path.
pub(crate) async fn load(name: &str) -> Arc<LoadedPiece> {
    runtime()
        .load(&guest(name))
        .await
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// An executor over a fresh SQLite file in `dir`: the built-in pieces plus
/// the named test components, on the shared runtime.
pub(crate) async fn executor_in(
    dir: &std::path::Path,
    test_components: &[&str],
    config: omniflow::engine::ExecutorConfig,
) -> omniflow::engine::Executor {
    let store = omniflow::store::open(&dir.join("omniflow.db").to_string_lossy())
        .await
        .unwrap();
    let registry = Arc::new(omniflow::engine::PieceRegistry::new());
    for piece in runtime().load_builtins().await.unwrap() {
        registry.add(piece);
    }
    for name in test_components {
        registry.add(load(name).await);
    }
    omniflow::engine::Executor::new(shared_runtime().clone(), registry, store, config)
}

/// What a run left behind: its record, steps and attempts as JSON text, and
/// the bytes of every file in `dir` (the database and its WAL), for tests
/// that check a value was stored nowhere.
pub(crate) async fn stored_run(
    store: &dyn omniflow::store::Store,
    dir: &std::path::Path,
    run: omniflow::store::RunId,
) -> (String, Vec<u8>) {
    let mut records = serde_json::to_string(&store.get_run(run).await.unwrap()).unwrap();
    for step in store.steps(run).await.unwrap() {
        records.push_str(&serde_json::to_string(&step).unwrap());
        for attempt in store.attempts(run, &step.step_id).await.unwrap() {
            records.push_str(&serde_json::to_string(&attempt).unwrap());
        }
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        files.extend(std::fs::read(entry.unwrap().path()).unwrap_or_default());
    }
    (records, files)
}

/// Install Debian `packages` with apt when `command` is missing (once per
/// command per test binary; as root on Debian only), so the README's test
/// command works on a fresh Debian machine, as `scripts/lang-toolchains.sh`
/// does for its toolchains. Elsewhere nothing happens and the test that
/// needs the command fails saying what is missing.
pub(crate) fn ensure_apt(command: &str, packages: &str) {
    use std::process::{Command, Stdio};
    static DONE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.iter().any(|c| c == command) {
        return;
    }
    done.push(command.to_owned());
    let present = Command::new("sh")
        .args(["-c", &format!("command -v {command}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "command -v apt-get >/dev/null && [ \"$(id -u)\" = 0 ] && \
                     apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                     apt-get install -y -qq {packages}"
                ),
            ])
            .stdout(Stdio::null())
            .status();
    }
}
