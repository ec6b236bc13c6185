//! `omniflow serve` and `omniflow worker` as a library: the HTTP API
//! ([`crate::api`]), the worker pool ([`queue`]) and the cron scheduler
//! over one executor, in one process; each part can be switched off
//! ([`ServerConfig::serve_api`], [`PoolConfig::workers`] = 0,
//! [`ServerConfig::run_scheduler`]), so on PostgreSQL any mix of API-only
//! nodes, workers and full servers shares one database.
//!
//! Recipe ([`Server::start`]):
//! 0. take the database's server lock ([`QueueStore::lock_for_server`]:
//!    for a SQLite file an exclusive OS lock on `<file>.lock`, so a second
//!    server on the same file is refused with a clear message; for
//!    PostgreSQL a shared advisory lock that only announces the process);
//!    it is held until the server has wound down;
//! 1. with the API: make sure an API token exists (first start: the
//!    configured admin token, else a generated one the caller prints once);
//! 2. with workers: put runs whose lease expired (a crashed process's) back
//!    in the queue; runs under a live lease (another process, e.g. an
//!    `omniflow run` executing its own run) are left alone;
//! 3. bind the listener, start the worker pool and the cron scheduler
//!    ([`crate::triggers::schedule`]), serve the router;
//! 4. on shutdown: stop accepting connections and claiming runs, let runs in
//!    flight finish within the grace period, release the rest, return.
//!
//! Must not know axum: routes, extractors, responses and the HTTP serve
//! loop live in `api` ([`api::serve`]).
//!
//! [`QueueStore::lock_for_server`]: crate::store::QueueStore::lock_for_server

pub mod queue;
pub mod retention;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiConfig, ApiState};
use crate::engine::Executor;
use crate::store::StoreError;
use crate::triggers::schedule::{Clock, Scheduler, SystemClock};
use queue::{PoolConfig, QueueHandle, WorkerPool};

/// How `serve` runs.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Worker pool knobs (concurrent runs, lease, grace period).
    pub pool: PoolConfig,
    /// HTTP knobs (body limit, longest wait).
    pub api: ApiConfig,
    /// The admin token to store on first start (`OMNIFLOW_ADMIN_TOKEN`);
    /// `None` generates one ([`Server::generated_admin_token`]).
    pub admin_token: Option<String>,
    /// Where the scheduler reads the time ([`crate::triggers::schedule::ManualClock`] in tests).
    pub clock: Arc<dyn Clock>,
    /// How often the scheduler looks for due schedules.
    pub schedule_tick: Duration,
    /// Serve the HTTP API (false: `omniflow worker`, which only executes).
    pub serve_api: bool,
    /// Fire due cron schedules here (false: `--no-scheduler`, or an
    /// API-only node). Any number of processes may: each fire time is
    /// claimed once in the database.
    pub run_scheduler: bool,
    /// Delete finished runs past this age in the background (None: keep all).
    pub retention: Option<retention::Retention>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            pool: PoolConfig::default(),
            api: ApiConfig::default(),
            admin_token: None,
            clock: Arc::new(SystemClock),
            schedule_tick: Duration::from_secs(1),
            serve_api: true,
            run_scheduler: true,
            retention: None,
        }
    }
}

/// Why the server could not start or stopped badly. All the operator's
/// (address in use, database down); not retryable as is.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store failed during start-up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Serving HTTP failed.
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// A running server.
pub struct Server {
    local_addr: Option<SocketAddr>,
    listen: SocketAddr,
    generated_admin_token: Option<String>,
    requeued_at_start: u64,
    shutdown: CancellationToken,
    queue: QueueHandle,
    scheduler: Scheduler,
    task: JoinHandle<Result<(), ServerError>>,
}

/// Attempts of a start-up step whose database call failed retryably.
const START_ATTEMPTS: u32 = 6;

/// Run a start-up step, again (after 0.2, 0.4, ... 3.2 s) while it fails
/// with a retryable store error: a database that drops connections or
/// restarts while a process starts delays it instead of ending it.
async fn retrying<T, F, Fut>(what: &str, mut step: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = std::time::Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match step().await {
            Err(e) if e.is_retryable() && attempt < START_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "start-up: {what} failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            done => return done,
        }
    }
}

impl Server {
    /// Bootstrap auth, recover crashed runs, bind, and start serving and working.
    pub async fn start(
        executor: Arc<Executor>,
        config: ServerConfig,
    ) -> Result<Server, ServerError> {
        let store = executor.store().clone();
        let lock = store.lock_for_server().await?;
        let generated_admin_token = if config.serve_api {
            let (token, generated) = match &config.admin_token {
                Some(token) => (token.clone(), false),
                None => (api::generate_token(), true),
            };
            let hash = api::hash_token(&token);
            let created = retrying("store the first API token", || {
                store.create_first_token("admin", &hash)
            })
            .await?
            .is_some();
            (created && generated).then_some(token)
        } else {
            None
        };
        let requeued_at_start = if config.pool.workers > 0 {
            retrying("re-queue expired leases", || {
                store.requeue_expired_leases(std::time::SystemTime::now())
            })
            .await?
        } else {
            0
        };
        if requeued_at_start > 0 {
            tracing::warn!(
                runs = requeued_at_start,
                "re-queued runs whose lease expired (left running by a process that stopped)"
            );
        }

        let listener = if config.serve_api {
            let listener =
                tokio::net::TcpListener::bind(config.listen)
                    .await
                    .map_err(|source| ServerError::Bind {
                        addr: config.listen,
                        source,
                    })?;
            let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
            Some((listener, local_addr))
        } else {
            None
        };
        let local_addr = listener.as_ref().map(|(_, addr)| *addr);

        let shutdown = CancellationToken::new();
        let pool = WorkerPool::start(
            executor.clone(),
            config.pool.clone(),
            shutdown.child_token(),
        );
        let queue = pool.handle();
        let scheduler =
            Scheduler::new(store.clone(), config.clock.clone(), Arc::new(queue.clone()));
        retrying("sync the schedules", || scheduler.sync_all()).await?;
        if config.run_scheduler {
            tokio::spawn(
                scheduler
                    .clone()
                    .run(config.schedule_tick, shutdown.child_token()),
            );
        }
        if let Some(retention) = config.retention.clone() {
            tokio::spawn(retention::run(
                store.clone(),
                retention,
                config.api.runs_pruned.clone(),
                shutdown.child_token(),
            ));
        }
        if let Some(cipher) = &config.api.secret_cipher {
            // Secrets stored through the API, decrypted into memory once
            // (`omniflow serve` has loaded them already; a no-op then).
            executor
                .secrets()
                .load_stored(store.as_ref(), cipher)
                .await?;
        }
        let state = ApiState::new(
            executor,
            Arc::new(queue.clone()),
            scheduler.clone(),
            shutdown.clone(),
            config.api.clone(),
        );
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let served = match listener {
                Some((listener, _)) => api::serve(listener, state, stop)
                    .await
                    .map_err(ServerError::Serve),
                None => {
                    stop.cancelled().await;
                    Ok(())
                }
            };
            pool.join().await;
            // The database is free for another server once we wound down.
            drop(lock);
            served
        });
        Ok(Server {
            local_addr,
            listen: config.listen,
            generated_admin_token,
            requeued_at_start,
            shutdown,
            queue,
            scheduler,
            task,
        })
    }

    /// The bound address (the real port when `listen` said 0); the
    /// configured one when the API is off ([`ServerConfig::serve_api`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr.unwrap_or(self.listen)
    }

    /// Whether this process serves the HTTP API.
    pub fn serves_api(&self) -> bool {
        self.local_addr.is_some()
    }

    /// The admin token generated on this (first) start, to be shown once.
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_admin_token.as_deref()
    }

    /// How many runs start-up re-queued (running with an expired lease).
    pub fn requeued_at_start(&self) -> u64 {
        self.requeued_at_start
    }

    /// The worker pool's handle (busy count, wake-up).
    pub fn queue(&self) -> &QueueHandle {
        &self.queue
    }

    /// The cron scheduler ([`Scheduler::tick`] fires due schedules now).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// Cancelling this token stops the server (like [`Server::shutdown`]).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stop gracefully and wait until everything wound down.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Wait until the server stopped (its shutdown token was cancelled).
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(ServerError::Serve(std::io::Error::other(join.to_string()))),
        }
    }
}
