//! Secrets: named values the host places into granted HTTP requests.
//!
//! Pieces never read secret values; they write `${secret:NAME}` and the HTTP
//! policy substitutes it (see [`super::http`]). Values are held in
//! [`SecretString`] so they do not end up in `Debug` output, logs or traces.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

/// Where secret values come from: explicit values first, then (when enabled)
/// the process environment. Cheap to clone.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Arc<HashMap<String, SecretString>>,
    from_env: bool,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        f.debug_struct("Secrets")
            .field("names", &names)
            .field("from_env", &self.from_env)
            .finish()
    }
}

impl Secrets {
    /// No secrets at all.
    pub fn empty() -> Self {
        Secrets::default()
    }

    /// Secrets from the process environment (a secret `NAME` is the
    /// variable `NAME`), plus the `KEY=VALUE` lines of `./.env` when that
    /// file exists. The environment wins over `.env`.
    pub fn from_env() -> Self {
        let mut secrets = Secrets {
            values: Arc::default(),
            from_env: true,
        };
        if Path::new(".env").is_file() {
            secrets = secrets.with_dotenv(Path::new(".env"));
        }
        secrets
    }

    /// Add the `KEY=VALUE` pairs of a dotenv file (unreadable lines are skipped
    /// with a warning that names the file, never the value).
    pub fn with_dotenv(mut self, path: &Path) -> Self {
        match dotenvy::from_path_iter(path) {
            Ok(iter) => {
                let values = Arc::make_mut(&mut self.values);
                for item in iter {
                    match item {
                        Ok((k, v)) => {
                            values.insert(k, SecretString::from(v));
                        }
                        Err(e) => {
                            tracing::warn!(file = %path.display(), "skipping a .env line: {e}")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(file = %path.display(), "cannot read .env: {e}"),
        }
        self
    }

    /// These secrets plus `name = value`.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        Arc::make_mut(&mut self.values).insert(name.to_string(), SecretString::from(value));
        self
    }

    /// The value of `name`, if known.
    pub(crate) fn get(&self, name: &str) -> Option<SecretString> {
        if self.from_env
            && let Ok(value) = std::env::var(name)
        {
            return Some(SecretString::from(value));
        }
        self.values.get(name).cloned()
    }

    /// Whether `name` has a value.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Replace every occurrence of the given secret values in `text` with
/// `[redacted:NAME]`. Longest values first, so a value containing another
/// is redacted whole. Empty values are ignored.
pub(crate) fn redact(text: &str, used: &[(String, SecretString)]) -> String {
    let mut order: Vec<&(String, SecretString)> = used
        .iter()
        .filter(|(_, v)| !v.expose_secret().is_empty())
        .collect();
    order.sort_by_key(|(_, v)| std::cmp::Reverse(v.expose_secret().len()));
    let mut out = text.to_string();
    for (name, value) in order {
        if out.contains(value.expose_secret()) {
            out = out.replace(value.expose_secret(), &format!("[redacted:{name}]"));
        }
    }
    out
}

/// Byte-level [`redact`] for bodies (non-UTF-8 bodies are scanned as bytes).
pub(crate) fn redact_bytes(body: &[u8], used: &[(String, SecretString)]) -> Vec<u8> {
    if used.is_empty() {
        return body.to_vec();
    }
    let mut out = body.to_vec();
    let mut order: Vec<&(String, SecretString)> = used
        .iter()
        .filter(|(_, v)| !v.expose_secret().is_empty())
        .collect();
    order.sort_by_key(|(_, v)| std::cmp::Reverse(v.expose_secret().len()));
    for (name, value) in order {
        let needle = value.expose_secret().as_bytes();
        let marker = format!("[redacted:{name}]").into_bytes();
        let mut result = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(needle) {
                result.extend_from_slice(&marker);
                i += needle.len();
            } else {
                result.push(out[i]);
                i += 1;
            }
        }
        out = result;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let s = Secrets::empty().with("TOKEN", "hunter2");
        let text = format!("{s:?}");
        assert!(text.contains("TOKEN"));
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn redaction_replaces_every_occurrence_longest_first() {
        let used = vec![
            ("A".to_string(), SecretString::from("abc")),
            ("B".to_string(), SecretString::from("abcdef")),
        ];
        assert_eq!(
            redact("x abcdef y abc", &used),
            "x [redacted:B] y [redacted:A]"
        );
        assert_eq!(
            redact_bytes(b"abcdef-abc", &used),
            b"[redacted:B]-[redacted:A]".to_vec()
        );
    }

    #[test]
    fn explicit_values_are_found_and_missing_ones_are_not() {
        let s = Secrets::empty().with("X", "1");
        assert!(s.contains("X"));
        assert!(!s.contains("OMNIFLOW_TEST_SURELY_UNSET_SECRET"));
    }
}
