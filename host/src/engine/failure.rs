//! The engine's own failure classes, and a failure of one step item or
//! attempt before it becomes a record.
//!
//! A step record's `error_class` is either a piece's class
//! ([`StepFailure::class`]: `out-of-fuel`, `trap(unreachable)`, ...) or one
//! of the engine's, [`FailureClass`]; the stored strings are the same as
//! they always were.

use crate::runtime::StepFailure;

/// Why the engine (not the piece) failed a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailureClass {
    /// A `when`, `for_each` or input template (or a handler's input) did not render.
    TemplateError,
    /// The step's piece version is not installed.
    PieceMissing,
    /// The input failed the action's schema, the schema is unusable, or the
    /// step's grants are invalid.
    InvalidInput,
    /// The piece's `$wait_until` is not a time.
    InvalidOutput,
    /// The host failed (a `for_each` item's attempt could not be recorded).
    HostError,
}

impl FailureClass {
    /// The class as stored in step and attempt records.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            FailureClass::TemplateError => "template-error",
            FailureClass::PieceMissing => "piece-missing",
            FailureClass::InvalidInput => "invalid-input",
            FailureClass::InvalidOutput => "invalid-output",
            FailureClass::HostError => "host-error",
        }
    }
}

/// The failure of one item/attempt, before it becomes a record.
pub(super) struct Failed {
    /// A piece's class, or a [`FailureClass`]'s string.
    pub(super) class: String,
    pub(super) message: String,
}

impl Failed {
    /// A failure of the engine's own class.
    pub(super) fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Failed {
            class: class.as_str().to_owned(),
            message: message.into(),
        }
    }
}

impl From<&StepFailure> for Failed {
    fn from(f: &StepFailure) -> Self {
        Failed {
            class: f.class(),
            message: f.message(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FailureClass;

    #[test]
    fn engine_classes_keep_their_stored_strings() {
        let all = [
            (FailureClass::TemplateError, "template-error"),
            (FailureClass::PieceMissing, "piece-missing"),
            (FailureClass::InvalidInput, "invalid-input"),
            (FailureClass::InvalidOutput, "invalid-output"),
            (FailureClass::HostError, "host-error"),
        ];
        for (class, text) in all {
            assert_eq!(class.as_str(), text);
        }
    }
}
