//! Host-side bindings for the `piece-core` world (`wit/piece.wit`): the `log`
//! import we implement and the `handler` export we call. Standard WASI
//! interfaces (including `wasi:http`) are linked from wasmtime-wasi(-http).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "piece-core",
    exports: { default: async },
});
