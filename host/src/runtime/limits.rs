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

/// The largest per-step limits a workflow may ask for, besides memory
/// (whose ceiling is [`RuntimeConfig::max_memory_bytes`](super::RuntimeConfig),
/// the pool's slot size). Checked when a workflow is saved or validated,
/// and applied again (as a clamp) when a step runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitCeilings {
    /// Most fuel one attempt may get (default 10 000 000 000 000: more than
    /// the longest timeout can burn, so the timeout is what binds).
    pub fuel: u64,
    /// Longest `timeout` of one attempt (default 15 minutes).
    pub timeout: Duration,
    /// Largest output cap, bytes (default 8 MiB).
    pub output_bytes: usize,
}

impl Default for LimitCeilings {
    fn default() -> Self {
        LimitCeilings {
            fuel: 10_000_000_000_000,
            timeout: Duration::from_secs(15 * 60),
            output_bytes: 8 << 20,
        }
    }
}

impl StepLimits {
    /// These limits with each value brought down to `max`'s (a runtime's
    /// [`max_limits`](super::Runtime::max_limits)); `log_bytes` is kept.
    pub fn clamped(mut self, max: &StepLimits) -> StepLimits {
        self.fuel = self.fuel.min(max.fuel);
        self.memory_bytes = self.memory_bytes.min(max.memory_bytes);
        self.timeout = self.timeout.min(max.timeout);
        self.output_bytes = self.output_bytes.min(max.output_bytes);
        self
    }
}

/// Largest kept error message (a piece's `step-error` text, a trap's
/// message, a run's error), bytes; the rest is cut off with a marker
/// before anything stores or returns it.
pub const ERROR_MESSAGE_BYTES: usize = 16 << 10;

/// `message` cut to [`ERROR_MESSAGE_BYTES`] (at a character boundary) with
/// a marker saying how long it was; shorter messages are returned as they are.
pub fn cap_error_message(message: String) -> String {
    if message.len() <= ERROR_MESSAGE_BYTES {
        return message;
    }
    let mut end = ERROR_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let total = message.len();
    let mut capped = message;
    capped.truncate(end);
    capped.push_str(&format!(
        "… [error message truncated: {total} bytes, the first {end} kept]"
    ));
    capped
}

/// Which limit a guest ran into (carried inside the trap error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitBreach {
    #[error("memory limit: tried to grow linear memory to {desired} bytes, limit is {limit}")]
    Memory { desired: usize, limit: usize },
    #[error(
        "memory limit: the host's memory ceiling refused growing linear memory to {desired} bytes ({reason})"
    )]
    Ceiling { desired: usize, reason: String },
    #[error("table limit: tried to grow a table to {desired} elements, limit is {limit}")]
    Table { desired: usize, limit: usize },
    #[error("timeout: the step ran past its {0:?} deadline")]
    Deadline(Duration),
    #[error("cancelled")]
    Cancelled,
    /// Host-side resources (wasi:http fields, requests, bodies, responses
    /// held for the guest) past the attempt's budget.
    #[error("resource limit: {0}")]
    HostResources(String),
}

const TABLE_ELEMENTS: usize = 100_000;

pub(crate) struct StepLimiter {
    memory_limit: usize,
    memory_in_use: usize,
    /// The size a growth we allowed asked for, until wasmtime reports it
    /// failed (`memory_grow_failed`: the pool's ceiling, or mmap).
    growing_to: Option<usize>,
}

impl StepLimiter {
    pub(crate) fn new(limits: &StepLimits) -> Self {
        StepLimiter {
            memory_limit: limits.memory_bytes,
            memory_in_use: 0,
            growing_to: None,
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
        self.growing_to = Some(desired);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // A growth we allowed failed on the host's side (the pooling
        // allocator's slot is smaller than the step's limit): that is the
        // memory limit too, not an allocation failure for the guest to
        // turn into an abort (`trap(unreachable)`, retried). A growth
        // refused by the memory's own declared maximum never reached
        // `memory_growing`, and stays a plain `-1` as wasm specifies.
        match self.growing_to.take() {
            Some(desired) => Err(wasmtime::Error::new(LimitBreach::Ceiling {
                desired,
                reason: format!("{error:#}"),
            })),
            None => Ok(()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_cut_at_a_character_boundary_with_a_marker() {
        assert_eq!(cap_error_message("short".into()), "short");
        let long = "é".repeat(ERROR_MESSAGE_BYTES); // 2 bytes each
        let capped = cap_error_message(long.clone());
        assert!(capped.len() < ERROR_MESSAGE_BYTES + 100, "{}", capped.len());
        assert!(capped.ends_with(&format!(
            "… [error message truncated: {} bytes, the first {ERROR_MESSAGE_BYTES} kept]",
            long.len()
        )));
    }
}
