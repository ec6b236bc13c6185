//! The workflow definition as plain serde data.
//!
//! Owns: the JSON shape a workflow author writes, its parsing (`Workflow::from_json`) and the small
//! pieces of behaviour that belong to the data itself (piece references, retry delays).
//! Must not know: pieces' catalogs, the graph, templates or how steps are executed — see the
//! sibling modules `validate`, `graph`, `template`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A workflow that could not be read at all (bad JSON or a shape that does not match).
///
/// Always the author's fault and never retryable: the definition must be fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    /// The text is not JSON, or a field is missing, unknown or of the wrong type.
    #[error("workflow: line {line}, column {column}: {message}")]
    Parse {
        /// 1-based line of the offending token.
        line: usize,
        /// 1-based column of the offending token.
        column: usize,
        /// serde's description of the problem, e.g. ``unknown field `bogus`, expected ...``.
        message: String,
    },
}

/// One workflow definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// `"name": "feed-digest"`
    pub name: String,
    /// `"description": "Summarize the feed every six hours"`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `"trigger": { "type": "schedule", "cron": "0 */6 * * *" }`; absent means manual only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// `"vars": { "CHAT_ID": "12345" }`, read in templates as `{{ vars.CHAT_ID }}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, Value>,
    /// `"steps": [ { "id": "fetch", ... }, ... ]`
    pub steps: Vec<Step>,
    /// `"on_failure": { "piece": "discord@^0.1", "action": "post", "input": { ... } }`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<Handler>,
    /// `"on_success": { "piece": "telegram@^0.1", "action": "send-message", "input": { ... } }`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_success: Option<Handler>,
}

impl Workflow {
    /// The name of every piece the workflow's steps and handlers use.
    pub fn piece_names(&self) -> impl Iterator<Item = &str> {
        self.steps
            .iter()
            .map(|step| step.piece.name.as_str())
            .chain(
                [&self.on_failure, &self.on_success]
                    .into_iter()
                    .flatten()
                    .map(|handler| handler.piece.name.as_str()),
            )
    }

    /// Parses a workflow from JSON, rejecting unknown fields.
    pub fn from_json(text: &str) -> Result<Workflow, WorkflowError> {
        serde_json::from_str(text).map_err(|err| {
            let (line, column) = (err.line(), err.column());
            let full = err.to_string();
            // serde_json appends " at line L column C"; we print the position ourselves.
            let suffix = format!(" at line {line} column {column}");
            let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
            WorkflowError::Parse {
                line,
                column,
                message,
            }
        })
    }

    /// Serializes the workflow back to pretty JSON (durations as `"30s"` strings).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a workflow always serializes")
    }
}

/// What starts a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// `{ "type": "manual" }`: API `POST /api/v1/workflows/{id}/runs` or `omniflow run`.
    // A struct variant so that unknown fields are rejected (serde ignores them for unit variants).
    Manual {},
    /// `{ "type": "schedule", "cron": "0 */6 * * *", "timezone": "Europe/Paris", "missed": "skip" }`
    Schedule {
        /// `"cron": "0 */6 * * *"`
        cron: String,
        /// `"timezone": "UTC"` (the default): an IANA zone name.
        #[serde(default = "default_timezone")]
        timezone: String,
        /// `"missed": "run_once"` (the default) or `"skip"`: what to do with fire times missed
        /// while no scheduler was running.
        #[serde(default)]
        missed: MissedFires,
    },
    /// `{ "type": "webhook", "secret_env": "FEED_HOOK_SECRET" }`: `POST /hooks/{workflow}`.
    Webhook {
        /// `"secret_env": "FEED_HOOK_SECRET"`: environment variable / secret holding the token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_env: Option<String>,
    },
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// Policy for schedule fire times missed during downtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedFires {
    /// `"run_once"`: one catch-up run, however many fire times were missed.
    #[default]
    RunOnce,
    /// `"skip"`: no catch-up; wait for the next fire time.
    Skip,
}

/// One node of the workflow graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// `"id": "fetch"`: letters, digits, `_` and `-`; referenced as `steps.fetch` in templates.
    pub id: String,
    /// `"piece": "http-request@^0.1"` or `"piece": "http-request"` (any version).
    pub piece: PieceRef,
    /// `"action": "request"`
    pub action: String,
    /// `"input": { "url": "https://example.com/{{ vars.PATH }}" }`: a template (see `template`).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    /// `"needs": ["fetch", "check.then"]`: run after `fetch`, and only if `check` chose handle `then`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// `"when": "{{ steps.summarize.output.text != '' }}"` (or the bare expression): false → skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// `"for_each": "{{ steps.fetch.output.items }}"`: run once per item (`{{ item }}`, `{{ index }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// `"concurrency": 4`: how many `for_each` items run at once (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// `"retry": { "max_attempts": 5, "initial_delay": "2s", "factor": 2, "max_delay": "1m" }`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// `"timeout": "30s"` (humantime syntax: `"500ms"`, `"2m 30s"`, `"1h"`).
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// `"limits": { "fuel": 1000000000, "memory_mb": 64, "output_kb": 1024 }`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// `"grants": { "http": ["https://example.com", { "host": "https://api.telegram.org", "secrets": ["TELEGRAM_BOT_TOKEN"] }] }`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Grants>,
}

/// `for_each` concurrency when a step does not set `concurrency`.
pub const DEFAULT_FOR_EACH_CONCURRENCY: u32 = 8;

impl Step {
    /// How many `for_each` items may run at once.
    pub fn for_each_concurrency(&self) -> u32 {
        self.concurrency.unwrap_or(DEFAULT_FOR_EACH_CONCURRENCY)
    }

    /// The retry policy in force: the step's own or the default one.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry.clone().unwrap_or_default()
    }

    /// Whether running it reads the run's data: a `when`, a `for_each`, or
    /// a template in its input. A step that does not needs no template
    /// context built for it.
    pub fn reads_run_data(&self) -> bool {
        self.when.is_some()
            || self.for_each.is_some()
            || super::template::contains_template(&self.input)
    }
}

/// A notification run once the run has finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handler {
    /// `"piece": "discord@^0.1"`
    pub piece: PieceRef,
    /// `"action": "post"`
    pub action: String,
    /// `"input": { "content": "run {{ run.id }} failed" }`
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    /// Capabilities of the handler, as for a step (e.g. the Telegram host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<Grants>,
}

/// A piece name with a semver requirement: `"http-request@^0.1"`, or `"http-request"` for any version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PieceRef {
    /// `http-request`
    pub name: String,
    /// `^0.1` (`*` when the reference has no `@`).
    pub version: semver::VersionReq,
}

/// Why a `"piece"` string is not a valid piece reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PieceRefError {
    /// The name part breaks the piece-name grammar (`crate::names`).
    #[error(
        "invalid piece reference {}: the name must be 1-64 lowercase letters, digits, '-' or '_', starting with a letter or digit (e.g. \"http-request@^0.1\")", crate::names::escaped(.0)
    )]
    BadName(String),
    /// The part after `@` is not a semver requirement.
    #[error("invalid piece reference `{reference}`: bad version requirement: {message}")]
    BadVersion {
        /// The whole reference as written.
        reference: String,
        /// semver's explanation.
        message: String,
    },
}

impl FromStr for PieceRef {
    type Err = PieceRefError;

    fn from_str(text: &str) -> Result<PieceRef, PieceRefError> {
        let (name, version) = match text.split_once('@') {
            Some((name, req)) => {
                let version = semver::VersionReq::parse(req.trim()).map_err(|err| {
                    PieceRefError::BadVersion {
                        reference: text.to_owned(),
                        message: err.to_string(),
                    }
                })?;
                (name, version)
            }
            None => (text, semver::VersionReq::STAR),
        };
        if !crate::names::is_valid(crate::names::NameKind::Piece, name) {
            return Err(PieceRefError::BadName(text.to_owned()));
        }
        Ok(PieceRef {
            name: name.to_owned(),
            version,
        })
    }
}

impl fmt::Display for PieceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.version == semver::VersionReq::STAR {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}@{}", self.name, self.version)
        }
    }
}

impl Serialize for PieceRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PieceRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PieceRef, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How a failed step is retried: by default 3 attempts, waiting 1s then 2s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// `"max_attempts": 3` (the default): total attempts, the first one included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// `"initial_delay": "1s"` (the default): wait after the first failed attempt.
    #[serde(default = "default_initial_delay", with = "duration")]
    pub initial_delay: Duration,
    /// `"factor": 2` (the default): each further wait is the previous one times this.
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// `"max_delay": "5m"`: no wait is longer than this (default: no cap).
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_delay: Option<Duration>,
    /// `"jitter": true` (the default): spread each wait by up to ±10%.
    #[serde(default = "default_jitter")]
    pub jitter: bool,
}

fn default_max_attempts() -> u32 {
    3
}
fn default_initial_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_factor() -> f64 {
    2.0
}
fn default_jitter() -> bool {
    true
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: default_max_attempts(),
            initial_delay: default_initial_delay(),
            factor: default_factor(),
            max_delay: None,
            jitter: default_jitter(),
        }
    }
}

/// The largest spread jitter applies to a delay (±10%).
const JITTER_SPREAD: f64 = 0.1;

impl RetryPolicy {
    /// The wait after attempt number `failed_attempt` (1-based) failed.
    ///
    /// `initial_delay × factor^(failed_attempt − 1)`, then, if `jitter` is on, scaled by
    /// `1 + 0.1 × (2 × jitter_unit − 1)` (so `jitter_unit` is a random number in `[0, 1]` supplied
    /// by the caller, and 0.5 means no change), then capped by `max_delay`.
    pub fn delay_for(&self, failed_attempt: u32, jitter_unit: f64) -> Duration {
        let exponent = failed_attempt.saturating_sub(1);
        let exponent = i32::try_from(exponent).unwrap_or(i32::MAX);
        let mut seconds = self.initial_delay.as_secs_f64() * self.factor.powi(exponent);
        if self.jitter {
            let unit = jitter_unit.clamp(0.0, 1.0);
            seconds *= 1.0 + JITTER_SPREAD * (2.0 * unit - 1.0);
        }
        // Huge exponents overflow to infinity; saturate instead of panicking.
        let delay = Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX);
        match self.max_delay {
            Some(cap) => delay.min(cap),
            None => delay,
        }
    }
}

/// Per-step resource limits; absent fields use the host's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// `"fuel": 1000000000`: wasmtime fuel units for one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// `"memory_mb": 64`: linear memory cap in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// `"output_kb": 1024`: output JSON size cap in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_kb: Option<u64>,
}

/// Capabilities given to one step; nothing is granted by default.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// `"http": ["https://example.com", { "host": "https://router.huggingface.co", "secrets": ["HUGGINGFACE_TOKEN"] }]`
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpGrant>,
}

/// One outbound HTTP destination a step may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HttpGrant {
    /// `"https://example.com"`, `"http://127.0.0.1:11434"`, `"https://api.example.com/v1/"`:
    /// scheme + host, optional port and path prefix; no secrets.
    Origin(String),
    /// `{ "host": "https://api.telegram.org", "secrets": ["TELEGRAM_BOT_TOKEN"] }`
    WithSecrets(HttpGrantWithSecrets),
}

/// The object form of [`HttpGrant`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpGrantWithSecrets {
    /// `"host": "https://api.telegram.org"`: same syntax as the string form.
    pub host: String,
    /// `"secrets": ["TELEGRAM_BOT_TOKEN"]`: secrets the host may place into requests to `host`.
    #[serde(default)]
    pub secrets: Vec<String>,
}

impl HttpGrant {
    /// The destination: `"https://api.telegram.org"`.
    pub fn destination(&self) -> &str {
        match self {
            HttpGrant::Origin(url) => url,
            HttpGrant::WithSecrets(grant) => &grant.host,
        }
    }

    /// Secrets the host may place into requests to this destination.
    pub fn secrets(&self) -> &[String] {
        match self {
            HttpGrant::Origin(_) => &[],
            HttpGrant::WithSecrets(grant) => &grant.secrets,
        }
    }
}

/// `Duration` as a humantime string (`"1s"`, `"2m 30s"`).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|err| {
            serde::de::Error::custom(format_args!(
                "invalid duration `{text}`: {err} (write e.g. \"500ms\", \"30s\", \"2m\")"
            ))
        })
    }
}

/// `Option<Duration>` as an optional humantime string.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::duration::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn default_retry_delays_are_1s_2s_4s() {
        let policy = RetryPolicy {
            jitter: false,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.max_attempts, 3);
        let delays: Vec<_> = (1..=3).map(|n| policy.delay_for(n, 0.0)).collect();
        assert_eq!(delays, [secs(1.0), secs(2.0), secs(4.0)]);
    }

    #[test]
    fn max_delay_caps_the_wait() {
        let policy: RetryPolicy = serde_json::from_str(
            r#"{ "initial_delay": "1s", "max_delay": "3s", "jitter": false }"#,
        )
        .unwrap();
        assert_eq!(policy.delay_for(3, 0.5), secs(3.0));
        assert_eq!(policy.delay_for(500, 0.5), secs(3.0));
    }

    #[test]
    fn jitter_spreads_by_ten_percent() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay_for(1, 0.5), secs(1.0));
        assert_eq!(policy.delay_for(1, 0.0), secs(0.9));
        assert_eq!(policy.delay_for(2, 1.0), secs(2.2));
    }

    #[test]
    fn huge_attempt_numbers_saturate() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay_for(u32::MAX, 1.0), Duration::MAX);
    }

    #[test]
    fn piece_refs_parse_and_print() {
        let any: PieceRef = "transform".parse().unwrap();
        assert_eq!(any.version, semver::VersionReq::STAR);
        assert_eq!(any.to_string(), "transform");
        let pinned: PieceRef = "http-request@^0.1".parse().unwrap();
        assert_eq!(pinned.name, "http-request");
        assert!(pinned.version.matches(&semver::Version::new(0, 1, 7)));
        assert_eq!(pinned.to_string(), "http-request@^0.1");
        assert!(matches!(
            "Http@1".parse::<PieceRef>(),
            Err(PieceRefError::BadName(_))
        ));
        assert!(matches!(
            "http@^^1".parse::<PieceRef>(),
            Err(PieceRefError::BadVersion { .. })
        ));
    }

    #[test]
    fn spec_example_round_trips() {
        let text = r#"{
          "name": "feed-digest",
          "trigger": { "type": "schedule", "cron": "0 */6 * * *" },
          "vars": { "CHAT_ID": "12345" },
          "steps": [
            { "id": "fetch", "piece": "http-request@^0.1", "action": "request",
              "input": { "method": "GET", "url": "https://example.com/feed.json" },
              "timeout": "30s",
              "grants": { "http": ["https://example.com",
                                   { "host": "https://router.huggingface.co", "secrets": ["HF"] }] },
              "retry": { "max_attempts": 3, "initial_delay": "1s", "factor": 2 } }
          ],
          "on_failure": { "piece": "discord@^0.1", "action": "post", "input": { "content": "x" } }
        }"#;
        let wf = Workflow::from_json(text).unwrap();
        assert_eq!(
            wf.trigger,
            Some(Trigger::Schedule {
                cron: "0 */6 * * *".into(),
                timezone: "UTC".into(),
                missed: MissedFires::RunOnce
            })
        );
        let step = &wf.steps[0];
        assert_eq!(step.timeout, Some(secs(30.0)));
        let grants = step.grants.as_ref().unwrap();
        assert_eq!(grants.http[0].destination(), "https://example.com");
        assert_eq!(grants.http[1].secrets(), ["HF".to_owned()]);
        let json = wf.to_json();
        assert!(json.contains(r#""timeout": "30s""#), "{json}");
        assert_eq!(Workflow::from_json(&json).unwrap(), wf);
    }

    #[test]
    fn parse_errors_name_the_field_and_position() {
        let err = Workflow::from_json("{\n  \"name\": \"x\",\n  \"stepz\": []\n}").unwrap_err();
        let WorkflowError::Parse {
            line,
            column,
            message,
        } = &err;
        assert_eq!((*line, *column), (3, 9));
        assert!(message.starts_with("unknown field `stepz`"), "{message}");
        let err =
            Workflow::from_json(r#"{"name":"x","steps":[],"trigger":{"type":"manual","x":1}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
        let err = Workflow::from_json(
            r#"{"name":"x","steps":[],"trigger":{"type":"schedule","cron":"* * * * *","tz":"UTC"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `tz`"), "{err}");
    }
}
