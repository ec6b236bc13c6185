//! Writes `lines` log lines through every channel: the log must be truncated with a marker.
use omniflow_sdk::prelude::*;

#[derive(Deserialize, JsonSchema)]
struct Input {
    lines: usize,
}

fn flood(_ctx: &Context, input: Input) -> Result<Value> {
    let line = "flood ".repeat(20);
    for i in 0..input.lines {
        log::info(format!("{i} {line}"));
        println!("{i} stdout {line}");
        eprintln!("{i} stderr {line}");
    }
    Ok(json!({ "wrote": input.lines }))
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-log-flood", "0.1.0", "Log flood").action("run", "flood the log", flood)
);
