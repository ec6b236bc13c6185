//! Outbound HTTP (`wasi:http/outgoing-handler`): the one place where the
//! host decides whether a guest request may leave the sandbox.
//!
//! For every request:
//! 1. the URL is parsed (the `url` crate: IDNA, IPv4 shorthand, dot
//!    segments) and matched against the step's grants by scheme, host, port
//!    and path prefix — never by string prefix;
//! 2. `${secret:NAME}` placeholders in the path, query and header values are
//!    replaced, but only with secrets the matched grant lists;
//! 3. the host name is resolved and every address checked: loopback,
//!    private, link-local (cloud metadata), CGNAT, multicast and unspecified
//!    addresses are refused unless the grant names that IP itself; the
//!    connection goes to the checked address (no second lookup);
//! 4. redirects are returned to the guest as they are (never followed);
//!    the body is read under a size cap and the step deadline, and secret
//!    values echoed back are replaced by `[redacted:NAME]`.
//!
//! A refusal is `ErrorCode::HttpRequestDenied` for the guest (a value, never
//! a trap) plus one step-log line saying exactly which grant would allow it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http_body_util::{BodyExt, Full};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use wasmtime_wasi_http::{
    DEFAULT_FORBIDDEN_HEADERS, Error as HttpError, ForbiddenHeaderFilter, RequestOptions, WasiBody,
    WasiHttpHooks,
};

pub use crate::workflow::grant::Grant;

use crate::capabilities::addr::is_public;
use crate::capabilities::log::StepLog;
use crate::capabilities::secrets::{Redactor, Secrets};

/// Largest response body a guest may receive, by default.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 << 20;
/// Requests one step may have in flight at once.
pub const MAX_CONCURRENT_REQUESTS: usize = 8;

/// What one step may reach over HTTP: its grants and the secrets the host
/// may place. The default grants nothing.
#[derive(Debug, Clone, Default)]
pub struct HttpGrants {
    grants: Arc<[Grant]>,
    secrets: Secrets,
    max_response_bytes: Option<usize>,
    /// Secrets granted anywhere in the run's workflow: redacted from
    /// everything this step returns even when this step never placed them.
    run_secrets: Arc<[String]>,
}

impl HttpGrants {
    /// Nothing granted.
    pub fn deny_all() -> Self {
        HttpGrants::default()
    }

    /// These grants, with secret values from `secrets`.
    pub fn new(grants: Vec<Grant>, secrets: Secrets) -> Self {
        HttpGrants {
            grants: grants.into(),
            secrets,
            max_response_bytes: None,
            run_secrets: Arc::new([]),
        }
    }

    /// Also redact the secrets granted anywhere in `workflow` (the run's
    /// set, see [`granted_secret_names`]).
    pub fn for_run(mut self, workflow: &crate::workflow::Workflow) -> Self {
        self.run_secrets = granted_secret_names(workflow).into();
        self
    }

    /// The redactor of one attempt: every value of the run's secrets and of
    /// this step's granted secrets known now; values placed into requests
    /// are added as they are placed.
    pub(crate) fn redactor(&self) -> Redactor {
        let redactor = Redactor::new();
        redactor.add_known(&self.secrets, self.run_secrets.iter());
        redactor.add_known(
            &self.secrets,
            self.grants.iter().flat_map(|g| g.secrets.iter()),
        );
        redactor
    }

    /// The grants of a workflow step (`grants.http`), parsed.
    pub fn from_workflow(
        grants: Option<&crate::workflow::Grants>,
        secrets: &Secrets,
    ) -> Result<Self, String> {
        let Some(grants) = grants else {
            return Ok(HttpGrants::deny_all());
        };
        let parsed = grants
            .http
            .iter()
            .map(|g| Grant::parse(g.destination(), g.secrets()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HttpGrants::new(parsed, secrets.clone()))
    }

    /// Cap response bodies at `bytes` instead of [`DEFAULT_MAX_RESPONSE_BYTES`].
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = Some(bytes);
        self
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }
}

/// Every secret name granted by any step or handler of `workflow`, sorted,
/// without repeats: the secrets a run of it may use.
pub fn granted_secret_names(workflow: &crate::workflow::Workflow) -> Vec<String> {
    let mut names: Vec<String> = workflow
        .steps
        .iter()
        .map(|s| s.grants.as_ref())
        .chain(
            [&workflow.on_failure, &workflow.on_success]
                .map(|h| h.as_ref().and_then(|h| h.grants.as_ref())),
        )
        .flatten()
        .flat_map(|g| g.http.iter().flat_map(|h| h.secrets().iter().cloned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The per-attempt HTTP policy stored in the `Store`.
pub(crate) struct HttpPolicy {
    step_id: String,
    log: StepLog,
    access: HttpGrants,
    deadline: Instant,
    in_flight: Arc<Semaphore>,
    redactor: Redactor,
    budget: Arc<crate::capabilities::budget::HostBudget>,
}

/// A request that passed the grant check, secrets placed.
struct Authorized {
    request: http::Request<WasiBody>,
    grant: Grant,
    redactor: Redactor,
    /// `scheme://host:port/path` without secrets, for messages.
    shown: String,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl HttpPolicy {
    pub(crate) fn prepare(
        step_id: &str,
        log: StepLog,
        access: HttpGrants,
        deadline: Instant,
        redactor: Redactor,
        budget: Arc<crate::capabilities::budget::HostBudget>,
    ) -> Self {
        HttpPolicy {
            step_id: step_id.to_string(),
            log,
            access,
            deadline,
            in_flight: Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)),
            redactor,
            budget,
        }
    }

    fn origin(url: &url::Url) -> String {
        let host = url.host_str().unwrap_or("<no host>");
        match url.port() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        }
    }

    /// Grant check and secret placement; the error is the log sentence.
    fn authorize(&self, mut request: http::Request<WasiBody>) -> Result<Authorized, String> {
        let raw = request.uri().to_string();
        let url = url::Url::parse(&raw)
            .map_err(|e| format!("HTTP request denied: {raw:?} is not a valid URL ({e})"))?;
        let shown = format!("{}{}", Self::origin(&url), url.path());
        let step = &self.step_id;
        let Some(grant) = self.access.grants.iter().find(|g| g.matches(&url)).cloned() else {
            let origin = Self::origin(&url);
            let hint = if self.access.grants.iter().any(|g| g.same_origin(&url)) {
                format!(
                    " (the step's grants for {origin} cover other paths; add a grant covering {})",
                    url.path()
                )
            } else {
                String::new()
            };
            return Err(format!(
                "HTTP request denied: {} {shown} — step {step:?} has no grant for it; add \"{origin}\" to the step's grants.http{hint}",
                request.method()
            ));
        };

        // Secrets: placeholders in the path/query and header values.
        let mut used: Vec<(String, SecretString)> = Vec::new();
        let mut place = |text: &str| -> Result<String, String> {
            substitute(text, |name| {
                if !grant.secrets.iter().any(|s| s == name) {
                    return Err(format!(
                        "HTTP request denied: {shown} uses secret {name} but the grant \"{}\" does not list it; grant it with {{\"host\": \"{}\", \"secrets\": [\"{name}\"]}}",
                        grant.text, grant.text
                    ));
                }
                let value = self.access.secrets.get(name).ok_or_else(|| {
                    format!(
                        "HTTP request denied: secret {name} is granted to step {step:?} but has no value; store it with PUT /api/v1/secrets/{name}, set the environment variable OMNIFLOW_SECRET_{name}, or add a line {name}=... to ./.env"
                    )
                })?;
                let text = value.expose_secret().to_string();
                if !used.iter().any(|(n, _)| n == name) {
                    used.push((name.to_string(), value));
                }
                Ok(text)
            })
        };
        let path_and_query = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let placed_path = place(&path_and_query)?;
        let mut headers = Vec::new();
        for (name, value) in request.headers() {
            let Ok(text) = value.to_str() else { continue };
            if text.contains("${secret:") {
                headers.push((name.clone(), place(text)?));
            }
        }
        if placed_path != path_and_query {
            let mut parts = request.uri().clone().into_parts();
            parts.path_and_query = Some(placed_path.parse().map_err(|_| {
                format!("HTTP request denied: a secret placed into {shown} makes the URL invalid")
            })?);
            let uri = http::Uri::from_parts(parts).map_err(|_| {
                format!("HTTP request denied: a secret placed into {shown} makes the URL invalid")
            })?;
            // The placed URL must still be inside the same grant (a value
            // must not walk the path out of it).
            let placed = url::Url::parse(&uri.to_string()).map_err(|_| {
                format!("HTTP request denied: a secret placed into {shown} makes the URL invalid")
            })?;
            if !grant.matches(&placed) {
                return Err(format!(
                    "HTTP request denied: with its secrets placed, {shown} leaves the grant \"{}\"",
                    grant.text
                ));
            }
            *request.uri_mut() = uri;
        }
        for (name, text) in headers {
            let mut value = HeaderValue::from_str(&text).map_err(|_| {
                format!(
                    "HTTP request denied: a secret placed into header {name} of {shown} is not a valid header value"
                )
            })?;
            value.set_sensitive(true);
            request.headers_mut().insert(name, value);
        }
        for (name, value) in &used {
            self.redactor.add(name, value);
        }
        Ok(Authorized {
            request,
            grant,
            redactor: self.redactor.clone(),
            shown,
        })
    }
}

/// Replace `${secret:NAME}` (also percent-encoded as `$%7Bsecret:NAME%7D`)
/// using `lookup`.
fn substitute(
    text: &str,
    mut lookup: impl FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let plain = rest.find("${secret:").map(|i| (i, "${secret:".len(), "}"));
        let lower = rest.to_ascii_lowercase();
        let encoded = lower
            .find("$%7bsecret:")
            .map(|i| (i, "$%7bsecret:".len(), "%7d"));
        let next = match (plain, encoded) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let Some((start, open_len, close)) = next else {
            out.push_str(rest);
            return Ok(out);
        };
        let after = &rest[start + open_len..];
        let end = if close == "}" {
            after.find('}')
        } else {
            after.to_ascii_lowercase().find(close)
        };
        let Some(end) = end else {
            out.push_str(rest);
            return Ok(out);
        };
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            // Not a placeholder; keep it literally.
            out.push_str(&rest[..start + open_len]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str(&lookup(name)?);
        rest = &after[end + close.len()..];
    }
}

/// Where to connect: the checked address, or why not.
async fn resolve(grant: &Grant, url: &url::Url) -> Result<SocketAddr, Failure> {
    let port = url.port_or_known_default().unwrap_or(grant.port);
    if let Some(ip) = grant.literal_ip() {
        // The grant names this address: it is allowed whatever its range.
        return Ok(SocketAddr::new(ip, port));
    }
    let host = url.host_str().unwrap_or_default().to_string();
    let dns_failure = |message: String| {
        Failure::Transport(
            message,
            HttpError::DnsError {
                rcode: None,
                info_code: None,
            },
        )
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| dns_failure(format!("DNS lookup of {host} failed: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(dns_failure(format!(
            "DNS lookup of {host} returned no addresses"
        )));
    }
    if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(Failure::Denied(format!(
            "HTTP request denied: {host} resolved to {}, a loopback/private/link-local address; grants by host name never reach such addresses. To allow it, grant the address itself, e.g. \"{}://{}\"",
            bad.ip(),
            url.scheme(),
            SocketAddr::new(bad.ip(), port)
        )));
    }
    Ok(addrs[0])
}

/// Why a request failed after it was authorized.
enum Failure {
    /// A policy refusal (logged, `HttpRequestDenied`).
    Denied(String),
    /// A transport problem (logged, the matching error code).
    Transport(String, HttpError),
    /// The attempt's host budget is spent (logged; the attempt fails).
    Budget(String),
}

async fn connect_and_send(
    authorized: Authorized,
    deadline: Instant,
    options: Option<RequestOptions>,
    max_body: usize,
    budget: Arc<crate::capabilities::budget::HostBudget>,
) -> Result<http::Response<WasiBody>, Failure> {
    let Authorized {
        mut request,
        grant,
        redactor,
        shown,
    } = authorized;
    let url = url::Url::parse(&request.uri().to_string())
        .map_err(|e| Failure::Denied(format!("HTTP request denied: invalid URL ({e})")))?;
    let addr = resolve(&grant, &url).await?;
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(Duration::from_secs(30));
    let stream = connect(addr, connect_timeout, &shown).await?;
    let io = secure(stream, &grant, &url, &shown).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(io))
            .await
            .map_err(|e| {
                Failure::Transport(
                    format!("HTTP handshake with {shown}: {e}"),
                    HttpError::HttpProtocolError,
                )
            })?;
    let conn_task = tokio::spawn(tokio::time::timeout_at(deadline.into(), conn));
    to_origin_form(&mut request, &url)?;

    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Failure::Transport(format!("{shown}: {e}"), HttpError::HttpProtocolError))?;
    let (parts, body) = response.into_parts();
    let collected = read_capped(body, max_body, &shown, &conn_task).await?;
    drop(sender);
    redacted_response(parts, collected, &redactor, &budget, &shown, &conn_task)
}

/// A TCP connection to the checked address, within `timeout`.
async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    shown: &str,
) -> Result<tokio::net::TcpStream, Failure> {
    tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            Failure::Transport(
                format!("connecting to {addr} timed out"),
                HttpError::ConnectionTimeout,
            )
        })?
        .map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                HttpError::ConnectionRefused
            } else {
                HttpError::Connect(std::io::Error::new(e.kind(), e.to_string()))
            };
            Failure::Transport(format!("connecting to {addr} ({shown}): {e}"), code)
        })
}

/// `stream` as it is for `http`, or inside TLS (webpki roots; the server
/// name is the grant's literal IP or the URL's host) for `https`.
async fn secure(
    stream: tokio::net::TcpStream,
    grant: &Grant,
    url: &url::Url,
    shown: &str,
) -> Result<Box<dyn Stream>, Failure> {
    if url.scheme() != "https" {
        return Ok(Box::new(stream));
    }
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Failure::Transport(format!("TLS setup: {e}"), HttpError::TlsProtocolError))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = match grant.literal_ip() {
        Some(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        None => {
            rustls::pki_types::ServerName::try_from(url.host_str().unwrap_or_default().to_string())
                .map_err(|e| {
                    Failure::Transport(format!("TLS server name: {e}"), HttpError::TlsProtocolError)
                })?
        }
    };
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| {
            Failure::Transport(
                format!("TLS handshake with {shown}: {e}"),
                HttpError::TlsCertificateError,
            )
        })?;
    Ok(Box::new(tls))
}

/// Origin-form request target: the authority travels in `Host` (set from
/// `url` unless the guest set it).
fn to_origin_form(request: &mut http::Request<WasiBody>, url: &url::Url) -> Result<(), Failure> {
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *request.uri_mut() = target
        .parse()
        .map_err(|_| Failure::Denied("HTTP request denied: invalid request target".into()))?;
    if !request.headers().contains_key(http::header::HOST)
        && let Some(authority) = url.host_str()
    {
        let host = match url.port() {
            Some(p) => format!("{authority}:{p}"),
            None => authority.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&host) {
            request.headers_mut().insert(http::header::HOST, v);
        }
    }
    Ok(())
}

/// The whole response body, refused (and the connection aborted) once it
/// passes `max_body` bytes.
async fn read_capped(
    mut body: hyper::body::Incoming,
    max_body: usize,
    shown: &str,
    conn_task: &ConnTask,
) -> Result<Vec<u8>, Failure> {
    let mut collected: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Failure::Transport(
                format!("reading the body of {shown}: {e}"),
                HttpError::HttpResponseIncomplete,
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > max_body {
                conn_task.abort();
                return Err(Failure::Transport(
                    format!(
                        "the response body of {shown} is larger than the {max_body}-byte cap; it was dropped"
                    ),
                    HttpError::HttpResponseBodySize(Some(max_body as u64)),
                ));
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected)
}

/// The response the guest gets: every secret of the run redacted from the
/// body and header values, its bytes held against the attempt's budget.
fn redacted_response(
    mut parts: http::response::Parts,
    collected: Vec<u8>,
    redactor: &Redactor,
    budget: &Arc<crate::capabilities::budget::HostBudget>,
    shown: &str,
    conn_task: &ConnTask,
) -> Result<http::Response<WasiBody>, Failure> {
    // Every secret of the run, in every covered encoding, bytes or not.
    let body = redactor.redact_bytes(&collected);
    drop(collected);
    for value in parts.headers.values_mut() {
        let clean = redactor.redact_bytes(value.as_bytes());
        if clean != value.as_bytes() {
            *value = HeaderValue::from_bytes(&clean)
                .unwrap_or_else(|_| HeaderValue::from_static("[redacted]"));
        }
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    // The bytes stay held for the guest until it drops the body: they count
    // against the attempt's host budget (released by the guard's drop).
    let held = body.len()
        + parts
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum::<usize>();
    let guard = budget.hold(held).map_err(|message| {
        conn_task.abort();
        Failure::Budget(format!("the response of {shown}: {message}"))
    })?;
    let body = Full::new(Bytes::from(body))
        .map_frame(move |frame| {
            let _held = &guard;
            frame
        })
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(http::Response::from_parts(parts, body))
}

/// The task driving one connection, bounded by the step deadline.
type ConnTask =
    tokio::task::JoinHandle<Result<Result<(), hyper::Error>, tokio::time::error::Elapsed>>;

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

impl WasiHttpHooks for HttpPolicy {
    fn forbidden_header_filter(&mut self) -> ForbiddenHeaderFilter {
        // `authorization` is allowed: pieces write `Bearer ${secret:NAME}`.
        Arc::new(|name| DEFAULT_FORBIDDEN_HEADERS.contains(name))
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        crate::capabilities::budget::OUTGOING_BODY_CHUNK_BYTES
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let log = self.log.clone();
        let step = self.step_id.clone();
        let authorized = match self.authorize(request) {
            Ok(a) => a,
            Err(message) => {
                tracing::info!(step = %step, "{message}");
                log.append(&format!("[host] {message}\n"));
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
        };
        let deadline = self.deadline;
        let permits = self.in_flight.clone();
        let budget = self.budget.clone();
        let max_body = self
            .access
            .max_response_bytes
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        Box::new(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return Err(HttpError::ConnectionLimitReached);
            };
            let shown = authorized.shown.clone();
            let result = tokio::time::timeout_at(
                deadline.into(),
                connect_and_send(authorized, deadline, options, max_body, budget),
            )
            .await;
            let failure = match result {
                Ok(Ok(response)) => {
                    let io: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send> =
                        Box::new(async { Ok(()) });
                    return Ok((response, io));
                }
                Ok(Err(failure)) => failure,
                Err(_) => Failure::Transport(
                    format!("{shown}: the step deadline passed while waiting for the response"),
                    HttpError::ConnectionReadTimeout,
                ),
            };
            match failure {
                Failure::Denied(message) => {
                    tracing::info!(step = %step, "{message}");
                    log.append(&format!("[host] {message}\n"));
                    Err(HttpError::HttpRequestDenied)
                }
                Failure::Transport(message, code) => {
                    tracing::debug!(step = %step, "{message}");
                    log.append(&format!("[host] HTTP request failed: {message}\n"));
                    Err(code)
                }
                Failure::Budget(message) => {
                    log.append(&format!("[host] {message}\n"));
                    Err(HttpError::InternalError(Some(message)))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        url::Url::parse(s).unwrap()
    }

    #[test]
    fn grants_match_by_parsed_parts_not_prefix() {
        let g = Grant::parse("https://api.example.com/v1", &[]).unwrap();
        assert!(g.matches(&url("https://api.example.com/v1/items")));
        assert!(g.matches(&url("https://API.example.com:443/v1")));
        assert!(!g.matches(&url("https://api.example.com/v10")));
        assert!(!g.matches(&url("https://api.example.com.evil.net/v1")));
        assert!(!g.matches(&url("http://api.example.com/v1")));
        assert!(!g.matches(&url("https://api.example.com:8443/v1")));
        assert!(!g.matches(&url("https://api.example.com/v1/../admin")));
        let ip = Grant::parse("http://127.0.0.1:11434", &[]).unwrap();
        assert!(ip.matches(&url("http://127.0.0.1:11434/api/chat")));
        assert!(ip.matches(&url("http://2130706433:11434/api/chat")));
        assert!(!ip.matches(&url("http://127.0.0.1:11435/api/chat")));
    }

    #[test]
    fn bad_grants_are_explained() {
        assert!(
            Grant::parse("api.example.com", &[])
                .unwrap_err()
                .contains("not a URL")
        );
        assert!(
            Grant::parse("ftp://x.com", &[])
                .unwrap_err()
                .contains("scheme")
        );
        assert!(
            Grant::parse("https://u:p@x.com", &[])
                .unwrap_err()
                .contains("credentials")
        );
        assert!(
            Grant::parse("https://x.com", &["A-B".into()])
                .unwrap_err()
                .contains("A-B")
        );
    }

    #[test]
    fn placeholders_are_substituted_in_both_spellings() {
        let out = substitute("/bot${secret:TOKEN}/x?k=$%7Bsecret:KEY%7D", |n| {
            Ok(format!("<{n}>"))
        })
        .unwrap();
        assert_eq!(out, "/bot<TOKEN>/x?k=<KEY>");
        assert_eq!(
            substitute("${secret:}", |_| Ok("v".into())).unwrap(),
            "${secret:}"
        );
        let err = substitute("${secret:NOPE}", |n| Err(format!("missing {n}"))).unwrap_err();
        assert_eq!(err, "missing NOPE");
    }
}
