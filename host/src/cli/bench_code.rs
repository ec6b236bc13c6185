//! `omniflow bench code-js`: the `code` piece (JavaScript in Boa, inside the
//! component). Prints `workload metric value` lines like the other benches.
//!
//! - `code-js`: `return input.a + input.b`, each call a fresh sandbox (new
//!   store + instance + JS context) through [`Runtime::run`], as a step would.
//! - `code-js-fib25`: recursive `fib(25)` through [`Runtime::run`] (fuel
//!   metering and epoch checks on, as always for steps).
//! - `code-js-fib25-nofuel`: the same call on a bare wasmtime engine built
//!   here with fuel metering and epoch interruption off, since
//!   `RuntimeConfig` has no switch for that (fuel is always on for steps).
//!   `code-js-fib25-rawfuel` is that bare engine with fuel on, the control:
//!   nofuel vs rawfuel is the cost of fuel metering alone.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use omniflow::runtime::{Runtime, RuntimeConfig, StepCall, builtin::Builtin};

use super::bench::{line, percentile};

const TRIVIAL: &str = "return input.a + input.b";
const FIB25: &str =
    "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }\nreturn fib(25);";
const FIB25_RESULT: u64 = 75025;

fn code_piece() -> Result<&'static [u8]> {
    Builtin::named("code")
        .map(|b| b.bytes)
        .context("no built-in piece `code`")
}

fn call(code: &str, input: serde_json::Value) -> StepCall {
    let mut call = StepCall::new(
        "bench",
        "code",
        "run-js",
        serde_json::json!({ "code": code, "input": input }),
    );
    // fib(25) needs ~1.3e9 fuel; leave room so the bench measures, not fails.
    call.limits.fuel = 100_000_000_000;
    call
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `bench code-js`: `iterations` trivial runs (plus 10% warm-up) and a few
/// `fib(25)` runs with and without fuel metering.
pub(crate) async fn code_js(iterations: usize) -> Result<()> {
    let bytes = code_piece()?;
    let iterations = iterations.max(1);
    let cache = std::env::temp_dir().join(format!("omniflow-bench-code-{}", std::process::id()));
    std::fs::create_dir_all(&cache)?;
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.clone()),
        ..RuntimeConfig::default()
    })?;
    let started = Instant::now();
    let piece = runtime.load(bytes).await?;
    line("code-js", "compile_ms", millis(started.elapsed()));
    line("code-js", "wasm_kb", bytes.len() as f64 / 1024.0);

    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations + iterations / 10 {
        let input = serde_json::json!({ "a": i, "b": 1 });
        let started = Instant::now();
        let report = runtime.run(&piece, call(TRIVIAL, input)).await;
        let elapsed = started.elapsed();
        let out = report
            .outcome
            .map_err(|f| anyhow::anyhow!("code-js call failed: {f}"))?;
        anyhow::ensure!(out == serde_json::json!(i + 1), "code-js returned {out}");
        if i >= iterations / 10 {
            times.push(elapsed); // first 10% is warm-up
        }
    }
    times.sort();
    line(
        "code-js",
        "median_us",
        percentile(&times, 0.5).as_secs_f64() * 1e6,
    );
    line(
        "code-js",
        "p99_us",
        percentile(&times, 0.99).as_secs_f64() * 1e6,
    );

    let fib_runs = (iterations / 50).clamp(3, 10);
    let mut times = Vec::with_capacity(fib_runs);
    let mut fuel = 0;
    for _ in 0..fib_runs {
        let report = runtime
            .run(&piece, call(FIB25, serde_json::Value::Null))
            .await;
        let out = report
            .outcome
            .map_err(|f| anyhow::anyhow!("code-js-fib25 failed: {f}"))?;
        anyhow::ensure!(
            out == serde_json::json!(FIB25_RESULT),
            "fib(25) returned {out}"
        );
        times.push(report.duration);
        fuel = report.fuel_used;
    }
    times.sort();
    line(
        "code-js-fib25",
        "median_ms",
        millis(percentile(&times, 0.5)),
    );
    line("code-js-fib25", "fuel_millions", fuel as f64 / 1e6);
    drop(runtime);
    let _ = std::fs::remove_dir_all(&cache);

    // The bare engines compile the component themselves (seconds): blocking
    // work, off the async executor.
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || -> Result<()> {
        for (label, fuel) in [
            ("code-js-fib25-nofuel", false),
            ("code-js-fib25-rawfuel", true),
        ] {
            let bare = bare::Bare::new(&bytes, fuel)?;
            let mut times = Vec::with_capacity(fib_runs);
            for _ in 0..fib_runs {
                let started = Instant::now();
                let out = bare.run_js(FIB25)?;
                times.push(started.elapsed());
                anyhow::ensure!(
                    out == FIB25_RESULT.to_string(),
                    "{label}: fib(25) returned {out}"
                );
            }
            times.sort();
            line(label, "median_ms", millis(percentile(&times, 0.5)));
        }
        Ok(())
    })
    .await
    .context("bare-engine bench task")??;
    Ok(())
}

/// A bare wasmtime engine running the `code` piece with WASI and a log
/// import that drops lines. Benchmark-only: steps always go through
/// [`Runtime`].
mod bare {
    use anyhow::{Context, Result, anyhow, bail};
    use wasmtime::component::{Component, Linker, ResourceTable, Val};
    use wasmtime::{Config, Engine, Store};
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

    struct State {
        wasi: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for State {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }

    /// wasmtime 48 has its own error type.
    fn wt<T>(result: wasmtime::Result<T>) -> Result<T> {
        result.map_err(|e| anyhow!("{e:#}"))
    }

    pub(super) struct Bare {
        engine: Engine,
        component: Component,
        linker: Linker<State>,
        fuel: bool,
    }

    impl Bare {
        pub(super) fn new(bytes: &[u8], fuel: bool) -> Result<Self> {
            let mut config = Config::new();
            config
                .wasm_component_model(true)
                .consume_fuel(fuel)
                .max_wasm_stack(512 << 10);
            let engine = wt(Engine::new(&config))?;
            let component =
                wt(Component::new(&engine, bytes)).context("compiling the code piece")?;
            let mut linker = Linker::new(&engine);
            wt(wasmtime_wasi::p2::add_to_linker_sync(&mut linker))?;
            // The only non-WASI import the code piece has: its log lines are
            // dropped here.
            let mut log = wt(linker.instance("omniflow:piece/log@0.1.0"))?;
            wt(log.func_new("log", |_store, _ty, _params, _results| Ok(())))?;
            Ok(Bare {
                engine,
                component,
                linker,
                fuel,
            })
        }

        /// One fresh instance, one `run-js` call; the output JSON text.
        pub(super) fn run_js(&self, code: &str) -> Result<String> {
            let state = State {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            };
            let mut store = Store::new(&self.engine, state);
            if self.fuel {
                wt(store.set_fuel(u64::MAX))?;
            }
            let instance = wt(self.linker.instantiate(&mut store, &self.component))?;
            let handler = instance
                .get_export_index(&mut store, None, "omniflow:piece/handler@0.1.0")
                .context("no handler export")?;
            let run = instance
                .get_export_index(&mut store, Some(&handler), "run")
                .context("no run export")?;
            let func = instance
                .get_func(&mut store, run)
                .context("run is not a function")?;
            let text = |s: &str| Val::String(s.into());
            let ctx = Val::Record(vec![
                ("run-id".into(), text("bench")),
                ("step-id".into(), text("code")),
                ("attempt".into(), Val::U32(1)),
                ("idempotency-key".into(), text("bench:code")),
            ]);
            let input = serde_json::json!({ "code": code, "input": null }).to_string();
            let mut results = [Val::Bool(false)];
            wt(func.call(
                &mut store,
                &[ctx, text("run-js"), text(&input)],
                &mut results,
            ))?;
            match &results[0] {
                Val::Result(Ok(Some(out))) => match out.as_ref() {
                    Val::String(s) => Ok(s.clone()),
                    other => bail!("unexpected output {other:?}"),
                },
                other => bail!("run-js failed: {other:?}"),
            }
        }
    }
}
