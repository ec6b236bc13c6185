//! Piece `versioned` 0.2.0: says which version (and build) ran, so tests
//! see which bytes a pinned workflow version executed.
use omniflow_sdk::prelude::*;

fn which(_ctx: &Context, _input: Value) -> Result<Value> {
    Ok(json!({ "version": "0.2.0" }))
}

omniflow_sdk::export_piece!(Piece::new("versioned", "0.2.0", "Says its version").action(
    "which",
    "which version ran",
    which
));
