//! Fails with an error message of `bytes` bytes (`kind`: `fatal`,
//! `retryable` or `invalid-input`): the host must cap it before storing it.
use omniflow_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Input {
    bytes: usize,
    #[serde(default)]
    kind: Option<String>,
}

fn fail(_ctx: &Context, input: Input) -> Result<Value> {
    let message = "E".repeat(input.bytes);
    Err(match input.kind.as_deref() {
        Some("retryable") => Error::retryable(message),
        Some("invalid-input") => Error::invalid_input(message),
        _ => Error::fatal(message),
    })
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-huge-error", "0.1.0", "Huge error message").action(
        "run",
        "fail with a huge message",
        fail
    )
);
