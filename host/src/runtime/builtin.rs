//! Built-in pieces: compiled from `pieces/` by `host/build.rs` and embedded
//! in the binary. They are loaded through [`Runtime::load`] exactly like a
//! third party's `.wasm`.

use std::sync::Arc;

use super::{LoadedPiece, PieceDigest, Runtime, RuntimeError};

/// A piece embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Its crate's name (normally the piece's name).
    pub name: &'static str,
    /// The component.
    pub bytes: &'static [u8],
    /// sha256 (hex) of `bytes`, computed by `build.rs`: hashing the
    /// embedded pieces at every start would read (and keep resident) every
    /// page of them, ≈ 10 MiB, even when their compiled artifacts are cached.
    pub sha256: &'static str,
}

impl Builtin {
    /// Its digest (checked against the bytes in debug builds).
    pub fn digest(&self) -> PieceDigest {
        let digest = PieceDigest(self.sha256.to_owned());
        debug_assert_eq!(digest, PieceDigest::of(self.bytes), "{}", self.name);
        digest
    }

    /// The built-in whose crate is `name`.
    pub fn named(name: &str) -> Option<&'static Builtin> {
        BUILTIN_PIECES.iter().find(|b| b.name == name)
    }
}

include!(concat!(env!("OUT_DIR"), "/builtin_pieces.rs"));

impl Runtime {
    /// Load every built-in piece.
    pub async fn load_builtins(&self) -> Result<Vec<Arc<LoadedPiece>>, RuntimeError> {
        let mut pieces = Vec::with_capacity(BUILTIN_PIECES.len());
        for builtin in BUILTIN_PIECES {
            pieces.push(self.load_builtin(builtin).await?);
        }
        Ok(pieces)
    }
}
