//! Workflow definitions: what an author writes, and everything that can be known about it
//! before a run. Pure data and analysis: no wasm, no storage, no async.
//!
//! 1. [`model`]: parse the JSON ([`Workflow::from_json`]) into plain serde types.
//! 2. [`validate`]: check it against the installed pieces ([`PieceCatalog`]), collecting every
//!    problem, and get a [`ValidatedWorkflow`].
//! 3. [`graph`]: the [`Dag`] of steps (edges from `needs` and from `steps.<id>` in templates).
//! 4. [`template`]: at run time, render inputs and evaluate `when` / `for_each` against a
//!    [`Scope`] of the run's data.
//!
//! ```
//! use omniflow::workflow::*;
//!
//! struct Nothing;
//! impl PieceCatalog for Nothing {
//!     fn resolve(&self, _: &str, _: &VersionReq) -> Result<std::sync::Arc<PieceSummary>, CatalogMiss> {
//!         Err(CatalogMiss::UnknownPiece)
//!     }
//! }
//! let wf = Workflow::from_json(
//!     r#"{ "name": "x", "steps": [{ "id": "a", "piece": "nope@^1", "action": "go" }] }"#,
//! )
//! .unwrap();
//! let errors = validate(&wf, &Nothing).unwrap_err();
//! assert_eq!(errors[0].to_string(), "steps[a]: unknown piece `nope`");
//! ```
//!
//! Architecture invariant: this module does not depend on wasmtime, the database, tokio or
//! axum; the API and CLI call it to validate, the executor to walk the graph and render inputs.

pub mod grant;
pub mod graph;
pub mod model;
pub mod template;
mod template_names;
pub mod validate;

pub use graph::{Dag, Dependency};
pub use model::{
    DEFAULT_FOR_EACH_CONCURRENCY, Grants, Handler, HttpGrant, HttpGrantWithSecrets, Limits,
    MissedFires, PieceRef, PieceRefError, RetryPolicy, Step, Trigger, Workflow, WorkflowError,
};
/// The semver types in this module's API, so callers need not name the crate.
pub use semver::{Version, VersionReq};
pub use template::{
    RunContext, Scope, StepContext, TemplateContext, TemplateError, eval_for_each, eval_when,
    expression_referenced_steps, referenced_steps, render_input, render_string,
};
pub use validate::{
    ActionSummary, CatalogMiss, InputValidator, LimitMaxima, PieceCatalog, PieceSummary,
    ResolvedPiece, ValidatedWorkflow, ValidationError, validate,
};
