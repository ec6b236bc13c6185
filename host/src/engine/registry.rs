//! Installed pieces by name and version; resolves `name@version-req`.
//!
//! Built-in pieces are registered *pending*: their bytes are known but they
//! are compiled only when a command first needs them ([`PieceRegistry::prepare`],
//! e.g. for the pieces one workflow uses), or all at once in the background
//! ([`PieceRegistry::prepare_all`], `serve`). A pending piece is compiled at
//! most once, however many callers wait for it.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio::sync::OnceCell;

use crate::runtime::{LoadedPiece, Runtime, RuntimeError, StepLimits};
use crate::workflow::{
    ActionSummary, CatalogMiss, LimitMaxima, PieceCatalog, PieceSummary, Version, VersionReq,
};

/// The pieces a workflow may use. Built-ins and third-party pieces alike.
#[derive(Default)]
pub struct PieceRegistry {
    pieces: RwLock<BTreeMap<String, BTreeMap<Version, Arc<LoadedPiece>>>>,
    /// What validation accepts as step limits (the runtime's ceilings).
    maxima: RwLock<LimitMaxima>,
    /// Built-in pieces not compiled yet, by crate name (= piece name).
    pending: Vec<Pending>,
}

/// A built-in piece whose bytes are known and whose compiled form is made
/// on first need.
struct Pending {
    name: &'static str,
    bytes: &'static [u8],
    /// Set once the piece was loaded (and added) or failed to load.
    done: OnceCell<Result<(), String>>,
}

impl PieceRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry whose built-in pieces (`(crate name, bytes)`, see
    /// [`crate::runtime::builtin::BUILTIN_PIECES`]) compile on first need.
    pub fn with_builtins(sources: &'static [(&'static str, &'static [u8])]) -> Self {
        PieceRegistry {
            pieces: RwLock::default(),
            maxima: RwLock::default(),
            pending: sources
                .iter()
                .map(|&(name, bytes)| Pending {
                    name,
                    bytes,
                    done: OnceCell::new(),
                })
                .collect(),
        }
    }

    /// Compile (or take from the on-disk cache) the pending built-ins named
    /// in `names`; names that are not pending built-ins are ignored (they are
    /// installed already, or validation reports them as unknown).
    pub async fn prepare<'a>(
        &self,
        runtime: &Runtime,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), RuntimeError> {
        let wanted: Vec<&Pending> = {
            let names: std::collections::BTreeSet<&str> = names.into_iter().collect();
            self.pending
                .iter()
                .filter(|p| names.contains(p.name))
                .collect()
        };
        self.load_pending(runtime, wanted).await
    }

    /// Compile every pending built-in, several at once (`serve` does this in
    /// the background at start; `GET /pieces` before answering).
    pub async fn prepare_all(&self, runtime: &Runtime) -> Result<(), RuntimeError> {
        self.load_pending(runtime, self.pending.iter().collect())
            .await
    }

    async fn load_pending(
        &self,
        runtime: &Runtime,
        mut wanted: Vec<&Pending>,
    ) -> Result<(), RuntimeError> {
        // Largest first: where compiles take turns (the baseline compiler),
        // the biggest compile then runs before anything a loaded piece
        // keeps (its schemas' validators) exists, so the peaks do not add
        // up; where they run at once, the longest starts first.
        wanted.sort_by_key(|pending| std::cmp::Reverse(pending.bytes.len()));
        let loads = wanted.into_iter().map(|pending| async move {
            let done = pending
                .done
                .get_or_init(|| async {
                    match runtime.load_static(pending.bytes).await {
                        Ok(piece) => {
                            if piece.info().name != pending.name {
                                tracing::warn!(
                                    krate = pending.name,
                                    piece = %piece.info().name,
                                    "a built-in piece's name differs from its crate's: it is \
                                     only compiled by prepare_all"
                                );
                            }
                            self.add(piece);
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                })
                .await;
            done.clone()
                .map_err(|e| RuntimeError::Engine(format!("built-in piece {}: {e}", pending.name)))
        });
        futures::future::try_join_all(loads).await.map(drop)
    }

    /// Validate step limits against these maxima (a runtime's
    /// [`Runtime::max_limits`](crate::runtime::Runtime::max_limits)).
    pub fn set_limit_maxima(&self, max: &StepLimits) {
        let mut maxima = self.maxima.write().unwrap_or_else(|p| p.into_inner());
        maxima.fuel = max.fuel;
        maxima.memory_mb = (max.memory_bytes >> 20) as u64;
        maxima.output_kb = (max.output_bytes >> 10) as u64;
        maxima.timeout = max.timeout;
    }

    /// Register a loaded piece (replaces the same name@version).
    pub fn add(&self, piece: Arc<LoadedPiece>) {
        let info = piece.info();
        let mut pieces = self.pieces.write().unwrap_or_else(|p| p.into_inner());
        pieces
            .entry(info.name.clone())
            .or_default()
            .insert(info.version.clone(), piece);
    }

    /// The newest version of `name` satisfying `req`.
    pub fn resolve(&self, name: &str, req: &VersionReq) -> Option<Arc<LoadedPiece>> {
        let pieces = self.pieces.read().unwrap_or_else(|p| p.into_inner());
        pieces
            .get(name)?
            .iter()
            .rev()
            .find(|(version, _)| req.matches(version))
            .map(|(_, piece)| piece.clone())
    }

    /// The exact version.
    pub fn get(&self, name: &str, version: &Version) -> Option<Arc<LoadedPiece>> {
        let pieces = self.pieces.read().unwrap_or_else(|p| p.into_inner());
        pieces.get(name)?.get(version).cloned()
    }

    /// Every installed piece, by name then version.
    pub fn all(&self) -> Vec<Arc<LoadedPiece>> {
        let pieces = self.pieces.read().unwrap_or_else(|p| p.into_inner());
        pieces.values().flat_map(|v| v.values().cloned()).collect()
    }
}

impl PieceCatalog for PieceRegistry {
    fn limit_maxima(&self) -> LimitMaxima {
        self.maxima
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn resolve(&self, name: &str, req: &VersionReq) -> Result<PieceSummary, CatalogMiss> {
        let pieces = self.pieces.read().unwrap_or_else(|p| p.into_inner());
        let Some(versions) = pieces.get(name) else {
            return Err(CatalogMiss::UnknownPiece);
        };
        let Some((version, piece)) = versions.iter().rev().find(|(v, _)| req.matches(v)) else {
            return Err(CatalogMiss::NoMatchingVersion {
                available: versions.keys().cloned().collect(),
            });
        };
        Ok(PieceSummary {
            name: name.to_string(),
            version: version.clone(),
            actions: piece
                .info()
                .actions
                .iter()
                .map(|a| {
                    (
                        a.name.clone(),
                        ActionSummary {
                            input_schema: a.input_schema.clone(),
                        },
                    )
                })
                .collect(),
        })
    }
}
