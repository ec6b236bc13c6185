//! The piece runtime: the contract, limits and the hostile suite.

use std::time::Duration;

use omniflow::runtime::{
    Compiler, Runtime, RuntimeConfig, RuntimeError, StepCall, StepFailure, StepLimits,
};
use serde_json::json;

use crate::support::{guest, load, runtime};

fn call(action: &str, input: serde_json::Value) -> StepCall {
    StepCall::new("run-1", "step-1", action, input)
}

fn failure(report: &omniflow::runtime::StepReport) -> &StepFailure {
    report
        .outcome
        .as_ref()
        .err()
        .unwrap_or_else(|| panic!("expected a failure, got {:?}", report.outcome))
}

#[tokio::test]
async fn builtin_pieces_load_and_describe_themselves() {
    let pieces = runtime().load_builtins().await.expect("built-ins load");
    let mut names: Vec<String> = pieces.iter().map(|p| p.info().name.clone()).collect();
    names.sort();
    // Every crate under pieces/ is a built-in, named after its directory.
    let mut dirs: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../pieces"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    dirs.sort();
    assert_eq!(names, dirs);
    let flow = pieces.iter().find(|p| p.info().name == "flow").unwrap();
    let actions: Vec<&str> = flow
        .info()
        .actions
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(actions, ["if", "switch", "merge"]);
    let if_schema = &flow.info().action("if").unwrap().input_schema;
    assert_eq!(if_schema["required"], json!(["condition"]));
}

#[tokio::test]
async fn transform_and_flow_run_through_the_contract() {
    let transform = load("transform").await;
    let report = runtime()
        .run(
            &transform,
            call(
                "pick",
                json!({"value": {"a": 1, "b": {"c": [10, 20]}}, "keys": ["a", "b.c.1", "zz"]}),
            ),
        )
        .await;
    assert_eq!(
        report.outcome.unwrap(),
        json!({"a": 1, "b.c.1": 20, "zz": null})
    );

    let report = runtime()
        .run(
            &transform,
            call(
                "template",
                json!({"template": "Hi {{ who }}!", "data": {"who": "Ada"}}),
            ),
        )
        .await;
    assert_eq!(report.outcome.unwrap(), json!({"text": "Hi Ada!"}));

    let flow = load("flow").await;
    let report = runtime()
        .run(&flow, call("if", json!({"condition": 0})))
        .await;
    assert_eq!(
        report.outcome.unwrap(),
        json!({"handle": "else", "value": 0})
    );
    let report = runtime()
        .run(
            &flow,
            call(
                "switch",
                json!({"value": "large", "cases": ["small", "large"]}),
            ),
        )
        .await;
    assert_eq!(report.outcome.unwrap()["handle"], "large");
}

#[tokio::test]
async fn piece_errors_are_typed() {
    let flow = load("flow").await;
    let report = runtime().run(&flow, call("if", json!({"nope": 1}))).await;
    assert_eq!(failure(&report).class(), "invalid-input");
    let report = runtime()
        .run(&flow, call("no-such-action", json!({})))
        .await;
    assert!(
        failure(&report)
            .message()
            .contains("no action \"no-such-action\"")
    );

    let flaky = load("flaky").await;
    let report = runtime()
        .run(
            &flaky,
            call("run", json!({"fail_times": 1, "retry_after_ms": 1500})),
        )
        .await;
    let f = failure(&report);
    assert_eq!(f.class(), "retryable");
    assert_eq!(f.retry_after(), Some(Duration::from_millis(1500)));
    let report = runtime()
        .run(
            &flaky,
            call("run", json!({"fail_times": 1, "mode": "fatal"})),
        )
        .await;
    assert_eq!(failure(&report).class(), "fatal");
    assert!(!failure(&report).is_retryable());

    let mut second = call("run", json!({"fail_times": 1, "value": "ok"}));
    second.attempt = 2;
    let report = runtime().run(&flaky, second).await;
    let out = report.outcome.unwrap();
    assert_eq!(out["attempt"], 2);
    assert_eq!(out["idempotency_key"], "run-1:step-1");
    assert!(report.log.contains("[info] succeeded on attempt 2"));
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() {
    let piece = load("hostile_loop").await;
    let mut c = call("run", json!({}));
    c.limits.fuel = 50_000_000;
    let report = runtime().run(&piece, c).await;
    assert_eq!(failure(&report).class(), "out-of-fuel");
    assert_eq!(report.fuel_used, 50_000_000);
}

#[tokio::test]
async fn infinite_loop_with_fuel_to_spare_times_out() {
    let piece = load("hostile_loop").await;
    let mut c = call("run", json!({}));
    c.limits.fuel = u64::MAX / 2;
    c.limits.timeout = Duration::from_millis(300);
    let report = runtime().run(&piece, c).await;
    assert_eq!(failure(&report).class(), "timeout");
    assert!(report.duration >= Duration::from_millis(300));
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let piece = load("hostile_membomb").await;
    let mut c = call("run", json!({}));
    c.limits.memory_bytes = 16 << 20;
    let report = runtime().run(&piece, c).await;
    let f = failure(&report);
    assert_eq!(f.class(), "memory-limit", "{f}");
    assert!(f.message().contains("limit is 16777216"), "{f}");
}

#[tokio::test]
async fn unbounded_recursion_is_a_stack_overflow() {
    let piece = load("hostile_recursion").await;
    let report = runtime().run(&piece, call("run", json!({}))).await;
    assert_eq!(
        failure(&report).class(),
        "stack-overflow",
        "{:?}",
        report.outcome
    );
    // Rust keeps address-taken locals on a stack in linear memory; when that
    // one overflows first the trap is an out-of-bounds access, still contained.
    let report = runtime().run(&piece, call("shadow", json!({}))).await;
    assert_eq!(
        failure(&report).class(),
        "trap(memory-out-of-bounds)",
        "{:?}",
        report.outcome
    );
}

#[tokio::test]
async fn panic_is_a_classified_trap_quoting_the_message() {
    let piece = load("hostile_panic").await;
    let report = runtime().run(&piece, call("run", json!({}))).await;
    let f = failure(&report);
    assert_eq!(f.class(), "trap(unreachable)");
    assert!(f.message().contains("the piece gave up on purpose"), "{f}");
    assert!(f.is_retryable());
}

#[tokio::test]
async fn huge_output_is_refused() {
    let piece = load("hostile_huge_output").await;
    let report = runtime()
        .run(&piece, call("run", json!({"bytes": 3 << 20})))
        .await;
    let f = failure(&report);
    assert_eq!(f.class(), "output-too-large");
    assert!(matches!(f, StepFailure::OutputTooLarge { limit, .. } if *limit == 1 << 20));
    // Under the cap it is fine.
    let report = runtime()
        .run(&piece, call("run", json!({"bytes": 1000})))
        .await;
    assert_eq!(report.outcome.unwrap().as_str().unwrap().len(), 1000);
}

#[tokio::test]
async fn log_flood_is_truncated_with_a_marker() {
    let piece = load("hostile_log_flood").await;
    let mut c = call("run", json!({"lines": 5000}));
    c.limits.log_bytes = 64 << 10;
    let report = runtime().run(&piece, c).await;
    assert_eq!(report.outcome.unwrap()["wrote"], 5000);
    assert!(report.log_truncated);
    assert!(report.log.len() <= (64 << 10) + 200);
    assert!(
        report
            .log
            .ends_with(omniflow::capabilities::log::TRUNCATION_MARKER)
    );
    assert!(report.log.starts_with("[info] 0 flood"));
}

#[tokio::test]
async fn pieces_see_no_env_args_files_or_stdin() {
    // SAFETY of the assertion: the host process certainly has env vars.
    assert!(std::env::vars().count() > 0);
    let piece = load("hostile_env_probe").await;
    let report = runtime().run(&piece, call("run", json!({}))).await;
    let out = report.outcome.unwrap();
    assert_eq!(out["env"], json!([]));
    assert_eq!(out["args"], json!([]));
    assert!(
        out["read_root"].as_str().unwrap().starts_with("Err"),
        "{out}"
    );
    assert!(
        out["read_etc_passwd"].as_str().unwrap().starts_with("Err"),
        "{out}"
    );
    assert_eq!(out["stdin"], "");
}

#[tokio::test]
async fn a_reused_pool_slot_holds_nothing_from_the_previous_attempt() {
    // Pooled slots are restored in place (only the dirtied pages): every
    // attempt must still start from the component's pristine image.
    let piece = load("hostile_env_probe").await;
    for attempt in 0..20 {
        let report = runtime().run(&piece, call("residue", json!({}))).await;
        let out = report.outcome.unwrap();
        assert_eq!(out["calls_before"], 0, "attempt {attempt}: {out}");
        assert_eq!(out["marked_before"], 0, "attempt {attempt}: {out}");
        assert_eq!(out["heap_words"], 4096);
    }
}

#[tokio::test]
async fn forbidden_import_is_refused_at_load_naming_it() {
    let err = runtime()
        .load(&guest("hostile_import"))
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, RuntimeError::ForbiddenImport { .. }), "{err}");
    assert!(err.to_string().contains("evil:backdoor/door"), "{err}");
}

/// `wasi:sockets` is linked (Python's runtime imports it) but every
/// operation is denied: as errors the piece sees, never a trap.
#[tokio::test]
async fn every_socket_operation_is_denied_without_a_trap() {
    let piece = runtime().load(&guest("hostile_sockets")).await.unwrap();
    let report = runtime().run(&piece, call("run", json!({}))).await;
    let out = report.outcome.expect("denials are errors, not traps");
    for op in ["tcp", "udp", "lookup"] {
        let text = out[op].as_str().unwrap_or_default();
        assert!(
            [
                "access-denied",
                "not-supported",
                "permanent-resolver-failure"
            ]
            .iter()
            .any(|denied| text.contains(denied)),
            "{op}: {out}"
        );
    }
}

#[tokio::test]
async fn malformed_inputs_get_distinct_readable_errors() {
    let rt = runtime();
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let flow = guest("flow");
    let truncated = flow[..flow.len() / 2].to_vec();
    let other_world = guest("other-world");

    let mut messages = Vec::new();
    for (what, bytes) in [
        ("random", random),
        ("core", core_module),
        ("truncated", truncated),
        ("other-world", other_world),
    ] {
        let err = rt.load(&bytes).await.err();
        messages.push(
            err.unwrap_or_else(|| panic!("{what} was accepted"))
                .to_string(),
        );
    }
    assert!(
        messages[0].starts_with("not a WebAssembly file"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].contains("core WebAssembly module, not a component"),
        "{}",
        messages[1]
    );
    assert!(
        messages[2].starts_with("malformed component"),
        "{}",
        messages[2]
    );
    assert!(
        messages[3].contains("does not target the omniflow:piece world"),
        "{}",
        messages[3]
    );
    assert!(messages[3].contains("wasi:cli/run"), "{}", messages[3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_piece_does_not_stall_normal_steps() {
    let looping = load("hostile_loop").await;
    let flow = load("flow").await;
    let mut spin = call("run", json!({}));
    spin.limits.fuel = u64::MAX / 2;
    spin.limits.timeout = Duration::from_secs(5);
    // Two spinners: one per worker thread, the worst case for a 2-thread pool.
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let piece = looping.clone();
            let c = spin.clone();
            tokio::spawn(async move { runtime().run(&piece, c).await })
        })
        .collect();
    for i in 0..20 {
        let report = runtime()
            .run(&flow, call("if", json!({"condition": i})))
            .await;
        assert!(report.outcome.is_ok());
    }
    assert!(
        spinners.iter().all(|h| !h.is_finished()),
        "normal steps should finish while the spinners still spin"
    );
    for handle in spinners {
        assert_eq!(failure(&handle.await.unwrap()).class(), "timeout");
    }
}

#[tokio::test]
async fn cancellation_interrupts_a_running_step() {
    let piece = load("hostile_loop").await;
    let mut c = call("run", json!({}));
    c.limits.fuel = u64::MAX / 2;
    c.limits.timeout = Duration::from_secs(30);
    let cancel = c.cancel.clone();
    let handle = tokio::spawn(async move { runtime().run(&piece, c).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    cancel.cancel();
    let report = handle.await.unwrap();
    assert_eq!(failure(&report).class(), "cancelled");
    assert!(report.duration < Duration::from_secs(30));
}

#[tokio::test]
async fn compiled_pieces_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_concurrent_instances: 10,
        ..RuntimeConfig::default()
    };
    let bytes = guest("flow");
    let first = Runtime::new(config.clone())
        .unwrap()
        .load(&bytes)
        .await
        .unwrap();
    assert!(!first.from_cache());
    let second = Runtime::new(config).unwrap();
    let piece = second.load(&bytes).await.unwrap();
    assert!(piece.from_cache());
    let report = second
        .run(&piece, call("if", json!({"condition": true})))
        .await;
    assert_eq!(report.outcome.unwrap()["handle"], "then");
}

#[tokio::test]
async fn defaults_match_the_spec() {
    let limits = StepLimits::default();
    assert_eq!(limits.memory_bytes, 64 << 20);
    assert_eq!(limits.output_bytes, 1 << 20);
    assert_eq!(limits.log_bytes, 256 << 10);
}

/// The hostile suite on code compiled by Winch (`omniflow run`'s compiler
/// for cache misses): every limit still traps and is classified alike.
#[tokio::test]
async fn limits_hold_on_the_baseline_compiler() {
    let runtime = crate::support::baseline_runtime();
    let load = |name: &'static str| async move {
        let piece = runtime.load(&guest(name)).await.unwrap();
        assert_eq!(piece.compiler(), Compiler::Baseline, "{name}");
        piece
    };

    let piece = load("hostile_loop").await;
    let mut c = call("run", json!({}));
    c.limits.fuel = 50_000_000;
    let report = runtime.run(&piece, c).await;
    assert_eq!(failure(&report).class(), "out-of-fuel");
    assert_eq!(report.fuel_used, 50_000_000);
    let mut c = call("run", json!({}));
    c.limits.fuel = u64::MAX / 2;
    c.limits.timeout = Duration::from_millis(300);
    let report = runtime.run(&piece, c).await;
    assert_eq!(failure(&report).class(), "timeout");

    let piece = load("hostile_membomb").await;
    let mut c = call("run", json!({}));
    c.limits.memory_bytes = 16 << 20;
    let report = runtime.run(&piece, c).await;
    let f = failure(&report);
    assert_eq!(f.class(), "memory-limit", "{f}");

    let piece = load("hostile_recursion").await;
    let report = runtime.run(&piece, call("run", json!({}))).await;
    assert_eq!(failure(&report).class(), "stack-overflow");

    let piece = load("hostile_panic").await;
    let report = runtime.run(&piece, call("run", json!({}))).await;
    let f = failure(&report);
    assert_eq!(f.class(), "trap(unreachable)");
    assert!(f.message().contains("the piece gave up on purpose"), "{f}");

    let piece = load("transform").await;
    let report = runtime
        .run(
            &piece,
            call(
                "template",
                json!({"template": "Hi {{ who }}!", "data": {"who": "Ada"}}),
            ),
        )
        .await;
    assert_eq!(report.outcome.unwrap(), json!({"text": "Hi Ada!"}));
}

/// A baseline runtime prefers an optimized artifact already in the cache
/// (what `serve` left), and caches its own Winch artifacts apart from
/// optimized ones.
#[tokio::test]
async fn the_baseline_compiler_prefers_cached_optimized_code() {
    let bytes = guest("flow");
    let config = |dir: &std::path::Path, compiler| RuntimeConfig {
        cache_dir: Some(dir.to_path_buf()),
        max_concurrent_instances: 10,
        compiler,
        ..RuntimeConfig::default()
    };

    let dir = tempfile::tempdir().unwrap();
    let baseline = Runtime::new(config(dir.path(), Compiler::Baseline)).unwrap();
    assert_eq!(baseline.compiler(), Compiler::Baseline);
    let piece = baseline.load(&bytes).await.unwrap();
    assert_eq!(
        (piece.compiler(), piece.from_cache()),
        (Compiler::Baseline, false)
    );
    let again = Runtime::new(config(dir.path(), Compiler::Baseline)).unwrap();
    let piece = again.load(&bytes).await.unwrap();
    assert_eq!(
        (piece.compiler(), piece.from_cache()),
        (Compiler::Baseline, true)
    );
    // An optimizing runtime never takes Winch code from the cache.
    let optimized = Runtime::new(config(dir.path(), Compiler::Optimized)).unwrap();
    let piece = optimized.load(&bytes).await.unwrap();
    assert_eq!(
        (piece.compiler(), piece.from_cache()),
        (Compiler::Optimized, false)
    );
    // Now that optimized code is cached, a baseline runtime runs it.
    let after = Runtime::new(config(dir.path(), Compiler::Baseline)).unwrap();
    let piece = after.load(&bytes).await.unwrap();
    assert_eq!(
        (piece.compiler(), piece.from_cache()),
        (Compiler::Optimized, true)
    );
    let report = after
        .run(&piece, call("if", json!({"condition": true})))
        .await;
    assert_eq!(report.outcome.unwrap()["handle"], "then");
}

#[test]
fn compiler_names_parse() {
    assert_eq!(Compiler::parse("winch"), Some(Compiler::Baseline));
    assert_eq!(Compiler::parse(" Baseline "), Some(Compiler::Baseline));
    assert_eq!(Compiler::parse("cranelift"), Some(Compiler::Optimized));
    assert_eq!(Compiler::parse("optimized"), Some(Compiler::Optimized));
    assert_eq!(Compiler::parse("fast"), None);
    assert_eq!(
        Compiler::parse(Compiler::Baseline.as_str()),
        Some(Compiler::Baseline)
    );
}

/// A cache directory that cannot be written (here: below a plain file)
/// costs the cache, not the load: the piece compiles, runs, and the next
/// runtime compiles again.
#[tokio::test]
async fn an_unwritable_cache_still_loads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    for compiler in [Compiler::Baseline, Compiler::Optimized] {
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: Some(file.join("cache")),
            max_concurrent_instances: 10,
            compiler,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let piece = runtime.load(&guest("flow")).await.unwrap();
        assert!(!piece.from_cache());
        assert_eq!(piece.compiler(), compiler);
        let report = runtime
            .run(&piece, call("if", json!({"condition": true})))
            .await;
        assert_eq!(report.outcome.unwrap()["handle"], "then");
    }
}

#[tokio::test]
async fn a_piece_asking_for_it_runs_from_its_preinitialised_snapshot() {
    let piece = load("preinit").await;
    for _ in 0..3 {
        let out = runtime()
            .run(&piece, call("state", json!({})))
            .await
            .outcome
            .expect("state runs");
        // `init` ran once, at load, not in this instance; what it built is
        // there; and each run starts from the snapshot, not from the last run.
        assert_eq!(out["init_runs"], 1, "{out}");
        assert_eq!(out["squares"], 1000, "{out}");
        assert_eq!(out["last_square"], 999 * 999, "{out}");
        assert_eq!(out["calls_before"], 0, "{out}");
    }
}

#[tokio::test]
async fn a_preinitialisation_that_never_ends_fails_the_load_contained() {
    let Err(err) = runtime().load(&guest("hostile_preinit")).await else {
        panic!("a spinning init must not load");
    };
    assert!(matches!(err, RuntimeError::InvalidInfo(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("wizer-initialize"), "{message}");
    assert!(
        message.contains("fuel") || message.contains("timed out") || message.contains("timeout"),
        "{message}"
    );
    // The runtime still works.
    let flow = load("flow").await;
    let report = runtime()
        .run(&flow, call("if", json!({"condition": true})))
        .await;
    assert!(report.outcome.is_ok());
}
