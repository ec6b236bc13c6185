//! The HTTP/1 serve loop: what a client may hold and for how long.
//!
//! - at most [`ApiConfig::max_connections`] connections are open at once;
//!   one accepted beyond that is closed at once (it never holds a file
//!   descriptor or a task);
//! - a request head (and an idle keep-alive connection waiting for the
//!   next one) must arrive within [`ApiConfig::header_read_timeout`]
//!   (hyper's `header_read_timeout`, which needs the tokio timer we give it);
//! - a body must arrive within [`ApiConfig::body_read_timeout`] (the
//!   [`Body`](super::Body) extractor) and a `Content-Length` above the body
//!   limit is answered `413` before any of it is read ([`reject_oversized`]);
//! - every request carries the peer address (`ConnectInfo<SocketAddr>`),
//!   which the failed-authentication limit keys on (`auth.rs`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{ApiError, ApiState, router};

/// Middleware: a declared `Content-Length` above the body limit is `413`
/// before the body is read (the limit on what is read stays in place for
/// chunked bodies).
pub(super) async fn reject_oversized(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let limit = if request.method() == axum::http::Method::POST
        && request.uri().path() == "/api/v1/pieces"
    {
        state.config().piece_limit
    } else {
        state.config().body_limit
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => {
            ApiError::PayloadTooLarge { limit }.into_response()
        }
        _ => next.run(request).await,
    }
}

/// Serve [`router`] on `listener` until `shutdown` is cancelled, then let
/// open requests finish (waits and event streams end on `shutdown` too).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let config = state.config().clone();
    let app: Router = router(state);
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off a little
                // instead of spinning on the same error.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection limit reached: closing a new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                app.clone().oneshot(request.map(axum::body::Body::new))
            });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
