//! Allocates 1 MiB blocks until refused: must end with `memory-limit`.
use omniflow_sdk::prelude::*;

fn bomb(_ctx: &Context, _input: Value) -> Result<Value> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(std::hint::black_box(vec![7u8; 1 << 20]));
        if blocks.len() == usize::MAX {
            return Ok(json!(blocks.len()));
        }
    }
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-membomb", "0.1.0", "Allocates forever").action("run", "allocate", bomb)
);
