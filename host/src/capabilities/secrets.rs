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
    /// Values stored through the API (shared by every clone; they win over
    /// the environment).
    stored: Arc<std::sync::RwLock<HashMap<String, SecretString>>>,
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
            from_env: true,
            ..Secrets::default()
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
        if let Ok(stored) = self.stored.read()
            && let Some(value) = stored.get(name)
        {
            return Some(value.clone());
        }
        if self.from_env
            && let Ok(value) = std::env::var(name)
        {
            return Some(SecretString::from(value));
        }
        self.values.get(name).cloned()
    }

    /// Set a stored (API) secret; every clone of these secrets sees it.
    pub fn set_stored(&self, name: &str, value: SecretString) {
        if let Ok(mut stored) = self.stored.write() {
            stored.insert(name.to_string(), value);
        }
    }

    /// Forget a stored (API) secret.
    pub fn remove_stored(&self, name: &str) {
        if let Ok(mut stored) = self.stored.write() {
            stored.remove(name);
        }
    }

    /// Whether `name` has a value.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// A valid secret name: letters, digits and `_`, at most 128 characters.
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Encrypts secrets at rest (ChaCha20-Poly1305; the name is authenticated
/// data, so a ciphertext cannot be moved to another name).
pub struct SecretCipher {
    key: ring::aead::LessSafeKey,
}

impl std::fmt::Debug for SecretCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretCipher(..)")
    }
}

impl SecretCipher {
    /// The key from `OMNIFLOW_SECRET_KEY` (64 hex characters) or else from
    /// `key_file`, which is created (mode 0600, 32 random bytes as hex) when
    /// missing.
    pub fn from_env_or_file(key_file: &Path) -> Result<Self, String> {
        let hex_key = match std::env::var("OMNIFLOW_SECRET_KEY") {
            Ok(value) => value,
            Err(_) => {
                if !key_file.exists() {
                    let mut bytes = [0u8; 32];
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                        .map_err(|_| "no randomness for a secret key".to_string())?;
                    write_private(key_file, &hex::encode(bytes))?;
                }
                std::fs::read_to_string(key_file).map_err(|e| {
                    format!("reading the secret key file {}: {e}", key_file.display())
                })?
            }
        };
        let bytes = hex::decode(hex_key.trim()).map_err(|_| {
            "the secret key (OMNIFLOW_SECRET_KEY or key file) must be 64 hex characters".to_string()
        })?;
        Self::from_key(&bytes)
    }

    /// A cipher over a 32-byte key.
    pub fn from_key(bytes: &[u8]) -> Result<Self, String> {
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, bytes)
            .map_err(|_| "the secret key must be 32 bytes (64 hex characters)".to_string())?;
        Ok(SecretCipher {
            key: ring::aead::LessSafeKey::new(key),
        })
    }

    /// (nonce, ciphertext+tag) of `value` under `name`.
    pub fn seal(&self, name: &str, value: &SecretString) -> Result<(Vec<u8>, Vec<u8>), String> {
        let mut nonce = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| "no randomness for a nonce".to_string())?;
        let mut data = value.expose_secret().as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(name.as_bytes()),
                &mut data,
            )
            .map_err(|_| "encrypting the secret failed".to_string())?;
        Ok((nonce.to_vec(), data))
    }

    /// The value sealed under `name`; an error (never the value) when the key
    /// is wrong or the data was altered.
    pub fn open(
        &self,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<SecretString, String> {
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| format!("secret {name}: bad nonce"))?;
        let mut data = ciphertext.to_vec();
        let clear = self
            .key
            .open_in_place(nonce, ring::aead::Aad::from(name.as_bytes()), &mut data)
            .map_err(|_| {
                format!("secret {name} cannot be decrypted (wrong key or altered data)")
            })?;
        let text =
            String::from_utf8(clear.to_vec()).map_err(|_| format!("secret {name} is not UTF-8"))?;
        Ok(SecretString::from(text))
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("creating the secret key file {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("writing the secret key file {}: {e}", path.display()))
}

/// Replace every occurrence of the given secret values in `text` with
/// `[redacted:NAME]`. Longest values first, so a value containing another
/// is redacted whole. Empty values are ignored.
pub(crate) fn redact(text: &str, used: &[(String, SecretString)]) -> String {
    // Replacing whole UTF-8 values with ASCII markers keeps the text UTF-8.
    String::from_utf8_lossy(&redact_bytes(text.as_bytes(), used)).into_owned()
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
    fn sealed_secrets_round_trip_and_are_bound_to_their_name() {
        let cipher = SecretCipher::from_key(&[7u8; 32]).unwrap();
        let (nonce, ct) = cipher
            .seal("TOKEN", &SecretString::from("hunter2"))
            .unwrap();
        assert!(!ct.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            cipher.open("TOKEN", &nonce, &ct).unwrap().expose_secret(),
            "hunter2"
        );
        assert!(cipher.open("OTHER", &nonce, &ct).is_err());
        let wrong = SecretCipher::from_key(&[8u8; 32]).unwrap();
        assert!(wrong.open("TOKEN", &nonce, &ct).is_err());
        assert!(SecretCipher::from_key(&[1u8; 5]).is_err());
    }

    #[test]
    fn stored_values_are_shared_by_clones_and_win() {
        let s = Secrets::empty().with("X", "explicit");
        let clone = s.clone();
        s.set_stored("X", SecretString::from("stored"));
        assert_eq!(clone.get("X").unwrap().expose_secret(), "stored");
        s.remove_stored("X");
        assert_eq!(clone.get("X").unwrap().expose_secret(), "explicit");
    }

    #[test]
    fn explicit_values_are_found_and_missing_ones_are_not() {
        let s = Secrets::empty().with("X", "1");
        assert!(s.contains("X"));
        assert!(!s.contains("OMNIFLOW_TEST_SURELY_UNSET_SECRET"));
    }
}
