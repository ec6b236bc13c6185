//! `{{name}}`: an OmniFlow piece.
use omniflow_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GreetInput {
    /// Who to greet.
    name: String,
}

#[derive(Serialize, JsonSchema)]
struct GreetOutput {
    /// The greeting.
    text: String,
}

/// `Error::invalid_input` and `Error::fatal` are never retried; `?` on any
/// other error (I/O, HTTP) is retryable.
fn greet(ctx: &Context, input: GreetInput) -> Result<GreetOutput> {
    let name = input.name.trim();
    if name.is_empty() {
        return Err(Error::invalid_input("name is empty"));
    }
    log::info(format!("greeting {name} (attempt {})", ctx.attempt));
    Ok(GreetOutput {
        text: format!("Hello, {name}!"),
    })
}

omniflow_sdk::export_piece!(
    Piece::new("{{name}}", env!("CARGO_PKG_VERSION"), "Greets someone")
        .action("greet", "Greet `name`", greet)
);
