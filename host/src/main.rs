//! The `omniflow` command line.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// OmniFlow: workflows whose every step is a WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "omniflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with piece components (`.wasm`).
    #[command(subcommand)]
    Piece(PieceCommand),
    /// Benchmarks; print `workload metric value` lines.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum PieceCommand {
    /// Validate a `.wasm` and print its info, actions, schemas, imports and
    /// requested capabilities (non-zero exit if it is not a valid piece).
    Inspect {
        /// The component file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Instantiate + call of a trivial piece; compile vs cache load.
    Instantiate {
        /// Measured calls per configuration.
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OMNIFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Piece(PieceCommand::Inspect { file, json }) => {
                cli::piece::inspect(&file, json).await
            }
            Command::Bench(BenchCommand::Instantiate { iterations }) => {
                cli::bench::instantiate(iterations).await.map(|()| true)
            }
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
