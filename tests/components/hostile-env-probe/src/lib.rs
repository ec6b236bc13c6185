//! Reports what ambient authority it sees: env, args, files, stdin. All must be empty.
//! `residue` reports what an earlier attempt left in this instance's memory: must be nothing.
use omniflow_sdk::prelude::*;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

/// Calls this instance has served before this one (in `.data`).
static CALLS: AtomicU64 = AtomicU64::new(0);
/// 64 KiB of `.bss` the previous attempt filled with a marker.
static SCRATCH: [AtomicU64; 8192] = [const { AtomicU64::new(0) }; 8192];
const MARKER: u64 = 0x5eed_5eed_5eed_5eed;

fn residue(_ctx: &Context, _input: Value) -> Result<Value> {
    let calls_before = CALLS.fetch_add(1, Ordering::Relaxed);
    let marked_before = SCRATCH
        .iter()
        .filter(|w| w.swap(MARKER, Ordering::Relaxed) != 0)
        .count();
    // A heap allocation too: did it come back holding an earlier marker?
    let heap: Vec<u64> = vec![MARKER; 4096];
    Ok(json!({
        "calls_before": calls_before,
        "marked_before": marked_before,
        "heap_words": heap.len(),
    }))
}

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
        .action("residue", "what earlier attempts left in memory", residue)
);
