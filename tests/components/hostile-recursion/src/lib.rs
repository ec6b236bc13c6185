//! Recurses without bound, two ways:
//! - `run`: scalar frames only, so the wasm (native) call stack overflows
//!   first → `stack-overflow`;
//! - `shadow`: frames with an address-taken array, so Rust's in-memory
//!   "shadow" stack (placed first in linear memory) overflows first and the
//!   next write lands out of bounds → `trap(memory-out-of-bounds)`.
use omniflow_sdk::prelude::*;

#[allow(unconditional_recursion)]
fn native(n: u64, acc: u64) -> u64 {
    let next = native(std::hint::black_box(n + 1), acc ^ n);
    next.wrapping_mul(31).wrapping_add(acc)
}

#[allow(unconditional_recursion)]
fn shadow(n: u64) -> u64 {
    let here = std::hint::black_box([n; 16]);
    shadow(here[3] + 1).wrapping_add(here[7])
}

fn run(_ctx: &Context, _input: Value) -> Result<Value> {
    Ok(json!(native(0, 1)))
}

fn run_shadow(_ctx: &Context, _input: Value) -> Result<Value> {
    Ok(json!(shadow(0)))
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-recursion", "0.1.0", "Recurses forever")
        .action("run", "recurse on the wasm stack", run)
        .action("shadow", "recurse on the in-memory stack", run_shadow)
);
