//! Process configuration: `OMNIFLOW_*` settings from the environment and
//! from `./.env`, before the command line is parsed (flags win over both,
//! the environment wins over `.env`).
//!
//! Only `OMNIFLOW_*` lines of `.env` and the seed's settings (`USE_OLLAMA`,
//! `OLLAMA_URL`, `REQUEST_TIMEOUT`, `MAX_RETRIES`) are configuration; its
//! other lines are secrets for the local CLI (see `capabilities::secrets`)
//! and never enter the process environment. Every variable read is listed
//! in `env_vars.rs`.

use std::path::{Path, PathBuf};

/// The database setting, and its older name still read when it is unset.
const DATABASE_URL: &str = "OMNIFLOW_DATABASE_URL";
const DATABASE_LEGACY: &str = "OMNIFLOW_DB";

/// Copy the `OMNIFLOW_*` lines (and the seed's settings) of `dotenv` (when it exists) into the process
/// environment where a variable is not already set. Returns warnings to print
/// (unreadable lines), never values.
///
/// Must run before any other thread starts: it sets environment variables.
pub(crate) fn load_dotenv(dotenv: &Path) -> Vec<String> {
    let mut warnings = Vec::new();
    if dotenv.is_file() {
        match dotenvy::from_path_iter(dotenv) {
            Ok(lines) => {
                for line in lines {
                    match line {
                        Ok((key, value)) if super::env_vars::is_dotenv_setting(&key) => {
                            if std::env::var_os(&key).is_none() {
                                set_env(&key, &value);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => warnings.push(format!(
                            "{}: skipping a line that does not parse: {e}",
                            dotenv.display()
                        )),
                    }
                }
            }
            Err(e) => warnings.push(format!("{}: cannot read it: {e}", dotenv.display())),
        }
    }
    if std::env::var_os(DATABASE_URL).is_none()
        && let Some(legacy) = std::env::var_os(DATABASE_LEGACY)
        && let Some(legacy) = legacy.to_str()
    {
        set_env(DATABASE_URL, legacy);
    }
    warnings
}

#[allow(unsafe_code)]
fn set_env(key: &str, value: &str) {
    // SAFETY: called only from `main` before the async runtime (or any other
    // thread) starts, so nothing reads the environment concurrently.
    unsafe { std::env::set_var(key, value) }
}

/// Where a command's store lives (`--db` / `OMNIFLOW_DATABASE_URL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Database {
    /// A SQLite file (the embedded default).
    Sqlite(PathBuf),
    /// A PostgreSQL database, by URL (`postgres://user@host:5432/db`).
    Postgres(String),
}

impl Database {
    /// What [`omniflow::store::open`] takes.
    pub(crate) fn url(&self) -> String {
        match self {
            Database::Sqlite(path) => path.to_string_lossy().into_owned(),
            Database::Postgres(url) => url.clone(),
        }
    }

    /// The key file of the stored secrets when `OMNIFLOW_SECRET_KEY` is
    /// unset: next to a SQLite file; none for PostgreSQL, whose processes
    /// run on several machines and must share `OMNIFLOW_SECRET_KEY`.
    pub(crate) fn key_file(&self) -> Option<PathBuf> {
        match self {
            Database::Sqlite(path) => Some(omniflow::capabilities::secrets::key_file_for(path)),
            Database::Postgres(_) => None,
        }
    }
}

impl std::fmt::Display for Database {
    /// The path, or the URL without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(&omniflow::store::postgres::redacted(url)),
        }
    }
}

/// `--db` / `OMNIFLOW_DATABASE_URL`: a SQLite file path, a `sqlite:` URL
/// (`sqlite:omniflow.db`, `sqlite:///var/lib/omniflow.db`, query options
/// ignored), or a `postgres://` / `postgresql://` URL.
pub(crate) fn database(text: &str) -> Result<Database, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "the database is empty: give a file path such as omniflow.db or a postgres:// URL"
                .into(),
        );
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Ok(Database::Postgres(text.to_owned()));
    }
    let path = match text.strip_prefix("sqlite:") {
        Some(rest) => {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let rest = rest.split('?').next().unwrap_or(rest);
            if rest.is_empty() || rest == ":memory:" {
                return Err(format!(
                    "{text:?}: the database must be a file (an in-memory database would lose every run)"
                ));
            }
            rest
        }
        None if text.contains("://") => {
            return Err(format!(
                "{text:?}: unknown database URL scheme (use a file path, a sqlite: URL or a postgres:// URL)"
            ));
        }
        None => text,
    };
    Ok(Database::Sqlite(PathBuf::from(path)))
}

/// The step defaults of the seed's variables (`REQUEST_TIMEOUT`,
/// `MAX_RETRIES`, `USE_OLLAMA`, `OLLAMA_URL`): flags of every command that
/// executes runs, each also read from its variable (and `./.env`); a flag
/// wins. A bad value stops the command with a message naming the variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct StepDefaults {
    /// Timeout of steps that set none (`30s`, `2m`, or whole seconds);
    /// default 30s, at most 15m.
    #[arg(long, env = super::env_vars::REQUEST_TIMEOUT, value_parser = request_timeout)]
    request_timeout: Option<std::time::Duration>,
    /// `retry.max_attempts` of steps with no `retry` (the first attempt
    /// counts: 1 = no retry); default 3.
    #[arg(long, env = super::env_vars::MAX_RETRIES, value_parser = max_retries)]
    max_retries: Option<u32>,
    /// Providers of `llm` steps that name none: `true` = Ollama, then
    /// Hugging Face; `false` = Hugging Face only; unset = the piece's
    /// default (Ollama).
    #[arg(long, env = super::env_vars::USE_OLLAMA, value_parser = use_ollama)]
    use_ollama: Option<bool>,
    /// Base URL of `ollama` providers that give none (the step must still
    /// grant it); default `http://127.0.0.1:11434`.
    #[arg(long, env = super::env_vars::OLLAMA_URL, value_parser = ollama_url)]
    ollama_url: Option<String>,
}

impl StepDefaults {
    /// Put these defaults into an executor's configuration.
    pub(crate) fn apply(&self, config: &mut omniflow::engine::ExecutorConfig) {
        if let Some(timeout) = self.request_timeout {
            config.default_limits.timeout = timeout;
        }
        if let Some(attempts) = self.max_retries {
            config.default_max_attempts = attempts;
        }
        config.llm_defaults = omniflow::engine::LlmDefaults {
            use_ollama: self.use_ollama,
            ollama_url: self.ollama_url.clone(),
        };
    }
}

/// Longest `REQUEST_TIMEOUT`: the runtime's ceiling on a step's timeout.
fn max_step_timeout() -> std::time::Duration {
    omniflow::runtime::LimitCeilings::default().timeout
}

/// `REQUEST_TIMEOUT` / `--request-timeout`: humantime (`30s`) or whole seconds.
pub(crate) fn request_timeout(text: &str) -> Result<std::time::Duration, String> {
    let var = super::env_vars::REQUEST_TIMEOUT;
    let t = text.trim();
    let parsed = match t.parse::<u64>() {
        Ok(secs) => Ok(std::time::Duration::from_secs(secs)),
        Err(_) => humantime::parse_duration(t).map_err(|e| e.to_string()),
    };
    let max = max_step_timeout();
    match parsed {
        Ok(d) if d.is_zero() => Err(format!(
            "{var}={text:?}: the step timeout must be more than zero"
        )),
        Ok(d) if d > max => Err(format!(
            "{var}={text:?}: longer than the largest step timeout ({})",
            humantime::format_duration(max)
        )),
        Ok(d) => Ok(d),
        Err(why) => Err(format!(
            "{var}={text:?}: expected a duration such as 30s, 2m or whole seconds ({why})"
        )),
    }
}

/// Most `MAX_RETRIES`: more attempts than any retry delay makes sense for.
const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// `MAX_RETRIES` / `--max-retries`: 1..=100.
pub(crate) fn max_retries(text: &str) -> Result<u32, String> {
    let var = super::env_vars::MAX_RETRIES;
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_ATTEMPTS_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "{var}={text:?}: expected a whole number from 1 to {MAX_ATTEMPTS_LIMIT} (the default retry.max_attempts; the first attempt counts, 1 = no retry)"
        )),
    }
}

/// `USE_OLLAMA` / `--use-ollama`: true/false, 1/0, yes/no, on/off.
pub(crate) fn use_ollama(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "{}={text:?}: expected true or false (also 1/0, yes/no, on/off)",
            super::env_vars::USE_OLLAMA
        )),
    }
}

/// `OLLAMA_URL` / `--ollama-url`: an `http(s)://host[:port][/path]` URL
/// with no credentials, query or fragment (returned without a trailing `/`).
pub(crate) fn ollama_url(text: &str) -> Result<String, String> {
    let var = super::env_vars::OLLAMA_URL;
    let t = text.trim();
    let url = url::Url::parse(t).map_err(|e| {
        format!("{var}={text:?}: not a URL ({e}); expected e.g. http://127.0.0.1:11434")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{var}={text:?}: expected an http:// or https:// URL with a host, e.g. http://127.0.0.1:11434"
        ));
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "{var}={text:?}: give scheme, host, port and path only (no credentials, query or fragment)"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_and_paths() {
        let file = |p: &str| Ok(Database::Sqlite(p.into()));
        assert_eq!(database("omniflow.db"), file("omniflow.db"));
        assert_eq!(database("sqlite:x.db"), file("x.db"));
        assert_eq!(database("sqlite://x.db?mode=rwc"), file("x.db"));
        assert_eq!(database("sqlite:///var/lib/o.db"), file("/var/lib/o.db"));
        let pg = database("postgres://u:pw@h/db").unwrap();
        assert_eq!(pg, Database::Postgres("postgres://u:pw@h/db".into()));
        assert!(pg.key_file().is_none());
        assert!(!pg.to_string().contains("pw"), "{pg}");
        assert!(database("postgresql://h/db").is_ok());
        assert!(database("mysql://h/db").unwrap_err().contains("scheme"));
        assert!(database("sqlite::memory:").is_err());
        assert!(database(" ").is_err());
    }

    #[test]
    fn seed_settings_parse_or_name_the_variable() {
        use std::time::Duration;
        assert_eq!(request_timeout("45"), Ok(Duration::from_secs(45)));
        assert_eq!(request_timeout("2m"), Ok(Duration::from_secs(120)));
        for bad in ["-1", "0", "abc", "16m"] {
            let e = request_timeout(bad).unwrap_err();
            assert!(e.starts_with("REQUEST_TIMEOUT=") && e.contains(bad), "{e}");
        }
        assert_eq!(max_retries("5"), Ok(5));
        for bad in ["abc", "0", "-2", "101"] {
            let e = max_retries(bad).unwrap_err();
            assert!(e.starts_with("MAX_RETRIES=") && e.contains(bad), "{e}");
        }
        assert_eq!(use_ollama("TRUE"), Ok(true));
        assert_eq!(use_ollama("0"), Ok(false));
        assert!(
            use_ollama("maybe")
                .unwrap_err()
                .starts_with("USE_OLLAMA=\"maybe\"")
        );
        assert_eq!(
            ollama_url("http://gpu:11434/").as_deref(),
            Ok("http://gpu:11434")
        );
        for bad in ["not a url", "ftp://x", "http://u:p@x", "http://x/?a=1"] {
            let e = ollama_url(bad).unwrap_err();
            assert!(e.starts_with("OLLAMA_URL="), "{e}");
        }
    }
}
