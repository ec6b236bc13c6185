//! `omniflow piece new NAME --lang rust|python|js [--dir DIR] [--sdk-path PATH]`:
//! a one-action piece project from the templates in `sdk/templates/`
//! (compiled into the binary), placeholders `{{name}}` and
//! `{{sdk_dependency}}` replaced.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

macro_rules! template {
    ($lang:literal, $($file:literal),+ $(,)?) => {
        &[$(($file, include_str!(concat!("../../../sdk/templates/", $lang, "/", $file)))),+]
    };
}

const RUST: &[(&str, &str)] = template!(
    "rust",
    "Cargo.toml",
    "src/lib.rs",
    "README.md",
    "workflow.json",
    ".gitignore"
);
const PYTHON: &[(&str, &str)] = template!(
    "python",
    "app.py",
    "README.md",
    "workflow.json",
    ".gitignore"
);
const JS: &[(&str, &str)] = template!("js", "piece.js", "README.md", "workflow.json", ".gitignore");

/// Create the project; prints what was written and the build command.
pub(crate) fn new(
    name: &str,
    lang: &str,
    dir: Option<PathBuf>,
    sdk_path: Option<PathBuf>,
) -> Result<bool> {
    omniflow::names::check(omniflow::names::NameKind::Piece, name)
        .map_err(|e| anyhow::anyhow!("piece name {name:?}: {e}"))?;
    let (files, build) = match lang {
        "rust" => (RUST, "cargo build --release --target wasm32-wasip2"),
        "python" | "py" => (
            PYTHON,
            "<omniflow checkout>/scripts/build-lang-piece.sh python . NAME.wasm",
        ),
        "js" | "javascript" => (
            JS,
            "<omniflow checkout>/scripts/build-lang-piece.sh js . NAME.wasm",
        ),
        other => anyhow::bail!("--lang {other:?}: expected rust, python or js"),
    };
    let sdk_dependency = match (lang, sdk_path) {
        ("rust", Some(path)) => {
            let path = std::fs::canonicalize(&path)
                .with_context(|| format!("--sdk-path {}", path.display()))?;
            anyhow::ensure!(
                path.join("Cargo.toml").is_file(),
                "--sdk-path {}: no Cargo.toml there (give an OmniFlow checkout's sdk/ directory)",
                path.display()
            );
            format!("{{ path = {:?} }}", path.display().to_string())
        }
        ("rust", None) => anyhow::bail!(
            "--sdk-path: where omniflow-sdk is (an OmniFlow checkout's sdk/ directory); \
             it is not on crates.io yet"
        ),
        _ => String::new(),
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    anyhow::ensure!(
        !dir.exists()
            || dir
                .read_dir()
                .map(|mut d| d.next().is_none())
                .unwrap_or(false),
        "{} exists and is not empty",
        dir.display()
    );
    for (file, text) in files {
        let text = text
            .replace("{{name}}", name)
            .replace("{{sdk_dependency}}", &sdk_dependency);
        write(&dir.join(file), &text)?;
    }
    println!(
        "created {} ({lang} piece {name}); build it with:\n  cd {} && {}",
        dir.display(),
        dir.display(),
        build.replace("NAME", name)
    );
    Ok(true)
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
