//! Outbound HTTP through the host (`wasi:http/outgoing-handler`).
//!
//! Every request is checked by the host against the step's grants. Secrets
//! are never in the piece: write a placeholder such as
//! `${secret:TELEGRAM_BOT_TOKEN}` in the URL or a header value and the host
//! substitutes it when the destination is granted that secret.
//!
//! ```ignore
//! let resp = http::Request::post("https://api.example.com/v1/items")
//!     .header("authorization", "Bearer ${secret:EXAMPLE_TOKEN}")
//!     .json(&json!({ "name": "x" }))
//!     .send()?;            // a transport failure is retryable; a denial is fatal
//! let item: Value = resp.json()?;
//! ```

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::bindings::wasi::clocks::monotonic_clock;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::poll::{Pollable, poll};
use crate::bindings::wasi::io::streams::StreamError;
use crate::{Error, Result};

/// An HTTP request being built.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

/// A complete HTTP response (the body is read fully; the host caps its size).
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, in order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Why a request did not produce a response.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpError {
    /// The host refused the destination or a secret: the step lacks a grant.
    /// The step log names the grant to add. Not retryable.
    Denied {
        /// The URL as the piece wrote it.
        url: String,
    },
    /// The URL cannot be sent (no scheme, bad characters...). Not retryable.
    InvalidUrl(String),
    /// Connection refused, DNS failure, timeout, reset... Retryable.
    Transport {
        /// The URL as the piece wrote it.
        url: String,
        /// What the host reported.
        detail: String,
    },
    /// The response body exceeded the host's cap. Not retryable.
    TooLarge {
        /// The URL as the piece wrote it.
        url: String,
    },
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied { url } => write!(
                f,
                "HTTP request to {url} was denied by the host: no grant of this step allows it \
                 (destination, secret placeholder or private address); the step log names the \
                 grant to add"
            ),
            HttpError::InvalidUrl(msg) => write!(f, "invalid URL: {msg}"),
            HttpError::Transport { url, detail } => {
                write!(f, "HTTP request to {url} failed: {detail}")
            }
            HttpError::TooLarge { url } => write!(
                f,
                "the response of {url} is larger than the host's response-size cap"
            ),
        }
    }
}

impl From<HttpError> for Error {
    fn from(err: HttpError) -> Self {
        match err {
            HttpError::Transport { .. } => Error::retryable(err.to_string()),
            HttpError::Denied { .. } | HttpError::InvalidUrl(_) | HttpError::TooLarge { .. } => {
                Error::fatal(err.to_string())
            }
        }
    }
}

/// Whether `url` starts with `http://` or `https://` (any case).
pub fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// A piece's configurable base URL: `given` trimmed (or `default` when absent
/// or blank), without a trailing `/`. The error says what is wrong with it.
pub fn base_url(given: Option<&str>, default: &str) -> std::result::Result<String, String> {
    let base = given
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .unwrap_or(default)
        .trim_end_matches('/');
    if is_http_url(base) {
        Ok(base.to_string())
    } else {
        Err(format!(
            "base_url {base:?} must start with http:// or https://"
        ))
    }
}

impl Request {
    /// A request with any method (`"PATCH"`...).
    pub fn new(method: impl Into<String>, url: impl Into<String>) -> Self {
        Request {
            method: method.into().to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }

    /// `GET url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }

    /// `POST url`.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }

    /// Add a header (values may contain `${secret:NAME}` placeholders).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .push((name.into().to_ascii_lowercase(), value.into()));
        self
    }

    /// A JSON body (sets `content-type: application/json`).
    pub fn json<T: serde::Serialize>(self, body: &T) -> Self {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.header("content-type", "application/json").body(bytes)
    }

    /// A raw body.
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = bytes.into();
        self
    }

    /// Give up after `timeout`, counted from sending: the SDK stops waiting
    /// for the response and its body when it passes (and also asks the host
    /// for connect / first-byte / between-bytes timeouts). Expiry is an
    /// [`HttpError::Transport`] error, so retryable. Without it, only the
    /// step's own timeout bounds the request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Send it and read the whole response.
    pub fn send(self) -> std::result::Result<Response, HttpError> {
        let (scheme, rest) = self
            .url
            .split_once("://")
            .ok_or_else(|| HttpError::InvalidUrl(format!("{:?} has no scheme", self.url)))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => {
                return Err(HttpError::InvalidUrl(format!(
                    "unsupported scheme {other:?}"
                )));
            }
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        let path = path.split('#').next().unwrap_or("/").to_string();

        let fields = Fields::new();
        for (name, value) in &self.headers {
            fields
                .append(name, value.as_bytes())
                .map_err(|e| HttpError::InvalidUrl(format!("header {name:?}: {e:?}")))?;
        }
        let request = OutgoingRequest::new(fields);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        let invalid = |what: &str| HttpError::InvalidUrl(format!("{what} of {:?}", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|()| invalid("authority"))?;
        request
            .set_path_with_query(Some(&path))
            .map_err(|()| invalid("path"))?;
        let body = request.body().map_err(|()| invalid("body"))?;

        let transport = |code: ErrorCode| match code {
            ErrorCode::HttpRequestDenied => HttpError::Denied {
                url: self.url.clone(),
            },
            ErrorCode::HttpResponseBodySize(_) => HttpError::TooLarge {
                url: self.url.clone(),
            },
            other => HttpError::Transport {
                url: self.url.clone(),
                detail: format!("{other:?}"),
            },
        };
        let started = Instant::now();
        let options = self.timeout.map(|timeout| {
            let options = RequestOptions::new();
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            // A host that does not support a timeout refuses it; the SDK's own
            // deadline below still applies.
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
            options
        });
        let future = outgoing_handler::handle(request, options).map_err(transport)?;
        let mut write_error = None;
        {
            let stream = body.write().map_err(|()| invalid("body stream"))?;
            for chunk in self.body.chunks(4096) {
                if let Err(e) = stream.blocking_write_and_flush(chunk) {
                    write_error = Some(HttpError::Transport {
                        url: self.url.clone(),
                        detail: format!("writing the body: {e:?}"),
                    });
                    break;
                }
            }
        }
        match write_error {
            None => OutgoingBody::finish(body, None).map_err(transport)?,
            // The host closes the body of a request it refused: the response
            // future says why (e.g. denied), so wait for it below.
            Some(_) => drop(body),
        }

        let deadline = self.timeout.map(|timeout| started + timeout);
        let timed_out = || HttpError::Transport {
            url: self.url.clone(),
            detail: format!(
                "timed out after {} ms",
                self.timeout.unwrap_or_default().as_millis()
            ),
        };
        if !wait_until(&future.subscribe(), deadline) {
            // Dropping `future` on return cancels the request.
            return Err(timed_out());
        }
        let response = match future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(transport(code)),
            Some(Err(())) | None => {
                return Err(write_error.unwrap_or_else(|| HttpError::Transport {
                    url: self.url.clone(),
                    detail: "the response was lost".into(),
                }));
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response.consume().map_err(|()| invalid("response body"))?;
        let stream = incoming.stream().map_err(|()| invalid("response stream"))?;
        let mut bytes = Vec::new();
        loop {
            match stream.read(64 * 1024) {
                Ok(chunk) if chunk.is_empty() => {
                    if !wait_until(&stream.subscribe(), deadline) {
                        return Err(timed_out());
                    }
                }
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(HttpError::Transport {
                        url: self.url.clone(),
                        detail: format!("reading the body: {}", e.to_debug_string()),
                    });
                }
            }
        }
        drop(stream);
        let _trailers = IncomingBody::finish(incoming);
        Ok(Response {
            status,
            headers,
            body: bytes,
        })
    }
}

/// Wait until `pollable` is ready (`true`) or `deadline` passes (`false`).
fn wait_until(pollable: &Pollable, deadline: Option<Instant>) -> bool {
    let Some(deadline) = deadline else {
        pollable.block();
        return true;
    };
    let remaining = deadline.saturating_duration_since(Instant::now());
    let timer = monotonic_clock::subscribe_duration(
        u64::try_from(remaining.as_nanos()).unwrap_or(u64::MAX),
    );
    poll(&[pollable, &timer]).contains(&0)
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON. A non-JSON body is a fatal error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::fatal(format!(
                "the response (HTTP {}) is not the expected JSON: {e}",
                self.status
            ))
        })
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The wait the server asks for in `Retry-After`: delay-seconds (`"120"`,
    /// also fractional `"1.5"`) or an HTTP date (`"Wed, 21 Oct 2015 07:28:00
    /// GMT"`, measured from now; a past date is zero). `None` when absent or
    /// unreadable.
    pub fn retry_after(&self) -> Option<Duration> {
        parse_retry_after(self.header("retry-after")?, SystemTime::now())
    }
}

/// `Retry-After` as a duration from `now` (see [`Response::retry_after`]).
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(parse_http_date(value)?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (`"Sun, 06 Nov 1994 08:49:37 GMT"`, RFC 9110 §5.6.7) as
/// seconds since the Unix epoch.
fn parse_http_date(value: &str) -> Option<u64> {
    let (_weekday, rest) = value.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u64 + 1;
    let year: u64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() || clock.next().is_some() {
        return None;
    }
    if !(1..=31).contains(&day) || year < 1970 || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-3", now), None);
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2000 07:28:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 UTC", now),
            None
        );
    }
}
