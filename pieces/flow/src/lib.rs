//! `flow`: branching. A branching action's output carries `handle`, the name
//! of the branch it chose; steps with `needs: ["<step>.<handle>"]` run only
//! on that branch, the others are skipped.

use omniflow_sdk::prelude::*;

/// Output of every branching action.
#[derive(Serialize, JsonSchema)]
struct Branch {
    /// The chosen handle (`"then"`/`"else"`, a case name, or `"default"`).
    handle: String,
    /// The value that decided it, passed through for downstream steps.
    value: Value,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct IfInput {
    /// Truthy (JS rules: not false, 0, "", null, [] or {}) → `then`, else `else`.
    condition: Value,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn if_(_ctx: &Context, input: IfInput) -> Result<Branch> {
    let handle = if truthy(&input.condition) {
        "then"
    } else {
        "else"
    };
    Ok(Branch {
        handle: handle.into(),
        value: input.condition,
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SwitchInput {
    /// The value to match (strings, numbers and booleans are compared by their text).
    value: Value,
    /// The handles to choose from (`["small", "large"]`); no match → `default`.
    cases: Vec<String>,
}

fn switch(_ctx: &Context, input: SwitchInput) -> Result<Branch> {
    let text = match &input.value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => {
            return Err(Error::invalid_input(format!(
                "switch value must be a string, number or boolean, got {other}"
            )));
        }
    };
    if text == "default" && !input.cases.iter().any(|c| c == "default") {
        return Err(Error::invalid_input("\"default\" is reserved for no match"));
    }
    let handle = if input.cases.contains(&text) {
        text
    } else {
        "default".to_string()
    };
    Ok(Branch {
        handle,
        value: input.value,
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct MergeInput {
    /// Outputs of several branches; nulls (skipped branches) are dropped.
    values: Vec<Value>,
}

fn merge(_ctx: &Context, input: MergeInput) -> Result<Vec<Value>> {
    Ok(input.values.into_iter().filter(|v| !v.is_null()).collect())
}

omniflow_sdk::export_piece!(
    Piece::new("flow", env!("CARGO_PKG_VERSION"), "Branching by handle")
        .action("if", "Choose `then` or `else` by truthiness", if_)
        .action(
            "switch",
            "Choose the handle equal to the value, else `default`",
            switch
        )
        .action(
            "merge",
            "Join branches: the non-null values, in order",
            merge
        )
);
