//! Installed pieces by name and version; resolves `name@version-req`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::runtime::{LoadedPiece, StepLimits};
use crate::workflow::{
    ActionSummary, CatalogMiss, LimitMaxima, PieceCatalog, PieceSummary, Version, VersionReq,
};

/// The pieces a workflow may use. Built-ins and third-party pieces alike.
#[derive(Default)]
pub struct PieceRegistry {
    pieces: RwLock<BTreeMap<String, BTreeMap<Version, Arc<LoadedPiece>>>>,
    /// What validation accepts as step limits (the runtime's ceilings).
    maxima: RwLock<LimitMaxima>,
}

impl PieceRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
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
