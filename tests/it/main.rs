//! The one integration-test binary (see STYLE.md): real wasmtime, real
//! components built from `pieces/` and `tests/components/`, real SQLite files.

mod api;
mod cli;
mod code;
mod edge;
mod engine;
mod flows;
mod http;
mod runtime;
mod store;
mod support;
mod wire;
