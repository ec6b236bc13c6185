//! Built-in pieces: compiled from `pieces/` by `host/build.rs` and embedded
//! in the binary. They are loaded through [`Runtime::load`] exactly like a
//! third party's `.wasm`.

use std::sync::Arc;

use super::{LoadedPiece, Runtime, RuntimeError};

include!(concat!(env!("OUT_DIR"), "/builtin_pieces.rs"));

impl Runtime {
    /// Load every built-in piece.
    pub async fn load_builtins(&self) -> Result<Vec<Arc<LoadedPiece>>, RuntimeError> {
        let mut pieces = Vec::with_capacity(BUILTIN_PIECES.len());
        for (_crate_name, bytes) in BUILTIN_PIECES {
            pieces.push(self.load_static(bytes).await?);
        }
        Ok(pieces)
    }
}
