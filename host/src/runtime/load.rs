//! Loading: bytes → validated, compiled, pre-instantiated piece with its info.
//!
//! Every piece takes this path, built-in or uploaded: there is no shortcut.

use crate::capabilities::http::HttpGrants;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use wasmtime::Store;
use wasmtime::component::Component;

use super::state::StepState;
use super::{PieceDigest, Runtime, RuntimeError, StepLimits};
use crate::bindings::PieceCorePre;

/// The export every piece must provide.
pub(crate) const HANDLER_EXPORT: &str = "omniflow:piece/handler@0.1.0";

/// Interfaces a piece may import (compared without the `@version`).
/// `wasi:cli/*` and `wasi:filesystem/*` are linked because language
/// toolchains import them by default; they are empty (no env, args, stdin or
/// preopened directories).
const ALLOWED_IMPORTS: &[&str] = &[
    "omniflow:piece/log",
    "omniflow:piece/types",
    "wasi:http/outgoing-handler",
    "wasi:http/types",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    // Linked into Python's runtime whether or not a piece uses them; every
    // operation is denied at run time (`state.rs`: no TCP, no UDP, no name
    // lookup, no address allowed), as an error the guest sees, never a trap.
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// One action as the piece describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionInfo {
    /// Name used in a step's `action`.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// JSON Schema of the input.
    pub input_schema: serde_json::Value,
    /// JSON Schema of the output.
    pub output_schema: serde_json::Value,
}

/// What a piece says about itself (validated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PieceInfo {
    /// Piece name (`http-request`).
    pub name: String,
    /// Semantic version.
    pub version: semver::Version,
    /// One-line description.
    pub description: String,
    /// Actions offered.
    pub actions: Vec<ActionInfo>,
    /// HTTP destinations it expects to be granted.
    pub http_destinations: Vec<String>,
    /// Secrets it expects the host to place.
    pub secrets: Vec<String>,
}

impl PieceInfo {
    /// The action named `name`.
    pub fn action(&self, name: &str) -> Option<&ActionInfo> {
        self.actions.iter().find(|a| a.name == name)
    }
}

/// A validated, compiled, pre-instantiated piece.
pub struct LoadedPiece {
    pub(crate) digest: PieceDigest,
    pub(crate) info: PieceInfo,
    pub(crate) imports: Vec<String>,
    pub(crate) size: usize,
    pub(crate) pre: PieceCorePre<StepState>,
    pub(crate) from_cache: bool,
    pub(crate) compiler: super::Compiler,
}

impl LoadedPiece {
    /// sha256 of the bytes.
    pub fn digest(&self) -> &PieceDigest {
        &self.digest
    }
    /// The piece's own description of itself.
    pub fn info(&self) -> &PieceInfo {
        &self.info
    }
    /// Every interface the component imports.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }
    /// Size of the `.wasm`, bytes.
    pub fn size(&self) -> usize {
        self.size
    }
    /// Whether the compiled code came from the on-disk cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }
    /// Which compiler produced the code it runs.
    pub fn compiler(&self) -> super::Compiler {
        self.compiler
    }
}

fn check_header(bytes: &[u8]) -> Result<(), RuntimeError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        let what = if bytes.is_empty() {
            "the file is empty".to_string()
        } else if bytes.len() < 8 && b"\0asm".starts_with(&bytes[..bytes.len().min(4)]) {
            format!("only {} bytes long", bytes.len())
        } else {
            "it does not start with the `\\0asm` magic number".to_string()
        };
        return Err(RuntimeError::NotWasm(what));
    }
    // Bytes 4..8: version + layer. Core modules are `01 00 00 00`,
    // components `0d 00 01 00` (layer 1).
    match (bytes[6], bytes[7]) {
        (0, 0) => Err(RuntimeError::CoreModule),
        (1, 0) => Ok(()),
        _ => Err(RuntimeError::Malformed(format!(
            "unknown binary version/layer {:02x?}",
            &bytes[4..8]
        ))),
    }
}

/// Every interface `component` imports, or the first outside the allow-list.
pub(super) fn check_imports(
    engine: &wasmtime::Engine,
    component: &Component,
) -> Result<Vec<String>, RuntimeError> {
    let imports: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if let Some(bad) = imports
        .iter()
        .find(|name| !ALLOWED_IMPORTS.contains(&interface_name(name)))
    {
        return Err(RuntimeError::ForbiddenImport {
            import: bad.clone(),
        });
    }
    Ok(imports)
}

fn interface_name(import: &str) -> &str {
    import.split('@').next().unwrap_or(import)
}

impl Runtime {
    /// Validate, compile (or load from cache), pre-instantiate and describe a piece.
    pub async fn load(&self, bytes: &[u8]) -> Result<Arc<LoadedPiece>, RuntimeError> {
        self.load_from(PieceDigest::of(bytes), bytes, || Cow::Owned(bytes.to_vec()))
            .await
    }

    /// [`Runtime::load`] for bytes that live as long as the process (the
    /// built-in pieces embedded in the binary): a compile reads them in
    /// place instead of copying them first.
    pub async fn load_builtin(
        &self,
        builtin: &'static super::builtin::Builtin,
    ) -> Result<Arc<LoadedPiece>, RuntimeError> {
        let bytes = builtin.bytes;
        self.load_from(builtin.digest(), bytes, || Cow::Borrowed(bytes))
            .await
    }

    /// `owned` gives the bytes to a compile (which runs on another thread).
    async fn load_from(
        &self,
        digest: PieceDigest,
        bytes: &[u8],
        owned: impl FnOnce() -> Cow<'static, [u8]>,
    ) -> Result<Arc<LoadedPiece>, RuntimeError> {
        if let Some(piece) = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            return Ok(piece.clone());
        }
        check_header(bytes)?;

        let (tier, component, from_cache) = self.compile_or_fetch(owned, &digest).await?;
        let engine = &tier.engine;

        let imports = check_imports(engine, &component)?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        if !exports.iter().any(|name| name == HANDLER_EXPORT) {
            return Err(RuntimeError::WrongWorld {
                expected: HANDLER_EXPORT.into(),
                exports: exports.join(", "),
            });
        }

        let instance_pre = tier
            .linker()?
            .instantiate_pre(&component)
            .map_err(|e| RuntimeError::Engine(format!("linking: {e:#}")))?;
        let pre = PieceCorePre::new(instance_pre).map_err(|e| RuntimeError::WrongWorld {
            expected: format!("{HANDLER_EXPORT} with matching types ({e:#})"),
            exports: exports.join(", "),
        })?;

        let info = self.describe(&pre).await?;
        let piece = Arc::new(LoadedPiece {
            digest: digest.clone(),
            info,
            imports,
            size: bytes.len(),
            pre,
            from_cache,
            compiler: tier.compiler,
        });
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, piece.clone());
        Ok(piece)
    }

    /// The compiled component for `bytes` and the engine it belongs to:
    /// an optimized artifact from the cache if there is one, else the
    /// configured compiler's cached artifact, else a fresh compile with
    /// that compiler (off the async workers: from milliseconds to seconds,
    /// so several pieces compile at once and nothing waits behind one).
    async fn compile_or_fetch(
        &self,
        bytes: impl FnOnce() -> Cow<'static, [u8]>,
        digest: &PieceDigest,
    ) -> Result<(&super::Tier, Component, bool), RuntimeError> {
        let tiers = std::iter::once(&self.optimized).chain(&self.baseline);
        for tier in tiers {
            if let Some(component) = tier
                .cache
                .as_ref()
                .and_then(|cache| cache.load(&tier.engine, digest))
            {
                return Ok((tier, component, true));
            }
        }
        let tier = self.baseline.as_ref().unwrap_or(&self.optimized);
        // The baseline tier compiles one piece at a time: its compiles are
        // short, and a one-shot command's peak memory is what it costs.
        let _turn = match &tier.compile_turn {
            Some(turn) => Some(turn.lock().await),
            None => None,
        };
        let mut owned = bytes();
        // A piece that asks for it is compiled from its pre-initialised
        // snapshot (see `preinit`); the cache keeps the result under the
        // original bytes' digest. Not on the baseline tier: a one-shot
        // command runs a piece a few times, and the snapshot's second
        // compile would cost it more (a `code` step on an empty cache:
        // 0.8 → 1.6 s) than the ≈ 0.35 ms per run it saves.
        if tier.compiler == super::Compiler::Optimized && super::preinit::wants_preinit(&owned) {
            owned = Cow::Owned(self.preinitialise(tier, &owned).await?);
        }
        let engine = tier.engine.clone();
        let cache = tier.cache.clone();
        let digest = digest.clone();
        let component = tokio::task::spawn_blocking(move || match cache {
            Some(cache) => cache.compile(&engine, &digest, &owned),
            None => Component::new(&engine, &owned),
        })
        .await
        .map_err(|e| RuntimeError::Engine(format!("compiling: {e}")))?
        .map_err(|e| RuntimeError::Malformed(format!("{e:#}")))?;
        Ok((tier, component, false))
    }

    /// Call `info()` under default limits (a hostile `info` is contained too).
    async fn describe(&self, pre: &PieceCorePre<StepState>) -> Result<PieceInfo, RuntimeError> {
        let (mut store, limits) = Self::load_time_store(pre.engine(), "<info>");
        let piece = pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| RuntimeError::InvalidInfo(format!("instantiating: {e:#}")))?;
        let raw = piece
            .omniflow_piece_handler()
            .call_info(&mut store)
            .await
            .map_err(|e| {
                let failure = super::StepFailure::from_call_error(&e, limits.fuel, "");
                RuntimeError::InvalidInfo(format!("calling info(): {failure}"))
            })?;
        validate_info(raw)
    }

    /// A store for a piece's code run at load time (`info()`, the
    /// pre-initialisation): default step limits with a 10 s deadline, no
    /// HTTP grants; and those limits.
    pub(super) fn load_time_store(
        engine: &wasmtime::Engine,
        label: &str,
    ) -> (Store<StepState>, StepLimits) {
        let limits = StepLimits {
            timeout: Duration::from_secs(10),
            ..StepLimits::default()
        };
        let store = Self::new_store(
            engine,
            label,
            &limits,
            Instant::now() + limits.timeout,
            CancellationToken::new(),
            HttpGrants::deny_all(),
            super::state::AttemptGuards {
                redactor: crate::capabilities::secrets::Redactor::new(),
                budget: std::sync::Arc::new(super::HostBudget::new(limits.memory_bytes)),
            },
        );
        (store, limits)
    }

    pub(crate) fn new_store(
        engine: &wasmtime::Engine,
        step_id: &str,
        limits: &StepLimits,
        deadline: Instant,
        cancel: CancellationToken,
        http: HttpGrants,
        guards: super::state::AttemptGuards,
    ) -> Store<StepState> {
        let timeout = limits.timeout;
        let mut store = Store::new(
            engine,
            StepState::new(step_id, limits, deadline, cancel, http, guards),
        );
        store.limiter(|state| &mut state.limiter);
        // Fuel can only fail to be set when fuel is disabled; it is enabled.
        let _ = store.set_fuel(limits.fuel);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut ctx| {
            let state = ctx.data_mut();
            state.check_host_budget().map_err(wasmtime::Error::new)?;
            if state.cancel.is_cancelled() {
                return Err(wasmtime::Error::new(super::limits::LimitBreach::Cancelled));
            }
            if Instant::now() >= state.deadline {
                return Err(wasmtime::Error::new(super::limits::LimitBreach::Deadline(
                    timeout,
                )));
            }
            Ok(wasmtime::UpdateDeadline::Yield(1))
        });
        store
    }
}

fn validate_info(raw: super::omniflow::piece::types::PieceInfo) -> Result<PieceInfo, RuntimeError> {
    crate::names::check(crate::names::NameKind::Piece, &raw.name)
        .map_err(|e| RuntimeError::InvalidInfo(e.to_string()))?;
    let version = semver::Version::parse(&raw.version).map_err(|e| {
        RuntimeError::InvalidInfo(format!("version {:?} is not semver: {e}", raw.version))
    })?;
    if raw.actions.is_empty() {
        return Err(RuntimeError::InvalidInfo(
            "the piece offers no actions".into(),
        ));
    }
    let mut actions = Vec::with_capacity(raw.actions.len());
    for action in raw.actions {
        if action.name.is_empty() || actions.iter().any(|a: &ActionInfo| a.name == action.name) {
            return Err(RuntimeError::InvalidInfo(format!(
                "action name {:?} is empty or repeated",
                action.name
            )));
        }
        let parse = |what: &str, text: &str| {
            serde_json::from_str::<serde_json::Value>(text).map_err(|e| {
                RuntimeError::InvalidInfo(format!(
                    "action {:?}: {what} schema is not JSON: {e}",
                    action.name
                ))
            })
        };
        let input_schema = parse("input", &action.input_schema)?;
        let output_schema = parse("output", &action.output_schema)?;
        if jsonschema::validator_for(&input_schema).is_err() {
            return Err(RuntimeError::InvalidInfo(format!(
                "action {:?}: input schema is not a valid JSON Schema",
                action.name
            )));
        }
        actions.push(ActionInfo {
            name: action.name,
            description: action.description,
            input_schema,
            output_schema,
        });
    }
    Ok(PieceInfo {
        name: raw.name,
        version,
        description: raw.description,
        actions,
        http_destinations: raw.http_destinations,
        secrets: raw.secrets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_errors_are_distinct() {
        assert!(matches!(check_header(b""), Err(RuntimeError::NotWasm(_))));
        assert!(matches!(
            check_header(b"hello world"),
            Err(RuntimeError::NotWasm(_))
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(RuntimeError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn import_names_ignore_versions() {
        assert_eq!(interface_name("wasi:io/streams@0.2.6"), "wasi:io/streams");
        assert!(ALLOWED_IMPORTS.contains(&interface_name("wasi:sockets/tcp@0.2.0")));
        assert!(!ALLOWED_IMPORTS.contains(&interface_name("evil:backdoor/door")));
    }
}
