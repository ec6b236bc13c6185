//! A test piece for retries: fails the first `fail_times` attempts, then succeeds.
use omniflow_sdk::prelude::*;
use std::time::Duration;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Input {
    /// How many attempts fail before one succeeds.
    #[serde(default)]
    fail_times: u32,
    /// How a failing attempt fails: "retryable" (default), "fatal", "invalid" or "trap".
    #[serde(default)]
    mode: Option<String>,
    /// Advertised minimum wait for retryable failures.
    #[serde(default)]
    retry_after_ms: Option<u64>,
    /// Sleep this long before answering: a slow step.
    #[serde(default)]
    sleep_ms: u64,
    /// Echoed back on success.
    #[serde(default)]
    value: Value,
}

fn run(ctx: &Context, input: Input) -> Result<Value> {
    // A host-side sleep (wasi:io/poll on a monotonic-clock pollable).
    std::thread::sleep(Duration::from_millis(input.sleep_ms));
    if ctx.attempt <= input.fail_times {
        let msg = format!("planned failure on attempt {}", ctx.attempt);
        return Err(match input.mode.as_deref().unwrap_or("retryable") {
            "fatal" => Error::fatal(msg),
            "invalid" => Error::invalid_input(msg),
            "trap" => panic!("{msg}"),
            _ => match input.retry_after_ms {
                Some(ms) => Error::retry_after(msg, Duration::from_millis(ms)),
                None => Error::retryable(msg),
            },
        });
    }
    log::info(format!("succeeded on attempt {}", ctx.attempt));
    Ok(
        json!({ "value": input.value, "attempt": ctx.attempt, "idempotency_key": ctx.idempotency_key }),
    )
}

omniflow_sdk::export_piece!(
    Piece::new("flaky", "0.1.0", "Fails N times then succeeds").action("run", "maybe fail", run)
);
