//! The HTTP API (`/api/v1`) and the webhook receiver (`/hooks/{workflow}`).
//!
//! This is the only module that knows axum (architecture invariant): the
//! engine, store and server never see an extractor or a response type.
//! Build the whole thing with [`router`]; `server` binds it to a socket.
//!
//! Conventions for every route:
//! - JSON in and out; request types reject unknown fields;
//! - bodies are capped ([`ApiConfig::body_limit`], 1 MiB by default);
//! - every failure is `{"error": {"code": "...", "message": "..."}}` with
//!   the status of its [`ApiError`] variant;
//! - a bearer token (`Authorization: Bearer <token>`) is required on
//!   everything except `/health`, `/api/v1/health`, `/api/v1/openapi.json`
//!   and `/hooks/*` (which check their own HMAC signature);
//! - every handler carries `#[utoipa::path]`: `openapi.rs` collects them
//!   into the served OpenAPI document; success bodies are the typed wire
//!   documents of [`dto`];
//! - handlers are adapters: runs are started (and restarted) by
//!   [`crate::triggers`], never built here.
//!
//! The web console (`/`, `/ui/...`, [`console`]) lives here too: HTML
//! pages over the same state, signed in with a session cookie instead of
//! a bearer token.

mod auth;
mod console;
pub mod dto;
pub mod dto_system;
mod error;
mod follow;
mod hooks;
mod names;
mod openapi;
mod pieces;
mod runs;
mod secrets;
mod serve;
mod system;
mod wait;
mod workflows;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::routing::{delete, get, post, put};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

pub use crate::triggers::webhook::{REPLAY_WINDOW, SIGNATURE_HEADER, sign_webhook};
pub use auth::{FailureLimit, generate_token, hash_token};
pub use error::ApiError;
pub use openapi::openapi;
pub use serve::serve;

use crate::engine::Executor;
use crate::engine::RunQueue;
use crate::triggers::schedule::Scheduler;

/// Knobs of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Largest component `POST /pieces` accepts, in bytes (64 MiB).
    pub piece_limit: usize,
    /// Runs deleted by retention so far (`/metrics`; the server's
    /// retention task adds to it).
    pub runs_pruned: Arc<std::sync::atomic::AtomicU64>,
    /// Longest `wait` a trigger may ask for.
    pub max_wait: std::time::Duration,
    /// Encrypts secrets stored through `/secrets` (`None`: those routes
    /// answer 503).
    pub secret_cipher: Option<Arc<crate::capabilities::secrets::SecretCipher>>,
    /// A request head must arrive within this long (also: how long an
    /// idle keep-alive connection is kept); then the connection is closed.
    pub header_read_timeout: Duration,
    /// A request body must arrive within this long (`408`).
    pub body_read_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Failed bearer-token attempts one client address may make per window
    /// before it gets `429` until the window ends.
    pub auth_failures: auth::FailureLimit,
    /// How long a web console sign-in lasts (12 h).
    pub console_session: Duration,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            body_limit: 1 << 20,
            piece_limit: 64 << 20,
            runs_pruned: Arc::default(),
            max_wait: Duration::from_secs(300),
            secret_cipher: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 512,
            auth_failures: auth::FailureLimit::default(),
            console_session: Duration::from_secs(12 * 3600),
        }
    }
}

/// What every handler gets. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Shared>,
}

struct Shared {
    executor: Arc<Executor>,
    queue: Arc<dyn RunQueue>,
    scheduler: Scheduler,
    shutdown: CancellationToken,
    config: ApiConfig,
    started: Instant,
    auth_failures: auth::FailedAuth,
}

impl ApiState {
    /// State over an executor, the queue's workers (any [`RunQueue`]: the
    /// server's pool, or a stand-in in a test) and the cron scheduler.
    /// `shutdown` ends waits and event streams when the server stops.
    pub fn new(
        executor: Arc<Executor>,
        queue: Arc<dyn RunQueue>,
        scheduler: Scheduler,
        shutdown: CancellationToken,
        config: ApiConfig,
    ) -> ApiState {
        ApiState {
            inner: Arc::new(Shared {
                executor,
                queue,
                scheduler,
                shutdown,
                auth_failures: auth::FailedAuth::new(config.auth_failures.clone()),
                config,
                started: Instant::now(),
            }),
        }
    }

    fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    fn store(&self) -> &Arc<dyn crate::store::Store> {
        self.inner.executor.store()
    }

    fn queue(&self) -> &dyn RunQueue {
        self.inner.queue.as_ref()
    }

    fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
    }

    fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    fn config(&self) -> &ApiConfig {
        &self.inner.config
    }

    fn auth_failures(&self) -> &auth::FailedAuth {
        &self.inner.auth_failures
    }
}

/// The raw request body, buffered under the body limit; failures are [`ApiError`]s.
struct Body(Bytes);

impl FromRequest<ApiState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Body, ApiError> {
        let timeout = state.config().body_read_timeout;
        match tokio::time::timeout(timeout, Bytes::from_request(req, state)).await {
            Ok(read) => read
                .map(Body)
                .map_err(|r| error::body_rejection(r, state.config().body_limit)),
            Err(_elapsed) => Err(ApiError::RequestTimeout { timeout }),
        }
    }
}

/// Every route, with auth, body limit and JSON errors.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/workflows", post(workflows::create).get(workflows::list))
        .route("/workflows:validate", post(workflows::validate_only))
        .route(
            "/workflows/{name}",
            get(workflows::get_one)
                .put(workflows::update)
                .delete(workflows::delete),
        )
        .route("/workflows/{name}/versions", get(workflows::versions))
        .route("/workflows/{name}/webhook", put(workflows::set_webhook))
        .route("/workflows/{name}/runs", post(runs::trigger))
        .route("/runs", get(runs::list))
        .route("/runs:batch", post(runs::batch))
        .route("/runs:retry-failed", post(runs::retry_failed))
        .route("/runs/{id}", get(runs::get_one))
        .route("/runs/{id}/events", get(runs::events))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/retry", post(runs::retry))
        .route("/schedules", get(workflows::schedules))
        .route("/secrets", get(secrets::list))
        .route("/secrets/{name}", put(secrets::put).delete(secrets::delete))
        .route("/stats", get(system::stats))
        .route("/metrics", get(system::metrics))
        .route("/ready", get(system::ready))
        .route("/pieces", get(system::pieces).post(pieces::install))
        .route("/pieces/{name}", get(system::piece))
        .route("/pieces/{name}/{version}", delete(pieces::remove))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let v1 = Router::new()
        .route("/health", get(system::health))
        .route("/openapi.json", get(openapi::document))
        .merge(protected)
        .method_not_allowed_fallback(system::wrong_method);
    let body_limit = state.config().body_limit;
    Router::new()
        .nest("/api/v1", v1)
        .merge(console::router(state.clone()))
        .route("/health", get(system::health))
        .route("/hooks/{workflow}", post(hooks::receive))
        .fallback(system::no_route)
        .method_not_allowed_fallback(system::wrong_method)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            serve::reject_oversized,
        ))
        .with_state(state)
}
