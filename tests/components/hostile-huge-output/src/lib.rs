//! Returns `bytes` bytes of output: must end with `output-too-large` past the cap.
use omniflow_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Input {
    bytes: usize,
}

fn huge(_ctx: &Context, input: Input) -> Result<String> {
    Ok("x".repeat(input.bytes))
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-huge-output", "0.1.0", "Huge output").action("run", "huge output", huge)
);
