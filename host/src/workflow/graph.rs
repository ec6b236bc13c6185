//! The step graph: edges from `needs` and from `steps.<id>` references in templates.
//!
//! Owns: turning a list of steps into a [`Dag`] (topological order, dependencies with their
//! handles, dependents) and the graph errors: unknown `needs`, dangling template references,
//! templates that do not parse, and cycles, which are reported by name (`a -> b -> c -> a`).
//! Must not know: pieces, catalogs or how steps are executed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::model::Step;
use super::template::{self, TemplateError};
use super::validate::ValidationError;

/// The steps of a workflow as a directed acyclic graph; indexes are positions in `steps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dag {
    /// Every step once, each after all of its dependencies; ties keep the author's order.
    pub order: Vec<usize>,
    /// Per step: what it waits for.
    pub deps: Vec<Vec<Dependency>>,
    /// Per step: the steps that wait for it, ascending.
    pub dependents: Vec<Vec<usize>>,
}

/// One edge into a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// Index of the step waited for.
    pub step: usize,
    /// `Some("then")` for `needs: ["check.then"]`: the dependent runs only if `check` chose
    /// handle `then`. `None`: any successful outcome.
    pub handle: Option<String>,
}

impl Dag {
    /// Builds the graph, or returns every graph error found.
    ///
    /// With duplicate ids, references resolve to the first step with that id (duplicates are
    /// reported by `validate`).
    pub fn build(steps: &[Step]) -> Result<Dag, Vec<ValidationError>> {
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, step) in steps.iter().enumerate() {
            index.entry(step.id.as_str()).or_insert(i);
        }
        let mut errors = Vec::new();
        let mut deps = Vec::with_capacity(steps.len());
        for step in steps {
            deps.push(step_dependencies(step, &index, &mut errors));
        }
        let mut dependents = vec![Vec::new(); steps.len()];
        for (i, step_deps) in deps.iter().enumerate() {
            for dep in step_deps {
                if !dependents[dep.step].contains(&i) {
                    dependents[dep.step].push(i);
                }
            }
        }
        dependents.iter_mut().for_each(|d| d.sort_unstable());
        let order = match topological_order(&deps, &dependents) {
            Ok(order) => order,
            Err(cycle) => {
                let names: Vec<&str> = cycle.iter().map(|&i| steps[i].id.as_str()).collect();
                errors.push(ValidationError::new(
                    format!("steps[{}]", names[0]),
                    format!(
                        "cycle: {} -> {} (each step needs the one before it)",
                        names.join(" -> "),
                        names[0]
                    ),
                ));
                Vec::new()
            }
        };
        if errors.is_empty() {
            Ok(Dag {
                order,
                deps,
                dependents,
            })
        } else {
            Err(errors)
        }
    }
}

/// A step's dependencies: `needs` entries first (in order), then template references.
fn step_dependencies(
    step: &Step,
    index: &HashMap<&str, usize>,
    errors: &mut Vec<ValidationError>,
) -> Vec<Dependency> {
    let at = super::validate::step_at(&step.id);
    let mut deps: Vec<Dependency> = Vec::new();
    for need in &step.needs {
        let (id, handle) = match need.split_once('.') {
            Some((id, handle)) => (id, Some(handle)),
            None => (need.as_str(), None),
        };
        if handle.is_some_and(str::is_empty) {
            errors.push(ValidationError::new(
                &at,
                format!("needs `{need}`: the handle after '.' is empty (write \"{id}\" or \"{id}.<handle>\")"),
            ));
            continue;
        }
        let Some(&target) = index.get(id) else {
            errors.push(ValidationError::new(
                &at,
                format!("needs unknown step `{id}`"),
            ));
            continue;
        };
        let dep = Dependency {
            step: target,
            handle: handle.map(str::to_owned),
        };
        if !deps.contains(&dep) {
            deps.push(dep);
        }
    }
    let mut referenced = BTreeSet::new();
    for (field, id) in step_references(step, errors) {
        match index.get(id.as_str()) {
            Some(&target) => {
                referenced.insert(target);
            }
            None => errors.push(ValidationError::new(
                format!("{at}.{field}"),
                unknown_reference(&id, index.keys().copied()),
            )),
        }
    }
    for target in referenced {
        // A `needs` edge (with or without handle) already orders the two steps.
        if !deps.iter().any(|dep| dep.step == target) {
            deps.push(Dependency {
                step: target,
                handle: None,
            });
        }
    }
    deps
}

/// `references unknown step `my``, with a hint when `steps.my-step` was meant: a `-` in a dotted
/// path is a minus sign, so such ids must be written `steps['my-step']`.
fn unknown_reference<'a>(id: &str, ids: impl Iterator<Item = &'a str>) -> String {
    let prefix = format!("{id}-");
    let mut hyphenated: Vec<&str> = ids.filter(|known| known.starts_with(&prefix)).collect();
    hyphenated.sort_unstable();
    match hyphenated.first() {
        Some(meant) => format!(
            "references unknown step `{id}` (for `{meant}` write steps['{meant}']: '-' is a minus sign in templates)"
        ),
        None => format!("references unknown step `{id}`"),
    }
}

/// `(field, step id)` for every `steps.<id>` read by the step's `input`, `when` and `for_each`;
/// templates that do not parse are reported into `errors`.
fn step_references(step: &Step, errors: &mut Vec<ValidationError>) -> Vec<(String, String)> {
    let at = super::validate::step_at(&step.id);
    let mut refs = input_references(&step.input, &format!("{at}.input"), errors)
        .into_iter()
        .map(|(field, id)| (field[at.len() + 1..].to_owned(), id))
        .collect::<Vec<_>>();
    let expressions = [("when", &step.when), ("for_each", &step.for_each)];
    for (field, expression) in expressions {
        let Some(expression) = expression else {
            continue;
        };
        match template::expression_referenced_steps(expression) {
            Ok(ids) => refs.extend(ids.into_iter().map(|id| (field.to_owned(), id))),
            Err(err) => errors.push(template_error(format!("{at}.{field}"), &err)),
        }
    }
    refs
}

/// `(location, step id)` for every `steps.<id>` read by templates inside `input`, where
/// location is `at` followed by the JSON path (`steps[x].input.body[0]`).
pub(crate) fn input_references(
    input: &Value,
    at: &str,
    errors: &mut Vec<ValidationError>,
) -> Vec<(String, String)> {
    let mut refs = Vec::new();
    walk_strings(
        input,
        at.to_owned(),
        &mut |location, text| match template::referenced_steps(text) {
            Ok(ids) => refs.extend(ids.into_iter().map(|id| (location.clone(), id))),
            Err(err) => errors.push(template_error(location, &err)),
        },
    );
    refs
}

pub(crate) fn walk_strings(value: &Value, location: String, visit: &mut impl FnMut(String, &str)) {
    match value {
        Value::String(text) if template::is_template(text) => visit(location, text),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_strings(item, format!("{location}[{i}]"), visit);
            }
        }
        Value::Object(map) => {
            // Sorted, so errors come out in the same order whatever serde_json's map ordering.
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by_key(|(key, _)| *key);
            for (key, item) in entries {
                walk_strings(item, format!("{location}.{key}"), visit);
            }
        }
        _ => {}
    }
}

fn template_error(at: String, err: &TemplateError) -> ValidationError {
    match err {
        TemplateError::Syntax { message, .. } => {
            ValidationError::new(at, format!("template does not parse: {message}"))
        }
        other => ValidationError::new(at, other.to_string()),
    }
}

/// Kahn's algorithm, always taking the lowest ready index so the order is stable.
/// On a cycle, returns one cycle in execution order, starting at its lowest index.
fn topological_order(
    deps: &[Vec<Dependency>],
    dependents: &[Vec<usize>],
) -> Result<Vec<usize>, Vec<usize>> {
    let mut waiting: Vec<usize> = deps
        .iter()
        .map(|d| d.iter().map(|dep| dep.step).collect::<BTreeSet<_>>().len())
        .collect();
    let mut ready: BTreeSet<usize> = (0..deps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(deps.len());
    while let Some(next) = ready.pop_first() {
        order.push(next);
        for &dependent in &dependents[next] {
            waiting[dependent] -= 1;
            if waiting[dependent] == 0 {
                ready.insert(dependent);
            }
        }
    }
    if order.len() == deps.len() {
        return Ok(order);
    }
    // Every step left over waits for another left-over step, so walking "needs" edges from one
    // of them must come back to a step already on the path.
    let placed: BTreeSet<usize> = order.into_iter().collect();
    let left = |i: &usize| !placed.contains(i);
    let start = (0..deps.len()).find(left).expect("some step is left over");
    let mut path = vec![start];
    let mut position = BTreeMap::from([(start, 0)]);
    loop {
        let current = *path.last().expect("path is never empty");
        let next = deps[current]
            .iter()
            .map(|dep| dep.step)
            .filter(left)
            .min()
            .expect("a left-over step waits for a left-over step");
        if let Some(&at) = position.get(&next) {
            let mut cycle: Vec<usize> = path[at..].iter().rev().copied().collect();
            let lowest = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
            cycle.rotate_left(lowest);
            return Err(cycle);
        }
        position.insert(next, path.len());
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse_steps(spec: Value) -> Vec<Step> {
        let steps: Vec<Value> = spec
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s["piece"] = json!("transform");
                s["action"] = json!("pick");
                s
            })
            .collect();
        serde_json::from_value(Value::Array(steps)).unwrap()
    }

    fn messages(errors: Vec<ValidationError>) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn topological_order_respects_needs_and_references() {
        let steps = parse_steps(json!([
            { "id": "c", "input": { "x": "{{ steps.b.output }}" } },
            { "id": "a" },
            { "id": "b", "needs": ["a"] },
            { "id": "d", "when": "steps.a.output.ok", "for_each": "{{ steps.c.output }}" },
        ]));
        let dag = Dag::build(&steps).unwrap();
        assert_eq!(dag.order, [1, 2, 0, 3]);
        assert_eq!(dag.dependents, [vec![3], vec![2, 3], vec![0], vec![]]);
        let d: Vec<usize> = dag.deps[3].iter().map(|d| d.step).collect();
        assert_eq!(d, [0, 1]);
    }

    #[test]
    fn handle_dependencies() {
        let steps = parse_steps(json!([
            { "id": "check" },
            { "id": "yes", "needs": ["check.then"], "input": "{{ steps.check.output }}" },
            { "id": "no", "needs": ["check.else"] },
            { "id": "join", "needs": ["yes", "no"] },
        ]));
        let dag = Dag::build(&steps).unwrap();
        assert_eq!(
            dag.deps[1],
            [Dependency {
                step: 0,
                handle: Some("then".into())
            }]
        );
        assert_eq!(dag.deps[2][0].handle.as_deref(), Some("else"));
        assert_eq!(
            dag.deps[3].iter().map(|d| d.step).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(dag.order, [0, 1, 2, 3]);
    }

    #[test]
    fn cycles_are_named_in_execution_order() {
        let steps = parse_steps(json!([
            { "id": "start" },
            { "id": "a", "needs": ["start", "c"] },
            { "id": "b", "input": "{{ steps.a.output }}" },
            { "id": "c", "needs": ["b"] },
        ]));
        assert_eq!(
            messages(Dag::build(&steps).unwrap_err()),
            ["steps[a]: cycle: a -> b -> c -> a (each step needs the one before it)"]
        );
        let selfish = parse_steps(json!([{ "id": "me", "when": "steps.me.status" }]));
        assert_eq!(
            messages(Dag::build(&selfish).unwrap_err()),
            ["steps[me]: cycle: me -> me (each step needs the one before it)"]
        );
    }

    #[test]
    fn hyphenated_ids_get_a_hint() {
        let steps = parse_steps(json!([
            { "id": "my-step" },
            { "id": "b", "input": "{{ steps.my-step.output }}" },
        ]));
        assert_eq!(
            messages(Dag::build(&steps).unwrap_err()),
            [
                "steps[b].input: references unknown step `my` (for `my-step` write steps['my-step']: '-' is a minus sign in templates)"
            ]
        );
    }

    #[test]
    fn unknown_needs_and_references_are_reported() {
        let steps = parse_steps(json!([
            { "id": "a", "needs": ["ghost", "a."], "input": { "list": ["{{ steps.nope.output }}"] } },
        ]));
        let errors = messages(Dag::build(&steps).unwrap_err());
        assert_eq!(
            errors,
            [
                "steps[a]: needs unknown step `ghost`",
                "steps[a]: needs `a.`: the handle after '.' is empty (write \"a\" or \"a.<handle>\")",
                "steps[a].input.list[0]: references unknown step `nope`",
            ]
        );
    }
}
