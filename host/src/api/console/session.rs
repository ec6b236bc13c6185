//! Signing in to the console without putting a token in a URL.
//!
//! - `POST /ui/sign-in` takes an API token in a form, checks it like the
//!   API's bearer auth (and counts failures against the same per-address
//!   limit), and sets a session cookie: 256 random bits, `HttpOnly`,
//!   `SameSite=Strict`, `Path=/`, `Max-Age` = the session lifetime, and
//!   `Secure` when the request came over TLS (a proxy's
//!   `X-Forwarded-Proto: https`; `serve` itself speaks plain HTTP).
//! - The store keeps only the cookie's SHA-256, with the token it was
//!   signed in with and an expiry; revoking the token ends its sessions.
//! - Every console page goes through [`require_session`]: without a live
//!   session a `GET` is redirected to the sign-in page (`?next=` keeps
//!   where it was going), anything else is `403`.
//! - Every state-changing request (`POST`, sign-in included) must come
//!   from the console's own origin: its `Origin` (or, without one, its
//!   `Referer`) must name the `Host` it was sent to, or it is `403`.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::extract::{ConnectInfo, FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{ConsoleError, render};
use crate::api::auth::{TokenId, hash_token};
use crate::api::{ApiError, ApiState};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "omniflow_session";

/// The session cookie of a request, if it sent one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// Whether a state-changing request comes from the page's own origin.
pub(super) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let named = |source: &str| {
        let rest = source
            .strip_prefix("http://")
            .or_else(|| source.strip_prefix("https://"));
        match rest {
            // `Origin` is scheme://host[:port]; a `Referer` continues with a path.
            Some(rest) => {
                rest == host || rest.strip_prefix(host).is_some_and(|p| p.starts_with('/'))
            }
            None => false,
        }
    };
    match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => named(origin),
        None => headers
            .get(header::REFERER)
            .and_then(|r| r.to_str().ok())
            .is_some_and(named),
    }
}

/// A path on this server to go to after signing in (anything else: the runs page).
fn local_path(next: &str) -> &str {
    let ok = next.starts_with("/ui") && !next.contains("//") && !next.contains('\\');
    if ok { next } else { "/ui/runs" }
}

/// Middleware in front of every console page.
pub(super) async fn require_session(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = match session_cookie(request.headers()) {
        Some(cookie) => {
            match state
                .store()
                .active_session(&hash_token(cookie), SystemTime::now())
                .await
            {
                Ok(token) => token,
                Err(e) => return ConsoleError::Api(e.into()).into_response(),
            }
        }
        None => None,
    };
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    let Some(token) = token else {
        if reading {
            let here = request
                .uri()
                .path_and_query()
                .map_or("/ui/runs", |p| p.as_str());
            let target = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("next", here)
                .finish();
            return Redirect::to(&format!("/ui/sign-in?{target}")).into_response();
        }
        return ConsoleError::Forbidden(
            "sign in first: this console session is missing or has ended".into(),
        )
        .into_response();
    };
    if !reading && !same_origin(request.headers()) {
        return ConsoleError::Forbidden(
            "cross-origin request refused: console actions must come from the console's own pages"
                .into(),
        )
        .into_response();
    }
    request.extensions_mut().insert(TokenId(token.id));
    next.run(request).await
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct NextQuery {
    #[serde(default)]
    next: String,
}

/// `GET /ui/sign-in`: the form.
pub(super) async fn form(
    query: Result<Query<NextQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ConsoleError> {
    let next = query.map(|Query(q)| q.next).unwrap_or_default();
    page(StatusCode::OK, local_path(&next), None)
}

fn page(status: StatusCode, next: &str, error: Option<&str>) -> Result<Response, ConsoleError> {
    let html = render(
        "sign_in.html",
        minijinja::context! { title => "Sign in", next => next, error => error },
    )?;
    Ok((status, html).into_response())
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /ui/sign-in`: check the token, set the cookie, go on.
pub(super) async fn sign_in(
    State(state): State<ApiState>,
    request: Request,
) -> Result<Response, ConsoleError> {
    if !same_origin(request.headers()) {
        return Err(ConsoleError::Forbidden(
            "cross-origin sign-in refused: sign in from the console's own page".into(),
        ));
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let tls = request
        .headers()
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if let Some(peer) = peer {
        state.auth_failures().check(peer)?;
    }
    let axum::Form(form) = axum::Form::<SignInForm>::from_request(request, &state)
        .await
        .map_err(|e| ApiError::MalformedBody(e.body_text()))?;
    let next = local_path(&form.next).to_owned();
    let token = form.token.trim();
    let found = if token.is_empty() {
        None
    } else {
        state.store().active_token(&hash_token(token)).await?
    };
    let Some(found) = found else {
        if let Some(peer) = peer {
            state.auth_failures().record(peer);
        }
        return page(
            StatusCode::UNAUTHORIZED,
            &next,
            Some("That token is unknown or revoked. Create one with `omniflow token create NAME`."),
        );
    };
    let session = crate::api::generate_token();
    let ttl = state.config().console_session;
    state
        .store()
        .create_session(&hash_token(&session), found.id, SystemTime::now() + ttl)
        .await?;
    let mut cookie = format!(
        "{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        ttl.as_secs()
    );
    if tls {
        cookie.push_str("; Secure");
    }
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| ConsoleError::Internal(e.to_string()))?,
    );
    Ok(response)
}

/// `POST /ui/sign-out`: end this session.
pub(super) async fn sign_out(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    if let Some(cookie) = session_cookie(&headers) {
        state.store().delete_session(&hash_token(cookie)).await?;
    }
    let mut response = Redirect::to("/ui/sign-in").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("omniflow_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_origin_must_name_the_host_the_request_went_to() {
        let host = ("host", "127.0.0.1:8080");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:9090")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:80800")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:8080/ui/runs")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:8080.evil/ui")
        ])));
        assert!(
            !same_origin(&headers(&[host])),
            "neither Origin nor Referer"
        );
        assert!(
            !same_origin(&headers(&[("origin", "http://127.0.0.1:8080")])),
            "no Host"
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_next_stays_local() {
        let h = headers(&[("cookie", "a=1; omniflow_session=abc ; b=2")]);
        assert_eq!(session_cookie(&h), Some("abc"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "omniflow_session=")])),
            None
        );
        assert_eq!(local_path("/ui/runs/1"), "/ui/runs/1");
        assert_eq!(local_path("//evil.example/ui"), "/ui/runs");
        assert_eq!(local_path("https://evil.example/"), "/ui/runs");
        assert_eq!(local_path("/ui//evil"), "/ui/runs");
    }
}
