//! Data-driven workflow validation tests.
//!
//! Each `tests/data/flows/<case>.json` is a workflow; `<case>.expected` holds the errors it must
//! produce, one per line exactly as `Display` prints them (parse error or validation errors);
//! an empty `.expected` means the workflow is valid. A new case is a new pair of files.
//! `UPDATE_EXPECT=1 cargo test flows` rewrites the `.expected` files from the actual output.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use omniflow::workflow::{
    ActionSummary, CatalogMiss, PieceCatalog, PieceSummary, Version, VersionReq, Workflow, validate,
};
use serde_json::{Value, json};

/// The pieces the cases may use: `transform@0.1.0`, `flow@0.1.0`, `test-fail@0.1.0`.
struct TestCatalog {
    pieces: Vec<PieceSummary>,
}

impl TestCatalog {
    fn new() -> TestCatalog {
        let piece = |name: &str, actions: &[(&str, Value)]| PieceSummary {
            name: name.to_owned(),
            version: Version::new(0, 1, 0),
            digest: format!("{name}-digest"),
            actions: actions
                .iter()
                .map(|(action, schema)| {
                    let summary = ActionSummary::new(schema.clone());
                    ((*action).to_owned(), summary)
                })
                .collect::<BTreeMap<_, _>>(),
        };
        TestCatalog {
            pieces: vec![
                piece(
                    "transform",
                    &[
                        (
                            "pick",
                            json!({
                                "type": "object",
                                "required": ["value", "keys"],
                                "properties": {
                                    "value": {},
                                    "keys": { "type": "array", "items": { "type": "string" } }
                                }
                            }),
                        ),
                        ("template", json!({})),
                    ],
                ),
                piece(
                    "flow",
                    &[
                        (
                            "if",
                            json!({
                                "type": "object",
                                "required": ["condition"],
                                "properties": { "condition": {} }
                            }),
                        ),
                        ("switch", json!({})),
                    ],
                ),
                piece("test-fail", &[("run", json!({}))]),
            ],
        }
    }
}

impl PieceCatalog for TestCatalog {
    fn resolve(
        &self,
        name: &str,
        req: &VersionReq,
    ) -> Result<std::sync::Arc<PieceSummary>, CatalogMiss> {
        let versions: Vec<&PieceSummary> = self.pieces.iter().filter(|p| p.name == name).collect();
        if versions.is_empty() {
            return Err(CatalogMiss::UnknownPiece);
        }
        versions
            .iter()
            .filter(|p| req.matches(&p.version))
            .max_by(|a, b| a.version.cmp(&b.version))
            .map(|p| std::sync::Arc::new((*p).clone()))
            .ok_or_else(|| CatalogMiss::NoMatchingVersion {
                available: versions.iter().map(|p| p.version.clone()).collect(),
            })
    }
}

fn flows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/flows")
}

/// What a case prints: the parse error, or every validation error, one per line.
fn outcome(text: &str, catalog: &TestCatalog) -> Vec<String> {
    match Workflow::from_json(text) {
        Err(err) => vec![err.to_string()],
        Ok(workflow) => match validate(&workflow, catalog) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        },
    }
}

#[test]
fn flows_produce_the_expected_errors() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let catalog = TestCatalog::new();
    let mut cases: Vec<PathBuf> = fs::read_dir(flows_dir())
        .expect("tests/data/flows exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 12,
        "expected at least 12 cases, found {}",
        cases.len()
    );

    let mut failures = Vec::new();
    for case in &cases {
        let text = fs::read_to_string(case).expect("readable case");
        let actual = outcome(&text, &catalog);
        let actual_text: String = actual.iter().map(|line| format!("{line}\n")).collect();
        let expected_path = case.with_extension("expected");
        if update {
            fs::write(&expected_path, &actual_text).expect("writable .expected");
            continue;
        }
        let expected_text = fs::read_to_string(&expected_path).unwrap_or_default();
        let expected: Vec<&str> = expected_text.lines().filter(|l| !l.is_empty()).collect();
        if !expected_path.exists() || expected != actual {
            failures.push(format!(
                "--- {} (actual output follows; paste into {}):\n{actual_text}",
                case.display(),
                expected_path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) differ (run with UPDATE_EXPECT=1 to accept):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_flows_have_a_graph_and_resolved_pieces() {
    let text = fs::read_to_string(flows_dir().join("valid_branch_join.json")).unwrap();
    let workflow = Workflow::from_json(&text).unwrap();
    let validated = validate(&workflow, &TestCatalog::new()).unwrap();
    assert_eq!(validated.dag.order, [0, 1, 2, 3]);
    let join_deps: Vec<usize> = validated.dag.deps[3].iter().map(|d| d.step).collect();
    assert_eq!(join_deps, [1, 2]);
    assert_eq!(validated.dag.deps[1][0].handle.as_deref(), Some("then"));
    assert_eq!(validated.pieces[0].name, "flow");
    assert_eq!(validated.pieces[0].version, Version::new(0, 1, 0));
    assert_eq!(
        validated.on_failure.as_ref().map(|p| p.name.as_str()),
        Some("test-fail")
    );
}
