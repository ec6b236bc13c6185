//! Installed pieces as the executor sees them: installing (validated by the
//! one loader, stored durably, usable at once), the pieces a workflow names
//! (built-ins compiled on first need, installed ones loaded from the store
//! whichever process installed them), and the pins of a saved version
//! (each `name@req` resolved to exact bytes, which its runs always load).

use std::sync::Arc;
use std::time::Duration;

use super::registry::PinnedCatalog;
use super::run::LoadFailure;
use super::{EngineError, Executor};
use crate::runtime::{LoadedPiece, RuntimeError};
use crate::store::{PieceRecord, PieceWrite, StoredWorkflow, now_rfc3339};
use crate::workflow::{ValidatedWorkflow, Workflow, validate};

/// Default longest an untrusted component may take to compile when
/// installed ([`super::ExecutorConfig::install_compile_limit`]): a compile
/// bomb is refused instead of stalling the caller (the compile runs on a
/// blocking thread, off the request path, and is left to finish in the
/// background; wasmtime cannot interrupt it).
pub const INSTALL_COMPILE_LIMIT: Duration = Duration::from_secs(60);

/// The stored record of a loaded piece.
fn record(piece: &LoadedPiece, builtin: bool, installed_by: Option<i64>) -> PieceRecord {
    let info = piece.info();
    PieceRecord {
        name: info.name.clone(),
        version: info.version.to_string(),
        digest: piece.digest().hex().to_owned(),
        size: piece.size() as u64,
        info: serde_json::json!({
            "description": info.description,
            "actions": info.actions,
        }),
        capabilities: serde_json::json!({
            "http": info.http_destinations,
            "secrets": info.secrets,
        }),
        builtin,
        installed_at: now_rfc3339(),
        installed_by,
        replaced_at: None,
    }
}

fn compile_took_too_long(limit: Duration) -> EngineError {
    EngineError::Piece(RuntimeError::CompileLimit(format!(
        "it took longer than {limit:?}: refused"
    )))
}

/// A check an install runs on the bytes before compiling them here (see
/// [`super::ExecutorConfig::compile_guard`]); `Err` says why they are refused.
#[derive(Clone)]
#[allow(clippy::type_complexity)]
pub struct CompileGuard(
    pub  Arc<
        dyn Fn(Vec<u8>) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync,
    >,
);

impl std::fmt::Debug for CompileGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompileGuard(..)")
    }
}

impl Executor {
    /// Install a piece: validate and compile `bytes` through the loader
    /// (within `install_compile_limit`), store them durably (see
    /// [`crate::store::PieceStore::put_piece`] for `replace`), and make the
    /// piece resolvable here at once (other processes find it in the store
    /// when a workflow names it).
    pub async fn install_piece(
        &self,
        bytes: &[u8],
        replace: bool,
        installed_by: Option<i64>,
    ) -> Result<(PieceRecord, PieceWrite), EngineError> {
        let limit = self.config.install_compile_limit;
        if let Some(guard) = &self.config.compile_guard {
            // E.g. a compile in a child process under a memory limit (`serve`).
            match tokio::time::timeout(limit, (guard.0)(bytes.to_vec())).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => return Err(EngineError::Piece(RuntimeError::CompileLimit(why))),
                Err(_) => return Err(compile_took_too_long(limit)),
            }
        }
        let piece = match tokio::time::timeout(limit, self.runtime.load(bytes)).await {
            Ok(loaded) => loaded?,
            Err(_) => return Err(compile_took_too_long(limit)),
        };
        let record = record(&piece, false, installed_by);
        let write = self.store.put_piece(&record, bytes, replace).await?;
        self.registry.add(piece);
        Ok((record, write))
    }

    /// Forget `name@version` (see [`crate::store::PieceStore::remove_piece`]).
    pub async fn remove_piece(
        &self,
        name: &str,
        version: &semver::Version,
        force: bool,
    ) -> Result<bool, EngineError> {
        let removed = self
            .store
            .remove_piece(name, &version.to_string(), force)
            .await?;
        self.registry.remove(name, version);
        // Versions validated against it must look again (and fail).
        self.validated_cache().clear();
        Ok(removed)
    }

    /// Make the pieces `workflow` names resolvable: built-ins compiled (or
    /// read from the cache), and every installed version of the others
    /// loaded from the store unless loaded already.
    pub async fn prepare_pieces(&self, workflow: &Workflow) -> Result<(), EngineError> {
        let names: std::collections::BTreeSet<&str> = workflow.piece_names().collect();
        self.registry
            .prepare(&self.runtime, names.iter().copied())
            .await?;
        let installed = self.store.list_pieces().await?;
        for record in installed
            .iter()
            .filter(|r| !r.builtin && names.contains(r.name.as_str()))
        {
            if self.registry.by_digest(&record.digest).is_some() {
                continue;
            }
            match self.load_stored(&record.digest).await? {
                Some(piece) => self.registry.add(piece),
                None => tracing::warn!(
                    piece = %format!("{}@{}", record.name, record.version),
                    "an installed piece's bytes are missing from the store"
                ),
            }
        }
        Ok(())
    }

    /// Load the stored bytes with `digest` (None: not stored).
    async fn load_stored(&self, digest: &str) -> Result<Option<Arc<LoadedPiece>>, EngineError> {
        let Some(bytes) = self.store.piece_bytes(digest).await? else {
            return Ok(None);
        };
        let piece = self.runtime.load(&bytes).await?;
        if piece.digest().hex() != digest {
            return Err(EngineError::Store(crate::store::StoreError::Corrupt(
                format!(
                    "piece bytes stored as sha256 {digest} hash to {}",
                    piece.digest().hex()
                ),
            )));
        }
        Ok(Some(piece))
    }

    /// Load the pinned bytes of `pins` not loaded here yet (those the
    /// store no longer has stay missing: validation names them).
    async fn load_pins(
        &self,
        pins: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), EngineError> {
        for pin in pins.values() {
            let Some(digest) = pin["digest"].as_str() else {
                continue;
            };
            if self.registry.by_digest(digest).is_none()
                && let Some(piece) = self.load_stored(digest).await?
            {
                self.registry.add_pinned(piece);
            }
        }
        Ok(())
    }

    /// Validate a stored version: against its pins when it has them (the
    /// exact bytes it was saved with), else against what is installed.
    pub(super) async fn validate_stored(
        &self,
        stored: &StoredWorkflow,
    ) -> Result<ValidatedWorkflow, LoadFailure> {
        let workflow = Workflow::from_json(&stored.definition.to_string())
            .map_err(|e| LoadFailure::Invalid(e.to_string()))?;
        self.prepare_pieces(&workflow)
            .await
            .map_err(LoadFailure::of)?;
        let result = match stored.pins.as_ref().and_then(|p| p.as_object()) {
            Some(pins) => {
                self.load_pins(pins).await.map_err(LoadFailure::of)?;
                let catalog = PinnedCatalog {
                    registry: &self.registry,
                    pins,
                };
                validate(&workflow, &catalog)
            }
            None => validate(&workflow, self.registry.as_ref()),
        };
        result.map_err(|errors| {
            LoadFailure::Invalid(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
    }

    /// Make the pieces `workflow` names resolvable and validate it against
    /// what is installed (every problem listed in [`EngineError::Invalid`]).
    pub async fn validate_workflow(
        &self,
        workflow: &Workflow,
    ) -> Result<ValidatedWorkflow, EngineError> {
        self.prepare_pieces(workflow).await?;
        validate(workflow, self.registry.as_ref()).map_err(EngineError::Invalid)
    }

    /// Validate `workflow` and save it with its pins
    /// ([`Executor::validate_workflow`], then [`Executor::save_validated`]).
    pub async fn save_workflow(&self, workflow: &Workflow) -> Result<StoredWorkflow, EngineError> {
        let validated = self.validate_workflow(workflow).await?;
        self.save_validated(&validated).await
    }

    /// Save a validated workflow with its pins (a new version if the
    /// definition or what it resolves to changed): the version a trigger's
    /// run pins ([`crate::triggers::start`]). Built-in pieces it pins are
    /// registered in the store with their bytes, so the version runs the
    /// same bytes after an upgrade of the binary.
    pub async fn save_validated(
        &self,
        validated: &ValidatedWorkflow,
    ) -> Result<StoredWorkflow, EngineError> {
        let workflow = &validated.workflow;
        let pins = validated.pins();
        for resolved in validated
            .pieces
            .iter()
            .chain(&validated.on_failure)
            .chain(&validated.on_success)
        {
            self.register_builtin(&resolved.digest).await?;
        }
        let definition = serde_json::to_value(workflow)
            .map_err(|e| EngineError::NotFound(format!("workflow does not serialize: {e}")))?;
        Ok(self
            .store
            .save_pinned_workflow(&workflow.name, &definition, Some(&pins))
            .await?)
    }

    /// Store a built-in's bytes once per process (the row says `builtin`).
    async fn register_builtin(&self, digest: &str) -> Result<(), EngineError> {
        let Some(bytes) = self.registry.builtin_bytes(digest) else {
            return Ok(());
        };
        if !self.registered_builtins().insert(digest.to_owned()) {
            return Ok(());
        }
        let Some(piece) = self.registry.by_digest(digest) else {
            return Ok(());
        };
        let record = record(&piece, true, None);
        if let Err(e) = self.store.put_piece(&record, bytes, true).await {
            self.registered_builtins().remove(digest);
            return Err(e.into());
        }
        Ok(())
    }
}
