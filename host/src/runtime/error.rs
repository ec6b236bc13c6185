//! Errors at the runtime boundary: loading a `.wasm` and preparing to run it.
//! (How a step *ends* is [`StepFailure`](super::StepFailure), not an error.)

/// Why a piece could not be loaded or the runtime not started.
///
/// Whose fault: every variant but `Engine` and `Cache` is the piece author's
/// (the bytes are wrong) and is not retryable; `Engine`/`Cache` are ours.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Not WebAssembly at all (random bytes, a text file, an empty file).
    #[error("not a WebAssembly file: {0}")]
    NotWasm(String),
    /// A core module rather than a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the piece for \
         `wasm32-wasip2` (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// Looks like a component but does not decode or compile (e.g. truncated).
    #[error("malformed component (truncated or corrupt?): {0}")]
    Malformed(String),
    /// Imports something outside the allowed set.
    #[error(
        "the component imports `{import}`, which pieces may not use (allowed: omniflow:piece/log, \
         wasi:http/outgoing-handler, wasi:io, wasi:clocks, wasi:random, and the empty \
         wasi:cli/wasi:filesystem interfaces toolchains link by default)"
    )]
    ForbiddenImport { import: String },
    /// Does not export our `handler` interface: built for another world.
    #[error(
        "the component does not target the omniflow:piece world: it exports [{exports}] but not \
         `{expected}`"
    )]
    WrongWorld { expected: String, exports: String },
    /// Instantiation or `info()` failed, or `info()` returned nonsense.
    #[error("the piece's info() is invalid: {0}")]
    InvalidInfo(String),
    /// Engine set-up or linking failed (our fault).
    #[error("runtime error: {0}")]
    Engine(String),
    /// The compiled-artifact cache could not be used (our fault; not fatal
    /// for loading, reported for `piece inspect`).
    #[error("compilation cache: {0}")]
    Cache(String),
    /// Compiling the component went past a limit the operator set (time or
    /// memory): a compile bomb, or a component too large for this server.
    /// The piece author's; not retryable.
    #[error("compiling the component exceeded a limit: {0}")]
    CompileLimit(String),
}
