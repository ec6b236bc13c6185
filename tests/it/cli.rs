//! The `omniflow` binary, spawned as a user would.

use std::process::Command;

use crate::support::{cache_dir, guest_dir};

fn omniflow() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_omniflow"));
    cmd.env("OMNIFLOW_CACHE_DIR", cache_dir());
    cmd
}

#[test]
fn piece_inspect_describes_builtin_pieces() {
    for (file, name) in [("transform.wasm", "transform@0.1.0"), ("flow.wasm", "flow@0.1.0")] {
        let out = omniflow()
            .args(["piece", "inspect"])
            .arg(guest_dir().join(file))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.starts_with(name), "{stdout}");
        assert!(stdout.contains("omniflow:piece/log@0.1.0") || stdout.contains("wasi:"), "{stdout}");
        assert!(stdout.contains("input  {"), "{stdout}");
    }
    let out = omniflow()
        .args(["piece", "inspect", "--json"])
        .arg(guest_dir().join("flow.wasm"))
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["info"]["name"], "flow");
    assert!(doc["digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn piece_inspect_rejects_bad_files_with_distinct_messages() {
    let dir = tempfile::tempdir().unwrap();
    let random = dir.path().join("random.wasm");
    std::fs::write(&random, b"definitely not wasm").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let mut seen = Vec::new();
    for file in [
        random,
        core,
        guest_dir().join("hostile_sockets.wasm"),
        guest_dir().join("other-world.wasm"),
    ] {
        let out = omniflow().args(["piece", "inspect"]).arg(&file).output().unwrap();
        assert!(!out.status.success(), "{} accepted", file.display());
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(stderr.contains(&*file.to_string_lossy()), "{stderr}");
        seen.push(stderr.lines().next().unwrap().split(": ").nth(2).unwrap().to_string());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4, "{seen:?}");
}
