//! Host capabilities, one file per host import (after Spin).
//!
//! Each capability has the same three moments: `link` (add host functions to
//! the shared `Linker`, once per engine: [`log::link`]; `wasi:http` is linked
//! from wasmtime-wasi-http with [`http::HttpPolicy`] as its hook),
//! configuration (per workflow step: grants, limits) and `prepare` (per
//! instance: the state stored in the `Store`). Denials are values the guest
//! sees, never traps; only limit breaches trap.
//!
//! Capabilities sit below the runtime: they implement the generated host
//! traits ([`crate::bindings`]) on their own state and never name the
//! runtime's types.
//!
//! Two helpers serve them: [`redact`] (the [`redact::Redactor`] every
//! output of a run passes through) and `addr` (which addresses HTTP may
//! reach by host name).

mod addr;
pub mod budget;
pub mod http;
pub mod log;
pub mod redact;
pub mod secrets;
