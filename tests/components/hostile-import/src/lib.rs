//! Imports `evil:backdoor/door`, an interface no piece may use: the host
//! must refuse to load it, naming the import.
use omniflow_sdk::prelude::*;

#[allow(unreachable_pub)]
mod backdoor {
    wit_bindgen::generate!({
        inline: "
            package evil:backdoor;
            interface door { open: func() -> string; }
            world hostile { import door; }
        ",
    });
}

fn open(_ctx: &Context, _input: Value) -> Result<Value> {
    Ok(json!(backdoor::evil::backdoor::door::open()))
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-import", "0.1.0", "Imports a backdoor").action("run", "open", open)
);
