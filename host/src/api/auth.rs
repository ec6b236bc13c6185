//! Bearer-token authentication.
//!
//! Tokens are random (`of_` + 64 hex digits); only their SHA-256 is stored.
//! A presented token is hashed and looked up by hash, so the secret itself
//! is never compared byte by byte: timing reveals at most something about
//! a digest the caller cannot steer, which is the usual constant-time
//! argument for hashed API keys.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};

/// How many failed bearer-token attempts a client address may make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureLimit {
    /// Failures allowed per window (default 10); the next attempt is `429`.
    pub max_failures: u32,
    /// The window, counted from the first failure (default 60 s).
    pub window: Duration,
}

impl Default for FailureLimit {
    fn default() -> FailureLimit {
        FailureLimit {
            max_failures: 10,
            window: Duration::from_secs(60),
        }
    }
}

/// Addresses tracked at most; beyond this, expired windows are dropped
/// (and if none expired, the oldest window goes).
const TRACKED_ADDRESSES: usize = 10_000;

/// Failed authentication per client address (IPv6 by its /64, the block
/// one client usually holds): `(failures, window start)`.
pub(super) struct FailedAuth {
    limit: FailureLimit,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailedAuth {
    pub(super) fn new(limit: FailureLimit) -> FailedAuth {
        FailedAuth {
            limit,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn key(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut segments = v6.segments();
                    segments[4..].fill(0);
                    IpAddr::V6(segments.into())
                }
            },
            v4 => v4,
        }
    }

    /// `Err(429)` while `addr` has used up its failures in the current window.
    pub(super) fn check(&self, addr: IpAddr) -> Result<(), ApiError> {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match failures.get(&Self::key(addr)) {
            Some(&(count, start)) if count >= self.limit.max_failures => {
                let left = self.limit.window.saturating_sub(start.elapsed());
                if left.is_zero() {
                    Ok(())
                } else {
                    Err(ApiError::TooManyRequests {
                        retry_after_secs: left.as_secs().max(1),
                    })
                }
            }
            _ => Ok(()),
        }
    }

    /// Count one failed attempt from `addr`.
    pub(super) fn record(&self, addr: IpAddr) {
        let now = Instant::now();
        let window = self.limit.window;
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= TRACKED_ADDRESSES {
            failures.retain(|_, (_, start)| now.duration_since(*start) < window);
            if failures.len() >= TRACKED_ADDRESSES {
                let oldest = failures.iter().min_by_key(|(_, (_, start))| *start);
                if let Some(oldest) = oldest.map(|(addr, _)| *addr) {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(Self::key(addr)).or_insert((0, now));
        if now.duration_since(entry.1) >= window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

/// A new random API token: `of_` followed by 64 hex digits (256 bits).
pub fn generate_token() -> String {
    format!("of_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// The stored form of a token: hex SHA-256 of its text.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The id of the API token a request authenticated with (a request extension).
#[derive(Debug, Clone, Copy)]
pub(super) struct TokenId(pub(super) i64);

/// Middleware: let the request through only with an active bearer token.
pub(super) async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // The peer address, set by `serve` (absent when the router is driven
    // without a socket, as in some tests: then there is no limit).
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    if let Some(peer) = peer {
        state.auth_failures().check(peer)?;
    }
    let failed = |error: ApiError| {
        if let Some(peer) = peer {
            state.auth_failures().record(peer);
        }
        error
    };
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(ApiError::Unauthorized(
            "missing bearer token: send `Authorization: Bearer <token>`",
        ))
        .map_err(failed)?;
    match state.store().active_token(&hash_token(token)).await? {
        Some(found) => {
            // Handlers that record who did something (piece installs) read it.
            let mut request = request;
            request.extensions_mut().insert(TokenId(found.id));
            Ok(next.run(request).await)
        }
        None => Err(failed(ApiError::Unauthorized("unknown or revoked token"))),
    }
}
