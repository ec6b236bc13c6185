//! The piece runtime: load `.wasm` components and run one action of one
//! piece per step attempt, inside wasmtime, with limits.
//!
//! The embedding, as a recipe (after wasmtime's own examples):
//!
//! 1. **One engine** ([`Runtime::new`]): component model, async, fuel,
//!    epoch interruption, the pooling allocator with copy-on-write memory
//!    images. A background thread ticks the epoch every [`EPOCH_TICK`].
//! 2. **One linker**: WASI p2 (with no ambient authority), `wasi:http`
//!    through [`HttpPolicy`](crate::capabilities::http), and
//!    `omniflow:piece/log`. Built once, shared by every piece.
//! 3. **Load** ([`Runtime::load`]): check the bytes are a component, compile
//!    it (or deserialize it from the on-disk cache), refuse any import outside
//!    the allow-list, `instantiate_pre` it, call `info()` once. The result,
//!    [`LoadedPiece`], is cached in memory per [`PieceDigest`].
//! 4. **Run** ([`Runtime::run`]): a fresh `Store` per attempt with fuel, a
//!    memory/table limiter, a deadline checked on every epoch tick (the
//!    guest also yields to tokio on every tick, so a spinning guest never
//!    starves other steps), instantiate from the cached `InstancePre`, call
//!    `run`, check the output, classify any failure into a [`StepFailure`].

pub mod builtin;
mod cache;
mod call;
mod error;
mod failure;
mod limits;
mod load;
pub(crate) mod state;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use self::call::{StepCall, StepReport};
pub use self::error::RuntimeError;
pub use self::failure::StepFailure;
pub use self::limits::{ERROR_MESSAGE_BYTES, LimitCeilings, StepLimits, cap_error_message};
pub use self::load::{ActionInfo, LoadedPiece, PieceInfo};
pub(crate) use crate::bindings::omniflow;
pub use crate::capabilities::budget::{
    FIELDS_BYTES, HeldBytes, HostBudget, MAX_HOST_RESOURCES, OUTGOING_BODY_CHUNK_BYTES,
};
use state::StepState;

/// How often the epoch advances: the granularity of deadlines, cancellation
/// and of a running guest's yields to the async executor.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Dirty linear-memory bytes a pooled slot restores in place on reuse
/// (see `PoolingAllocationConfig::linear_memory_keep_resident`).
const MEMORY_KEEP_RESIDENT: usize = 2 << 20;

/// sha256 of a piece's bytes: its identity for caches and run records.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PieceDigest(String);

impl PieceDigest {
    /// Digest of these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        PieceDigest(hex::encode(Sha256::digest(bytes)))
    }

    /// Lowercase hex, 64 characters.
    pub fn hex(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PieceDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled artifacts are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// Largest per-step memory any step may ask for (sizes the pool slots).
    pub max_memory_bytes: usize,
    /// Instances that may be alive at once (pool size).
    pub max_concurrent_instances: u32,
    /// Use the pooling allocator (fast instantiation); off = on-demand.
    pub pooling: bool,
    /// Largest fuel, timeout and output cap a step may ask for (memory's
    /// ceiling is `max_memory_bytes`): [`Runtime::max_limits`].
    pub ceilings: LimitCeilings,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: default_cache_dir(),
            max_memory_bytes: 512 << 20,
            max_concurrent_instances: 1000,
            pooling: true,
            ceilings: LimitCeilings::default(),
        }
    }
}

/// `$OMNIFLOW_CACHE_DIR`, else `$XDG_CACHE_HOME/omniflow`, else `~/.cache/omniflow`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("OMNIFLOW_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("omniflow"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/omniflow"))
}

/// The engine, linker and loaded-piece cache. Cheap to share (`Arc`).
pub struct Runtime {
    engine: Engine,
    linker: Linker<StepState>,
    cache: Option<cache::ArtifactCache>,
    loaded: Mutex<HashMap<PieceDigest, Arc<LoadedPiece>>>,
    max_memory_bytes: usize,
    ceilings: LimitCeilings,
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    /// Build the engine and linker and start the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .max_wasm_stack(512 << 10)
            .async_stack_size(2 << 20);
        if config.pooling {
            let mut pool = PoolingAllocationConfig::new();
            let n = config.max_concurrent_instances;
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(8))
                .total_memories(n.saturating_mul(2))
                .total_tables(n.saturating_mul(4))
                .total_stacks(n)
                .max_memory_size(config.max_memory_bytes)
                // Reset tables and stacks with memset instead of madvise.
                .table_keep_resident(64 << 10)
                .async_stack_keep_resident(64 << 10)
                // Linear memory: with Linux's PAGEMAP_SCAN (6.7+) only the
                // pages a step dirtied are restored, in place, so a reused
                // slot costs neither an madvise (and its TLB shootdown) nor
                // page faults. Beyond this many bytes, or without the ioctl,
                // the rest is released with madvise as before. (Keeping
                // memory resident *without* the scan was measured slower:
                // memset of the whole range costs more than the faults.)
                .pagemap_scan(Enabled::Auto);
            if PoolingAllocationConfig::is_pagemap_scan_available() {
                pool.linear_memory_keep_resident(MEMORY_KEEP_RESIDENT);
            }
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::<StepState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| {
                crate::capabilities::log::link(&mut linker, |state: &mut StepState| &mut state.log)
            })
            .map_err(|e| RuntimeError::Engine(format!("linking host interfaces: {e:#}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("omniflow-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("starting the epoch ticker: {e}")))?;
        }

        let cache = config
            .cache_dir
            .map(|dir| cache::ArtifactCache::new(&engine, dir.join("compiled")));
        Ok(Runtime {
            engine,
            linker,
            cache,
            loaded: Mutex::new(HashMap::new()),
            max_memory_bytes: config.max_memory_bytes,
            ceilings: config.ceilings,
            ticker_stop,
        })
    }

    /// The wasmtime engine (for tools that inspect components).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Largest per-step memory limit this runtime can honour.
    pub fn max_memory_bytes(&self) -> usize {
        self.max_memory_bytes
    }

    /// The largest limits a step may ask for: the configured ceilings and
    /// the pool's memory ceiling (`log_bytes` is the default; steps do not set it).
    pub fn max_limits(&self) -> StepLimits {
        StepLimits {
            fuel: self.ceilings.fuel,
            memory_bytes: self.max_memory_bytes,
            timeout: self.ceilings.timeout,
            output_bytes: self.ceilings.output_bytes,
            ..StepLimits::default()
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
