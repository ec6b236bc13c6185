//! OmniFlow: a workflow engine whose every step is a WebAssembly component.
//!
//! See `ARCHITECTURE.md` for the map. Entry points: [`runtime::Runtime`]
//! (load and run pieces).

pub mod api;
pub(crate) mod bindings;
pub mod capabilities;
pub mod engine;
pub mod logfmt;
pub mod names;
pub mod runtime;
pub mod server;
pub mod store;
pub mod triggers;
pub mod workflow;
