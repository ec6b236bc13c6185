//! OmniFlow: a workflow engine whose every step is a WebAssembly component.
//!
//! See `ARCHITECTURE.md` for the map. Entry points: [`runtime::Runtime`]
//! (load and run pieces).

pub mod capabilities;
pub mod runtime;
pub mod workflow;
pub mod engine;
pub mod store;
pub mod api;
pub mod server;
