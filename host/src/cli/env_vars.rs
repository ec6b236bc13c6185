//! Every environment variable the `omniflow` binary reads: the one list
//! that `README.md`'s Configuration table is checked against
//! (`tests/it/config.rs` includes this file, so it must stay plain data
//! with no imports).

/// One variable the process reads.
pub(crate) struct EnvVar {
    /// Its name (`OMNIFLOW_SECRET_<NAME>` stands for the prefix).
    pub(crate) name: &'static str,
    /// Listed in README's Configuration table (false: internal, set by
    /// omniflow itself for a child process).
    #[allow(dead_code)] // read by tests/it/config.rs
    pub(crate) documented: bool,
}

/// `HUGGINGFACE_TOKEN`: the `llm` piece's default Hugging Face secret, read
/// from the environment without `OMNIFLOW_SECRETS_FROM_ENV` (see
/// `capabilities::secrets::DEFAULT_FROM_ENV`, which names it too).
pub(crate) const HUGGINGFACE_TOKEN: &str = "HUGGINGFACE_TOKEN";
/// `USE_OLLAMA`: the provider order of `llm` steps that name none.
pub(crate) const USE_OLLAMA: &str = "USE_OLLAMA";
/// `OLLAMA_URL`: the base URL of `ollama` providers that give none.
pub(crate) const OLLAMA_URL: &str = "OLLAMA_URL";
/// `REQUEST_TIMEOUT`: the timeout of steps that set none.
pub(crate) const REQUEST_TIMEOUT: &str = "REQUEST_TIMEOUT";
/// `MAX_RETRIES`: `retry.max_attempts` of steps with no `retry`.
pub(crate) const MAX_RETRIES: &str = "MAX_RETRIES";

/// Every variable read, documented or internal.
pub(crate) const ENV_VARS: &[EnvVar] = &[
    EnvVar {
        name: "OMNIFLOW_DATABASE_URL",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_DB",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_LISTEN",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_WORKERS",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_LEASE",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_SHUTDOWN_GRACE",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_RETENTION",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_RETENTION_FAILED",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_COMPILE_MEMORY_MB",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_ADMIN_TOKEN",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_SECRET_KEY",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_SECRET_<NAME>",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_SECRETS_FROM_ENV",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_CACHE_DIR",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_COMPILER",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_LOG",
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_LOG_FORMAT",
        documented: true,
    },
    EnvVar {
        name: HUGGINGFACE_TOKEN,
        documented: true,
    },
    EnvVar {
        name: USE_OLLAMA,
        documented: true,
    },
    EnvVar {
        name: OLLAMA_URL,
        documented: true,
    },
    EnvVar {
        name: REQUEST_TIMEOUT,
        documented: true,
    },
    EnvVar {
        name: MAX_RETRIES,
        documented: true,
    },
    EnvVar {
        name: "OMNIFLOW_BENCH_REPORT_RSS",
        documented: false,
    },
];

/// Whether a `./.env` line `key=...` is a setting copied into the process
/// environment: an `OMNIFLOW_*` name or a variable of [`ENV_VARS`], except
/// `HUGGINGFACE_TOKEN` (a secret: secrets never enter the environment).
pub(crate) fn is_dotenv_setting(key: &str) -> bool {
    key.starts_with("OMNIFLOW_")
        || (key != HUGGINGFACE_TOKEN && ENV_VARS.iter().any(|v| v.name == key))
}

/// `OMNIFLOW_*` spellings in the code that are not variables read as
/// settings: prefixes, and a name reserved so it can never be a secret.
#[allow(dead_code)] // read by tests/it/config.rs
pub(crate) const NOT_SETTINGS: &[&str] =
    &["OMNIFLOW_", "OMNIFLOW_SECRET_", "OMNIFLOW_SECRET_KEY_FILE"];
