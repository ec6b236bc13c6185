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
}
