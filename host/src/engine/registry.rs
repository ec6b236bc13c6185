//! Installed pieces by name and version; resolves `name@version-req`, and
//! finds pinned bytes by digest.
//!
//! Two indexes: by name then version (what a new save resolves `name@req`
//! against: the newest matching version), and by digest (what a run of a
//! saved version loads: the exact bytes it pinned, even after that
//! name@version was replaced or a newer version installed). A piece loaded
//! only for a pin is in the digest index alone.
//!
//! Built-in pieces are registered *pending*: their bytes are known but they
//! are compiled only when a command first needs them ([`PieceRegistry::prepare`],
//! e.g. for the pieces one workflow uses), or all at once in the background
//! ([`PieceRegistry::prepare_all`], `serve`). A pending piece is compiled at
//! most once, however many callers wait for it.

use std::collections::{BTreeMap, HashMap};
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
    /// Every loaded piece by digest (sha256 hex).
    by_digest: RwLock<HashMap<String, Arc<LoadedPiece>>>,
    /// The bytes of loaded built-ins by digest (embedded in the binary).
    builtin_bytes: RwLock<HashMap<String, &'static [u8]>>,
    /// What validation accepts as step limits (the runtime's ceilings).
    maxima: RwLock<LimitMaxima>,
    /// What validation knows of a piece, by digest: made once, so a save
    /// neither copies a piece's schemas per step nor compiles them again.
    summaries: RwLock<HashMap<String, Arc<PieceSummary>>>,
    /// Built-in pieces not compiled yet, by crate name (= piece name).
    pending: Vec<Pending>,
}

/// A built-in piece whose bytes are known and whose compiled form is made
/// on first need.
struct Pending {
    builtin: &'static crate::runtime::builtin::Builtin,
    /// Set once the piece was loaded (and added) or failed to load.
    done: OnceCell<Result<(), String>>,
}

impl PieceRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry whose built-in pieces (see
    /// [`crate::runtime::builtin::BUILTIN_PIECES`]) compile on first need.
    pub fn with_builtins(sources: &'static [crate::runtime::builtin::Builtin]) -> Self {
        PieceRegistry {
            pieces: RwLock::default(),
            by_digest: RwLock::default(),
            builtin_bytes: RwLock::default(),
            maxima: RwLock::default(),
            summaries: RwLock::default(),
            pending: sources
                .iter()
                .map(|builtin| Pending {
                    builtin,
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
                .filter(|p| names.contains(p.builtin.name))
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
        wanted.sort_by_key(|pending| std::cmp::Reverse(pending.builtin.bytes.len()));
        let loads = wanted.into_iter().map(|pending| async move {
            let done = pending
                .done
                .get_or_init(|| async {
                    match runtime.load_builtin(pending.builtin).await {
                        Ok(piece) => {
                            if piece.info().name != pending.builtin.name {
                                tracing::warn!(
                                    krate = pending.builtin.name,
                                    piece = %piece.info().name,
                                    "a built-in piece's name differs from its crate's: it is \
                                     only compiled by prepare_all"
                                );
                            }
                            write(&self.builtin_bytes)
                                .insert(piece.digest().hex().to_owned(), pending.builtin.bytes);
                            self.add(piece);
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                })
                .await;
            done.clone().map_err(|e| {
                RuntimeError::Engine(format!("built-in piece {}: {e}", pending.builtin.name))
            })
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
        self.add_pinned(piece.clone());
        let info = piece.info();
        let mut pieces = write(&self.pieces);
        pieces
            .entry(info.name.clone())
            .or_default()
            .insert(info.version.clone(), piece);
    }

    /// Register a piece by digest only: a pin's bytes, which new saves
    /// must not resolve to (an older or replaced version).
    pub fn add_pinned(&self, piece: Arc<LoadedPiece>) {
        write(&self.by_digest).insert(piece.digest().hex().to_owned(), piece);
    }

    /// Loaded pieces (by digest): one per installed version or pin this
    /// process loaded.
    pub fn loaded_count(&self) -> usize {
        self.by_digest.read().map(|m| m.len()).unwrap_or(0)
    }

    /// The loaded piece with these bytes (sha256 hex).
    pub fn by_digest(&self, digest: &str) -> Option<Arc<LoadedPiece>> {
        read(&self.by_digest).get(digest).cloned()
    }

    /// The embedded bytes of a built-in piece already loaded, by digest.
    pub fn builtin_bytes(&self, digest: &str) -> Option<&'static [u8]> {
        read(&self.builtin_bytes).get(digest).copied()
    }

    /// Forget `name@version` (removed): new saves no longer resolve to it
    /// and runs pinning its digest no longer find it here.
    pub fn remove(&self, name: &str, version: &Version) -> Option<Arc<LoadedPiece>> {
        let removed = write(&self.pieces).get_mut(name)?.remove(version)?;
        write(&self.by_digest).remove(removed.digest().hex());
        write(&self.summaries).remove(removed.digest().hex());
        Some(removed)
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

    fn resolve(&self, name: &str, req: &VersionReq) -> Result<Arc<PieceSummary>, CatalogMiss> {
        let pieces = self.pieces.read().unwrap_or_else(|p| p.into_inner());
        let Some(versions) = pieces.get(name) else {
            return Err(CatalogMiss::UnknownPiece);
        };
        let Some((_, piece)) = versions.iter().rev().find(|(v, _)| req.matches(v)) else {
            return Err(CatalogMiss::NoMatchingVersion {
                available: versions.keys().cloned().collect(),
            });
        };
        Ok(self.summary(piece))
    }
}

impl PieceRegistry {
    /// What validation needs to know of a loaded piece (made on first need).
    fn summary(&self, piece: &LoadedPiece) -> Arc<PieceSummary> {
        let digest = piece.digest().hex();
        if let Some(summary) = read(&self.summaries).get(digest) {
            return summary.clone();
        }
        write(&self.summaries)
            .entry(digest.to_owned())
            .or_insert_with(|| Arc::new(summary(piece)))
            .clone()
    }
}

fn summary(piece: &LoadedPiece) -> PieceSummary {
    let info = piece.info();
    PieceSummary {
        name: info.name.clone(),
        version: info.version.clone(),
        digest: piece.digest().hex().to_owned(),
        actions: info
            .actions
            .iter()
            .map(|a| (a.name.clone(), ActionSummary::new(a.input_schema.clone())))
            .collect(),
    }
}

/// The catalog of a saved version with pins: each pinned reference
/// resolves to the exact bytes it pinned (loaded beforehand, see
/// `Executor::load_pins`), or is [`CatalogMiss::Missing`]; a reference
/// without a pin resolves as usual.
pub(crate) struct PinnedCatalog<'a> {
    pub(crate) registry: &'a PieceRegistry,
    pub(crate) pins: &'a serde_json::Map<String, serde_json::Value>,
}

impl PieceCatalog for PinnedCatalog<'_> {
    fn limit_maxima(&self) -> LimitMaxima {
        self.registry.limit_maxima()
    }

    fn resolve(&self, name: &str, req: &VersionReq) -> Result<Arc<PieceSummary>, CatalogMiss> {
        let Some(pin) = self.pins.get(&format!("{name}@{req}")) else {
            return PieceCatalog::resolve(self.registry, name, req);
        };
        let digest = pin["digest"].as_str().unwrap_or_default();
        match self.registry.by_digest(digest) {
            Some(piece) => Ok(self.registry.summary(&piece)),
            None => Err(CatalogMiss::Missing {
                version: pin["version"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| Version::new(0, 0, 0)),
                digest: digest.to_owned(),
            }),
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
