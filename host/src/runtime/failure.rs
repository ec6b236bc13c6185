//! Why a step attempt failed, classified. This is data about the *piece's*
//! behaviour (it ends up in the run record), not a host error.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::Trap;

use crate::runtime::limits::{LimitBreach, cap_error_message};

/// The classified end of a failed attempt.
///
/// Whose fault: `InvalidInput` is the workflow author's; `Retryable`/`Fatal`
/// are what the piece reported; traps and limit breaches are the piece's
/// behaviour under its budget; `Host` is ours (and retryable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "class", rename_all = "kebab-case")]
pub enum StepFailure {
    /// The piece rejected its input (or the input failed the action's schema).
    #[error("invalid input: {message}")]
    InvalidInput { message: String },
    /// The piece reported a transient failure.
    #[error("{message}")]
    Retryable {
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// The piece reported a permanent failure.
    #[error("{message}")]
    Fatal { message: String },
    /// The attempt burned its fuel budget.
    #[error("out of fuel: the step used all {fuel} units of fuel")]
    OutOfFuel { fuel: u64 },
    /// The attempt tried to grow memory past its limit.
    #[error("{message}")]
    MemoryLimit { message: String },
    /// The attempt held more host resources (wasi:http fields, requests,
    /// bodies, unread responses; their number or bytes) than its budget.
    #[error("{message}")]
    ResourceLimit { message: String },
    /// The attempt ran past its wall-clock deadline.
    #[error("timeout: the step ran longer than {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// The guest's call stack overflowed.
    #[error("stack overflow")]
    StackOverflow,
    /// Any other trap (`unreachable` after a panic, out-of-bounds access...).
    #[error("trap({code}): {message}")]
    Trap { code: String, message: String },
    /// The output is not JSON.
    #[error("invalid output: {message}")]
    InvalidOutput { message: String },
    /// The output exceeds the output cap.
    #[error("output too large: {size} bytes, limit is {limit}")]
    OutputTooLarge { size: usize, limit: usize },
    /// The run was cancelled while the attempt ran.
    #[error("cancelled")]
    Cancelled,
    /// Something failed on the host side (our fault; retryable).
    #[error("host error: {message}")]
    Host { message: String },
    /// A fault the host injected into a test run (failure simulation)
    /// instead of calling the piece; retryable.
    #[error("{message}")]
    Simulated { message: String },
}

impl StepFailure {
    /// The class name stored in run records: `out-of-fuel`, `trap(unreachable)`, ...
    pub fn class(&self) -> String {
        match self {
            StepFailure::InvalidInput { .. } => "invalid-input".into(),
            StepFailure::Retryable { .. } => "retryable".into(),
            StepFailure::Fatal { .. } => "fatal".into(),
            StepFailure::OutOfFuel { .. } => "out-of-fuel".into(),
            StepFailure::MemoryLimit { .. } => "memory-limit".into(),
            StepFailure::ResourceLimit { .. } => "resource-limit".into(),
            StepFailure::Timeout { .. } => "timeout".into(),
            StepFailure::StackOverflow => "stack-overflow".into(),
            StepFailure::Trap { code, .. } => format!("trap({code})"),
            StepFailure::InvalidOutput { .. } => "invalid-output".into(),
            StepFailure::OutputTooLarge { .. } => "output-too-large".into(),
            StepFailure::Cancelled => "cancelled".into(),
            StepFailure::Host { .. } => "host-error".into(),
            StepFailure::Simulated { .. } => "simulated".into(),
        }
    }

    /// Whether the retry policy applies. `fatal`, `invalid-input`,
    /// `invalid-output`, `output-too-large` and `cancelled` never retry:
    /// running the same code on the same input cannot fix them.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StepFailure::Retryable { .. }
                | StepFailure::OutOfFuel { .. }
                | StepFailure::MemoryLimit { .. }
                | StepFailure::ResourceLimit { .. }
                | StepFailure::Timeout { .. }
                | StepFailure::StackOverflow
                | StepFailure::Trap { .. }
                | StepFailure::Host { .. }
                | StepFailure::Simulated { .. }
        )
    }

    /// The minimum wait the piece asked for before the next attempt.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            StepFailure::Retryable {
                retry_after_ms: Some(ms),
                ..
            } => Some(Duration::from_millis(*ms)),
            _ => None,
        }
    }

    /// The message alone, without the class.
    pub fn message(&self) -> String {
        match self {
            StepFailure::InvalidInput { message } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The same failure with every secret value of `redactor` (and its
    /// covered encodings) replaced in its text.
    pub(crate) fn redacted(self, redactor: &crate::capabilities::secrets::Redactor) -> Self {
        if redactor.is_empty() {
            return self;
        }
        self.map_text(|m| redactor.redact_str(&m))
    }

    /// The same failure with every message capped ([`cap_error_message`]):
    /// a piece's error text is stored per attempt, per step and per run.
    pub(crate) fn capped(self) -> Self {
        self.map_text(cap_error_message)
    }

    /// The same failure with `f` applied to each of its texts.
    fn map_text(self, f: impl Fn(String) -> String) -> Self {
        match self {
            StepFailure::Trap { code, message } => StepFailure::Trap {
                code: f(code),
                message: f(message),
            },
            StepFailure::MemoryLimit { message } => StepFailure::MemoryLimit {
                message: f(message),
            },
            StepFailure::ResourceLimit { message } => StepFailure::ResourceLimit {
                message: f(message),
            },
            StepFailure::InvalidOutput { message } => StepFailure::InvalidOutput {
                message: f(message),
            },
            StepFailure::Host { message } => StepFailure::Host {
                message: f(message),
            },
            StepFailure::Simulated { message } => StepFailure::Simulated {
                message: f(message),
            },
            other => other.map_piece_message(f),
        }
    }

    /// The same failure with `f` applied to the message a piece returned
    /// (`invalid-input`, `retryable`, `fatal`); other failures unchanged.
    pub(crate) fn map_piece_message(self, f: impl Fn(String) -> String) -> Self {
        match self {
            StepFailure::InvalidInput { message } => StepFailure::InvalidInput {
                message: f(message),
            },
            StepFailure::Retryable {
                message,
                retry_after_ms,
            } => StepFailure::Retryable {
                message: f(message),
                retry_after_ms,
            },
            StepFailure::Fatal { message } => StepFailure::Fatal {
                message: f(message),
            },
            other => other,
        }
    }

    /// Classify an error returned by a guest call.
    pub(crate) fn from_call_error(err: &wasmtime::Error, fuel: u64, log: &str) -> Self {
        if let Some(breach) = err.downcast_ref::<LimitBreach>() {
            return match breach {
                LimitBreach::Memory { .. }
                | LimitBreach::Ceiling { .. }
                | LimitBreach::Table { .. } => StepFailure::MemoryLimit {
                    message: breach.to_string(),
                },
                LimitBreach::Deadline(t) => StepFailure::Timeout {
                    timeout_ms: t.as_millis() as u64,
                },
                LimitBreach::Cancelled => StepFailure::Cancelled,
                LimitBreach::HostResources(_) => StepFailure::ResourceLimit {
                    message: breach.to_string(),
                },
            };
        }
        let table_full = err.chain().any(|e| {
            matches!(
                e.downcast_ref::<wasmtime::component::ResourceTableError>(),
                Some(wasmtime::component::ResourceTableError::Full)
            )
        });
        if table_full {
            return StepFailure::ResourceLimit {
                message: format!(
                    "resource limit: the step holds {} host resources (wasi:http fields, requests, responses, streams...), the most an attempt may",
                    crate::runtime::MAX_HOST_RESOURCES
                ),
            };
        }
        let fields_full = err.chain().any(|e| {
            matches!(
                e.downcast_ref::<wasmtime_wasi_http::FieldMapError>(),
                Some(
                    wasmtime_wasi_http::FieldMapError::TotalSizeTooBig
                        | wasmtime_wasi_http::FieldMapError::TooManyFields
                )
            )
        });
        if fields_full {
            return StepFailure::ResourceLimit {
                message: format!(
                    "resource limit: one set of HTTP headers (wasi:http fields) grew past {} bytes",
                    crate::runtime::FIELDS_BYTES
                ),
            };
        }
        if let Some(trap) = err.downcast_ref::<Trap>() {
            return match trap {
                Trap::OutOfFuel => StepFailure::OutOfFuel { fuel },
                Trap::StackOverflow => StepFailure::StackOverflow,
                Trap::UnreachableCodeReached => StepFailure::Trap {
                    code: "unreachable".into(),
                    message: panic_message(log).map_or_else(
                        || "the piece reached `unreachable` (an abort)".to_string(),
                        |m| format!("the piece panicked: {m}"),
                    ),
                },
                other => StepFailure::Trap {
                    code: trap_code(other),
                    message: other.to_string(),
                },
            };
        }
        StepFailure::Trap {
            code: "host-call".into(),
            message: format!("{err:#}"),
        }
    }
}

fn trap_code(trap: &Trap) -> String {
    let text = format!("{trap:?}");
    // `MemoryOutOfBounds` -> `memory-out-of-bounds`
    let mut code = String::new();
    for (i, ch) in text.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                code.push('-');
            }
            code.push(ch.to_ascii_lowercase());
        } else if ch.is_ascii_alphanumeric() {
            code.push(ch);
        }
    }
    code
}

/// Rust guests print `panicked at <file>:<line>:<col>:\n<message>` to stderr.
fn panic_message(log: &str) -> Option<String> {
    let start = log.rfind("panicked at ")?;
    let rest = &log[start + "panicked at ".len()..];
    let mut lines = rest.lines();
    let location = lines.next()?.trim_end_matches(':');
    let message = lines.next().unwrap_or("").trim();
    Some(format!("{message} (at {location})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_codes_are_kebab_case() {
        assert_eq!(trap_code(&Trap::MemoryOutOfBounds), "memory-out-of-bounds");
        assert_eq!(
            trap_code(&Trap::IntegerDivisionByZero),
            "integer-division-by-zero"
        );
    }

    #[test]
    fn finds_rust_panic_messages() {
        let log = "[info] hi\nthread '<unnamed>' panicked at src/lib.rs:7:5:\nboom\nnote: run with RUST_BACKTRACE";
        assert_eq!(
            panic_message(log).as_deref(),
            Some("boom (at src/lib.rs:7:5)")
        );
    }

    #[test]
    fn retry_classes() {
        assert!(StepFailure::OutOfFuel { fuel: 1 }.is_retryable());
        assert!(
            !StepFailure::Fatal {
                message: "x".into()
            }
            .is_retryable()
        );
        assert!(
            !StepFailure::InvalidInput {
                message: "x".into()
            }
            .is_retryable()
        );
        assert_eq!(
            StepFailure::Trap {
                code: "unreachable".into(),
                message: String::new()
            }
            .class(),
            "trap(unreachable)"
        );
        let simulated = StepFailure::Simulated {
            message: "simulated fault".into(),
        };
        assert!(simulated.is_retryable());
        assert_eq!(simulated.class(), "simulated");
        assert_eq!(simulated.retry_after(), None);
    }
}
