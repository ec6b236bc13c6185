//! Process configuration: `OMNIFLOW_*` settings from the environment and
//! from `./.env`, before the command line is parsed (flags win over both,
//! the environment wins over `.env`).
//!
//! Only `OMNIFLOW_*` lines of `.env` are configuration; its other lines are
//! secrets for the local CLI (see `capabilities::secrets`) and never enter the
//! process environment.

use std::path::{Path, PathBuf};

/// The prefix of every configuration variable.
pub(crate) const PREFIX: &str = "OMNIFLOW_";

/// The database setting, and its older name still read when it is unset.
const DATABASE_URL: &str = "OMNIFLOW_DATABASE_URL";
const DATABASE_LEGACY: &str = "OMNIFLOW_DB";

/// Copy the `OMNIFLOW_*` lines of `dotenv` (when it exists) into the process
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
                        Ok((key, value)) if key.starts_with(PREFIX) => {
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

/// `--db` / `OMNIFLOW_DATABASE_URL`: a SQLite file path, or a `sqlite:` URL
/// (`sqlite:omniflow.db`, `sqlite:///var/lib/omniflow.db`, query options
/// ignored). A `postgres://` URL is refused with a clear message until that
/// backend exists.
pub(crate) fn database_path(text: &str) -> Result<PathBuf, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("the database is empty: give a file path such as omniflow.db".into());
    }
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        return Err(
            "PostgreSQL is not supported yet: use a SQLite file path or a sqlite: URL".into(),
        );
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
                "{text:?}: unknown database URL scheme (use a file path or a sqlite: URL)"
            ));
        }
        None => text,
    };
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_and_paths() {
        assert_eq!(database_path("omniflow.db"), Ok("omniflow.db".into()));
        assert_eq!(database_path("sqlite:x.db"), Ok("x.db".into()));
        assert_eq!(database_path("sqlite://x.db?mode=rwc"), Ok("x.db".into()));
        assert_eq!(
            database_path("sqlite:///var/lib/o.db"),
            Ok("/var/lib/o.db".into())
        );
        assert!(
            database_path("postgres://u@h/db")
                .unwrap_err()
                .contains("PostgreSQL")
        );
        assert!(database_path("mysql://h/db").is_err());
        assert!(database_path("sqlite::memory:").is_err());
        assert!(database_path(" ").is_err());
    }
}
