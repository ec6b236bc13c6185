//! Host capabilities, one file per host import (see STYLE.md, after Spin).
//!
//! Each capability has the same three moments: `link` (add host functions to
//! the shared `Linker`, once per engine), configuration (per workflow step:
//! grants, limits) and `prepare` (per instance: the state stored in the
//! `Store`). Denials are values the guest sees, never traps; only limit
//! breaches trap.

pub mod http;
pub mod log;
pub mod secrets;
