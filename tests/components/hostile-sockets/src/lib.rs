//! Imports `wasi:sockets`: the host must refuse to load it, naming the import.
use omniflow_sdk::prelude::*;

fn connect(_ctx: &Context, _input: Value) -> Result<Value> {
    let network = wasip2::sockets::instance_network::instance_network();
    drop(network);
    Ok(json!("opened a network handle"))
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-sockets", "0.1.0", "Wants raw sockets").action("run", "connect", connect)
);
