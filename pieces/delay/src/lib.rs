//! `delay`: durable waits. The piece only *computes* the wake-up time; it
//! asks the host to hold the step with the `$wait_until` output field (see
//! `wit/piece.wit`, `handler.run`). The host parks the run (the worker is
//! free meanwhile, and the wait survives restarts) and, at that time, records
//! the step as succeeded with the rest of this output. The piece itself never
//! sleeps, so a day-long delay costs no fuel, memory or worker.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use omniflow_sdk::prelude::*;

/// What both actions return.
#[derive(Serialize, JsonSchema)]
struct Waited {
    /// When the step continues (RFC 3339, UTC, milliseconds).
    until: String,
    /// How long the wait was when it was asked for, in milliseconds (0 for a past time).
    wait_ms: u64,
    /// The host-facing request: hold this step until this time. The host
    /// removes it from the output the step finally records.
    #[serde(rename = "$wait_until")]
    wait_until: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SleepInput {
    /// How long to wait: `"90s"`, `"5m"`, `"1h 30m"`, `"2days"` (humantime syntax), or a number of milliseconds.
    duration: DurationSpec,
}

/// A duration as text or milliseconds.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
enum DurationSpec {
    /// Milliseconds.
    Millis(u64),
    /// Humantime text such as `"5m"`.
    Text(String),
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn waited(now: SystemTime, until: SystemTime) -> Waited {
    let until = until.max(now);
    let text = rfc3339(until);
    Waited {
        until: text.clone(),
        wait_ms: until
            .duration_since(now)
            .unwrap_or_default()
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX),
        wait_until: text,
    }
}

fn sleep(_ctx: &Context, input: SleepInput) -> Result<Waited> {
    let duration = match input.duration {
        DurationSpec::Millis(ms) => Duration::from_millis(ms),
        DurationSpec::Text(text) => humantime::parse_duration(text.trim()).map_err(|e| {
            Error::invalid_input(format!(
                "duration {text:?} is not a duration ({e}); write e.g. \"90s\", \"5m\" or \"1h 30m\""
            ))
        })?,
    };
    let now = SystemTime::now();
    let until = now
        .checked_add(duration)
        .filter(|t| {
            t.duration_since(UNIX_EPOCH)
                .is_ok_and(|d| d.as_secs() < 253_402_300_800)
        })
        .ok_or_else(|| Error::invalid_input(format!("duration {duration:?} is too long")))?;
    Ok(waited(now, until))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct UntilInput {
    /// When to continue: an RFC 3339 time with offset, e.g. `"2026-12-24T18:00:00+01:00"`.
    /// A time in the past continues at once.
    time: String,
}

fn until(_ctx: &Context, input: UntilInput) -> Result<Waited> {
    let parsed = chrono::DateTime::parse_from_rfc3339(input.time.trim()).map_err(|e| {
        Error::invalid_input(format!(
            "time {:?} is not an RFC 3339 time ({e}); write e.g. \"2026-12-24T18:00:00Z\"",
            input.time
        ))
    })?;
    let millis = parsed.timestamp_millis();
    let until = u64::try_from(millis)
        .ok()
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
        .ok_or_else(|| Error::invalid_input(format!("time {:?} is before 1970", input.time)))?;
    Ok(waited(SystemTime::now(), until))
}

omniflow_sdk::export_piece!(
    Piece::new(
        "delay",
        env!("CARGO_PKG_VERSION"),
        "Durable waits: the run is parked (no worker held) and resumed at the time"
    )
    .action("sleep", "Wait for a duration", sleep)
    .action("until", "Wait until a point in time", until)
);
