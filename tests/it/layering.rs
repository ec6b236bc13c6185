//! The module layering of `host/src`, checked on the source (in the spirit of
//! rust-analyzer's tidy tests): each top-level module may only use the crate
//! modules below it and the external crates of its concern. ARCHITECTURE.md
//! ("Layers") explains the table; a failure names the file, the line and
//! the rule.

use std::path::{Path, PathBuf};

/// (module, crate modules it may use, external crates it must not name).
const RULES: &[(&str, &[&str], &[&str])] = &[
    // The pure model: no I/O, no runtime, no framework.
    (
        "workflow",
        &["names"],
        &[
            "wasmtime",
            "wasmtime_wasi",
            "wasmtime_wasi_http",
            "sqlx",
            "rusqlite",
            "axum",
            "tokio",
            "hyper",
            "reqwest",
        ],
    ),
    (
        "names",
        &[],
        &["wasmtime", "sqlx", "rusqlite", "axum", "tokio"],
    ),
    // The generated host bindings of `wit/piece.wit`.
    ("bindings", &[], &["sqlx", "rusqlite", "axum"]),
    (
        "logfmt",
        &[],
        &["wasmtime", "sqlx", "rusqlite", "axum", "tokio"],
    ),
    // Storage knows only its own records.
    (
        "store",
        &["names"],
        &["wasmtime", "wasmtime_wasi", "axum", "hyper", "reqwest"],
    ),
    // Capabilities: host interfaces a piece may be granted; the model of grants.
    (
        "capabilities",
        &["bindings", "workflow", "store", "names", "logfmt"],
        &["sqlx", "rusqlite", "axum"],
    ),
    // The sandbox: wasmtime, limits, classification; capabilities link into it.
    (
        "runtime",
        &["bindings", "capabilities", "names", "logfmt"],
        &["sqlx", "rusqlite", "axum"],
    ),
    // Runs: scheduling steps on the runtime, persisting through the store.
    (
        "engine",
        &[
            "runtime",
            "capabilities",
            "workflow",
            "store",
            "names",
            "logfmt",
        ],
        &[
            "sqlx",
            "rusqlite",
            "axum",
            "wasmtime",
            "wasmtime_wasi",
            "hyper",
        ],
    ),
    // The one way a run starts (manual, API, batch, webhook, schedule, retry).
    (
        "triggers",
        &[
            "engine",
            "runtime",
            "capabilities",
            "workflow",
            "store",
            "names",
            "logfmt",
        ],
        &["sqlx", "rusqlite", "axum", "wasmtime", "hyper"],
    ),
    // The HTTP edge: no SQL, no worker pool (it talks to the queue through the engine's trait).
    (
        "api",
        &[
            "triggers",
            "engine",
            "runtime",
            "capabilities",
            "workflow",
            "store",
            "names",
            "logfmt",
        ],
        &["sqlx", "rusqlite", "wasmtime", "wasmtime_wasi"],
    ),
    // The process: worker pool, heartbeats, the listener.
    (
        "server",
        &[
            "api",
            "triggers",
            "engine",
            "runtime",
            "capabilities",
            "workflow",
            "store",
            "names",
            "logfmt",
        ],
        &["sqlx", "rusqlite", "wasmtime", "axum"],
    ),
];

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
        return;
    }
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            rust_files(&entry.path(), out);
        }
    }
}

/// The files of a top-level module: `src/<m>.rs` and `src/<m>/**.rs`.
fn module_files(module: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&src().join(format!("{module}.rs")), &mut files);
    rust_files(&src().join(module), &mut files);
    files
}

/// Code lines (comments dropped) of a file, with their numbers.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let code = line.split("//").next().unwrap_or("").trim();
        (!code.is_empty()).then_some((i + 1, code))
    })
}

/// Violations of `RULES` in the source text of one file of `module`.
fn violations(module: &str, file: &str, text: &str) -> Vec<String> {
    let (_, allowed, forbidden) = RULES
        .iter()
        .find(|(m, _, _)| *m == module)
        .expect("a module in RULES");
    let top_level: Vec<&str> = RULES.iter().map(|(m, _, _)| *m).collect();
    let mut found = Vec::new();
    for (n, line) in code_lines(text) {
        for other in &top_level {
            let used = line.contains(&format!("crate::{other}::"))
                || line.contains(&format!("crate::{other};"))
                || line.contains(&format!("crate::{other}}}"))
                || line.contains(&format!("crate::{other},"))
                || line.contains(&format!("crate::{{{other}"));
            if used && *other != module && !allowed.contains(other) {
                found.push(format!(
                    "{file}:{n}: `{module}` must not use `crate::{other}`: {line}"
                ));
            }
        }
        for ext in *forbidden {
            let named = line.contains(&format!("{ext}::"))
                && !line.contains(&format!("_{ext}::"))
                && !line.contains(&format!("crate::{ext}"));
            if named || line.starts_with(&format!("use {ext}")) {
                found.push(format!(
                    "{file}:{n}: `{module}` must not name `{ext}`: {line}"
                ));
            }
        }
    }
    found
}

#[test]
fn modules_only_use_the_layers_below_them() {
    let mut problems = Vec::new();
    for (module, _, _) in RULES {
        for path in module_files(module) {
            let text = std::fs::read_to_string(&path).unwrap();
            let file = path.strip_prefix(src()).unwrap().display().to_string();
            problems.extend(violations(module, &file, &text));
        }
    }
    assert!(
        problems.is_empty(),
        "layering violations:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_layering_check_catches_a_forbidden_import() {
    // What the test would say if `api` reached into the worker pool, or the
    // model into wasmtime: checked on text, so the rule itself is tested.
    assert_eq!(
        violations("api", "api/x.rs", "use crate::server::queue::QueueHandle;").len(),
        1
    );
    assert_eq!(
        violations("workflow", "workflow/x.rs", "use wasmtime::Engine;").len(),
        1
    );
    assert_eq!(
        violations(
            "engine",
            "engine/x.rs",
            "let pool = sqlx::SqlitePool::connect(url);"
        )
        .len(),
        1
    );
    assert!(
        violations(
            "engine",
            "engine/x.rs",
            "use crate::store::Store; // sqlx:: in a comment"
        )
        .is_empty()
    );
    assert!(violations("runtime", "runtime/x.rs", "use wasmtime_wasi_http::p2;").is_empty());
}

/// The SDK carries its own copy of the WIT (so `omniflow-sdk` builds outside
/// this repository, from a package); it must stay identical to `wit/`.
#[test]
fn the_sdk_wit_copy_is_identical_to_wit() {
    fn files(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_path_buf();
                out.push((relative, std::fs::read(&path).unwrap()));
            }
        }
    }
    let repo = src().parent().unwrap().parent().unwrap().to_path_buf();
    let (mut wit, mut copy) = (Vec::new(), Vec::new());
    files(&repo.join("wit"), &repo.join("wit"), &mut wit);
    files(&repo.join("sdk/wit"), &repo.join("sdk/wit"), &mut copy);
    wit.sort();
    copy.sort();
    let names = |v: &[(PathBuf, Vec<u8>)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&wit),
        names(&copy),
        "sdk/wit lists other files than wit/: copy wit/ over it"
    );
    for ((path, a), (_, b)) in wit.iter().zip(&copy) {
        assert!(
            a == b,
            "sdk/wit/{} differs from wit/{}: copy wit/ over sdk/wit",
            path.display(),
            path.display()
        );
    }
}
