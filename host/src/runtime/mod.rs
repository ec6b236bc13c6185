//! The piece runtime: load `.wasm` components and run one action of one
//! piece per step attempt, inside wasmtime, with limits.
//!
//! The embedding, as a recipe (after wasmtime's own examples):
//!
//! 1. **One engine per compiler** ([`Runtime::new`]): component model,
//!    async, fuel, epoch interruption, the pooling allocator with
//!    copy-on-write memory images. The optimizing engine (Cranelift) is
//!    always there; with [`Compiler::Baseline`] a second engine compiles
//!    with Winch, a baseline compiler about an order of magnitude faster to
//!    compile whose code runs slower (see [`Compiler`]). A background
//!    thread ticks the epoch of both every [`EPOCH_TICK`].
//! 2. **One linker per engine**: WASI p2 (with no ambient authority),
//!    `wasi:http` through [`HttpPolicy`](crate::capabilities::http), and
//!    `omniflow:piece/log`. Built once, shared by every piece.
//! 3. **Load** ([`Runtime::load`]): check the bytes are a component, compile
//!    it (or deserialize it from the on-disk cache: an optimized artifact is
//!    preferred whenever one is cached), refuse any import outside the
//!    allow-list, `instantiate_pre` it, call `info()` once. The result,
//!    [`LoadedPiece`], is cached in memory per [`PieceDigest`]; a piece
//!    runs on the engine that compiled it.
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
pub mod preinit;
pub(crate) mod state;

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
    /// How a piece with no cached artifact is compiled.
    pub compiler: Compiler,
}

/// How a piece whose compiled code is not cached gets compiled.
///
/// An optimized (Cranelift) artifact in the disk cache is always used when
/// there is one; this only decides what a cache miss costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compiler {
    /// Cranelift, the optimizing compiler: the fastest code, but seconds
    /// to compile a large piece (the `code` piece). For long-lived
    /// processes (`serve`), which compile once and run many steps.
    #[default]
    Optimized,
    /// Winch, wasmtime's baseline compiler: compiles about ten times
    /// faster, its code runs slower. For one-shot commands (`run`), whose
    /// wall time is mostly compiling on an empty cache. Its artifacts are
    /// cached apart from optimized ones (the cache key includes the
    /// engine's settings).
    Baseline,
}

impl Compiler {
    /// `optimized`/`cranelift` or `baseline`/`winch` (as in
    /// `OMNIFLOW_COMPILER`).
    pub fn parse(text: &str) -> Option<Compiler> {
        match text.trim().to_ascii_lowercase().as_str() {
            "optimized" | "cranelift" => Some(Compiler::Optimized),
            "baseline" | "winch" => Some(Compiler::Baseline),
            _ => None,
        }
    }

    /// The name `parse` reads back.
    pub fn as_str(self) -> &'static str {
        match self {
            Compiler::Optimized => "optimized",
            Compiler::Baseline => "baseline",
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: default_cache_dir(),
            max_memory_bytes: 512 << 20,
            max_concurrent_instances: 1000,
            pooling: true,
            ceilings: LimitCeilings::default(),
            compiler: Compiler::Optimized,
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

/// One compiler's engine, the linker built on it and its artifact cache.
pub(crate) struct Tier {
    pub(crate) engine: Engine,
    /// Built when a piece of this tier is first linked: a one-shot
    /// command whose pieces all come from the other tier never builds it.
    linker: std::sync::OnceLock<Linker<StepState>>,
    pub(crate) cache: Option<Arc<cache::ArtifactCache>>,
    pub(crate) compiler: Compiler,
    /// Held while compiling, when compiles take turns (baseline).
    pub(crate) compile_turn: Option<tokio::sync::Mutex<()>>,
}

/// Loaded pieces the runtime's own cache keeps (by digest).
pub const LOADED_PIECES_CAPACITY: usize = 256;

/// The engines, linkers and loaded-piece cache. Cheap to share (`Arc`).
pub struct Runtime {
    optimized: Tier,
    /// Compiles cache misses when [`Compiler::Baseline`] is configured.
    baseline: Option<Tier>,
    /// Loaded pieces by digest, least recently used dropped beyond
    /// [`LOADED_PIECES_CAPACITY`] (whoever holds one keeps it; a later load
    /// of a dropped digest maps its artifact from the disk cache again).
    loaded: Mutex<hashlink::LruCache<PieceDigest, Arc<LoadedPiece>>>,
    max_memory_bytes: usize,
    ceilings: LimitCeilings,
    ticker_stop: Arc<AtomicBool>,
}

impl Runtime {
    /// Build the engines and linkers and start the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let optimized = Tier::new(&config, Compiler::Optimized)?;
        let baseline = match config.compiler {
            Compiler::Optimized => None,
            Compiler::Baseline => Some(Tier::new(&config, Compiler::Baseline)?),
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engines: Vec<Engine> = std::iter::once(&optimized)
                .chain(&baseline)
                .map(|tier| tier.engine.clone())
                .collect();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("omniflow-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        for engine in &engines {
                            engine.increment_epoch();
                        }
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("starting the epoch ticker: {e}")))?;
        }
        Ok(Runtime {
            optimized,
            baseline,
            loaded: Mutex::new(hashlink::LruCache::new(LOADED_PIECES_CAPACITY)),
            max_memory_bytes: config.max_memory_bytes,
            ceilings: config.ceilings,
            ticker_stop,
        })
    }

    /// Loaded pieces this runtime keeps (at most [`LOADED_PIECES_CAPACITY`]).
    pub fn loaded_pieces(&self) -> usize {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The optimizing engine (for tools that inspect components).
    pub fn engine(&self) -> &Engine {
        &self.optimized.engine
    }

    /// How cache misses are compiled.
    pub fn compiler(&self) -> Compiler {
        self.baseline
            .as_ref()
            .map_or(Compiler::Optimized, |tier| tier.compiler)
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

impl Tier {
    /// The engine for `compiler`, its linker and its cache directory.
    fn new(config: &RuntimeConfig, compiler: Compiler) -> Result<Tier, RuntimeError> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .memory_init_cow(true)
            .max_wasm_stack(512 << 10)
            .async_stack_size(2 << 20);
        if compiler == Compiler::Baseline {
            // No native-to-wasm address map: a third of a Winch artifact
            // and of its compile's peak memory. Traps are still classified
            // (trap tables are separate); only wasm backtraces lose offsets.
            // Functions compile on this thread: Winch is quick, and a
            // one-shot command's peak memory is what parallel compiles add.
            wasm.strategy(wasmtime::Strategy::Winch)
                .generate_address_map(false)
                .parallel_compilation(false);
        }
        // The baseline engine serves one-shot commands: instances come
        // from the on-demand allocator, so a second pool is not reserved.
        if config.pooling && compiler == Compiler::Optimized {
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config(config)));
        }
        let engine = Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let cache = config
            .cache_dir
            .as_ref()
            .map(|dir| Arc::new(cache::ArtifactCache::new(&engine, dir.join("compiled"))));
        Ok(Tier {
            engine,
            linker: std::sync::OnceLock::new(),
            cache,
            compiler,
            compile_turn: (compiler == Compiler::Baseline).then(|| tokio::sync::Mutex::new(())),
        })
    }
}

impl Tier {
    /// The linker of this tier's engine: WASI p2, `wasi:http` and the log
    /// capability (built on first use).
    pub(crate) fn linker(&self) -> Result<&Linker<StepState>, RuntimeError> {
        if let Some(linker) = self.linker.get() {
            return Ok(linker);
        }
        let mut linker = Linker::<StepState>::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| {
                crate::capabilities::log::link(&mut linker, |state: &mut StepState| &mut state.log)
            })
            .map_err(|e| RuntimeError::Engine(format!("linking host interfaces: {e:#}")))?;
        Ok(self.linker.get_or_init(|| linker))
    }
}

/// The pooling allocator's slots, sized by `config`.
fn pool_config(config: &RuntimeConfig) -> PoolingAllocationConfig {
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
    pool
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
