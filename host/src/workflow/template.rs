//! Templates in step inputs, `when` and `for_each`, evaluated with `minijinja`.
//!
//! Owns: the template rules (a string that is exactly one `{{ expr }}` yields the expression's
//! JSON value; other strings with `{{`/`{%` render as text; objects and arrays are walked,
//! keys untouched), the shape of the context (`trigger`, `vars`, `steps.<id>.{output,status}`,
//! `run`, `item`, `index`), and the static analysis of which steps a template reads.
//! Must not know: the graph, pieces, or where step outputs are stored.
//!
//! Undefined values are errors (minijinja's `UndefinedBehavior::Strict`), never silently empty.
//! One `Environment` is built once and shared by all threads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value;

/// A template that does not parse or does not evaluate.
///
/// At validation time a [`TemplateError::Syntax`] is the author's fault; at run time a
/// [`TemplateError::Eval`] usually means an upstream output lacks a field: not retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template text is not valid minijinja.
    #[error("template `{template}` does not parse: {message}")]
    Syntax {
        /// The template as written.
        template: String,
        /// minijinja's explanation.
        message: String,
    },
    /// Evaluation failed, e.g. an undefined variable or attribute.
    #[error("template `{template}` failed: {message}")]
    Eval {
        /// The template as written.
        template: String,
        /// minijinja's explanation, naming the failing part when it can.
        message: String,
    },
    /// A `for_each` expression yielded something other than an array.
    #[error("for_each `{template}` must yield an array, got {got}")]
    NotAnArray {
        /// The expression as written.
        template: String,
        /// What it yielded instead, e.g. `an object`.
        got: String,
    },
}

/// Everything a template can read, except `item`/`index` (see [`Scope::with_item`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TemplateContext {
    /// `{{ trigger.payload.user }}`: what started the run.
    pub trigger: Value,
    /// `{{ vars.CHAT_ID }}`
    pub vars: BTreeMap<String, Value>,
    /// `{{ steps.fetch.output.body }}`, `{{ steps.fetch.status }}`: finished steps only.
    pub steps: BTreeMap<String, StepContext>,
    /// `{{ run.id }}`, `{{ run.workflow }}`
    pub run: RunContext,
}

/// What a template sees of one finished step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepContext {
    /// The step's output JSON (`null` when skipped).
    pub output: Value,
    /// `"succeeded"`, `"failed"`, `"skipped"`, ...
    pub status: String,
}

/// What a template sees of the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunContext {
    /// The run id.
    pub id: String,
    /// The workflow name.
    pub workflow: String,
}

/// A [`TemplateContext`] converted once to minijinja's representation, so that many
/// templates (and many `for_each` items) can be evaluated without converting it again.
#[derive(Debug, Clone)]
pub struct Scope {
    value: minijinja::Value,
}

impl Scope {
    /// Converts the context; do this once per step, not once per template.
    pub fn new(context: &TemplateContext) -> Scope {
        Scope {
            value: minijinja::Value::from_serialize(context),
        }
    }

    /// A scope with nothing in it, for a step that reads no run data
    /// ([`crate::workflow::Step::reads_run_data`]).
    pub fn empty() -> Scope {
        Scope {
            value: minijinja::Value::UNDEFINED,
        }
    }

    /// This scope plus `item` and `index` for one `for_each` iteration (cheap: no copy of the base).
    pub fn with_item(&self, item: &Value, index: usize) -> Scope {
        let extra = minijinja::context! {
            item => minijinja::Value::from_serialize(item),
            index => index,
        };
        Scope {
            value: minijinja::value::merge_maps([extra, self.value.clone()]),
        }
    }
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env
    })
}

/// Whether any string in `value` is a template.
pub(crate) fn contains_template(value: &Value) -> bool {
    match value {
        Value::String(text) => is_template(text),
        Value::Array(items) => items.iter().any(contains_template),
        Value::Object(map) => map.values().any(contains_template),
        _ => false,
    }
}

/// Whether a string is evaluated as a template at all.
pub(crate) fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// The inner expression when `text` is exactly one `{{ expr }}` (surrounding whitespace allowed).
fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let single = !inner.contains("{{") && !inner.contains("{%") && !inner.contains("%}");
    single.then_some(inner)
}

/// For `when`/`for_each`: `"{{ expr }}"` or the bare `"expr"`.
fn expression_source(text: &str) -> &str {
    whole_expression(text).unwrap_or(text)
}

/// Renders a step input: strings that are templates are evaluated, everything else is copied.
pub fn render_input(input: &Value, scope: &Scope) -> Result<Value, TemplateError> {
    Ok(match input {
        Value::String(text) => render_string(text, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| render_input(item, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| Ok((key.clone(), render_input(value, scope)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// Renders one string: `"{{ expr }}"` yields the expression's JSON value, other templates
/// yield their text, and plain strings are returned unchanged.
pub fn render_string(text: &str, scope: &Scope) -> Result<Value, TemplateError> {
    if !is_template(text) {
        return Ok(Value::String(text.to_owned()));
    }
    if let Some(expr) = whole_expression(text) {
        return eval_expression(text, expr, scope);
    }
    let env = environment();
    let template = env
        .template_from_str(text)
        .map_err(|err| syntax(text, &err))?;
    template
        .render(&scope.value)
        .map(Value::String)
        .map_err(|err| eval_error(text, text, &err))
}

/// Evaluates a `when` condition (`"{{ expr }}"` or bare `"expr"`) to its truthiness.
pub fn eval_when(when: &str, scope: &Scope) -> Result<bool, TemplateError> {
    let value = eval_minijinja(when, expression_source(when), scope)?;
    Ok(value.is_true())
}

/// Evaluates a `for_each` expression (`"{{ expr }}"` or bare `"expr"`); it must yield an array.
pub fn eval_for_each(for_each: &str, scope: &Scope) -> Result<Vec<Value>, TemplateError> {
    match eval_expression(for_each, expression_source(for_each), scope)? {
        Value::Array(items) => Ok(items),
        other => Err(TemplateError::NotAnArray {
            template: for_each.to_owned(),
            got: describe_json(&other).to_owned(),
        }),
    }
}

/// The ids of the steps an input string reads (`steps.<id>...`), checking that it parses.
/// Plain strings (no `{{`) read nothing.
pub fn referenced_steps(template: &str) -> Result<BTreeSet<String>, TemplateError> {
    let names = undeclared(template, false)?;
    step_ids(template, names.iter().map(String::as_str))
}

/// Like [`referenced_steps`] for `when`/`for_each`, which are expressions (`{{ }}` optional).
pub fn expression_referenced_steps(expression: &str) -> Result<BTreeSet<String>, TemplateError> {
    let names = undeclared(expression, true)?;
    step_ids(expression, names.iter().map(String::as_str))
}

/// Every name a template reads that it does not define itself, nested as far
/// as attribute access goes (`steps.fetch.output.body`, `vars.who`, `name`),
/// minijinja's global functions (`range`, `dict`, ...) left out. Plain strings
/// read nothing. `expression` is for `when`/`for_each` (`{{ }}` optional).
pub fn read_names(text: &str, expression: bool) -> Result<BTreeSet<String>, TemplateError> {
    let globals: BTreeSet<&str> = environment().globals().map(|(name, _)| name).collect();
    Ok(undeclared(text, expression)?
        .into_iter()
        .filter(|name| !globals.contains(name.split('.').next().unwrap_or(name)))
        .collect())
}

/// minijinja's nested undeclared names of a template (or, with `expression`,
/// of a `when`/`for_each` expression), checking that it parses.
fn undeclared(text: &str, expression: bool) -> Result<BTreeSet<String>, TemplateError> {
    if !expression && !is_template(text) {
        return Ok(BTreeSet::new());
    }
    let env = environment();
    let source = if expression {
        Some(expression_source(text))
    } else {
        whole_expression(text)
    };
    let names = match source {
        Some(expr) => env
            .compile_expression(expr)
            .map_err(|err| syntax(text, &err))?
            .undeclared_variables(true),
        None => env
            .template_from_str(text)
            .map_err(|err| syntax(text, &err))?
            .undeclared_variables(true),
    };
    Ok(names.into_iter().collect())
}

/// Picks step ids out of minijinja's nested undeclared names (`steps.fetch.output.body`).
///
/// A bare `steps` means a subscript (`steps['my-step']`, needed for ids with `-`): the literal
/// subscripts are read from the source; a non-literal one (`steps[name]`) is rejected because
/// the graph could not know what the step waits for.
fn step_ids<'a>(
    template: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<BTreeSet<String>, TemplateError> {
    let mut ids = BTreeSet::new();
    let mut subscripted = false;
    for name in names {
        if name == "steps" {
            subscripted = true;
        } else if let Some(path) = name.strip_prefix("steps.") {
            let id = path.split('.').next().unwrap_or(path);
            ids.insert(id.to_owned());
        }
    }
    if subscripted {
        let literal = literal_step_subscripts(template);
        if literal.is_empty() {
            return Err(TemplateError::Syntax {
                template: template.to_owned(),
                message:
                    "steps must be read as steps.<id> or steps['<id>'], not through a computed name"
                        .to_owned(),
            });
        }
        ids.extend(literal);
    }
    Ok(ids)
}

/// `steps['a-b']` / `steps["a-b"]` occurrences in the source (not a parser: minijinja has
/// already accepted the template, this only recovers the literal keys it does not report).
fn literal_step_subscripts(source: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for (at, _) in source.match_indices("steps") {
        let before = source[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.') {
            continue;
        }
        let rest = source[at + "steps".len()..].trim_start();
        let Some(rest) = rest.strip_prefix('[') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(quote) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        let rest = &rest[1..];
        if let Some(end) = rest.find(quote) {
            let after = rest[end + 1..].trim_start();
            if after.starts_with(']') {
                ids.insert(rest[..end].to_owned());
            }
        }
    }
    ids
}

fn eval_expression(template: &str, expr: &str, scope: &Scope) -> Result<Value, TemplateError> {
    let value = eval_minijinja(template, expr, scope)?;
    serde_json::to_value(&value).map_err(|err| TemplateError::Eval {
        template: template.to_owned(),
        message: format!("the value cannot be converted to JSON: {err}"),
    })
}

fn eval_minijinja(
    template: &str,
    expr: &str,
    scope: &Scope,
) -> Result<minijinja::Value, TemplateError> {
    let compiled = environment()
        .compile_expression(expr)
        .map_err(|err| syntax(template, &err))?;
    let value = compiled
        .eval(&scope.value)
        .map_err(|err| eval_error(template, expr, &err))?;
    // Strict mode errors on undefined lookups only when they are used further; an
    // expression that *is* undefined (`steps.x.output.missing`) must fail too.
    if value.is_undefined() {
        return Err(TemplateError::Eval {
            template: template.to_owned(),
            message: format!("undefined value `{}`", expr.trim()),
        });
    }
    Ok(value)
}

fn syntax(template: &str, err: &minijinja::Error) -> TemplateError {
    TemplateError::Syntax {
        template: template.to_owned(),
        message: describe_error(err, None),
    }
}

fn eval_error(template: &str, source: &str, err: &minijinja::Error) -> TemplateError {
    TemplateError::Eval {
        template: template.to_owned(),
        message: describe_error(err, Some(source)),
    }
}

/// minijinja's kind and detail, plus the failing part of `source` when minijinja knows its span.
fn describe_error(err: &minijinja::Error, source: Option<&str>) -> String {
    let mut message = err.kind().to_string();
    if let Some(detail) = err.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    let culprit = source.and_then(|source| source.get(err.range()?));
    if let Some(culprit) = culprit.map(str::trim).filter(|c| !c.is_empty()) {
        message.push_str(&format!(" in `{culprit}`"));
    }
    message
}

fn describe_json(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scope() -> Scope {
        let mut steps = BTreeMap::new();
        steps.insert(
            "fetch".to_owned(),
            StepContext {
                output: json!({ "status": 200, "body": { "items": [1, 2, 3], "title": "News" } }),
                status: "succeeded".to_owned(),
            },
        );
        Scope::new(&TemplateContext {
            trigger: json!({ "payload": { "user": "ana" } }),
            vars: BTreeMap::from([("CHAT_ID".to_owned(), json!("12345"))]),
            steps,
            run: RunContext {
                id: "run-1".to_owned(),
                workflow: "digest".to_owned(),
            },
        })
    }

    #[test]
    fn whole_expression_yields_json_values() {
        let scope = scope();
        let input = json!({
            "n": "{{ steps.fetch.output.status }}",
            "obj": "  {{ steps.fetch.output.body }} ",
            "sum": "{{ steps.fetch.output.status + 1 }}",
            "flag": "{{ vars.CHAT_ID == '12345' }}",
            "nested": [{ "keep {{": "{{ run.id }}" }, 7, null],
        });
        let out = render_input(&input, &scope).unwrap();
        assert_eq!(
            out,
            json!({
                "n": 200,
                "obj": { "items": [1, 2, 3], "title": "News" },
                "sum": 201,
                "flag": true,
                "nested": [{ "keep {{": "run-1" }, 7, null],
            })
        );
    }

    #[test]
    fn mixed_text_renders_as_a_string() {
        let scope = scope();
        let out = render_string(
            "{{ run.workflow }}: {{ steps.fetch.output.body.title }}!",
            &scope,
        );
        assert_eq!(out.unwrap(), json!("digest: News!"));
        let out = render_string(
            "{% for i in steps.fetch.output.body.items %}{{ i }}{% endfor %}",
            &scope,
        );
        assert_eq!(out.unwrap(), json!("123"));
        assert_eq!(render_string("plain", &scope).unwrap(), json!("plain"));
    }

    #[test]
    fn undefined_is_an_error_naming_the_expression() {
        let scope = scope();
        let err = render_string("{{ steps.fetch.output.missing }}", &scope).unwrap_err();
        assert!(matches!(err, TemplateError::Eval { .. }));
        assert!(
            err.to_string().contains("steps.fetch.output.missing"),
            "{err}"
        );
        let err = render_string("hi {{ vars.NOPE }}", &scope).unwrap_err();
        assert!(err.to_string().contains("vars.NOPE"), "{err}");
        let err = render_string("{{ item }}", &scope).unwrap_err();
        assert!(err.to_string().contains("undefined value"), "{err}");
    }

    #[test]
    fn when_truthiness() {
        let scope = scope();
        assert!(eval_when("{{ steps.fetch.output.status == 200 }}", &scope).unwrap());
        assert!(eval_when("steps.fetch.output.body.items", &scope).unwrap());
        assert!(!eval_when("steps.fetch.output.body.title == ''", &scope).unwrap());
        assert!(!eval_when("{{ [] }}", &scope).unwrap());
        assert!(eval_when("steps.fetch.output.nope", &scope).is_err());
    }

    #[test]
    fn for_each_yields_items_and_rejects_non_arrays() {
        let scope = scope();
        let items = eval_for_each("{{ steps.fetch.output.body.items }}", &scope).unwrap();
        assert_eq!(items, [json!(1), json!(2), json!(3)]);
        let err = eval_for_each("steps.fetch.output.body", &scope).unwrap_err();
        assert_eq!(
            err.to_string(),
            "for_each `steps.fetch.output.body` must yield an array, got an object"
        );
        let item_scope = scope.with_item(&json!({ "x": 5 }), 2);
        let out = render_input(
            &json!(["{{ item.x * index }}", "{{ vars.CHAT_ID }}"]),
            &item_scope,
        );
        assert_eq!(out.unwrap(), json!([10, "12345"]));
    }

    #[test]
    fn referenced_steps_from_templates_and_expressions() {
        let ids = |s| referenced_steps(s).unwrap().into_iter().collect::<Vec<_>>();
        assert_eq!(ids("{{ steps.fetch.output.body }}"), ["fetch"]);
        assert_eq!(
            ids(
                "{{ steps.b.output }} and {{ steps.a.status }} {{ vars.X }} {% if steps.c %}{% endif %}"
            ),
            ["a", "b", "c"]
        );
        assert_eq!(
            ids(r#"{{ steps['my-step'].output }} {{ steps["x"] }}"#),
            ["my-step", "x"]
        );
        assert!(ids("no template steps.fetch").is_empty());
        let exprs =
            expression_referenced_steps("steps.check.output.ok and steps.other.status").unwrap();
        assert_eq!(exprs.into_iter().collect::<Vec<_>>(), ["check", "other"]);
        assert!(matches!(
            referenced_steps("{{ steps[name].output }}"),
            Err(TemplateError::Syntax { .. })
        ));
        let err = referenced_steps("{{ steps.fetch.output ").unwrap_err();
        assert!(matches!(err, TemplateError::Syntax { .. }), "{err}");
    }
}
