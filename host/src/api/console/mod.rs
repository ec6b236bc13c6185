//! The web console: HTML pages served by `omniflow serve` at `/` and
//! `/ui/...` (runs, a run's graph and timeline, workflows with test runs,
//! pieces, the queue), rendered on the server from templates compiled
//! into the binary, with a little JavaScript for live updates. Nothing to
//! build, nothing fetched from elsewhere; works offline.
//!
//! Reads and acts through the same boundaries as the JSON API: the store's
//! traits, the engine's registry, [`crate::triggers`] to start and retry
//! runs, and the API's own handlers where an action already exists
//! (cancel, retry, the SSE stream of a run) — no SQL here.
//!
//! Security: pages need a console session (see [`session`]): a cookie set
//! by signing in with an API token; state changes must come from the
//! console's own origin; every page is sent with a restrictive
//! Content-Security-Policy (scripts, styles and images from this server
//! only, no framing).

mod format;
pub(crate) mod graph;
mod pages;
mod run;
mod session;
pub(crate) mod timeline;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::Environment;
use serde::Serialize;

use super::{ApiError, ApiState};

/// Why a console page could not be shown. Rendered as an HTML page with
/// the status of the underlying failure.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConsoleError {
    /// What the API would answer (not found, conflict, store down, ...):
    /// whose fault and whether to retry as [`ApiError`] says.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// No session, or a cross-origin action (the caller's; not retryable).
    #[error("{0}")]
    Forbidden(String),
    /// A template failed to render (ours; not retryable).
    #[error("the page could not be rendered: {0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for ConsoleError {
    fn from(e: crate::store::StoreError) -> ConsoleError {
        ConsoleError::Api(e.into())
    }
}

impl From<minijinja::Error> for ConsoleError {
    fn from(e: minijinja::Error) -> ConsoleError {
        ConsoleError::Internal(format!("{e:#}"))
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            ConsoleError::Api(e) => e.status(),
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "console page failed");
        }
        let message = self.to_string();
        let page = render(
            "error.html",
            minijinja::context! {
                title => status.canonical_reason().unwrap_or("Error"),
                status => status.as_u16(),
                message => message,
            },
        );
        match page {
            Ok(html) => (status, html).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}

/// Templates, compiled into the binary.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("error.html", include_str!("templates/error.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("runs.html", include_str!("templates/runs.html")),
    ("runs_body.html", include_str!("templates/runs_body.html")),
    ("run.html", include_str!("templates/run.html")),
    ("run_body.html", include_str!("templates/run_body.html")),
    ("workflows.html", include_str!("templates/workflows.html")),
    ("workflow.html", include_str!("templates/workflow.html")),
    ("pieces.html", include_str!("templates/pieces.html")),
    ("queue.html", include_str!("templates/queue.html")),
];

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        for (name, source) in TEMPLATES {
            // A template that does not parse fails every page; the unit
            // test `every_template_parses` keeps that from shipping.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "console template does not parse");
            }
        }
        env.add_global("asset_version", env!("CARGO_PKG_VERSION"));
        env
    })
}

/// Render template `name` with `context`.
pub(crate) fn render(name: &str, context: impl Serialize) -> Result<Html<String>, ConsoleError> {
    let template = environment().get_template(name)?;
    Ok(Html(template.render(context)?))
}

/// `GET /ui/assets/{file}`: the stylesheet and the script.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => {
            return ConsoleError::Api(ApiError::NotFound(format!("asset {file:?}")))
                .into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// Headers on every console response: what the page may load and who may frame it.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Every console route (merged into the API's router).
pub(super) fn router(state: ApiState) -> Router<ApiState> {
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/runs") }))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/stream", get(pages::runs_stream))
        .route("/ui/runs/{id}", get(run::page))
        .route("/ui/runs/{id}/events", get(run::events))
        .route("/ui/runs/{id}/cancel", post(run::cancel))
        .route("/ui/runs/{id}/retry", post(run::retry))
        .route("/ui/workflows", get(pages::workflows))
        .route("/ui/workflows/{name}", get(pages::workflow))
        .route("/ui/workflows/{name}/test", post(pages::test_run))
        .route("/ui/pieces", get(pages::pieces))
        .route("/ui/queue", get(pages::queue))
        .route("/ui/sign-out", post(session::sign_out))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            session::require_session,
        ));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/runs") }))
        .route("/ui/sign-in", get(session::form).post(session::sign_in))
        .route("/ui/assets/{file}", get(asset))
        .merge(pages)
        .layer(axum::middleware::from_fn(security_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        for (name, _) in TEMPLATES {
            env.get_template(name).expect("added");
        }
    }
}
