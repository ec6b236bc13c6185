//! Compiled components cached on disk, keyed by piece digest + engine
//! compatibility hash, so a second start does not recompile.
//!
//! Files are written atomically (temp file + rename). The cache directory is
//! trusted like the binary itself: it belongs to the operator, and only this
//! module writes it. This is the one place in the host with `unsafe`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::runtime::PieceDigest;

pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    pub(crate) fn new(engine: &Engine, dir: PathBuf) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        ArtifactCache {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
        }
    }

    fn path(&self, digest: &PieceDigest) -> PathBuf {
        self.dir
            .join(format!("{}-{}.cwasm", digest.hex(), self.engine_key))
    }

    /// A previously compiled component, if cached and loadable.
    pub(crate) fn load(&self, engine: &Engine, digest: &PieceDigest) -> Option<Component> {
        let path = self.path(digest);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was produced by `Component::serialize` of this
        // engine configuration (the name carries the compatibility hash) and
        // lives in the operator's private cache directory (see module docs).
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), "dropping unusable cached artifact: {err:#}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Store a compiled component; failures are logged, not fatal.
    pub(crate) fn store(&self, digest: &PieceDigest, component: &Component) {
        if let Err(err) = self.try_store(digest, component) {
            tracing::warn!(dir = %self.dir.display(), "could not cache compiled piece: {err}");
        }
    }

    fn try_store(&self, digest: &PieceDigest, component: &Component) -> std::io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(digest);
        let tmp = tmp_path(&path);
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", uuid::Uuid::now_v7()));
    path.with_file_name(name)
}
