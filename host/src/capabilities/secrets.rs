//! Secrets: named values the host places into granted HTTP requests.
//!
//! Pieces never read secret values; they write `${secret:NAME}` and the HTTP
//! policy substitutes it (see [`super::http`]). Values are held in
//! [`SecretString`] so they do not end up in `Debug` output, logs or traces.

pub use crate::names::{check_secret_name, is_reserved_secret_name};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

pub use super::redact::{Redactor, redact, redact_bytes};

/// Prefix of environment variables that hold secrets: `OMNIFLOW_SECRET_NAME`
/// is the secret `NAME`.
pub const ENV_PREFIX: &str = "OMNIFLOW_SECRET_";
/// Comma-separated names of plain environment variables that may be used as
/// secrets under their own name (`OMNIFLOW_SECRETS_FROM_ENV=HUGGINGFACE_TOKEN`).
pub const ENV_ALLOW_LIST: &str = "OMNIFLOW_SECRETS_FROM_ENV";
/// Plain variables that are secrets under their own names without being
/// listed in [`ENV_ALLOW_LIST`]: the `llm` piece's default Hugging Face
/// token (`${secret:HUGGINGFACE_TOKEN}`), as the seed read it.
pub const DEFAULT_FROM_ENV: [&str; 1] = ["HUGGINGFACE_TOKEN"];
/// Server configuration that shares [`ENV_PREFIX`] and is never a secret.
const CONFIG_UNDER_PREFIX: [&str; 2] = ["OMNIFLOW_SECRET_KEY", "OMNIFLOW_SECRET_KEY_FILE"];

/// Where secret values come from, in order: secrets stored through the API
/// (encrypted in the database), then the documented sources snapshotted when
/// the process builds its secrets ([`Secrets::from_env`]). A name of the
/// server's own configuration ([`is_reserved_secret_name`]) never resolves.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Documented sources and explicit values.
    values: Arc<HashMap<String, SecretString>>,
    /// Values stored through the API (shared by every clone; they win).
    stored: Arc<std::sync::RwLock<HashMap<String, SecretString>>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        f.debug_struct("Secrets").field("names", &names).finish()
    }
}

impl Secrets {
    /// No secrets at all.
    pub fn empty() -> Self {
        Secrets::default()
    }

    /// The documented sources of this process (stored secrets are added
    /// with [`Secrets::load_stored`]): the process environment and `./.env`.
    /// See [`Secrets::from_sources`].
    pub fn from_env() -> Self {
        let dotenv = Path::new(".env");
        Self::from_sources(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            dotenv.is_file().then_some(dotenv),
        )
    }

    /// Secrets from these environment variables and dotenv file, highest
    /// precedence first:
    /// 1. `OMNIFLOW_SECRET_NAME=value` is the secret `NAME` (except
    ///    `OMNIFLOW_SECRET_KEY` and `OMNIFLOW_SECRET_KEY_FILE`, configuration);
    /// 2. a plain variable `NAME` listed in `OMNIFLOW_SECRETS_FROM_ENV`
    ///    (comma-separated; from the environment, else from the dotenv file),
    ///    or named in [`DEFAULT_FROM_ENV`] (`HUGGINGFACE_TOKEN`);
    /// 3. a dotenv line `NAME=value` or `OMNIFLOW_SECRET_NAME=value`.
    ///
    /// Any other variable of the environment is never a secret, and a
    /// reserved name (`OMNIFLOW_*`) never is, whatever the source.
    pub fn from_sources(
        env: impl IntoIterator<Item = (String, String)>,
        dotenv: Option<&Path>,
    ) -> Self {
        let env: HashMap<String, String> = env.into_iter().collect();
        let dotenv_lines = dotenv.map(read_dotenv).unwrap_or_default();
        let mut values: HashMap<String, SecretString> = HashMap::new();
        // Lowest precedence first; later inserts win.
        for (key, value) in &dotenv_lines {
            if let Some(name) = secret_name_of(key, true) {
                values.insert(name, SecretString::from(value.clone()));
            }
        }
        let allow = env
            .get(ENV_ALLOW_LIST)
            .cloned()
            .or_else(|| {
                dotenv_lines
                    .iter()
                    .find(|(k, _)| k == ENV_ALLOW_LIST)
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_default();
        let listed = allow.split(',').map(str::trim).filter(|n| !n.is_empty());
        for name in DEFAULT_FROM_ENV.into_iter().chain(listed) {
            if let Err(why) = check_secret_name(name) {
                tracing::warn!("{ENV_ALLOW_LIST}: ignoring {name:?}: {why}");
                continue;
            }
            if let Some(value) = env.get(name) {
                values.insert(name.to_string(), SecretString::from(value.clone()));
            }
        }
        for (key, value) in &env {
            if let Some(name) = secret_name_of(key, false) {
                values.insert(name, SecretString::from(value.clone()));
            }
        }
        Secrets {
            values: Arc::new(values),
            ..Secrets::default()
        }
    }

    /// Add the `KEY=VALUE` pairs of a dotenv file, by the rules of
    /// [`Secrets::from_sources`] (they win over what is already known).
    pub fn with_dotenv(mut self, path: &Path) -> Self {
        let values = Arc::make_mut(&mut self.values);
        for (key, value) in read_dotenv(path) {
            if let Some(name) = secret_name_of(&key, true) {
                values.insert(name, SecretString::from(value));
            }
        }
        self
    }

    /// These secrets plus `name = value` (a reserved name is ignored).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        if !is_reserved_secret_name(name) {
            Arc::make_mut(&mut self.values).insert(name.to_string(), SecretString::from(value));
        }
        self
    }

    /// The value of `name`, if known (never for a reserved name).
    pub(crate) fn get(&self, name: &str) -> Option<SecretString> {
        if is_reserved_secret_name(name) {
            return None;
        }
        if let Ok(stored) = self.stored.read()
            && let Some(value) = stored.get(name)
        {
            return Some(value.clone());
        }
        self.values.get(name).cloned()
    }

    /// Set a stored (API) secret; every clone of these secrets sees it. A
    /// reserved name is ignored.
    pub fn set_stored(&self, name: &str, value: SecretString) {
        if is_reserved_secret_name(name) {
            return;
        }
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

    /// Decrypt every secret of `store` with `cipher` into these secrets
    /// (shared by every clone). A row that cannot be decrypted or has a
    /// reserved name is skipped with a warning naming it. Returns how many
    /// were loaded.
    pub async fn load_stored(
        &self,
        store: &dyn crate::store::Store,
        cipher: &SecretCipher,
    ) -> Result<usize, crate::store::StoreError> {
        let mut loaded = 0;
        for sealed in store.sealed_secrets().await? {
            if is_reserved_secret_name(&sealed.name) {
                tracing::warn!(
                    "stored secret {} has a reserved name and is ignored",
                    sealed.name
                );
                continue;
            }
            match cipher.open(&sealed.name, &sealed.nonce, &sealed.ciphertext) {
                Ok(value) => {
                    self.set_stored(&sealed.name, value);
                    loaded += 1;
                }
                Err(message) => tracing::warn!("{message}"),
            }
        }
        Ok(loaded)
    }
}

/// The secret name a variable `key` stands for, if it stands for one:
/// `OMNIFLOW_SECRET_NAME` → `NAME`; a plain `NAME` only from a dotenv file.
fn secret_name_of(key: &str, dotenv: bool) -> Option<String> {
    if CONFIG_UNDER_PREFIX.contains(&key) {
        return None;
    }
    let name = match key.strip_prefix(ENV_PREFIX) {
        Some(name) => name,
        None if dotenv => key,
        None => return None,
    };
    check_secret_name(name).ok().map(|()| name.to_string())
}

/// The `KEY=VALUE` lines of a dotenv file (unreadable lines are skipped with
/// a warning that names the file, never the value).
fn read_dotenv(path: &Path) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    match dotenvy::from_path_iter(path) {
        Ok(iter) => {
            for item in iter {
                match item {
                    Ok(pair) => lines.push(pair),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), "skipping a .env line: {e}")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(file = %path.display(), "cannot read .env: {e}"),
    }
    lines
}

/// Why the secrets of a process could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key is malformed, unreadable or cannot be created.
    #[error("{0}")]
    Key(String),
    /// Reading the stored secrets failed.
    #[error("reading stored secrets: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The key file used with a database file: `omniflow.db` → `omniflow.key`.
pub fn key_file_for(db: &Path) -> PathBuf {
    db.with_extension("key")
}

/// The secrets of a command (`run`, `runs resume`, `serve` alike): the
/// secrets stored in `store` (decrypted with `OMNIFLOW_SECRET_KEY`, else the
/// key file), then the documented sources of [`Secrets::from_env`].
///
/// With `create_key` (the server) a missing key file is created and the
/// cipher is returned for the secrets API. Without it (the local CLI) a
/// missing key only matters when the store holds secrets: they are skipped
/// with a warning saying where the key should be.
///
/// `key_file` is `None` for a database shared by several machines
/// (PostgreSQL): the key then comes only from `OMNIFLOW_SECRET_KEY`, which
/// every process must share; without it stored secrets are skipped with a
/// warning and the secrets API is off.
pub async fn for_process(
    store: &dyn crate::store::Store,
    key_file: Option<&Path>,
    create_key: bool,
) -> Result<(Secrets, Option<SecretCipher>), SecretsError> {
    let secrets = Secrets::from_env();
    let cipher = if std::env::var_os("OMNIFLOW_SECRET_KEY").is_some() {
        SecretCipher::from_env().map_err(SecretsError::Key)?
    } else {
        match key_file {
            Some(file) if create_key || file.exists() => {
                SecretCipher::from_env_or_file(file).map_err(SecretsError::Key)?
            }
            _ => {
                let sealed = store.sealed_secrets().await?;
                if !sealed.is_empty() {
                    let fix = match key_file {
                        Some(file) => {
                            format!("set OMNIFLOW_SECRET_KEY or provide {}", file.display())
                        }
                        None => "set OMNIFLOW_SECRET_KEY, the same in every process sharing \
                                 the database"
                            .to_owned(),
                    };
                    tracing::warn!(
                        "{} stored secret(s) cannot be used: no key ({fix})",
                        sealed.len()
                    );
                }
                return Ok((secrets, None));
            }
        }
    };
    secrets.load_stored(store, &cipher).await?;
    Ok((secrets, Some(cipher)))
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

    /// The key from `OMNIFLOW_SECRET_KEY` (64 hex characters) alone.
    pub fn from_env() -> Result<Self, String> {
        let hex_key = std::env::var("OMNIFLOW_SECRET_KEY")
            .map_err(|_| "OMNIFLOW_SECRET_KEY is not set".to_string())?;
        let bytes = hex::decode(hex_key.trim())
            .map_err(|_| "OMNIFLOW_SECRET_KEY must be 64 hex characters".to_string())?;
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

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn value(s: &Secrets, name: &str) -> Option<String> {
        s.get(name).map(|v| v.expose_secret().to_string())
    }

    #[test]
    fn only_documented_sources_are_secrets_and_server_config_never_is() {
        let dir = tempfile::tempdir().unwrap();
        let dotenv = dir.path().join(".env");
        std::fs::write(
            &dotenv,
            "FROM_DOTENV=d1\nOMNIFLOW_SECRET_PREFIXED_DOTENV=d2\nOMNIFLOW_ADMIN_TOKEN=adm\nSHADOWED=dotenv\n",
        )
        .unwrap();
        let s = Secrets::from_sources(
            env(&[
                ("OMNIFLOW_SECRET_KEY", "00ff"),
                ("OMNIFLOW_SECRET_KEY_FILE", "/k"),
                ("OMNIFLOW_SECRET_API_TOKEN", "a1"),
                ("OMNIFLOW_SECRET_OMNIFLOW_ADMIN_TOKEN", "sneaky"),
                ("OMNIFLOW_ADMIN_TOKEN", "adm"),
                ("OMNIFLOW_DATABASE_URL", "postgres://u:p@h/db"),
                ("HOME", "/root"),
                ("HUGGINGFACE_TOKEN", "hf"),
                ("UNLISTED", "u"),
                ("SHADOWED", "env"),
                (
                    "OMNIFLOW_SECRETS_FROM_ENV",
                    "HUGGINGFACE_TOKEN, SHADOWED,OMNIFLOW_DATABASE_URL,bad-name",
                ),
            ]),
            Some(&dotenv),
        );
        assert_eq!(value(&s, "API_TOKEN").as_deref(), Some("a1"));
        assert_eq!(value(&s, "HUGGINGFACE_TOKEN").as_deref(), Some("hf"));
        assert_eq!(value(&s, "FROM_DOTENV").as_deref(), Some("d1"));
        assert_eq!(value(&s, "PREFIXED_DOTENV").as_deref(), Some("d2"));
        // The environment wins over .env.
        assert_eq!(value(&s, "SHADOWED").as_deref(), Some("env"));
        for name in [
            "KEY",
            "KEY_FILE",
            "OMNIFLOW_SECRET_KEY",
            "OMNIFLOW_ADMIN_TOKEN",
            "omniflow_admin_token",
            "OMNIFLOW_DATABASE_URL",
            "HOME",
            "UNLISTED",
        ] {
            assert_eq!(value(&s, name), None, "{name} must not be a secret");
        }
        // Not even explicitly or through the store.
        let s = s.with("OMNIFLOW_SECRET_KEY", "x");
        s.set_stored("OMNIFLOW_ADMIN_TOKEN", SecretString::from("y"));
        assert!(!s.contains("OMNIFLOW_SECRET_KEY"));
        assert!(!s.contains("OMNIFLOW_ADMIN_TOKEN"));
        assert!(
            check_secret_name("OMNIFLOW_SECRET_KEY")
                .unwrap_err()
                .contains("reserved")
        );
        assert!(check_secret_name("Omniflow_x").is_err());
        assert!(check_secret_name("OMNIFLOWX").is_ok());
    }

    #[test]
    fn huggingface_token_is_a_secret_from_the_environment_without_listing_it() {
        let s = Secrets::from_sources(
            env(&[("HUGGINGFACE_TOKEN", "hf_env"), ("TELEGRAM_BOT_TOKEN", "t")]),
            None,
        );
        assert_eq!(value(&s, "HUGGINGFACE_TOKEN").as_deref(), Some("hf_env"));
        assert_eq!(value(&s, "TELEGRAM_BOT_TOKEN"), None, "not a default one");
        // The prefixed variable still wins.
        let s = Secrets::from_sources(
            env(&[
                ("HUGGINGFACE_TOKEN", "hf_env"),
                ("OMNIFLOW_SECRET_HUGGINGFACE_TOKEN", "hf_prefixed"),
            ]),
            None,
        );
        assert_eq!(
            value(&s, "HUGGINGFACE_TOKEN").as_deref(),
            Some("hf_prefixed")
        );
    }

    #[test]
    fn explicit_values_are_found_and_missing_ones_are_not() {
        let s = Secrets::empty().with("X", "1");
        assert!(s.contains("X"));
        assert!(!s.contains("OMNIFLOW_TEST_SURELY_UNSET_SECRET"));
    }
}
