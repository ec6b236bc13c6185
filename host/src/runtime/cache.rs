//! Compiled components cached on disk, keyed by piece digest + engine
//! compatibility hash, so a second start does not recompile.
//!
//! Files are written atomically (temp file + rename), and each under an
//! OS file lock so processes sharing the directory compile a piece once. The cache directory is
//! trusted like the binary itself: it belongs to the operator, and only this
//! module writes it. This is the one place in the host with `unsafe`.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::runtime::PieceDigest;

/// Bumped when the host changes what it compiles from a piece's bytes.
const ARTIFACT_FORMAT: &str = "preinit-1";

pub(crate) struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    pub(crate) fn new(engine: &Engine, dir: PathBuf) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        // What the host does to the bytes before compiling them: artifacts
        // from before pieces were pre-initialised (`preinit`) are not reused.
        ARTIFACT_FORMAT.hash(&mut hasher);
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

    /// Compile `bytes` straight into the cache and load the result from
    /// there: the artifact exists once in memory while it is written, then
    /// only as the mapped file (`Component::new` + `serialize` held two
    /// copies at once, the peak of a cold start). When the file cannot be
    /// written (read-only or full disk: logged), the artifact is loaded
    /// from memory instead.
    pub(crate) fn compile(
        &self,
        engine: &Engine,
        digest: &PieceDigest,
        bytes: &[u8],
    ) -> wasmtime::Result<Component> {
        let path = self.path(digest);
        // Processes sharing the cache (several workers started together)
        // compile each piece once: the others wait on the lock, then load.
        let _turn = self.compile_turn(&path);
        if let Some(component) = self.load(engine, digest) {
            return Ok(component);
        }
        let artifact = engine.precompile_component(bytes)?;
        match self.write_atomically(&path, &artifact) {
            Ok(()) => {
                drop(artifact);
                // SAFETY: as in `load`: the file was just written from
                // `precompile_component` of this engine, in the operator's
                // private cache directory.
                #[allow(unsafe_code)]
                unsafe {
                    Component::deserialize_file(engine, &path)
                }
            }
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), "could not cache compiled piece: {err}");
                // SAFETY: these bytes come from `precompile_component` of
                // this very engine, a moment ago, and never left memory.
                #[allow(unsafe_code)]
                unsafe {
                    Component::deserialize(engine, &artifact)
                }
            }
        }
    }

    /// An exclusive OS lock on `<artifact>.lock` (blocking; None when the
    /// directory cannot hold one: compiling without it is only slower).
    fn compile_turn(&self, artifact: &Path) -> Option<std::fs::File> {
        std::fs::create_dir_all(&self.dir).ok()?;
        let mut name = artifact.file_name().unwrap_or_default().to_os_string();
        name.push(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(artifact.with_file_name(name))
            .ok()?;
        file.lock().ok()?;
        Some(file)
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = tmp_path(path);
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", uuid::Uuid::now_v7()));
    path.with_file_name(name)
}
