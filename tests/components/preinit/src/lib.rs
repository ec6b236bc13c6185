//! Pre-initialised (`export_preinit!`): `init` runs once when the host
//! compiles the piece; `state` reports what every run finds.
use std::sync::atomic::{AtomicU32, Ordering};

use omniflow_sdk::prelude::*;

/// How often `init` ran in the history this instance's memory comes from.
static INIT_RUNS: AtomicU32 = AtomicU32::new(0);
/// Calls of `state` before this one on this instance's memory.
static CALLS: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// Built by `init` (a stand-in for an expensive table).
    static SQUARES: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn init() {
    INIT_RUNS.fetch_add(1, Ordering::Relaxed);
    SQUARES.with(|squares| *squares.borrow_mut() = (0..1000u64).map(|n| n * n).collect());
}

fn state(_ctx: &Context, _input: Value) -> Result<Value> {
    let calls_before = CALLS.fetch_add(1, Ordering::Relaxed);
    let (len, last) = SQUARES.with(|squares| {
        let squares = squares.borrow();
        (squares.len(), squares.last().copied())
    });
    Ok(json!({
        "init_runs": INIT_RUNS.load(Ordering::Relaxed),
        "calls_before": calls_before,
        "squares": len,
        "last_square": last,
    }))
}

omniflow_sdk::export_piece!(
    Piece::new(
        "preinit",
        "0.1.0",
        "Reports the state its pre-initialisation left"
    )
    .action("state", "What init built, and calls so far", state)
);

omniflow_sdk::export_preinit!(init);
