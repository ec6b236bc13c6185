//! The `code` piece: user JavaScript (Boa) inside a component. Data-driven
//! cases from `tests/data/code/*.js`, then the limits: fuel, deadline,
//! memory, recursion, output size, and hostile code next to normal code.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use omniflow::runtime::{LoadedPiece, StepCall, StepFailure, StepReport};
use serde_json::{Value, json};

use crate::support::{guest, load, runtime, shared_runtime};

fn js(code: &str, input: Value) -> StepCall {
    StepCall::new(
        "run-js",
        "code",
        "run-js",
        json!({ "code": code, "input": input }),
    )
}

fn failure(report: &StepReport) -> &StepFailure {
    report
        .outcome
        .as_ref()
        .err()
        .unwrap_or_else(|| panic!("expected a failure, got {:?}", report.outcome))
}

async fn code_piece() -> Arc<LoadedPiece> {
    load("code").await
}

/// One `tests/data/code/*.js` file: header comments say what to expect.
#[derive(Debug, Default)]
struct Case {
    name: String,
    source: String,
    input: Value,
    expect: Option<Value>,
    error: Option<String>,
    message_contains: Vec<String>,
    log_contains: Vec<String>,
    retry_after_ms: Option<u64>,
}

fn parse_case(path: &Path) -> Case {
    let source = std::fs::read_to_string(path).unwrap();
    let mut case = Case {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        input: Value::Null,
        ..Case::default()
    };
    for line in source.lines() {
        let Some(comment) = line.strip_prefix("//") else {
            break;
        };
        let Some((key, value)) = comment.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        let json = || {
            serde_json::from_str::<Value>(value)
                .unwrap_or_else(|e| panic!("{}: bad JSON after `{key}:`: {e}", case.name))
        };
        match key.trim() {
            "input" => case.input = json(),
            "expect" => case.expect = Some(json()),
            "error" => case.error = Some(value.to_string()),
            "message-contains" => case.message_contains.push(value.to_string()),
            "log-contains" => case.log_contains.push(value.to_string()),
            "retry-after-ms" => case.retry_after_ms = Some(value.parse().unwrap()),
            other => panic!("{}: unknown header `{other}`", case.name),
        }
    }
    assert!(
        case.expect.is_some() != case.error.is_some(),
        "{}: give exactly one of `// expect:` and `// error:`",
        case.name
    );
    case.source = source;
    case
}

fn check_case(case: &Case, report: &StepReport) -> Result<(), String> {
    match (&case.expect, &report.outcome) {
        (Some(want), Ok(got)) if want == got => {}
        (Some(want), got) => return Err(format!("expected {want}, got {got:?}")),
        (None, Ok(got)) => return Err(format!("expected an error, got {got}")),
        (None, Err(f)) => {
            let class = case.error.as_deref().unwrap_or_default();
            if f.class() != class {
                return Err(format!("expected class {class}, got {}: {f}", f.class()));
            }
            let message = f.message();
            for needle in &case.message_contains {
                if !message.contains(needle.as_str()) {
                    return Err(format!("message {message:?} lacks {needle:?}"));
                }
            }
            if case.retry_after_ms.is_some()
                && f.retry_after() != case.retry_after_ms.map(Duration::from_millis)
            {
                return Err(format!(
                    "retry-after {:?}, expected {:?} ms",
                    f.retry_after(),
                    case.retry_after_ms
                ));
            }
        }
    }
    for needle in &case.log_contains {
        if !report.log.contains(needle.as_str()) {
            return Err(format!("log {:?} lacks {needle:?}", report.log));
        }
    }
    Ok(())
}

fn case_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/code");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "js"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn data_driven_cases() {
    let piece = code_piece().await;
    run_cases(runtime(), &piece).await;
}

/// The same cases on code compiled by Winch (what `omniflow run` compiles
/// with on an empty cache): the same answers, the same limits.
#[tokio::test]
async fn data_driven_cases_on_the_baseline_compiler() {
    let runtime = crate::support::baseline_runtime();
    let piece = runtime.load(&guest("code")).await.unwrap();
    assert_eq!(piece.compiler(), omniflow::runtime::Compiler::Baseline);
    run_cases(runtime, &piece).await;
}

async fn run_cases(runtime: &omniflow::runtime::Runtime, piece: &LoadedPiece) {
    let files = case_files();
    assert!(files.len() >= 30, "only {} cases found", files.len());
    let mut problems = Vec::new();
    for path in &files {
        let case = parse_case(path);
        let report = runtime
            .run(piece, js(&case.source, case.input.clone()))
            .await;
        if let Err(problem) = check_case(&case, &report) {
            problems.push(format!("{}: {problem}", case.name));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} cases failed:\n{}",
        problems.len(),
        files.len(),
        problems.join("\n")
    );
}

#[tokio::test]
async fn error_positions_point_into_the_users_code() {
    // Body form puts a wrapper before the first line; positions on that
    // line must still be the user's columns.
    let piece = code_piece().await;
    let report = runtime()
        .run(&piece, js("return 1 +* 2", Value::Null))
        .await;
    let f = failure(&report);
    assert_eq!(f.class(), "invalid-input");
    assert!(
        f.message().contains("SyntaxError: unexpected token '*'"),
        "{f}"
    );
    assert!(f.message().contains("at line 1, col 11"), "{f}");
    assert!(!f.message().contains("(native)"), "{f}");

    let code = "function f() { throw new Error('boom'); }\nreturn f();";
    let report = runtime().run(&piece, js(code, Value::Null)).await;
    let f = failure(&report);
    assert_eq!(f.class(), "fatal");
    assert!(f.message().starts_with("Uncaught Error: boom\n"), "{f}");
    assert!(f.message().contains("at f (code.js:1:22)"), "{f}");
    assert!(f.message().contains("code.js:2:"), "{f}");
}

#[tokio::test]
async fn piece_describes_itself_and_imports_only_allowed_interfaces() {
    let piece = code_piece().await;
    assert_eq!(piece.info().name, "code");
    let action = piece.info().action("run-js").expect("run-js action");
    assert_eq!(action.input_schema["required"], json!(["code"]));
    assert_eq!(action.input_schema["additionalProperties"], json!(false));
    let allowed = [
        "omniflow:piece/",
        "wasi:http/",
        "wasi:io/",
        "wasi:clocks/",
        "wasi:random/",
        "wasi:cli/environment",
        "wasi:cli/exit",
        "wasi:cli/stdin",
        "wasi:cli/stdout",
        "wasi:cli/stderr",
        "wasi:cli/terminal-",
    ];
    for import in piece.imports() {
        assert!(
            allowed.iter().any(|p| import.starts_with(p)),
            "unexpected import {import}"
        );
    }
    // The same bytes are what the host embeds as a built-in.
    assert!(guest("code").len() > 1 << 20);
}

#[tokio::test]
async fn unknown_input_fields_are_invalid_input() {
    let piece = code_piece().await;
    let call = StepCall::new(
        "r",
        "s",
        "run-js",
        json!({ "code": "return 1", "inptu": 2 }),
    );
    let report = runtime().run(&piece, call).await;
    assert_eq!(failure(&report).class(), "invalid-input");
    assert!(
        failure(&report).message().contains("inptu"),
        "{}",
        failure(&report)
    );
}

#[tokio::test]
async fn no_state_leaks_between_runs() {
    let piece = code_piece().await;
    let first = "globalThis.leaked = 1; Array.prototype.evil = () => 1; \
                 const r = Math.random(); Math.random = () => 4; return [typeof leaked, r]";
    let out = runtime()
        .run(&piece, js(first, Value::Null))
        .await
        .outcome
        .unwrap();
    assert_eq!(out[0], "number");
    let second = "return [typeof leaked, typeof [].evil, Math.random()]";
    let out2 = runtime()
        .run(&piece, js(second, Value::Null))
        .await
        .outcome
        .unwrap();
    assert_eq!(out2[0], "undefined");
    assert_eq!(out2[1], "undefined");
    // Math.random is real (wasi:random), not a fixed seed per instance.
    let (r1, r2) = (out[1].as_f64().unwrap(), out2[2].as_f64().unwrap());
    assert!((0.0..1.0).contains(&r1) && (0.0..1.0).contains(&r2));
    assert_ne!(r1, r2, "two fresh instances drew the same Math.random()");
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() {
    let piece = code_piece().await;
    let mut call = js("while (true) {}", Value::Null);
    call.limits.fuel = 200_000_000;
    let report = runtime().run(&piece, call).await;
    assert_eq!(failure(&report).class(), "out-of-fuel");
    assert_eq!(report.fuel_used, 200_000_000);
}

#[tokio::test]
async fn infinite_loop_with_fuel_to_spare_times_out() {
    let piece = code_piece().await;
    let mut call = js("let i = 0; for (;;) { i++; }", Value::Null);
    call.limits.fuel = u64::MAX / 2;
    call.limits.timeout = Duration::from_millis(300);
    let report = runtime().run(&piece, call).await;
    assert_eq!(failure(&report).class(), "timeout");
    assert!(
        report.duration < Duration::from_secs(5),
        "{:?}",
        report.duration
    );
}

#[tokio::test]
async fn allocation_bombs_hit_the_memory_limit() {
    let piece = code_piece().await;
    for bomb in [
        "const keep = []; for (;;) keep.push(new Uint8Array(1 << 20));",
        "const keep = []; for (let i = 0; ; i++) keep.push({ i, s: 'v' + i });",
    ] {
        let mut call = js(bomb, Value::Null);
        call.limits.memory_bytes = 32 << 20;
        call.limits.fuel = 50_000_000_000;
        let report = runtime().run(&piece, call).await;
        let f = failure(&report);
        assert_eq!(f.class(), "memory-limit", "{bomb}: {f}");
        assert!(f.message().contains("limit is 33554432"), "{f}");
    }
}

#[tokio::test]
async fn deep_recursion_is_a_classified_error() {
    let piece = code_piece().await;
    // Plain JS recursion: Boa's recursion limit, uncatchable by the code.
    let code = "function down(n) { return down(n + 1) + 1; }\n\
                try { return down(0); } catch (e) { return 'caught ' + e; }";
    let report = runtime().run(&piece, js(code, Value::Null)).await;
    let f = failure(&report);
    assert_eq!(f.class(), "fatal", "{f}");
    assert!(
        f.message().contains("maximum number of recursive calls"),
        "{f}"
    );

    // Recursion through native callbacks nests Rust frames too: whichever
    // stack gives out first, the attempt ends classified and the host is fine.
    let code = "function down(n) { return [n].map(down); }\nreturn down(0);";
    let report = runtime().run(&piece, js(code, Value::Null)).await;
    let class = failure(&report).class();
    assert!(
        ["fatal", "stack-overflow", "trap(memory-out-of-bounds)"].contains(&class.as_str()),
        "{class}: {}",
        failure(&report)
    );

    // And the piece is still fine afterwards.
    let report = runtime().run(&piece, js("return 1 + 1", Value::Null)).await;
    assert_eq!(report.outcome.unwrap(), 2);
}

#[tokio::test]
async fn huge_output_is_refused() {
    let piece = code_piece().await;
    // Boa's `repeat` keeps one 16-byte slice per repetition: repeat a 1 MiB
    // string instead of repeating one character 100 Mi times.
    let mut call = js(
        "return 'x'.repeat(1 << 20).repeat(input.mb)",
        json!({ "mb": 100 }),
    );
    call.limits.memory_bytes = 512 << 20;
    let report = runtime().run(&piece, call).await;
    let f = failure(&report);
    assert_eq!(f.class(), "output-too-large", "{f}");
    assert!(
        matches!(f, StepFailure::OutputTooLarge { size, .. } if *size >= 100 << 20),
        "{f}"
    );
    assert!(
        report.duration < Duration::from_secs(20),
        "{:?}",
        report.duration
    );
}

#[tokio::test]
async fn strings_are_escaped_at_every_offset() {
    // The output writer copies plain runs eight bytes at a time; put every
    // kind of special character at every offset around those chunks.
    let piece = code_piece().await;
    let code = "const specials = ['\"', '\\\\', '\\n', '\\u0001', '\\u007f', 'é', '€', '😀'];\n\
                return specials.flatMap((c) => Array.from({ length: 20 }, (_, i) => \
                'a'.repeat(i) + c + 'b'.repeat(19 - i) + c));";
    let report = runtime().run(&piece, js(code, Value::Null)).await;
    let specials = ["\"", "\\", "\n", "\u{1}", "\u{7f}", "é", "€", "😀"];
    let want: Vec<String> = specials
        .iter()
        .flat_map(|c| {
            (0..20).map(move |i| format!("{}{c}{}{c}", "a".repeat(i), "b".repeat(19 - i)))
        })
        .collect();
    assert_eq!(report.outcome.unwrap(), json!(want));
}

#[tokio::test]
async fn console_output_is_capped_with_a_marker() {
    let piece = code_piece().await;
    let code = "for (let i = 0; i < 5000; i++) console.log('line', i, 'x'.repeat(40)); return 'ok'";
    let report = runtime().run(&piece, js(code, Value::Null)).await;
    assert_eq!(report.outcome.unwrap(), "ok");
    assert!(
        report.log.starts_with("[info] line 0 xxxx"),
        "{}",
        &report.log[..80]
    );
    assert!(report.log.contains("console output truncated"), "no marker");
    assert_eq!(report.log.matches("truncated").count(), 1);
    assert!(report.log.len() < (64 << 10) + 4096, "{}", report.log.len());
}

#[tokio::test]
async fn fetch_without_a_grant_fails_cleanly() {
    let piece = code_piece().await;
    let code = "try { await fetch('http://127.0.0.1:9/'); return 'reached'; } \
                catch (e) { return [e.name, e.message]; }";
    let report = runtime().run(&piece, js(code, Value::Null)).await;
    let out = report.outcome.unwrap();
    assert_eq!(out[0], "TypeError");
    assert!(
        out[1].as_str().unwrap().contains("no network access"),
        "{out}"
    );

    let report = runtime()
        .run(
            &piece,
            js("return await fetch('https://example.com')", Value::Null),
        )
        .await;
    let f = failure(&report);
    assert_eq!(f.class(), "fatal");
    assert!(
        f.message()
            .starts_with("Uncaught TypeError: fetch is not available"),
        "{f}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_code_does_not_slow_normal_runs() {
    let piece = code_piece().await;
    let hostile = [
        ("while (true) {}", u64::MAX / 2, 64 << 20),
        (
            "const a = []; for (;;) a.push('y'.repeat(1 << 16));",
            u64::MAX / 2,
            32 << 20,
        ),
        (
            "function f() { return f() + 1; } return f();",
            u64::MAX / 2,
            64 << 20,
        ),
        ("let s = 'x'; for (;;) s = s + s;", u64::MAX / 2, 48 << 20),
    ];
    let handles: Vec<_> = hostile
        .iter()
        .map(|(code, fuel, memory)| {
            let mut call = js(code, Value::Null);
            call.limits.fuel = *fuel;
            call.limits.memory_bytes = *memory;
            call.limits.timeout = Duration::from_secs(5);
            let piece = piece.clone();
            let rt = shared_runtime().clone();
            tokio::spawn(async move { rt.run(&piece, call).await })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let report = runtime()
            .run(
                &piece,
                js("return input.a + input.b", json!({"a": i, "b": 1})),
            )
            .await;
        assert_eq!(report.outcome.unwrap(), i + 1);
        slowest = slowest.max(report.duration);
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a normal run took {slowest:?}"
    );
    assert!(
        !handles[0].is_finished(),
        "the spinner should still spin while normal runs finish"
    );
    for handle in handles {
        let report = handle.await.unwrap();
        let class = failure(&report).class();
        assert!(
            ["timeout", "memory-limit", "fatal", "out-of-fuel"].contains(&class.as_str()),
            "{class}: {}",
            failure(&report)
        );
    }
}
