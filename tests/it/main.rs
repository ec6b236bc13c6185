//! The one integration-test binary: real wasmtime, real
//! components built from `pieces/` and `tests/components/`, real SQLite files,
//! real PostgreSQL databases and real `omniflow` processes.

mod api;
mod cli;
mod code;
mod config;
mod edge;
mod engine;
mod export;
mod flows;
mod host_resources;
mod http;
mod layering;
mod memory;
mod oci;
mod queue;
mod readme;
mod runtime;
mod scale;
mod secrets;
mod simulate;
mod store;
mod support;
mod wire;
