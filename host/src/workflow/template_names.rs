//! Which names a workflow's templates may read, checked before any run:
//! `trigger`, `vars.<declared name>`, `steps.<id>.output` / `.status`,
//! `run.id` / `run.workflow`, and `item` / `index` inside a `for_each`
//! step's input. Anything else would fail at run time with a template
//! error, so `validate` reports it naming the step and the field.
//!
//! Parse errors and references to unknown steps are reported by the graph
//! (`graph.rs`); this module only adds what the graph does not know.

use std::collections::BTreeSet;

use super::graph::walk_strings;
use super::template::read_names;
use super::{ValidationError, Workflow};

/// What the template at one place may read besides the run-wide names.
#[derive(Clone, Copy)]
struct Scope {
    /// `item` and `index` (a `for_each` step's input).
    item: bool,
}

/// Every undefined name read by the templates of `workflow`'s steps and handlers.
pub(crate) fn check_template_names(workflow: &Workflow, errors: &mut Vec<ValidationError>) {
    let ids: BTreeSet<&str> = workflow.steps.iter().map(|s| s.id.as_str()).collect();
    let mut check = |location: String, text: &str, expression: bool, scope: Scope| {
        // A template that does not parse is reported by the graph already.
        let Ok(names) = read_names(text, expression) else {
            return;
        };
        for name in names {
            if let Some(problem) = undefined(&name, workflow, &ids, scope) {
                errors.push(ValidationError::new(location.clone(), problem));
            }
        }
    };
    for step in &workflow.steps {
        let at = format!("steps[{}]", step.id);
        let input_scope = Scope {
            item: step.for_each.is_some(),
        };
        walk_strings(&step.input, format!("{at}.input"), &mut |location, text| {
            check(location, text, false, input_scope)
        });
        let outer = Scope { item: false };
        if let Some(when) = &step.when {
            check(format!("{at}.when"), when, true, outer);
        }
        if let Some(for_each) = &step.for_each {
            check(format!("{at}.for_each"), for_each, true, outer);
        }
    }
    for (at, handler) in [
        ("on_failure", &workflow.on_failure),
        ("on_success", &workflow.on_success),
    ] {
        if let Some(handler) = handler {
            walk_strings(
                &handler.input,
                format!("{at}.input"),
                &mut |location, text| check(location, text, false, Scope { item: false }),
            );
        }
    }
}

/// Why `name` (nested, e.g. `vars.who`) cannot be read, if it cannot.
fn undefined(
    name: &str,
    workflow: &Workflow,
    ids: &BTreeSet<&str>,
    scope: Scope,
) -> Option<String> {
    let mut parts = name.split('.');
    let root = parts.next().unwrap_or(name);
    let field = parts.next();
    match root {
        "trigger" => None,
        "vars" => match field {
            Some(var) if !workflow.vars.contains_key(var) => Some(format!(
                "`vars.{var}` is not declared: add \"{var}\" to the workflow's \"vars\" (a default, or null)"
            )),
            _ => None,
        },
        "steps" => {
            let id = field?;
            // Unknown step ids are reported by the graph.
            if !ids.contains(id) {
                return None;
            }
            match parts.next() {
                None | Some("output" | "status") => None,
                Some(other) => Some(format!(
                    "`steps.{id}.{other}`: a step exposes `output` and `status` (did you mean `steps.{id}.output.{other}`?)"
                )),
            }
        }
        "run" => match field {
            None | Some("id" | "workflow") => None,
            Some(other) => Some(format!(
                "`run.{other}` is not defined: `run` has `id` and `workflow`"
            )),
        },
        "item" | "index" if scope.item => None,
        "item" | "index" => Some(format!(
            "`{root}` is only defined in the input of a step with `for_each`"
        )),
        other => Some(format!(
            "`{other}` is not defined: templates read `trigger`, `vars`, `steps.<id>.output`, `run`{} (a literal `{{{{ … }}}}` for the piece goes inside `{{% raw %}}…{{% endraw %}}`)",
            if scope.item { ", `item`, `index`" } else { "" }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(json: &str) -> Vec<String> {
        let workflow = Workflow::from_json(json).expect("parses");
        let mut errors = Vec::new();
        check_template_names(&workflow, &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn known_names_pass() {
        let found = problems(
            r#"{"name": "w", "vars": {"who": "x", "list": [1]}, "steps": [
                {"id": "a", "piece": "t", "action": "x",
                 "input": {"t": "{{ vars.who }} {{ run.id }} {{ trigger.payload.x }} {{ range(3) | list }}"}},
                {"id": "b", "piece": "t", "action": "x", "for_each": "{{ vars.list }}",
                 "when": "steps.a.status == 'succeeded'",
                 "input": {"t": "{{ item }} {{ index }} {{ steps.a.output.text }}",
                           "u": "{% for x in vars.list %}{{ x }}{{ loop.index }}{% endfor %}",
                           "raw": "{% raw %}{{ name }}{% endraw %}"}}
            ]}"#,
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn undefined_names_are_reported_with_their_place() {
        let found = problems(
            r#"{"name": "w", "vars": {"who": "x"}, "steps": [
                {"id": "a", "piece": "t", "action": "x",
                 "input": {"template": "Hello, {{ name }}!", "v": "{{ vars.whom }}", "i": "{{ item }}"}},
                {"id": "b", "piece": "t", "action": "x", "when": "{{ steps.a.text }}",
                 "input": {"r": "{{ run.started }}"}}
            ], "on_failure": {"piece": "t", "action": "x", "input": {"m": "{{ oops }}"}}}"#,
        );
        let expect = [
            "steps[a].input.template: `name` is not defined",
            "steps[a].input.v: `vars.whom` is not declared",
            "steps[a].input.i: `item` is only defined",
            "steps[b].when: `steps.a.text`",
            "steps[b].input.r: `run.started` is not defined",
            "on_failure.input.m: `oops` is not defined",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "{e:?} not in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }
}
