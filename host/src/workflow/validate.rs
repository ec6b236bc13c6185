//! Save-time validation of a parsed workflow against the installed pieces.
//!
//! Owns: the [`PieceCatalog`] seam (what validation needs to know about pieces), every
//! save-time check, and [`ValidatedWorkflow`], the only value the executor should accept.
//! All problems are collected, each naming where it is (`steps[fetch]`) and what is wrong in
//! one line. Must not know: how pieces are stored or loaded (that is behind the catalog), wasm.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::Value;

use super::graph::{self, Dag};
use super::model::{Handler, PieceRef, RetryPolicy, Step, Workflow};
use super::template;
use crate::names::{self, NameKind};

/// What validation needs from the installed pieces (and the host they run on).
pub trait PieceCatalog {
    /// The highest installed version of `name` that satisfies `req`.
    fn resolve(
        &self,
        name: &str,
        req: &semver::VersionReq,
    ) -> Result<std::sync::Arc<PieceSummary>, CatalogMiss>;

    /// The largest per-step limits the host accepts (default: [`LimitMaxima::default`]).
    fn limit_maxima(&self) -> LimitMaxima {
        LimitMaxima::default()
    }
}

/// The largest per-step limits (`limits`, `timeout`, `concurrency`) a
/// workflow may ask for; a larger value is a validation problem naming the
/// field and the maximum. The server's are configured on its runtime
/// (`RuntimeConfig::max_memory_bytes` and `ceilings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitMaxima {
    /// `limits.fuel` (default 10 000 000 000 000).
    pub fuel: u64,
    /// `limits.memory_mb` (default 512: the memory pool's slot size).
    pub memory_mb: u64,
    /// `limits.output_kb` (default 8192).
    pub output_kb: u64,
    /// `timeout` (default 15 minutes).
    pub timeout: std::time::Duration,
    /// `concurrency` of a `for_each` (default 256).
    pub concurrency: u32,
}

impl Default for LimitMaxima {
    fn default() -> LimitMaxima {
        LimitMaxima {
            fuel: 10_000_000_000_000,
            memory_mb: 512,
            output_kb: 8 << 10,
            timeout: std::time::Duration::from_secs(15 * 60),
            concurrency: 256,
        }
    }
}

/// One installed piece version, as far as validation is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct PieceSummary {
    /// `http-request`
    pub name: String,
    /// The resolved version, e.g. `0.1.3`.
    pub version: semver::Version,
    /// The sha256 (hex) of the component bytes of that version.
    pub digest: String,
    /// Actions by name.
    pub actions: BTreeMap<String, ActionSummary>,
}

/// One action of a piece.
#[derive(Clone)]
pub struct ActionSummary {
    /// JSON Schema of the action's input (`{}` accepts anything).
    pub input_schema: Value,
    /// The schema compiled, on first use (a catalog hands out the same
    /// summary for every save, so each schema compiles once).
    validator: std::sync::Arc<std::sync::OnceLock<Result<InputValidator, String>>>,
}

impl ActionSummary {
    /// An action whose input follows `input_schema`.
    pub fn new(input_schema: Value) -> ActionSummary {
        ActionSummary {
            input_schema,
            validator: Default::default(),
        }
    }

    /// Every way `input` breaks the input schema, sorted (`Err`: the schema
    /// itself is unusable, and why).
    pub fn input_errors(&self, input: &Value) -> Result<Vec<String>, String> {
        match self
            .validator
            .get_or_init(|| InputValidator::compile(&self.input_schema))
        {
            Ok(validator) => Ok(validator.errors(input)),
            Err(why) => Err(why.clone()),
        }
    }
}

impl PartialEq for ActionSummary {
    fn eq(&self, other: &Self) -> bool {
        self.input_schema == other.input_schema
    }
}

impl fmt::Debug for ActionSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionSummary")
            .field("input_schema", &self.input_schema)
            .finish_non_exhaustive()
    }
}

/// Why a catalog could not resolve a piece reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogMiss {
    /// No version of the piece is installed.
    UnknownPiece,
    /// Versions are installed, but none satisfies the requirement.
    NoMatchingVersion {
        /// Installed versions, for the error message.
        available: Vec<semver::Version>,
    },
    /// The workflow version pins bytes that are no longer installed.
    Missing {
        /// The pinned version.
        version: semver::Version,
        /// The pinned digest (sha256 hex).
        digest: String,
    },
}

/// One problem with a workflow: `steps[fetch]: unknown piece `nope``.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Where: `workflow`, `steps[fetch]`, `steps[fetch].input.url`, `on_failure`, ...
    pub at: String,
    /// What is wrong, one line.
    pub message: String,
}

impl ValidationError {
    pub(crate) fn new(at: impl Into<String>, message: impl Into<String>) -> ValidationError {
        ValidationError {
            at: at.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// A piece reference resolved to one installed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPiece {
    /// `http-request`
    pub name: String,
    /// `0.1.3`
    pub version: semver::Version,
    /// The sha256 (hex) of the bytes it runs.
    pub digest: String,
}

/// A workflow that passed [`validate`], with what validation worked out.
#[derive(Debug, Clone)]
pub struct ValidatedWorkflow {
    /// The definition as written.
    pub workflow: Workflow,
    /// Its graph.
    pub dag: Dag,
    /// Per step (same index as `workflow.steps`): the piece version it runs.
    pub pieces: Vec<ResolvedPiece>,
    /// The piece version of `on_failure`, if any.
    pub on_failure: Option<ResolvedPiece>,
    /// The piece version of `on_success`, if any.
    pub on_success: Option<ResolvedPiece>,
}

impl ValidatedWorkflow {
    /// What each piece reference (`name@req`, as written) resolved to:
    /// `{"transform@^0.1": {"name", "version", "digest"}}`, what a saved
    /// version pins.
    pub fn pins(&self) -> serde_json::Value {
        let steps = self
            .workflow
            .steps
            .iter()
            .map(|s| &s.piece)
            .zip(self.pieces.iter().map(Some));
        let handlers = [
            (&self.workflow.on_failure, &self.on_failure),
            (&self.workflow.on_success, &self.on_success),
        ]
        .into_iter()
        .filter_map(|(handler, resolved)| Some((&handler.as_ref()?.piece, resolved.as_ref())));
        let mut pins = serde_json::Map::new();
        for (reference, resolved) in steps.chain(handlers) {
            if let Some(resolved) = resolved {
                // Steps naming the same reference resolved it the same way.
                pins.entry(format!("{}@{}", reference.name, reference.version))
                    .or_insert_with(|| {
                        serde_json::json!({
                            "name": resolved.name,
                            "version": resolved.version.to_string(),
                            "digest": resolved.digest,
                        })
                    });
            }
        }
        serde_json::Value::Object(pins)
    }
}

/// Checks everything that can be checked before a run, returning every problem found.
pub fn validate(
    workflow: &Workflow,
    catalog: &dyn PieceCatalog,
) -> Result<ValidatedWorkflow, Vec<ValidationError>> {
    let mut errors = Vec::new();
    if workflow.name.trim().is_empty() {
        errors.push(ValidationError::new("workflow", "name must not be empty"));
    } else if let Err(e) = names::check(NameKind::Workflow, &workflow.name) {
        errors.push(ValidationError::new("workflow", e.to_string()));
    }
    if workflow.steps.is_empty() {
        errors.push(ValidationError::new("workflow", "has no steps"));
    }
    check_ids(&workflow.steps, &mut errors);
    if let Some(super::Trigger::Webhook {
        secret_env: Some(name),
    }) = &workflow.trigger
        && let Err(why) = crate::names::check_secret_name(name)
    {
        errors.push(ValidationError::new("trigger.secret_env", why));
    }
    let maxima = catalog.limit_maxima();

    let mut pieces = Vec::with_capacity(workflow.steps.len());
    for step in &workflow.steps {
        let at = step_at(&step.id);
        pieces.push(check_call(
            &at,
            &step.piece,
            &step.action,
            &step.input,
            catalog,
            &mut errors,
        ));
        if let Some(retry) = &step.retry {
            check_retry(&at, retry, &mut errors);
        }
        check_grants(&at, step.grants.as_ref(), &mut errors);
        check_limits(&at, step, &maxima, &mut errors);
    }

    let dag = Dag::build(&workflow.steps).map_err(|graph_errors| errors.extend(graph_errors));
    super::template_names::check_template_names(workflow, &mut errors);

    let handlers = [
        ("on_failure", &workflow.on_failure),
        ("on_success", &workflow.on_success),
    ];
    let mut resolved_handlers = Vec::new();
    for (at, handler) in handlers {
        if let Some(handler) = handler {
            check_grants(at, handler.grants.as_ref(), &mut errors);
        }
        let resolved = handler
            .as_ref()
            .and_then(|handler| check_handler(at, handler, workflow, catalog, &mut errors));
        resolved_handlers.push(resolved);
    }

    match (dag, errors.is_empty()) {
        (Ok(dag), true) => {
            let [on_failure, on_success] =
                <[Option<ResolvedPiece>; 2]>::try_from(resolved_handlers).expect("two handlers");
            Ok(ValidatedWorkflow {
                workflow: workflow.clone(),
                dag,
                pieces: pieces.into_iter().map(|p| p.expect("no errors")).collect(),
                on_failure,
                on_success,
            })
        }
        _ => Err(errors),
    }
}

/// Where a step's problems are: `steps[fetch]`; an id that breaks the name
/// grammar is shown escaped and shortened (`steps["a\nb"]`).
pub(crate) fn step_at(id: &str) -> String {
    if names::is_valid(NameKind::Step, id) {
        format!("steps[{id}]")
    } else {
        format!("steps[{}]", names::escaped(id))
    }
}

/// Each limit a step sets is at least 1 and at most the host's maximum.
fn check_limits(at: &str, step: &Step, max: &LimitMaxima, errors: &mut Vec<ValidationError>) {
    let mut check = |field: &str, value: u64, maximum: u64, unit: &str| {
        let message = if value == 0 {
            "must be at least 1".to_owned()
        } else if value > maximum {
            format!("{value} is above this server's maximum of {maximum}{unit}")
        } else {
            return;
        };
        errors.push(ValidationError::new(format!("{at}.{field}"), message));
    };
    if let Some(limits) = &step.limits {
        if let Some(fuel) = limits.fuel {
            check("limits.fuel", fuel, max.fuel, "");
        }
        if let Some(mb) = limits.memory_mb {
            check("limits.memory_mb", mb, max.memory_mb, " MiB");
        }
        if let Some(kb) = limits.output_kb {
            check("limits.output_kb", kb, max.output_kb, " KiB");
        }
    }
    if let Some(concurrency) = step.concurrency {
        check(
            "concurrency",
            u64::from(concurrency),
            u64::from(max.concurrency),
            "",
        );
    }
    if let Some(timeout) = step.timeout {
        if timeout.is_zero() {
            errors.push(ValidationError::new(
                format!("{at}.timeout"),
                "must be longer than 0",
            ));
        } else if timeout > max.timeout {
            errors.push(ValidationError::new(
                format!("{at}.timeout"),
                format!(
                    "{} is above this server's maximum of {}",
                    humantime::format_duration(timeout),
                    humantime::format_duration(max.timeout)
                ),
            ));
        }
    }
}

/// Every HTTP grant must parse (scheme, host, optional port and path prefix).
fn check_grants(at: &str, grants: Option<&super::Grants>, errors: &mut Vec<ValidationError>) {
    let Some(grants) = grants else { return };
    for (i, grant) in grants.http.iter().enumerate() {
        let mut bad_names = false;
        for secret in grant.secrets() {
            if let Err(e) = names::check(NameKind::Secret, secret) {
                errors.push(ValidationError::new(
                    format!("{at}.grants.http[{i}].secrets"),
                    e.to_string(),
                ));
                bad_names = true;
            }
        }
        if bad_names {
            // Said once, with the rule (the grant parser would repeat it).
            continue;
        }
        if let Err(message) = super::grant::Grant::parse(grant.destination(), grant.secrets()) {
            errors.push(ValidationError::new(
                format!("{at}.grants.http[{i}]"),
                message,
            ));
        }
    }
}

/// An action's input schema, compiled once (compiling costs far more than
/// checking), for the engine to keep per piece action.
pub struct InputValidator(jsonschema::Validator);

impl InputValidator {
    /// Compile `schema`; the error says why it is unusable.
    pub fn compile(schema: &Value) -> Result<InputValidator, String> {
        jsonschema::validator_for(schema)
            .map(InputValidator)
            .map_err(|err| err.to_string())
    }

    /// Every way `input` breaks the schema, sorted (empty: valid).
    pub fn errors(&self, input: &Value) -> Vec<String> {
        schema_problems(&self.0, input)
    }
}

fn schema_problems(validator: &jsonschema::Validator, input: &Value) -> Vec<String> {
    let mut problems: Vec<String> = validator
        .iter_errors(input)
        .map(|err| {
            let path = err.instance_path.to_string();
            if path.is_empty() {
                err.to_string()
            } else {
                format!("{err} (at {path})")
            }
        })
        .collect();
    // The validator reports in schema-keyword order, which depends on serde_json's map ordering.
    problems.sort();
    problems
}

fn check_ids(steps: &[Step], errors: &mut Vec<ValidationError>) {
    let mut first_position: HashMap<&str, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        let position = i + 1;
        if step.id.is_empty() {
            errors.push(ValidationError::new(
                format!("steps[#{position}]"),
                "step id must not be empty",
            ));
            continue;
        }
        if let Err(e) = names::check(NameKind::Step, &step.id) {
            // The id is shown escaped (it may hold a newline or be huge).
            errors.push(ValidationError::new(step_at(&step.id), e.to_string()));
            continue;
        }
        if let Some(first) = first_position.get(step.id.as_str()) {
            errors.push(ValidationError::new(
                format!("steps[{}]", step.id),
                format!("duplicate step id (steps {first} and {position} have the same id)"),
            ));
        } else {
            first_position.insert(&step.id, position);
        }
    }
}

/// Resolves the piece and action of a step or handler and checks a template-free input.
fn check_call(
    at: &str,
    piece: &PieceRef,
    action: &str,
    input: &Value,
    catalog: &dyn PieceCatalog,
    errors: &mut Vec<ValidationError>,
) -> Option<ResolvedPiece> {
    let summary = match catalog.resolve(&piece.name, &piece.version) {
        Ok(summary) => summary,
        Err(CatalogMiss::UnknownPiece) => {
            errors.push(ValidationError::new(
                at,
                format!("unknown piece `{}`", piece.name),
            ));
            return None;
        }
        Err(CatalogMiss::Missing { version, digest }) => {
            errors.push(ValidationError::new(
                at,
                format!(
                    "piece-missing: this workflow version pins `{}@{version}` (sha256 {digest}), \
                     which is no longer installed; install it again, or save the workflow \
                     against an installed version",
                    piece.name
                ),
            ));
            return None;
        }
        Err(CatalogMiss::NoMatchingVersion { available }) => {
            let available = if available.is_empty() {
                "none installed".to_owned()
            } else {
                let list: Vec<String> = available.iter().map(ToString::to_string).collect();
                format!("available: {}", list.join(", "))
            };
            errors.push(ValidationError::new(
                at,
                format!(
                    "no version of piece `{}` matches `{}` ({available})",
                    piece.name, piece.version
                ),
            ));
            return None;
        }
    };
    let resolved = ResolvedPiece {
        name: summary.name.clone(),
        version: summary.version.clone(),
        digest: summary.digest.clone(),
    };
    let Some(action_summary) = summary.actions.get(action) else {
        let actions: Vec<&str> = summary.actions.keys().map(String::as_str).collect();
        errors.push(ValidationError::new(
            at,
            format!(
                "piece `{}@{}` has no action `{action}` (actions: {})",
                summary.name,
                summary.version,
                actions.join(", ")
            ),
        ));
        return Some(resolved);
    };
    // Inputs with templates are only known at run time; the executor checks them then.
    if !template::contains_template(input) {
        match action_summary.input_errors(input) {
            Ok(problems) => errors.extend(
                problems
                    .into_iter()
                    .map(|problem| ValidationError::new(format!("{at}.input"), problem)),
            ),
            Err(schema_error) => errors.push(ValidationError::new(
                at,
                format!(
                    "piece `{}@{}` action `{action}` has an invalid input schema: {schema_error}",
                    summary.name, summary.version
                ),
            )),
        }
    }
    Some(resolved)
}

fn check_retry(at: &str, retry: &RetryPolicy, errors: &mut Vec<ValidationError>) {
    let at = format!("{at}.retry");
    if retry.max_attempts < 1 {
        errors.push(ValidationError::new(
            &at,
            format!(
                "max_attempts must be at least 1 (got {})",
                retry.max_attempts
            ),
        ));
    }
    if !(retry.factor >= 1.0 && retry.factor.is_finite()) {
        errors.push(ValidationError::new(
            &at,
            format!("factor must be a number >= 1 (got {})", retry.factor),
        ));
    }
}

/// Handlers run after the run, so they may read any step but create no edges.
fn check_handler(
    at: &str,
    handler: &Handler,
    workflow: &Workflow,
    catalog: &dyn PieceCatalog,
    errors: &mut Vec<ValidationError>,
) -> Option<ResolvedPiece> {
    let resolved = check_call(
        at,
        &handler.piece,
        &handler.action,
        &handler.input,
        catalog,
        errors,
    );
    for (location, id) in graph::input_references(&handler.input, &format!("{at}.input"), errors) {
        if !workflow.steps.iter().any(|step| step.id == id) {
            errors.push(ValidationError::new(
                location,
                format!("references unknown step `{id}`"),
            ));
        }
    }
    resolved
}
