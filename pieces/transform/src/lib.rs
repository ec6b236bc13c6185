//! `transform`: small, pure JSON shaping. No capabilities needed.

use omniflow_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PickInput {
    /// The JSON value to pick from.
    value: Value,
    /// Keys or dotted paths (`"user.name"`, `"items.0"`) to keep.
    keys: Vec<String>,
}

/// Each requested path mapped to the value found there (null when absent).
#[derive(Serialize, JsonSchema)]
#[serde(transparent)]
struct PickOutput(omniflow_sdk::serde_json::Map<String, Value>);

fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, segment| match v {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn pick(_ctx: &Context, input: PickInput) -> Result<PickOutput> {
    let picked = input
        .keys
        .iter()
        .map(|k| {
            (
                k.clone(),
                lookup(&input.value, k).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    Ok(PickOutput(picked))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TemplateInput {
    /// A minijinja template, e.g. `"Hello {{ name }}!"`.
    template: String,
    /// The data the template sees.
    #[serde(default)]
    data: Value,
}

#[derive(Serialize, JsonSchema)]
struct TemplateOutput {
    /// The rendered text.
    text: String,
}

fn template(_ctx: &Context, input: TemplateInput) -> Result<TemplateOutput> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let text = env
        .render_str(&input.template, &input.data)
        .map_err(|e| Error::invalid_input(format!("template: {e}")))?;
    Ok(TemplateOutput { text })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MergeInput {
    /// Objects merged left to right (later keys win).
    values: Vec<Value>,
}

fn merge(_ctx: &Context, input: MergeInput) -> Result<Value> {
    let mut merged = omniflow_sdk::serde_json::Map::new();
    for (i, value) in input.values.into_iter().enumerate() {
        match value {
            Value::Object(map) => merged.extend(map),
            Value::Null => {}
            other => {
                return Err(Error::invalid_input(format!(
                    "values[{i}] is {}, expected an object",
                    kind(&other)
                )));
            }
        }
    }
    Ok(Value::Object(merged))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

omniflow_sdk::export_piece!(
    Piece::new("transform", env!("CARGO_PKG_VERSION"), "Pure JSON shaping")
        .action("pick", "Keep only the given keys or dotted paths", pick)
        .action("template", "Render a text template over data", template)
        .action("merge", "Shallow-merge objects, later keys win", merge)
);
