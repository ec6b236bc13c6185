//! Reports what ambient authority it sees: env, args, files, stdin. All must be empty.
use omniflow_sdk::prelude::*;
use std::io::Read;

fn probe(_ctx: &Context, _input: Value) -> Result<Value> {
    let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    let args: Vec<String> = std::env::args().collect();
    let root = std::fs::read_dir("/")
        .map(|d| d.count())
        .map_err(|e| e.to_string());
    let etc = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string());
    let mut stdin = String::new();
    let stdin_read = std::io::stdin()
        .read_to_string(&mut stdin)
        .map_err(|e| e.to_string());
    Ok(json!({
        "env": env,
        "args": args,
        "read_root": format!("{root:?}"),
        "read_etc_passwd": format!("{:?}", etc.map(|s| s.len())),
        "stdin": stdin,
        "stdin_read": format!("{stdin_read:?}"),
    }))
}

omniflow_sdk::export_piece!(
    Piece::new("hostile-env-probe", "0.1.0", "Ambient authority probe")
        .action("run", "probe", probe)
);
