//! Builds every guest component (built-in pieces in `pieces/`, test components
//! in `tests/components/`) for `wasm32-wasip2` with a nested cargo, into
//! `<target-dir>/guests`, so that one `cargo build` / `cargo test` produces
//! everything. Built-in pieces are embedded into the binary (see
//! `runtime::builtin`); test components are exposed to tests via the
//! `OMNIFLOW_GUEST_DIR` compile-time env var.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn crates_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("Cargo.toml").exists())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn target_dir(out_dir: &Path) -> PathBuf {
    // OUT_DIR = <target>/[<triple>/]<profile>/build/<pkg>-<hash>/out
    out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .and_then(|build| build.parent())
        .and_then(|profile| profile.parent())
        .map(Path::to_path_buf)
        .expect("OUT_DIR has the usual <target>/<profile>/build/... shape")
}

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let guest_target = target_dir(&out_dir).join("guests");

    for watched in [
        "wit",
        "sdk",
        "pieces",
        "tests/components",
        "migrations",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let pieces = crates_in(&root.join("pieces"));
    let test_components = crates_in(&root.join("tests/components"));

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["--target", "wasm32-wasip2", "--profile", "piece"])
        .env("CARGO_TARGET_DIR", &guest_target);
    if env::var_os("CI").is_some() {
        cmd.arg("--locked");
    }
    for name in pieces.iter().chain(&test_components) {
        cmd.args(["-p", name]);
    }
    // Flags meant for the host build (clippy's wrapper, host rustflags) must
    // not leak into the guest build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .expect("running cargo for the guest components");
    if !status.success() {
        panic!(
            "building the guest components failed (see above). Is the target installed? \
             `rustup target add wasm32-wasip2`"
        );
    }

    let wasm_dir = guest_target.join("wasm32-wasip2/piece");
    let mut generated = String::from(
        "/// Built-in pieces compiled from `pieces/` (their digests computed by `build.rs`).\n\
         pub static BUILTIN_PIECES: &[Builtin] = &[\n",
    );
    for name in &pieces {
        let file = wasm_dir.join(format!("{}.wasm", name.replace('-', "_")));
        let bytes = fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        generated.push_str(&format!(
            "    Builtin {{ name: {name:?}, bytes: include_bytes!({:?}), sha256: {sha256:?} }},\n",
            file.display().to_string()
        ));
    }
    generated.push_str("];\n");
    fs::write(out_dir.join("builtin_pieces.rs"), generated).unwrap();
    println!("cargo:rustc-env=OMNIFLOW_GUEST_DIR={}", wasm_dir.display());
}
