//! Pre-initialisation: a piece that exports `wizer-initialize` (the SDK's
//! `export_preinit!`) has it called **once, when it is compiled**, and the
//! instance's state afterwards (linear memories and globals) is written
//! back into the component as its initial state (a Wizer snapshot, with
//! `wasmtime-wizer`). The pre-initialised component is what gets compiled
//! and cached, so every later instance starts from the snapshot through the
//! copy-on-write memory image, and no run pays for the initialisation. The
//! `code` piece builds its JavaScript engine this way. Only the optimizing
//! tier pre-initialises (`serve`, `worker`, and `run` when a server left
//! Cranelift's code in the cache): a one-shot Winch compile would pay a
//! second compile for a saving of ≈ 0.35 ms per run.
//!
//! The initialisation is untrusted code and runs as a step does: in this
//! runtime's linker, with no HTTP grants, under the default step limits
//! (fuel, memory, a 10 s deadline). If it fails, the piece fails to load
//! with [`RuntimeError::InvalidInfo`]. Only top-level function exports
//! named exactly [`INIT_EXPORT`] with type `func()` count; the export stays
//! in the snapshot, and nothing calls it again.

use std::time::{Duration, Instant};

use wasmparser::{ComponentExternalKind, Parser, Payload};
use wasmtime::Store;
use wasmtime::component::{Component, Instance, Lift, WasmList};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use super::state::StepState;
use super::{Runtime, RuntimeError, StepFailure, Tier};

/// The export a piece offers to be pre-initialised (Wizer's default name).
pub const INIT_EXPORT: &str = "wizer-initialize";

/// Whether the component at `bytes` exports [`INIT_EXPORT`] as a function at
/// its top level (nested modules and components are skipped). A scan of the
/// section headers: nothing is validated or compiled.
pub fn wants_preinit(bytes: &[u8]) -> bool {
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else {
            return false;
        };
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentExportSection(exports) if depth == 0 => {
                let found = exports.into_iter().flatten().any(|export| {
                    export.name.name == INIT_EXPORT && export.kind == ComponentExternalKind::Func
                });
                if found {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

fn failed(what: &str, error: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::InvalidInfo(format!("pre-initialising ({INIT_EXPORT}): {what}: {error}"))
}

impl Runtime {
    /// The component at `bytes` with its [`INIT_EXPORT`] run and snapshotted.
    pub(super) async fn preinitialise(
        &self,
        tier: &Tier,
        bytes: &[u8],
    ) -> Result<Vec<u8>, RuntimeError> {
        use futures::FutureExt as _;
        // wasmtime-wizer checks its own output with a panic in debug
        // builds; whatever a piece makes it do, it fails the load instead.
        std::panic::AssertUnwindSafe(self.snapshot(tier, bytes))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                Err(failed(
                    "snapshot",
                    why.chars().take(300).collect::<String>(),
                ))
            })
    }

    async fn snapshot(&self, tier: &Tier, bytes: &[u8]) -> Result<Vec<u8>, RuntimeError> {
        let mut wizer = Wizer::new();
        // Removing the export after the snapshot removes the core module's
        // function but not the component's alias of it (an invalid
        // component, wasmtime-wizer 48): keep it. Nothing calls it again.
        wizer.keep_init_func(true);
        let (cx, instrumented) = wizer
            .instrument_component(bytes)
            .map_err(|e| RuntimeError::Malformed(format!("{e:#}")))?;
        let engine = tier.engine.clone();
        let component = tokio::task::spawn_blocking(move || Component::new(&engine, &instrumented))
            .await
            .map_err(|e| RuntimeError::Engine(format!("compiling: {e}")))?
            .map_err(|e| RuntimeError::Malformed(format!("{e:#}")))?;
        // The same allow-list a loaded piece is held to, before any of its
        // code runs.
        super::load::check_imports(&tier.engine, &component)?;

        let (mut store, limits) = Self::load_time_store(&tier.engine, "<wizer-initialize>");
        let instance = tier
            .linker()?
            .instantiate_async(&mut store, &component)
            .await
            .map_err(|e| failed("instantiating", format!("{e:#}")))?;
        let init = instance
            .get_typed_func::<(), ()>(&mut store, INIT_EXPORT)
            .map_err(|e| failed("the export", format!("{e:#}")))?;
        init.call_async(&mut store, ()).await.map_err(|e| {
            let failure = StepFailure::from_call_error(&e, limits.fuel, "");
            failed("it failed", failure)
        })?;

        // Reading the state back runs the instrumentation's own accessors:
        // give them room whatever the initialisation used up.
        let _ = store.set_fuel(u64::MAX / 2);
        store.data_mut().deadline = Instant::now() + Duration::from_secs(60);
        let mut access = Access {
            store: &mut store,
            instance,
            error: None,
        };
        let snapshot = wizer
            .snapshot_component(&cx, &mut access)
            .await
            .map_err(|e| failed("snapshot", format!("{e:#}")))?;
        if let Some(error) = access.error {
            return Err(failed("reading its state", error));
        }
        Ok(snapshot)
    }
}

/// The initialised instance as Wizer reads it: through the accessor
/// functions its instrumentation exports. Wizer's interface has no error
/// path, so a failed read returns a zero value and records the error, which
/// [`Runtime::preinitialise`] then reports instead of the snapshot.
struct Access<'a> {
    store: &'a mut Store<StepState>,
    instance: Instance,
    error: Option<String>,
}

impl Access<'_> {
    async fn read<R>(&mut self, interface: &str, func: &str) -> Option<R>
    where
        R: Lift + Send + Sync + 'static,
    {
        let result = async {
            let outer = self
                .instance
                .get_export_index(&mut *self.store, None, interface)
                .ok_or_else(|| format!("no export {interface}"))?;
            let index = self
                .instance
                .get_export_index(&mut *self.store, Some(&outer), func)
                .ok_or_else(|| format!("no export {interface}#{func}"))?;
            let typed = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *self.store, &index)
                .map_err(|e| format!("{interface}#{func}: {e:#}"))?;
            let (value,) = typed
                .call_async(&mut *self.store, ())
                .await
                .map_err(|e| format!("{interface}#{func}: {e:#}"))?;
            Ok::<R, String>(value)
        }
        .await;
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.error.get_or_insert(error);
                None
            }
        }
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        match self.read::<WasmList<u8>>(instance, func).await {
            Some(list) => contents(list.as_le_slice(&*self.store)),
            None => contents(&[]),
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.read(instance, func).await.unwrap_or_default()
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.read(instance, func).await.unwrap_or_default()
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.read::<f32>(instance, func)
            .await
            .map(f32::to_bits)
            .unwrap_or_default()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.read::<f64>(instance, func)
            .await
            .map(f64::to_bits)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pieces_exporting_the_init_function_want_it() {
        let builtin = |name: &str| {
            crate::runtime::builtin::Builtin::named(name)
                .expect("built in")
                .bytes
        };
        let (code, flow) = (builtin("code"), builtin("flow"));
        assert!(wants_preinit(code));
        assert!(!wants_preinit(flow));
        assert!(!wants_preinit(b"not wasm"));
    }
}
