//! Panics: must end with a classified trap that quotes the panic message.
use omniflow_sdk::prelude::*;

fn boom(_ctx: &Context, _input: Value) -> Result<Value> {
    panic!("the piece gave up on purpose");
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-panic", "0.1.0", "Panics").action("run", "panic", boom)
);
