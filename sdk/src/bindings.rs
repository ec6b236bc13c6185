//! Raw bindings generated from `wit/piece.wit`. Piece authors do not need these.

wit_bindgen::generate!({
    world: "piece",
    path: "wit",
    generate_all,
    pub_export_macro: true,
    default_bindings_module: "omniflow_sdk::bindings",
});
