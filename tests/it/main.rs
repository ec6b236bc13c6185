//! The one integration-test binary (see STYLE.md): real wasmtime, real
//! components built from `pieces/` and `tests/components/`, real SQLite files.

mod cli;
mod flows;
mod runtime;
mod support;
