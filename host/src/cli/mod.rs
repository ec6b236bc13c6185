//! Subcommand implementations. Each file is one command family.

pub(crate) mod bench;
pub(crate) mod piece;
