//! `code`: run user JavaScript inside this component with the Boa engine.
//!
//! Action `run-js`, input `{ "code": "...", "input": <any JSON> }`. The code is
//! either
//!
//! * an ES module whose default export is a function (sync or `async`), called
//!   with `input` (a default export that is not a function is the result
//!   itself), or
//! * a function body using `return`, run as
//!   `(async function (input) { <body> })(input)`.
//!
//! Module form is chosen when the source contains `export default` (any
//! whitespace between the words) or a line starting with `import`/`export`.
//!
//! Semantics worth knowing, all covered by `tests/data/code/*.js`:
//!
//! * **Output** is the returned value after awaiting promises and draining the
//!   job queue, converted like `JSON.stringify` (so `toJSON` and `Date` work,
//!   `undefined` properties are dropped, `NaN`/`Infinity` become `null`), with
//!   these exceptions, each a `fatal` error whose message starts with
//!   `invalid output:` and names the path (`$.items[2].fn`): functions,
//!   symbols, `BigInt`s,
//!   `Map`s, `Set`s, cyclic objects and nesting deeper than 512 levels
//!   anywhere in the result. A top-level `undefined` (a body without
//!   `return`) becomes `null`; a lone UTF-16 surrogate becomes U+FFFD.
//! * **Errors**: an uncaught exception is `fatal` with the JS message and
//!   stack (`at f (code.js:3:7)`). `throw new Retryable("msg", { retryAfterMs
//!   })` (a global subclass of `Error`, subclassable) is `retryable`. A syntax
//!   error is `invalid-input` with line and column. Positions are the user's
//!   own in both forms (the body wrapper's prefix is taken off line-1
//!   columns). A promise that never settles (there are no timers) is
//!   `fatal`.
//! * **console**: `log`/`info`/`debug`/`warn`/`error` write one step-log line
//!   each at that level; at most [`CONSOLE_CAP`] bytes in total, then one
//!   truncation line.
//! * **No I/O**: no `fetch` (the global is a function that throws a
//!   `TypeError` saying so), no timers, no `import` of other modules, no
//!   `Intl`. `Date.now()` and `Math.random()` come from `wasi:clocks` and
//!   `wasi:random`; the local time zone is UTC.
//! * **Limits**: CPU and memory are the host's fuel and memory limits (a JS
//!   infinite loop ends `out-of-fuel` or `timeout`; an allocation bomb ends
//!   `memory-limit`). JS recursion deeper than [`RECURSION_LIMIT`] calls ends
//!   as `fatal` (`RuntimeLimitError`, not catchable by JS); recursion through
//!   native callbacks (`[x].map(f)` inside `f`) exhausts the wasm stack first
//!   and ends `stack-overflow`, also contained.
//!
//! Cost: building a Boa context takes ~0.4 ms, most of a trivial run. It is
//! built once, in `wizer-initialize`, when the host compiles the piece
//! ([`omniflow_sdk::export_preinit!`]); every run starts from a copy of that
//! snapshot and takes the context from it, so nothing survives between runs
//! and none pays for the build. A run on an instance without a prebuilt
//! context (a second call, or a host that does not pre-initialise) builds
//! its own.

mod json;

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;

use boa_engine::builtins::promise::PromiseState;
use boa_engine::module::{ModuleLoader, ModuleRequest, Referrer};
use boa_engine::object::{FunctionObjectBuilder, ObjectInitializer};
use boa_engine::property::Attribute;
use boa_engine::property::PropertyDescriptor;
use boa_engine::vm::RuntimeLimits;
use boa_engine::{
    Context as JsContext, JsError, JsNativeError, JsObject, JsResult, JsString, JsValue, Module,
    NativeFunction, Script, Source, js_string,
};
use omniflow_sdk::prelude::*;
use omniflow_sdk::schemars::{Schema, SchemaGenerator};
use omniflow_sdk::serde_json::value::RawValue;

/// Largest total console output kept per run, bytes (the host caps the whole
/// step log separately).
pub const CONSOLE_CAP: usize = 64 << 10;

/// JS call depth (frames plus native re-entries) before a `RuntimeLimitError`.
pub const RECURSION_LIMIT: usize = 10_000;

/// Values on Boa's VM stack before a `RuntimeLimitError` (≈ 16 bytes each).
const VALUE_STACK_LIMIT: usize = 1 << 20;

/// The prefix that turns a function body into an expression; kept on the
/// body's first line so line numbers in errors match the user's code.
const BODY_PREFIX: &str = "(async function (input) {";

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RunJsInput {
    /// JavaScript: an ES module with `export default function (input) {...}`
    /// (may be `async`), or a function body using `return` (may use `await`).
    code: String,
    /// Any JSON value, passed to the code as `input`.
    #[serde(default)]
    input: Value,
}

/// The code's result as JSON text (any JSON value).
#[derive(Serialize)]
#[serde(transparent)]
struct JsonOutput(Box<RawValue>);

impl JsonSchema for JsonOutput {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AnyJson".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        Schema::from(true)
    }
}

thread_local! {
    /// The context `wizer-initialize` built into the snapshot; taken by the
    /// first run of an instance.
    static PREBUILT: RefCell<Option<(JsContext, JsObject)>> = const { RefCell::new(None) };
}

/// `wizer-initialize`: build the context every run of this snapshot starts with.
fn prebuild_context() {
    if let Ok(built) = new_context() {
        PREBUILT.with(|slot| *slot.borrow_mut() = Some(built));
    }
}

fn run_js(_ctx: &Context, input: RunJsInput) -> Result<JsonOutput> {
    CONSOLE_USED.with(|used| used.set(0));
    let (mut context, retryable) = match PREBUILT.with(|slot| slot.borrow_mut().take()) {
        Some(built) => built,
        None => new_context()?,
    };
    let json = execute(&mut context, &retryable, &input.code, &input.input)?;
    RawValue::from_string(json)
        .map(JsonOutput)
        .map_err(|e| Error::fatal(format!("invalid output: {e}")))
}

/// A fresh JS context with our globals and limits, and the `Retryable`
/// constructor (kept here: the code may overwrite the global).
fn new_context() -> Result<(JsContext, JsObject)> {
    let mut context = JsContext::builder()
        .module_loader(Rc::new(NoImports))
        .build()
        .map_err(|e| Error::fatal(format!("starting the JavaScript engine: {e}")))?;
    let mut limits = RuntimeLimits::default();
    // Fuel and the wall-clock deadline bound loops; no iteration limit.
    limits.disable_loop_iteration_limit();
    limits.set_recursion_limit(RECURSION_LIMIT);
    limits.set_stack_size_limit(VALUE_STACK_LIMIT);
    context.set_runtime_limits(limits);
    let retryable = install_globals(&mut context)
        .map_err(|e| Error::fatal(format!("setting up globals: {e}")))?;
    Ok((context, retryable))
}

/// `console`, `fetch` (which throws) and `Retryable`; returns the latter.
fn install_globals(context: &mut JsContext) -> JsResult<JsObject> {
    let console = ObjectInitializer::new(context)
        .function(
            NativeFunction::from_fn_ptr(console_log),
            js_string!("log"),
            0,
        )
        .function(
            NativeFunction::from_fn_ptr(console_info),
            js_string!("info"),
            0,
        )
        .function(
            NativeFunction::from_fn_ptr(console_debug),
            js_string!("debug"),
            0,
        )
        .function(
            NativeFunction::from_fn_ptr(console_warn),
            js_string!("warn"),
            0,
        )
        .function(
            NativeFunction::from_fn_ptr(console_error),
            js_string!("error"),
            0,
        )
        .build();
    let writable = Attribute::WRITABLE | Attribute::CONFIGURABLE;
    context.register_global_property(js_string!("console"), console, writable)?;
    context.register_global_callable(
        js_string!("fetch"),
        1,
        NativeFunction::from_fn_ptr(no_fetch),
    )?;
    let retryable = retryable_class(context)?;
    context.register_global_property(js_string!("Retryable"), retryable.clone(), writable)?;
    Ok(retryable)
}

/// `class Retryable extends Error`, built natively: evaluating the same
/// class in JS costs ~150 µs per run (a sixth of a trivial run).
/// `new Retryable(message, { retryAfterMs, cause })`.
fn retryable_class(context: &mut JsContext) -> JsResult<JsObject> {
    let error = context.intrinsics().constructors().error().clone();
    let constructor: JsObject = FunctionObjectBuilder::new(
        context.realm(),
        NativeFunction::from_fn_ptr(construct_retryable),
    )
    .name(js_string!("Retryable"))
    .length(1)
    .constructor(true)
    .build()
    .into();
    let prototype = JsObject::with_object_proto(context.intrinsics());
    prototype.set_prototype(Some(error.prototype()));
    let hidden = |value: JsValue| {
        PropertyDescriptor::builder()
            .value(value)
            .writable(true)
            .enumerable(false)
            .configurable(true)
    };
    prototype.define_property_or_throw(
        js_string!("name"),
        hidden(js_string!("Retryable").into()),
        context,
    )?;
    prototype.define_property_or_throw(
        js_string!("constructor"),
        hidden(constructor.clone().into()),
        context,
    )?;
    constructor.define_property_or_throw(
        js_string!("prototype"),
        PropertyDescriptor::builder()
            .value(prototype)
            .writable(false)
            .enumerable(false)
            .configurable(false),
        context,
    )?;
    constructor.set_prototype(Some(error.constructor()));
    Ok(constructor)
}

/// Native constructors get `new.target` first (`undefined`-ish when called
/// without `new`, which a class refuses too).
fn construct_retryable(
    new_target: &JsValue,
    args: &[JsValue],
    context: &mut JsContext,
) -> JsResult<JsValue> {
    let Some(new_target) = new_target.as_object().filter(|o| o.is_constructor()) else {
        return Err(JsNativeError::typ()
            .with_message("class constructor Retryable cannot be invoked without 'new'")
            .into());
    };
    let error = context.intrinsics().constructors().error().constructor();
    // Error's own constructor with our new.target: [[ErrorData]], message,
    // cause and stack as for any Error, prototype from new.target.
    let instance = error.construct(args, Some(&new_target), context)?;
    if let Some(options) = args.get(1).and_then(JsValue::as_object) {
        let after = options.get(js_string!("retryAfterMs"), context)?;
        if !after.is_null_or_undefined() {
            let ms = after.to_number(context)?;
            instance.set(js_string!("retryAfterMs"), ms, true, context)?;
        }
    }
    Ok(instance.into())
}

/// Run the user's code to completion; the result as JSON text.
fn execute(
    context: &mut JsContext,
    retryable: &JsObject,
    code: &str,
    input: &Value,
) -> Result<String> {
    let retryable: JsValue = retryable.clone().into();
    let input = JsValue::from_json(input, context)
        .map_err(|e| Error::invalid_input(format!("input: {e}")))?;

    let module = is_module(code);
    let result = if module {
        run_module(context, code, &input)
    } else {
        run_body(context, code, &input)
    };
    let outcome = match result {
        Ok(value) => match json::to_json(&value, context) {
            Ok(text) => Ok(text),
            Err(json::OutputError::Invalid(message)) => {
                Err(Error::fatal(format!("invalid output: {message}")))
            }
            Err(json::OutputError::Thrown(err)) => Err(classify(err, &retryable, context)),
        },
        Err(Failure::Syntax(message)) => Err(Error::invalid_input(message)),
        Err(Failure::Js(err)) => Err(classify(err, &retryable, context)),
        Err(Failure::Other(err)) => Err(err),
    };
    if module {
        outcome
    } else {
        outcome.map_err(unshift_first_line)
    }
}

/// Name of the user's code in stack traces (`at f (code.js:3:7)`).
const SOURCE_NAME: &str = "code.js";

/// In body form the user's first line sits after [`BODY_PREFIX`]: take the
/// prefix off the columns that line-1 positions in messages carry.
fn unshift_first_line(err: Error) -> Error {
    let mut text = err.message().to_string();
    for marker in [format!("{SOURCE_NAME}:1:"), "at line 1, col ".to_string()] {
        let mut from = 0;
        while let Some(found) = text[from..].find(&marker) {
            let digits_at = from + found + marker.len();
            let digits = text[digits_at..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            let fixed = text[digits_at..digits_at + digits]
                .parse::<usize>()
                .ok()
                .filter(|col| *col > BODY_PREFIX.len())
                .map(|col| (col - BODY_PREFIX.len()).to_string());
            match fixed {
                Some(fixed) => {
                    text.replace_range(digits_at..digits_at + digits, &fixed);
                    from = digits_at + fixed.len();
                }
                None => from = digits_at + digits,
            }
        }
    }
    match err.kind() {
        ErrorKind::InvalidInput => Error::invalid_input(text),
        ErrorKind::Fatal => Error::fatal(text),
        ErrorKind::Retryable {
            retry_after: Some(after),
        } => Error::retry_after(text, after),
        ErrorKind::Retryable { retry_after: None } => Error::retryable(text),
    }
}

enum Failure {
    /// The source did not parse.
    Syntax(String),
    /// The code threw (or hit a runtime limit).
    Js(JsError),
    /// Anything else, already classified.
    Other(Error),
}

impl From<JsError> for Failure {
    fn from(err: JsError) -> Self {
        Failure::Js(err)
    }
}

/// Module form: `export default` present, or a line starting with `import`
/// or `export`.
fn is_module(code: &str) -> bool {
    let mut rest = code;
    while let Some(at) = rest.find("export") {
        let after = &rest[at + "export".len()..];
        let trimmed = after.trim_start();
        if trimmed.len() < after.len() && trimmed.starts_with("default") {
            return true;
        }
        rest = after;
    }
    code.lines().any(|line| {
        let line = line.trim_start();
        ["import ", "import{", "export ", "export{"]
            .iter()
            .any(|kw| line.starts_with(kw))
    })
}

fn run_body(context: &mut JsContext, code: &str, input: &JsValue) -> Result<JsValue, Failure> {
    let source = format!("{BODY_PREFIX}{code}\n}})");
    let source = Source::from_bytes(source.as_bytes()).with_path(Path::new(SOURCE_NAME));
    let script =
        Script::parse(source, None, context).map_err(|e| Failure::Syntax(syntax_message(&e)))?;
    let function = script.evaluate(context)?;
    let Some(function) = function.as_callable() else {
        return Err(Failure::Other(Error::invalid_input(
            "the code is not a function body (is there an unbalanced `}`?)",
        )));
    };
    let returned = function.call(&JsValue::undefined(), std::slice::from_ref(input), context)?;
    settle(context, returned)
}

fn run_module(context: &mut JsContext, code: &str, input: &JsValue) -> Result<JsValue, Failure> {
    let source = Source::from_bytes(code.as_bytes()).with_path(Path::new(SOURCE_NAME));
    let module =
        Module::parse(source, None, context).map_err(|e| Failure::Syntax(syntax_message(&e)))?;
    let evaluated = module.load_link_evaluate(context);
    settle(context, evaluated.into())?;
    let default = module
        .namespace(context)
        .get(js_string!("default"), context)?;
    if default.is_undefined() {
        let has_default = module
            .namespace(context)
            .has_own_property(js_string!("default"), context)?;
        if !has_default {
            return Err(Failure::Other(Error::invalid_input(
                "the module has no default export: write `export default function (input) { ... }`",
            )));
        }
    }
    match default.as_callable() {
        Some(function) => {
            let returned =
                function.call(&JsValue::undefined(), std::slice::from_ref(input), context)?;
            settle(context, returned)
        }
        None => Ok(default),
    }
}

/// Run the job queue; if `value` is a promise, its fulfilled value.
fn settle(context: &mut JsContext, value: JsValue) -> Result<JsValue, Failure> {
    context.run_jobs()?;
    let Some(promise) = value.as_promise() else {
        return Ok(value);
    };
    match promise.state() {
        PromiseState::Fulfilled(value) => Ok(value),
        PromiseState::Rejected(reason) => Err(Failure::Js(JsError::from_opaque(reason))),
        PromiseState::Pending => Err(Failure::Other(Error::fatal(
            "the returned promise never settled (there are no timers or I/O to wait for)",
        ))),
    }
}

fn syntax_message(err: &JsError) -> String {
    let text = err.to_string();
    let text = text.strip_prefix("SyntaxError: ").unwrap_or(&text);
    // Boa appends where the error was raised on the Rust side.
    let text = text.strip_suffix(" (native)").unwrap_or(text);
    format!("SyntaxError: {text}")
}

/// Turn a JS exception into the step error the host understands.
fn classify(err: JsError, retryable_class: &JsValue, context: &mut JsContext) -> Error {
    let thrown = match err.into_opaque(context) {
        Ok(value) => value,
        // Engine errors (runtime limits) are not catchable by JS.
        Err(engine) => return Error::fatal(format!("Uncaught {engine}")),
    };
    if thrown
        .instance_of(retryable_class, context)
        .unwrap_or(false)
    {
        let message = property_text(&thrown, "message", context).unwrap_or_default();
        let after = thrown
            .as_object()
            .and_then(|o| o.get(js_string!("retryAfterMs"), context).ok())
            .and_then(|v| v.as_number())
            .filter(|ms| ms.is_finite() && *ms >= 0.0);
        return match after {
            Some(ms) => Error::retry_after(
                message,
                std::time::Duration::from_millis(ms.min(u64::MAX as f64) as u64),
            ),
            None => Error::retryable(message),
        };
    }
    Error::fatal(format!("Uncaught {}", describe_thrown(&thrown, context)))
}

/// `Name: message` and the stack for errors; a readable rendering otherwise.
fn describe_thrown(thrown: &JsValue, context: &mut JsContext) -> String {
    let is_error = thrown
        .as_object()
        .is_some_and(|o| o.is::<boa_engine::builtins::error::Error>());
    if is_error {
        let name = property_text(thrown, "name", context).unwrap_or_else(|| "Error".into());
        let message = property_text(thrown, "message", context).unwrap_or_default();
        let mut text = if message.is_empty() {
            name
        } else {
            format!("{name}: {message}")
        };
        if let Some(stack) = property_text(thrown, "stack", context)
            && !stack.trim().is_empty()
        {
            text.push('\n');
            text.push_str(stack.trim_end());
        }
        return text;
    }
    render(thrown, context)
}

fn property_text(value: &JsValue, key: &str, context: &mut JsContext) -> Option<String> {
    let object = value.as_object()?;
    let property = object.get(JsString::from(key), context).ok()?;
    if property.is_undefined() || property.is_null() {
        return None;
    }
    property
        .to_string(context)
        .ok()
        .map(|s| s.to_std_string_escaped())
}

/// A console-style rendering: strings as they are, other values as JSON
/// when possible, else their `String(...)`.
fn render(value: &JsValue, context: &mut JsContext) -> String {
    if let Some(s) = value.as_string() {
        return s.to_std_string_escaped();
    }
    if let Some(object) = value.as_object() {
        if object.is_callable() {
            let name = property_text(value, "name", context).unwrap_or_default();
            return if name.is_empty() {
                "[Function (anonymous)]".into()
            } else {
                format!("[Function {name}]")
            };
        }
        if object.is::<boa_engine::builtins::error::Error>() {
            return describe_thrown(value, context);
        }
        let json = context
            .intrinsics()
            .objects()
            .json()
            .get(js_string!("stringify"), context)
            .ok()
            .and_then(|f| f.as_callable())
            .and_then(|f| {
                f.call(&JsValue::undefined(), std::slice::from_ref(value), context)
                    .ok()
            })
            .and_then(|v| v.as_string().map(|s| s.to_std_string_escaped()));
        if let Some(json) = json {
            return json;
        }
    }
    value
        .to_string(context)
        .map(|s| s.to_std_string_escaped())
        .unwrap_or_else(|_| format!("[{}]", value.type_of()))
}

fn no_fetch(_this: &JsValue, _args: &[JsValue], _context: &mut JsContext) -> JsResult<JsValue> {
    Err(JsNativeError::typ()
        .with_message(
            "fetch is not available: the code piece has no network access \
             (make the request in an http-request step and pass its output as input)",
        )
        .into())
}

/// Refuses every `import`: user code is one self-contained module.
struct NoImports;

impl ModuleLoader for NoImports {
    fn load_imported_module(
        self: Rc<Self>,
        _referrer: Referrer,
        request: ModuleRequest,
        _context: &RefCell<&mut JsContext>,
    ) -> impl Future<Output = JsResult<Module>> {
        let specifier = request.specifier().to_std_string_escaped();
        std::future::ready(Err(JsNativeError::typ()
            .with_message(format!(
                "cannot import {specifier:?}: the code piece has no modules besides your code"
            ))
            .into()))
    }
}

/// Bytes the host adds to each log line: `[level] ` and a newline.
const LINE_OVERHEAD: usize = 9;

thread_local! {
    static CONSOLE_USED: Cell<usize> = const { Cell::new(0) };
}

#[derive(Clone, Copy)]
enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

fn console_write(level: Level, args: &[JsValue], context: &mut JsContext) -> JsResult<JsValue> {
    let used = CONSOLE_USED.with(Cell::get);
    if used > CONSOLE_CAP {
        return Ok(JsValue::undefined());
    }
    let mut line = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        line.push_str(&render(arg, context));
        if used + line.len() > CONSOLE_CAP {
            break;
        }
    }
    // What the host adds per line ("[level] " and a newline) counts too.
    let cost = line.len() + LINE_OVERHEAD;
    if used + cost > CONSOLE_CAP {
        CONSOLE_USED.with(|u| u.set(CONSOLE_CAP + 1));
        log::warn(format!(
            "... console output truncated (more than {CONSOLE_CAP} bytes)"
        ));
        return Ok(JsValue::undefined());
    }
    CONSOLE_USED.with(|u| u.set(used + cost));
    match level {
        Level::Debug => log::debug(line),
        Level::Info => log::info(line),
        Level::Warn => log::warn(line),
        Level::Error => log::error(line),
    }
    Ok(JsValue::undefined())
}

fn console_log(_: &JsValue, args: &[JsValue], context: &mut JsContext) -> JsResult<JsValue> {
    console_write(Level::Info, args, context)
}

fn console_info(_: &JsValue, args: &[JsValue], context: &mut JsContext) -> JsResult<JsValue> {
    console_write(Level::Info, args, context)
}

fn console_debug(_: &JsValue, args: &[JsValue], context: &mut JsContext) -> JsResult<JsValue> {
    console_write(Level::Debug, args, context)
}

fn console_warn(_: &JsValue, args: &[JsValue], context: &mut JsContext) -> JsResult<JsValue> {
    console_write(Level::Warn, args, context)
}

fn console_error(_: &JsValue, args: &[JsValue], context: &mut JsContext) -> JsResult<JsValue> {
    console_write(Level::Error, args, context)
}

omniflow_sdk::export_piece!(
    Piece::new(
        "code",
        env!("CARGO_PKG_VERSION"),
        "Run JavaScript (ES2020+) on JSON input inside the sandbox"
    )
    .action(
        "run-js",
        "Run JavaScript: a module with `export default function (input) {...}` or a function \
         body using `return`; the returned value (promises awaited) is the output",
        run_js
    )
);

omniflow_sdk::export_preinit!(prebuild_context);
