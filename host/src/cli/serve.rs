//! `omniflow serve` (API + worker pool + scheduler, or the API alone with
//! `--no-workers`) and `omniflow worker` (workers + scheduler, no API),
//! until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use omniflow::engine::ExecutorConfig;
use omniflow::server::queue::PoolConfig;
use omniflow::server::{Server, ServerConfig};

use super::setup;

/// What `serve` was asked to do.
pub(crate) struct ServeArgs {
    /// Where the API listens; None: no API (`omniflow worker`).
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) db: super::config::Database,
    pub(crate) pieces: Vec<PathBuf>,
    /// Runs executed at once; 0: none here (`serve --no-workers`).
    pub(crate) workers: usize,
    /// Fire due cron schedules here.
    pub(crate) scheduler: bool,
    pub(crate) shutdown_grace: Duration,
    pub(crate) admin_token: Option<String>,
    pub(crate) lease: Duration,
    /// Uploaded pieces are first compiled in a child process limited to this
    /// (None: no API, no uploads).
    pub(crate) compile_memory_mb: Option<u64>,
    /// Delete old finished runs in the background.
    pub(crate) retention: Option<omniflow::server::retention::Retention>,
    /// Step defaults (`REQUEST_TIMEOUT`, `MAX_RETRIES`, `USE_OLLAMA`, `OLLAMA_URL`).
    pub(crate) defaults: super::config::StepDefaults,
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

pub(crate) async fn serve(args: ServeArgs) -> Result<bool> {
    // Secrets: stored ones (encrypted with OMNIFLOW_SECRET_KEY, else with a
    // key file next to the database, created on first start), then the
    // documented sources; the same resolution as `run`.
    let mut executor_config = ExecutorConfig {
        compile_guard: args
            .compile_memory_mb
            .map(super::piece::compile_guard)
            .transpose()?,
        ..ExecutorConfig::default()
    };
    args.defaults.apply(&mut executor_config);
    let (executor, cipher) = setup::executor_with_secrets(
        &args.db,
        &args.pieces,
        executor_config,
        omniflow::runtime::Compiler::Optimized,
        true,
    )
    .await?;
    let config = ServerConfig {
        listen: args.listen.unwrap_or(ServerConfig::default().listen),
        serve_api: args.listen.is_some(),
        retention: args.retention.clone(),
        run_scheduler: args.scheduler,
        pool: PoolConfig {
            workers: args.workers,
            shutdown_grace: args.shutdown_grace,
            lease: args.lease,
            ..PoolConfig::default()
        },
        admin_token: args.admin_token.filter(|t| !t.is_empty()),
        ..ServerConfig::default()
    };
    let mut config = config;
    config.api.secret_cipher = cipher.map(Arc::new);
    // Built-in pieces compile in the background (several at once); a run
    // that needs one before then compiles it itself (at most once).
    let executor = Arc::new(executor);
    {
        let executor = executor.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match executor.prepare_all_pieces().await {
                Ok(()) => tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "built-in pieces ready"
                ),
                Err(e) => tracing::error!("compiling the built-in pieces: {e}"),
            }
        });
    }
    let server = Server::start(executor, config)
        .await
        .context("starting the server")?;
    if let Some(token) = server.generated_admin_token() {
        eprintln!("Created the first API token (shown once, only its hash is stored):");
        eprintln!("  {token}");
        eprintln!(
            "Use it as `Authorization: Bearer <token>`; more with `omniflow token create NAME`."
        );
    }
    if server.requeued_at_start() > 0 {
        eprintln!(
            "re-queued {} run(s) whose lease expired (left running by a process that stopped)",
            server.requeued_at_start()
        );
    }
    let schedules = if args.scheduler { "on" } else { "off" };
    if server.serves_api() {
        eprintln!(
            "omniflow serving on http://{}  (database {}, {} workers, scheduler {schedules})",
            server.local_addr(),
            args.db,
            args.workers
        );
    } else {
        eprintln!(
            "omniflow worker pid {} running  (database {}, {} workers, scheduler {schedules})",
            std::process::id(),
            args.db,
            args.workers
        );
    }
    stop_signal().await;
    eprintln!(
        "shutting down: finishing runs in flight (up to {:?})...",
        args.shutdown_grace
    );
    server.shutdown().await.context("shutting down")?;
    eprintln!("stopped");
    Ok(true)
}
