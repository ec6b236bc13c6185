//! The one name grammar: workflow names, step ids, piece names and secret
//! names, checked by every entry point (workflow validation, API paths,
//! piece load, the secrets API) with [`check`].
//!
//! Every name is ASCII, starts with a letter or digit and is at most
//! [`NameKind::max_len`] long; what may follow depends on the kind:
//!
//! | kind | grammar | why |
//! |---|---|---|
//! | workflow | `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`, no `..` | appears in URL paths and logs |
//! | step id | `[A-Za-z0-9][A-Za-z0-9_-]{0,127}` | `.` separates `needs: ["x.handle"]` and template paths |
//! | piece | `[a-z0-9][a-z0-9_-]{0,63}` | referenced as `name@version` |
//! | secret | `[A-Za-z0-9][A-Za-z0-9_]{0,127}` | environment-variable-like, placed as `${secret:NAME}` |
//!
//! So no name holds `/`, whitespace, control characters (a newline cannot
//! forge a log line) or `..`. Strings that did not pass (or never had to)
//! are shown with [`escaped`] in messages and logs.

use std::fmt;

/// What a name names; each kind has its own alphabet and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A workflow's `name`.
    Workflow,
    /// A step's `id`.
    Step,
    /// A piece's name (from its `info()`, or in `"piece": "name@req"`).
    Piece,
    /// A secret's name (`${secret:NAME}`, `/api/v1/secrets/NAME`).
    Secret,
}

impl NameKind {
    /// `workflow name`, `step id`, ...
    pub fn what(self) -> &'static str {
        match self {
            NameKind::Workflow => "workflow name",
            NameKind::Step => "step id",
            NameKind::Piece => "piece name",
            NameKind::Secret => "secret name",
        }
    }

    /// Longest accepted name, in bytes (= characters: names are ASCII).
    pub fn max_len(self) -> usize {
        match self {
            NameKind::Piece => 64,
            _ => 128,
        }
    }

    /// The rule in words, for error messages.
    pub fn rule(self) -> &'static str {
        match self {
            NameKind::Workflow => {
                "1-128 characters: letters, digits, '_', '-' or '.', starting with a letter or digit, without '..'"
            }
            NameKind::Step => {
                "1-128 characters: letters, digits, '_' or '-', starting with a letter or digit"
            }
            NameKind::Piece => {
                "1-64 characters: lowercase letters, digits, '_' or '-', starting with a letter or digit"
            }
            NameKind::Secret => {
                "1-128 characters: letters, digits or '_', starting with a letter or digit"
            }
        }
    }

    fn allows(self, b: u8) -> bool {
        match self {
            NameKind::Workflow => b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'),
            NameKind::Step => b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'),
            NameKind::Piece => {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-')
            }
            NameKind::Secret => b.is_ascii_alphanumeric() || b == b'_',
        }
    }
}

/// A name that breaks the grammar. The message names the kind, shows the
/// name escaped and shortened, and states the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {} {}: {}", .kind.what(), escaped(.name), .kind.rule())]
pub struct NameError {
    /// What was being named.
    pub kind: NameKind,
    /// The rejected name (as given; show it with [`escaped`]).
    pub name: String,
}

/// Whether `name` is a valid name of this kind.
pub fn is_valid(kind: NameKind, name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    if kind == NameKind::Piece && bytes[0].is_ascii_uppercase() {
        return false;
    }
    bytes.len() <= kind.max_len() && bytes.iter().all(|&b| kind.allows(b)) && !name.contains("..")
}

/// `Ok` when `name` follows the grammar of `kind`.
pub fn check(kind: NameKind, name: &str) -> Result<(), NameError> {
    if is_valid(kind, name) {
        Ok(())
    } else {
        Err(NameError {
            kind,
            name: name.to_owned(),
        })
    }
}

/// An untrusted string for a message or a log line: quoted, control
/// characters, quotes and backslashes escaped (`"a\nb"`), cut after 64
/// characters with `…`. A newline in it cannot start a new log line.
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// See [`escaped`].
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        f.write_str("\"")?;
        for c in self.0.chars().take(SHOWN) {
            write!(f, "{}", c.escape_debug())?;
        }
        if self.0.chars().nth(SHOWN).is_some() {
            write!(f, "…\" ({} bytes)", self.0.len())
        } else {
            f.write_str("\"")
        }
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether `name` belongs to the server's own configuration and so can never
/// be a secret: every name starting with `OMNIFLOW_` (any case).
pub fn is_reserved_secret_name(name: &str) -> bool {
    name.get(..9)
        .is_some_and(|head| head.eq_ignore_ascii_case("OMNIFLOW_"))
}

/// Why a secret name is refused, as one sentence (`Ok` for a usable name).
pub fn check_secret_name(name: &str) -> Result<(), String> {
    check(NameKind::Secret, name).map_err(|e| e.to_string())?;
    if is_reserved_secret_name(name) {
        return Err(format!(
            "secret name {name:?} is reserved: names starting with OMNIFLOW_ are the server's own configuration and can never be secrets"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_per_kind() {
        for good in ["a", "hello", "feed-digest", "v1.2", "A_b-c.d", "9lives"] {
            assert!(is_valid(NameKind::Workflow, good), "{good}");
        }
        let long = "a".repeat(129);
        for bad in [
            "", ".hidden", "-x", "a/b", "a..b", "..", "a b", "a\nb", "é", "a\0", &long,
        ] {
            assert!(!is_valid(NameKind::Workflow, bad), "{bad:?}");
        }
        assert!(is_valid(NameKind::Workflow, &"a".repeat(128)));
        assert!(is_valid(NameKind::Step, "fetch_2-x"));
        assert!(!is_valid(NameKind::Step, "a.b"));
        assert!(is_valid(NameKind::Piece, "http-request"));
        assert!(!is_valid(NameKind::Piece, "Http"));
        assert!(!is_valid(NameKind::Piece, &"a".repeat(65)));
        assert!(is_valid(NameKind::Secret, "TELEGRAM_BOT_TOKEN"));
        assert!(!is_valid(NameKind::Secret, "A-B"));
        assert!(!is_valid(NameKind::Secret, "_X"));
    }

    #[test]
    fn errors_name_the_rule_and_escape_the_name() {
        let err = check(NameKind::Workflow, "evil\nINFO forged line").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(
            text.starts_with(r#"invalid workflow name "evil\nINFO forged line": 1-128"#),
            "{text}"
        );
        let long = check(NameKind::Workflow, &"x".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(long.len() < 300, "{long}");
        assert!(long.contains("(10000 bytes)"), "{long}");
    }
}
