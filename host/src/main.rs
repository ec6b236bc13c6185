//! The `omniflow` command line.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// OmniFlow: workflows whose every step is a WebAssembly component.
#[derive(Debug, Parser)]
#[command(name = "omniflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the embedded database lives and which extra pieces to load.
#[derive(Debug, Args)]
struct Local {
    /// Database: a SQLite file path (created when missing), a `sqlite:` URL,
    /// or a `postgres://` URL (the database must exist; tables are created).
    #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
    db: cli::config::Database,
    /// Extra piece components to load next to the built-ins (repeatable).
    #[arg(long = "piece", value_name = "FILE.wasm")]
    pieces: Vec<PathBuf>,
    /// How long a run this process executes stays claimed without a
    /// renewal (renewed every third of it): after a crash, its runs are
    /// taken over once this expires (e.g. `30s`).
    #[arg(long, default_value = "30s", env = "OMNIFLOW_LEASE", value_parser = humantime::parse_duration)]
    lease: std::time::Duration,
    #[command(flatten)]
    defaults: cli::config::StepDefaults,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workflow file locally, with live progress and a summary.
    Run {
        /// The workflow definition (JSON).
        file: PathBuf,
        #[command(flatten)]
        local: Local,
        /// Set a workflow variable: `--var KEY=VALUE` (VALUE parsed as JSON
        /// when it is JSON, else taken as a string). Repeatable.
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
        /// Print the finished run record as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run a workflow file locally as a test run with failure simulation:
    /// retryable faults injected into a fraction of attempts (before the
    /// piece is called; never into a step's last allowed attempt), each
    /// fault and its recovery printed, then a summary.
    Test {
        /// The workflow definition (JSON).
        file: PathBuf,
        #[command(flatten)]
        local: Local,
        /// Set a workflow variable: `--var KEY=VALUE` (VALUE parsed as JSON
        /// when it is JSON, else taken as a string). Repeatable.
        #[arg(long = "var", value_name = "KEY=VALUE")]
        vars: Vec<String>,
        /// Fraction of attempts that get a fault, from 0 to 1.
        #[arg(long, value_name = "RATE", default_value_t = 0.3)]
        simulate_failures: f64,
        /// Picks which attempts get the faults: the same seed, the same attempts.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print the simulation's faults and the run document as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Check a workflow file; exit 0 or print every problem found.
    Validate {
        /// The workflow definition (JSON).
        file: PathBuf,
        /// Extra piece components the workflow uses (repeatable).
        #[arg(long = "piece", value_name = "FILE.wasm")]
        pieces: Vec<PathBuf>,
    },
    /// Inspect run history.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Work with piece components (`.wasm`).
    #[command(subcommand)]
    Piece(PieceCommand),
    /// Work with saved workflows.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Benchmarks; print `workload metric value` lines.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Serve the HTTP API and execute queued runs until SIGINT/SIGTERM.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080", env = "OMNIFLOW_LISTEN")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        local: Local,
        /// Runs executed at once.
        #[arg(long, default_value_t = 40, env = "OMNIFLOW_WORKERS")]
        workers: usize,
        /// On shutdown, how long runs in flight may take to finish before
        /// they are released to the queue (e.g. `30s`).
        #[arg(long, default_value = "30s", env = "OMNIFLOW_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
        shutdown_grace: std::time::Duration,
        /// The first API token, stored on first start when no token exists
        /// (else one is generated and printed once).
        #[arg(long, env = "OMNIFLOW_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Address space a compile of an uploaded piece may use (MiB): it
        /// runs in a child process with this limit before the server
        /// compiles the piece itself.
        #[arg(long, default_value_t = 4096, env = "OMNIFLOW_COMPILE_MEMORY_MB")]
        compile_memory_mb: u64,
        /// Delete finished runs older than this in the background (e.g.
        /// `30d`; unset: keep every run).
        #[arg(long, env = "OMNIFLOW_RETENTION", value_parser = humantime::parse_duration)]
        retention: Option<std::time::Duration>,
        /// Keep failed runs this long instead (e.g. `90d`).
        #[arg(long, env = "OMNIFLOW_RETENTION_FAILED", value_parser = humantime::parse_duration)]
        retention_failed: Option<std::time::Duration>,
        /// Serve the API only: execute no runs and fire no schedules here
        /// (`omniflow worker` processes on the same PostgreSQL database do).
        #[arg(long)]
        no_workers: bool,
    },
    /// Execute queued runs (and fire due schedules) with no HTTP API,
    /// until SIGINT/SIGTERM: scale-out next to `serve` on one PostgreSQL
    /// database (on a SQLite file it replaces `serve`).
    Worker {
        #[command(flatten)]
        local: Local,
        /// Runs executed at once.
        #[arg(long, default_value_t = 40, env = "OMNIFLOW_WORKERS")]
        workers: usize,
        /// On shutdown, how long runs in flight may take to finish before
        /// they are released to the queue (e.g. `30s`).
        #[arg(long, default_value = "30s", env = "OMNIFLOW_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
        shutdown_grace: std::time::Duration,
        /// Fire no cron schedules here (other processes do).
        #[arg(long)]
        no_scheduler: bool,
    },
    /// Compile a component under an address-space limit (used by `serve`
    /// on uploads; exit 0 when it compiles).
    #[command(name = "__compile-check", hide = true)]
    CompileCheck {
        /// The component file.
        file: PathBuf,
        /// The limit, MiB.
        #[arg(long)]
        max_memory_mb: u64,
    },
    /// Apply the database's pending migrations (SQLite or PostgreSQL) and
    /// print what was done; refuses a database newer than this binary.
    Migrate {
        /// Database: a SQLite file path, a `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
    },
    /// Manage API tokens (only their SHA-256 is stored).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write a deployment bundle for a workflow file or saved workflow
    /// (GitHub Actions, docker compose or a systemd unit) into a directory.
    Export {
        /// A workflow file (JSON), or the name of a workflow saved in the
        /// database (its newest version and the pieces it pins).
        #[arg(value_name = "WORKFLOW")]
        workflow: String,
        /// Database to read a saved workflow from: a SQLite file path, a
        /// `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
        /// What to deploy with.
        #[arg(long = "to", value_enum)]
        to: cli::export::Target,
        /// The bundle directory (default `./export-<name>-<target>`).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Third-party piece components to bundle (repeatable).
        #[arg(long = "piece", value_name = "FILE.wasm")]
        pieces: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it once.
    Create {
        /// A label (`ci`, `grafana`).
        name: String,
        /// Database: a SQLite file path, a `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
    },
    /// List tokens (ids, names, dates; never values).
    List {
        /// Database: a SQLite file path, a `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        /// The token id (from `token list`).
        id: i64,
        /// Database: a SQLite file path, a `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
    },
}

#[derive(Debug, Subcommand)]
enum RunsCommand {
    /// The most recent runs, newest first.
    List {
        /// Database: a SQLite file path, a `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
        /// Only runs of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs with this status (queued, running, succeeded, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One run with its steps.
    Show {
        /// The run id.
        id: String,
        /// Database: a SQLite file path, a `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Include each step's captured log.
        #[arg(long)]
        logs: bool,
    },
    /// Delete finished runs older than a duration, with their steps and
    /// attempts (never queued, running or parked runs).
    Prune {
        /// Age: runs that finished longer ago than this (e.g. `30d`).
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Only these statuses (succeeded, failed, cancelled; comma-separated).
        #[arg(long, value_delimiter = ',')]
        status: Vec<String>,
        /// Count, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Database: a SQLite file path, a `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
    },
    /// Finish runs a crash left unfinished (completed steps are not re-run).
    Resume {
        #[command(flatten)]
        local: Local,
    },
}

#[derive(Debug, Subcommand)]
enum WorkflowCommand {
    /// Save the newest definition again, pinning every piece reference to
    /// the newest installed version that matches (a new version when a pin
    /// changes; runs of older versions keep their pins).
    Upgrade {
        /// The workflow's name.
        name: String,
        /// Database: a SQLite file path, a `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
    },
}

#[derive(Debug, Subcommand)]
enum PieceCommand {
    /// Install a piece (`.wasm`) into the database: validated, compiled and
    /// stored by digest; every process sharing the database can use it.
    Install {
        /// The component: a file, or `oci://REGISTRY/REPO:TAG` (pulled and
        /// checked against its digest).
        file: PathBuf,
        /// Replace the same name@version installed with other bytes.
        #[arg(long)]
        replace: bool,
        /// Database: a SQLite file path, a `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
    },
    /// Create a piece project (one action, a README with its build command,
    /// a workflow to try it) in Rust, Python or JavaScript.
    New {
        /// The piece name (lowercase letters, digits, dashes).
        name: String,
        /// `rust`, `python` or `js`.
        #[arg(long, default_value = "rust")]
        lang: String,
        /// Where (default: a new directory named NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust: the `sdk/` directory of an OmniFlow checkout (the SDK is
        /// not on crates.io yet).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
    /// Push a piece to an OCI registry (the `wkg` layout: config
    /// `application/vnd.wasm.config.v0+json`, one `application/wasm` layer).
    Push {
        /// The component file (validated like an install first).
        file: PathBuf,
        /// `oci://REGISTRY/REPO:TAG`
        reference: String,
    },
    /// Installed pieces: every version with its digest.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Database: a SQLite file path, a `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
    },
    /// Remove NAME@VERSION (refused while a workflow version pins it).
    Remove {
        /// `sentiment@0.1.0`
        reference: String,
        /// Remove even though workflow versions pin it (their runs then fail
        /// with piece-missing).
        #[arg(long)]
        force: bool,
        /// Database: a SQLite file path, a `sqlite:` URL or a `postgres://` URL.
        #[arg(long, default_value = "omniflow.db", env = "OMNIFLOW_DATABASE_URL", value_parser = cli::config::database)]
        db: cli::config::Database,
    },
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
    /// 40 sequential trivial steps per run, persisted to SQLite.
    Chain40 {
        /// Measured runs.
        #[arg(long, default_value_t = 50)]
        runs: usize,
        /// Trigger each run through a server on loopback
        /// (`POST …/runs?wait=30s`) instead of in-process; also times a
        /// one-step workflow the same way.
        #[arg(long)]
        http: bool,
    },
    /// User JavaScript in the `code` piece: fresh sandbox per run; fib(25)
    /// with and without fuel metering.
    CodeJs {
        /// Measured runs of the trivial snippet.
        #[arg(long, default_value_t = 500)]
        iterations: usize,
    },
    /// N queued single-step runs drained by the server's worker pool (a
    /// temporary SQLite file); with `--db postgres://...`, by `--processes`
    /// worker processes on that database.
    Throughput {
        /// Runs to queue before the pool starts.
        #[arg(long, default_value_t = 10_000)]
        runs: usize,
        /// Runs executed at once per process (`serve --workers`).
        #[arg(long, default_value_t = 40)]
        workers: usize,
        /// A PostgreSQL database to scale out on (its data is kept).
        #[arg(long, value_parser = cli::config::database)]
        db: Option<cli::config::Database>,
        /// Worker process counts to measure, e.g. `1,2,4` (PostgreSQL only).
        #[arg(long, value_delimiter = ',', default_value = "1")]
        processes: Vec<usize>,
    },
    /// `omniflow run` of `examples/hello.json` and of one `code` step as a
    /// child process on an empty compiled-piece cache, then on the filled
    /// one: wall time and peak RSS.
    ColdStart {
        /// Rounds per workload.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Server time of each web console page on a SQLite database filled
    /// with `--runs` runs (in-process router, no socket).
    Console {
        /// Runs in the database.
        #[arg(long, default_value_t = 100_000)]
        runs: usize,
        /// Requests per page.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// Many runs across many workflows through the worker pool (a
    /// temporary SQLite file): RSS at the start, middle and end, and each
    /// cache's size, to check memory plateaus.
    Soak {
        /// Runs in all (ten rounds).
        #[arg(long, default_value_t = 100_000)]
        runs: usize,
        /// Distinct workflows (each saved again every round).
        #[arg(long, default_value_t = 200)]
        workflows: usize,
        /// Runs executed at once.
        #[arg(long, default_value_t = 40)]
        workers: usize,
    },
    /// One run fanning out to N parallel trivial steps and joining them.
    Fanout {
        /// Parallel steps.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Per-run parallelism limit.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
    },
}

/// Logs on stderr: `OMNIFLOW_LOG` filters (default `warn`),
/// `OMNIFLOW_LOG_FORMAT` is `text` (default) or `json` (one object per line,
/// with the `run` and `step` spans' fields, for log shippers).
fn init_tracing() -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OMNIFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let format = std::env::var("OMNIFLOW_LOG_FORMAT").unwrap_or_default();
    match format.trim() {
        "" | "text" => tracing_subscriber::fmt()
            .fmt_fields(omniflow::logfmt::escaped_fields())
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        "json" => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
        other => {
            return Err(format!(
                "OMNIFLOW_LOG_FORMAT={other:?}: expected `text` or `json`"
            ));
        }
    }
    Ok(())
}

async fn dispatch(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Run {
            file,
            local,
            vars,
            json,
        } => {
            cli::run::run(cli::run::RunArgs {
                file,
                db: local.db,
                vars,
                json,
                pieces: local.pieces,
                lease: local.lease,
                defaults: local.defaults,
            })
            .await
        }
        Command::Test {
            file,
            local,
            vars,
            simulate_failures,
            seed,
            json,
        } => {
            cli::test::test(cli::test::TestArgs {
                run: cli::run::RunArgs {
                    file,
                    db: local.db,
                    vars,
                    json,
                    pieces: local.pieces,
                    lease: local.lease,
                    defaults: local.defaults,
                },
                simulate_failures,
                seed,
            })
            .await
        }
        Command::Validate { file, pieces } => cli::run::validate_file(&file, &pieces).await,
        Command::Runs(RunsCommand::List {
            db,
            workflow,
            status,
            limit,
            json,
        }) => cli::runs::list(&db, workflow, status, limit, json).await,
        Command::Runs(RunsCommand::Show { id, db, json, logs }) => {
            cli::runs::show(&db, &id, json, logs).await
        }
        Command::Runs(RunsCommand::Prune {
            older_than,
            status,
            dry_run,
            db,
        }) => cli::runs::prune(&db, older_than, &status, dry_run).await,
        Command::Runs(RunsCommand::Resume { local }) => {
            cli::runs::resume(&local.db, &local.pieces, local.lease, &local.defaults).await
        }
        Command::Piece(PieceCommand::Inspect { file, json }) => {
            cli::piece::inspect(&file, json).await
        }
        Command::Piece(PieceCommand::Install { file, replace, db }) => {
            cli::piece::install(&db, &file, replace).await
        }
        Command::Piece(PieceCommand::List { json, db }) => cli::piece::list(&db, json).await,
        Command::Piece(PieceCommand::Push { file, reference }) => {
            cli::piece::push(&file, &reference).await
        }
        Command::Piece(PieceCommand::New {
            name,
            lang,
            dir,
            sdk_path,
        }) => cli::piece_new::new(&name, &lang, dir, sdk_path),
        Command::Piece(PieceCommand::Remove {
            reference,
            force,
            db,
        }) => cli::piece::remove(&db, &reference, force).await,
        Command::Workflow(WorkflowCommand::Upgrade { name, db }) => {
            cli::piece::upgrade(&db, &name).await
        }
        Command::Serve {
            listen,
            local,
            workers,
            shutdown_grace,
            admin_token,
            no_workers,
            compile_memory_mb,
            retention,
            retention_failed,
        } => {
            anyhow::ensure!(
                retention.is_some() || retention_failed.is_none(),
                "--retention-failed needs --retention (how long to keep the other finished runs)"
            );
            cli::serve::serve(cli::serve::ServeArgs {
                retention: retention.map(|keep| {
                    omniflow::server::retention::Retention::new(keep, retention_failed)
                }),
                compile_memory_mb: Some(compile_memory_mb),
                listen: Some(listen),
                db: local.db,
                pieces: local.pieces,
                workers: if no_workers { 0 } else { workers },
                scheduler: !no_workers,
                shutdown_grace,
                admin_token,
                lease: local.lease,
                defaults: local.defaults,
            })
            .await
        }
        Command::Worker {
            local,
            workers,
            shutdown_grace,
            no_scheduler,
        } => {
            anyhow::ensure!(workers > 0, "--workers must be at least 1 for a worker");
            cli::serve::serve(cli::serve::ServeArgs {
                listen: None,
                db: local.db,
                pieces: local.pieces,
                workers,
                scheduler: !no_scheduler,
                shutdown_grace,
                admin_token: None,
                lease: local.lease,
                defaults: local.defaults,
                compile_memory_mb: None,
                retention: None,
            })
            .await
        }
        Command::Migrate { db } => cli::migrate::migrate(&db).await,
        Command::Export {
            workflow,
            db,
            to,
            out,
            pieces,
        } => cli::export::export(&workflow, &db, to, out, &pieces)
            .await
            .map(|()| true),
        Command::CompileCheck {
            file,
            max_memory_mb,
        } => cli::piece::compile_check(&file, max_memory_mb),
        Command::Token(TokenCommand::Create { name, db }) => cli::token::create(&db, &name).await,
        Command::Token(TokenCommand::List { db, json }) => cli::token::list(&db, json).await,
        Command::Token(TokenCommand::Revoke { id, db }) => cli::token::revoke(&db, id).await,
        Command::Bench(BenchCommand::Instantiate { iterations }) => {
            cli::bench::instantiate(iterations).await.map(|()| true)
        }
        Command::Bench(BenchCommand::Chain40 { runs, http: false }) => {
            cli::bench::chain40(runs).await.map(|()| true)
        }
        Command::Bench(BenchCommand::Chain40 { runs, http: true }) => {
            cli::bench_http::chain40_http(runs).await.map(|()| true)
        }
        Command::Bench(BenchCommand::CodeJs { iterations }) => {
            cli::bench_code::code_js(iterations).await.map(|()| true)
        }
        Command::Bench(BenchCommand::Throughput {
            runs,
            workers,
            db,
            processes,
        }) => match db {
            Some(cli::config::Database::Postgres(url)) => {
                cli::bench_scale::throughput(&url, runs, workers.max(1), &processes)
                    .await
                    .map(|()| true)
            }
            Some(cli::config::Database::Sqlite(_)) => {
                anyhow::bail!(
                    "bench throughput --db takes a postgres:// URL (without --db it uses a temporary SQLite file)"
                )
            }
            None if processes != [1] => {
                anyhow::bail!(
                    "--processes needs --db postgres://... (processes share the queue through PostgreSQL)"
                )
            }
            None => cli::bench::throughput(runs, workers).await.map(|()| true),
        },
        Command::Bench(BenchCommand::ColdStart { rounds }) => {
            tokio::task::spawn_blocking(move || cli::bench_cold::cold_start(rounds))
                .await
                .map_err(|e| anyhow::anyhow!("cold-start bench: {e}"))?
                .map(|()| true)
        }
        Command::Bench(BenchCommand::Console { runs, rounds }) => {
            cli::bench_console::console(runs, rounds)
                .await
                .map(|()| true)
        }
        Command::Bench(BenchCommand::Soak {
            runs,
            workflows,
            workers,
        }) => cli::bench_soak::soak(runs, workflows, workers)
            .await
            .map(|()| true),
        Command::Bench(BenchCommand::Fanout { n, parallel }) => {
            cli::bench::fanout(n, parallel).await.map(|()| true)
        }
    }
}

fn main() -> ExitCode {
    // Before any thread starts: `.env` may set OMNIFLOW_* settings.
    let warnings = cli::config::load_dotenv(std::path::Path::new(".env"));
    if let Err(message) = init_tracing() {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // On a worker thread, not the main thread that blocks: tasks the command
    // spawns (a step write, a step) then start on the same worker instead of
    // waking another thread for each (chain40 measured ≈ 9 context switches
    // per step with the command on the main thread).
    let command = runtime.spawn(dispatch(cli.command));
    let outcome = match runtime.block_on(command) {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(anyhow::anyhow!("the command was cancelled: {e}")),
    };
    cli::bench_cold::report_peak_rss();
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
