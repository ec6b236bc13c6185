//! Its pre-initialisation spins forever: loading it must fail with
//! `out-of-fuel` or `timeout`, and nothing is cached.
use omniflow_sdk::prelude::*;

fn init() {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn ok(_ctx: &Context, _input: Value) -> Result<Value> {
    Ok(json!({}))
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-preinit", "0.1.0", "Never finishes initialising").action("run", "ok", ok)
);

omniflow_sdk::export_preinit!(init);
