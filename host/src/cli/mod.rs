//! Subcommand implementations. Each file is one command family.

pub(crate) mod bench;
pub(crate) mod bench_code;
pub(crate) mod bench_cold;
pub(crate) mod bench_console;
pub(crate) mod bench_http;
pub(crate) mod bench_scale;
pub(crate) mod bench_soak;
pub(crate) mod config;
pub(crate) mod env_vars;
pub(crate) mod export;
pub(crate) mod migrate;
pub(crate) mod oci;
pub(crate) mod piece;
pub(crate) mod piece_new;
pub(crate) mod run;
pub(crate) mod runs;
pub(crate) mod serve;
pub(crate) mod setup;
pub(crate) mod test;
pub(crate) mod token;
