//! Spins forever: must end with `out-of-fuel` or `timeout`.
use omniflow_sdk::prelude::*;

fn spin(_ctx: &Context, _input: Value) -> Result<Value> {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-loop", "0.1.0", "Spins forever").action("run", "spin", spin)
);
