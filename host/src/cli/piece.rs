//! `omniflow piece inspect FILE.wasm [--json]`.

use std::path::Path;

use anyhow::{Context, Result};
use omniflow::runtime::{Compiler, Runtime};

pub(crate) async fn inspect(file: &Path, json: bool) -> Result<bool> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let runtime = Runtime::new(super::setup::runtime_config(Compiler::Baseline)?)?;
    let piece = match runtime.load(&bytes).await {
        Ok(piece) => piece,
        Err(err) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "file": file.display().to_string(), "error": err.to_string() })
                );
            } else {
                eprintln!("error: {}: {err}", file.display());
            }
            return Ok(false);
        }
    };
    let info = piece.info();
    if json {
        let doc = serde_json::json!({
            "file": file.display().to_string(),
            "digest": piece.digest().to_string(),
            "size": piece.size(),
            "info": info,
            "imports": piece.imports(),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(true);
    }
    println!("{}@{}  {}", info.name, info.version, info.description);
    println!("  digest   {}", piece.digest());
    println!("  size     {} bytes", piece.size());
    println!("  imports");
    for import in piece.imports() {
        println!("    {import}");
    }
    println!("  requested capabilities");
    if info.http_destinations.is_empty() && info.secrets.is_empty() {
        println!("    none");
    }
    for dest in &info.http_destinations {
        println!("    http     {dest}");
    }
    for secret in &info.secrets {
        println!("    secret   {secret}");
    }
    println!("  actions");
    for action in &info.actions {
        println!("    {}  {}", action.name, action.description);
        println!("      input  {}", action.input_schema);
        println!("      output {}", action.output_schema);
    }
    Ok(true)
}
