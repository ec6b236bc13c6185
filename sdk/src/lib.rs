//! # omniflow-sdk: write OmniFlow pieces in Rust
//!
//! A piece is a WebAssembly component offering one or more *actions*. With this
//! crate an action is a plain typed function; input and output are serde types
//! whose JSON Schemas are derived with `schemars` and published to the host.
//!
//! ```ignore
//! use omniflow_sdk::prelude::*;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct AddInput { a: i64, b: i64 }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct AddOutput { sum: i64 }
//!
//! /// `?` on any error means "retryable"; use `Error::fatal` for permanent failures.
//! fn add(_ctx: &Context, input: AddInput) -> Result<AddOutput> {
//!     let sum = input.a.checked_add(input.b).ok_or_else(|| Error::invalid_input("overflow"))?;
//!     Ok(AddOutput { sum })
//! }
//!
//! omniflow_sdk::export_piece!(
//!     Piece::new("adder", env!("CARGO_PKG_VERSION"), "Adds two numbers")
//!         .action("add", "Add a and b", add)
//! );
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the `.wasm` in
//! `target/wasm32-wasip2/release/` is the piece.
#![deny(missing_docs)]

#[doc(hidden)]
pub mod bindings;
mod error;
pub mod http;
pub mod log;

pub use error::{Error, ErrorKind, Result};
pub use schemars::{self, JsonSchema};
pub use serde::{self, Deserialize, Serialize};
pub use serde_json::{self, Value, json};

/// The bindings generator, for [`export_preinit!`] (which generates its
/// one-function world in the piece's own crate).
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

use bindings::exports::omniflow::piece::handler as wit;

/// Everything a piece author usually needs.
pub mod prelude {
    pub use crate::{
        Context, Deserialize, Error, ErrorKind, JsonSchema, Piece, Result, Serialize, Value, http,
        json, log,
    };
}

/// Where the current call comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The run id (UUID).
    pub run_id: String,
    /// The step id as written in the workflow.
    pub step_id: String,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// Stable across attempts of this step: send it as an idempotency key.
    pub idempotency_key: String,
}

type Handler = Box<dyn Fn(&Context, &str) -> Result<String, wit::StepError>>;

/// One action: its name, description, schemas and the function behind it.
pub struct Action {
    name: &'static str,
    description: &'static str,
    input_schema: fn() -> Value,
    output_schema: fn() -> Value,
    handler: Handler,
}

fn schema_of<T: JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Bool(true))
}

/// A piece: name, version, description and its actions.
pub struct Piece {
    name: &'static str,
    version: &'static str,
    description: &'static str,
    actions: Vec<Action>,
    http_destinations: Vec<&'static str>,
    secrets: Vec<&'static str>,
}

impl Piece {
    /// Start describing a piece. `version` is usually `env!("CARGO_PKG_VERSION")`.
    pub fn new(name: &'static str, version: &'static str, description: &'static str) -> Self {
        Piece {
            name,
            version,
            description,
            actions: Vec::new(),
            http_destinations: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// Add an action backed by a typed function.
    pub fn action<I, O>(
        mut self,
        name: &'static str,
        description: &'static str,
        run: fn(&Context, I) -> Result<O>,
    ) -> Self
    where
        I: serde::de::DeserializeOwned + JsonSchema + 'static,
        O: Serialize + JsonSchema + 'static,
    {
        let handler = move |ctx: &Context, input: &str| -> Result<String, wit::StepError> {
            let input: I = serde_json::from_str(input)
                .map_err(|e| wit::StepError::InvalidInput(format!("input: {e}")))?;
            let output = run(ctx, input).map_err(to_wit_error)?;
            serde_json::to_string(&output)
                .map_err(|e| wit::StepError::Fatal(format!("output is not JSON: {e}")))
        };
        self.actions.push(Action {
            name,
            description,
            input_schema: schema_of::<I>,
            output_schema: schema_of::<O>,
            handler: Box::new(handler),
        });
        self
    }

    /// Declare an HTTP destination this piece expects to be granted
    /// (`"https://api.telegram.org"`). Informational: the operator grants.
    pub fn http_destination(mut self, destination: &'static str) -> Self {
        self.http_destinations.push(destination);
        self
    }

    /// Declare a secret this piece expects the host to place into requests.
    pub fn secret(mut self, name: &'static str) -> Self {
        self.secrets.push(name);
        self
    }

    #[doc(hidden)]
    pub fn __info(&self) -> wit::PieceInfo {
        wit::PieceInfo {
            name: self.name.to_string(),
            version: self.version.to_string(),
            description: self.description.to_string(),
            actions: self
                .actions
                .iter()
                .map(|a| bindings::omniflow::piece::types::ActionInfo {
                    name: a.name.to_string(),
                    description: a.description.to_string(),
                    input_schema: (a.input_schema)().to_string(),
                    output_schema: (a.output_schema)().to_string(),
                })
                .collect(),
            http_destinations: self
                .http_destinations
                .iter()
                .map(|s| s.to_string())
                .collect(),
            secrets: self.secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[doc(hidden)]
    pub fn __run(
        &self,
        ctx: wit::StepContext,
        action: &str,
        input: &str,
    ) -> Result<String, wit::StepError> {
        let ctx = Context {
            run_id: ctx.run_id,
            step_id: ctx.step_id,
            attempt: ctx.attempt,
            idempotency_key: ctx.idempotency_key,
        };
        match self.actions.iter().find(|a| a.name == action) {
            Some(a) => (a.handler)(&ctx, input),
            None => {
                let known: Vec<&str> = self.actions.iter().map(|a| a.name).collect();
                Err(wit::StepError::InvalidInput(format!(
                    "piece {} has no action {action:?} (actions: {})",
                    self.name,
                    known.join(", ")
                )))
            }
        }
    }
}

fn to_wit_error(err: Error) -> wit::StepError {
    let message = err.message().to_string();
    match err.kind() {
        ErrorKind::InvalidInput => wit::StepError::InvalidInput(message),
        ErrorKind::Fatal => wit::StepError::Fatal(message),
        ErrorKind::Retryable { retry_after } => {
            wit::StepError::Retryable(bindings::omniflow::piece::types::RetryableError {
                message,
                retry_after_ms: retry_after.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            })
        }
    }
}

/// Export a piece from this crate. Takes an expression building the [`Piece`].
#[macro_export]
macro_rules! export_piece {
    ($piece:expr) => {
        #[doc(hidden)]
        struct __OmniflowPiece;

        impl $crate::bindings::exports::omniflow::piece::handler::Guest for __OmniflowPiece {
            fn info() -> $crate::bindings::exports::omniflow::piece::handler::PieceInfo {
                let piece: $crate::Piece = $piece;
                piece.__info()
            }

            fn run(
                ctx: $crate::bindings::exports::omniflow::piece::handler::StepContext,
                action: ::std::string::String,
                input: ::std::string::String,
            ) -> ::std::result::Result<
                ::std::string::String,
                $crate::bindings::exports::omniflow::piece::handler::StepError,
            > {
                let piece: $crate::Piece = $piece;
                piece.__run(ctx, &action, &input)
            }
        }

        $crate::bindings::export!(__OmniflowPiece with_types_in $crate::bindings);
    };
}

/// Pre-initialise this piece: `init` runs **once, when the host compiles the
/// piece** (install or first load), and the instance's memory afterwards
/// becomes the starting memory of every later instance (a Wizer snapshot).
/// Use it to build expensive, input-independent state (a parsed table, an
/// interpreter's context) that every run would otherwise build again. A
/// one-shot `omniflow run` compiling with the baseline compiler skips the
/// snapshot, so actions must also work when `init` never ran.
///
/// Keep in a `thread_local!` or `static` what `init` builds, and let each
/// run start from it: every run still gets a fresh instance, copied from the
/// snapshot, so nothing one run changes reaches another. During `init` the
/// piece has no HTTP grants and the default step limits; a trap, an
/// exhausted fuel budget or a timeout there makes the piece fail to load.
/// What `init` must not do: keep a WASI resource (a stream, an outgoing
/// request) or values that must differ between runs (random seeds, the
/// time): they would be frozen into the snapshot.
///
/// ```ignore
/// thread_local! {
///     static TABLE: std::cell::RefCell<Option<Vec<u64>>> = const { std::cell::RefCell::new(None) };
/// }
/// fn init() {
///     TABLE.with(|t| *t.borrow_mut() = Some((0..10_000).map(|n| n * n).collect()));
/// }
/// omniflow_sdk::export_preinit!(init);
/// ```
#[macro_export]
macro_rules! export_preinit {
    ($init:expr) => {
        #[doc(hidden)]
        #[allow(unsafe_code, unreachable_pub, dead_code, missing_docs)]
        mod __omniflow_preinit {
            $crate::__wit_bindgen::generate!({
                inline: "package omniflow:preinit; world preinit { export wizer-initialize: func(); }",
                runtime_path: "omniflow_sdk::__wit_bindgen::rt",
            });
        }

        #[doc(hidden)]
        struct __OmniflowPreinit;

        impl __omniflow_preinit::Guest for __OmniflowPreinit {
            fn wizer_initialize() {
                ($init)()
            }
        }

        __omniflow_preinit::export!(__OmniflowPreinit with_types_in __omniflow_preinit);
    };
}
