//! Per-step limits and the `ResourceLimiter` that enforces memory/table caps.
//!
//! A refused growth is an error (not `Ok(false)`), so the attempt traps at the
//! allocation site with a [`LimitBreach`] we can classify precisely instead of
//! whatever the guest's allocator does on failure.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits for one step attempt. Every piece, built-in or third-party, gets them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLimits {
    /// Fuel (≈ WebAssembly instructions) the attempt may burn.
    pub fuel: u64,
    /// Linear memory cap, bytes, over all memories of the instance.
    pub memory_bytes: usize,
    /// Wall-clock budget of the attempt.
    pub timeout: Duration,
    /// Largest accepted output (JSON text), bytes.
    pub output_bytes: usize,
    /// Largest kept log, bytes; the rest is dropped with a marker.
    pub log_bytes: usize,
}

impl Default for StepLimits {
    fn default() -> Self {
        StepLimits {
            fuel: 2_000_000_000,
            memory_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            output_bytes: 1 << 20,
            log_bytes: 256 << 10,
        }
    }
}

/// Which limit a guest ran into (carried inside the trap error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitBreach {
    #[error("memory limit: tried to grow linear memory to {desired} bytes, limit is {limit}")]
    Memory { desired: usize, limit: usize },
    #[error("table limit: tried to grow a table to {desired} elements, limit is {limit}")]
    Table { desired: usize, limit: usize },
    #[error("timeout: the step ran past its {0:?} deadline")]
    Deadline(Duration),
    #[error("cancelled")]
    Cancelled,
}

const TABLE_ELEMENTS: usize = 100_000;

pub(crate) struct StepLimiter {
    memory_limit: usize,
    memory_in_use: usize,
}

impl StepLimiter {
    pub(crate) fn new(limits: &StepLimits) -> Self {
        StepLimiter {
            memory_limit: limits.memory_bytes,
            memory_in_use: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for StepLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Several memories share one budget: count only the growth.
        let total = self
            .memory_in_use
            .saturating_add(desired.saturating_sub(current));
        if total > self.memory_limit {
            return Err(wasmtime::Error::new(LimitBreach::Memory {
                desired: total,
                limit: self.memory_limit,
            }));
        }
        self.memory_in_use = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > TABLE_ELEMENTS {
            return Err(wasmtime::Error::new(LimitBreach::Table {
                desired,
                limit: TABLE_ELEMENTS,
            }));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        32
    }

    fn tables(&self) -> usize {
        32
    }

    fn memories(&self) -> usize {
        8
    }
}
