//! The error type an action returns.

use std::fmt;
use std::time::Duration;

/// Why an action failed; decides whether the host retries.
///
/// `?` on any `std::error::Error` converts it into a *retryable* error (the
/// common case for I/O). Use [`Error::fatal`] or [`Error::invalid_input`] for
/// failures that retrying cannot fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// The three kinds of failure the host distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input does not fit the action. Never retried.
    InvalidInput,
    /// Transient. Retried per the step's policy, waiting at least `retry_after`.
    Retryable {
        /// Minimum wait before the next attempt, if the failure says so.
        retry_after: Option<Duration>,
    },
    /// Permanent. Never retried.
    Fatal,
}

impl Error {
    /// A transient failure; the host retries it.
    pub fn retryable(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Retryable { retry_after: None },
            message: message.into(),
        }
    }

    /// A transient failure that must not be retried before `after` has passed
    /// (an HTTP `Retry-After`, a model still loading).
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        Error {
            kind: ErrorKind::Retryable {
                retry_after: Some(after),
            },
            message: message.into(),
        }
    }

    /// A permanent failure; the host never retries it.
    pub fn fatal(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Fatal,
            message: message.into(),
        }
    }

    /// The input is wrong; the host never retries it.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::InvalidInput,
            message: message.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(err: E) -> Self {
        Error::retryable(err.to_string())
    }
}

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
