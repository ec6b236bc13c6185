//! `http-request`: one HTTP request to a destination the step is granted.
//!
//! The response comes back as data — `{status, headers, body}` — whatever its
//! status, so a workflow can branch on a 404. Only three things are errors:
//! the request could not be made (transport failure: retryable; denied by the
//! host: fatal, the step log names the grant to add), the server asks to come
//! back later (429 / 503: retryable, honouring `Retry-After`, unless
//! `retry_on_status` is false), and any non-2xx status when `fail_on_status`
//! is set.
//!
//! Secrets are never in the input: write `${secret:NAME}` in the URL, a query
//! value or a header value, and grant `NAME` to the destination; the host
//! places the value.

use std::collections::BTreeMap;
use std::time::Duration;

use omniflow_sdk::http::{HttpError, Response};
use omniflow_sdk::prelude::*;
use omniflow_sdk::serde_json::{self, Map};

/// The request to send.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RequestInput {
    /// HTTP method (`GET`, `POST`, `PUT`, `PATCH`, `DELETE`, `HEAD`, `OPTIONS` or any token).
    #[serde(default = "default_method")]
    method: String,
    /// Absolute `http://` or `https://` URL. It must match one of the step's `grants.http`.
    url: String,
    /// Request headers. Values may contain `${secret:NAME}` placeholders.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Query parameters appended to the URL, percent-encoded. Strings, numbers and
    /// booleans are sent as text, an array repeats the key, null is left out.
    /// `${secret:NAME}` placeholders are kept as they are for the host to fill.
    #[serde(default)]
    query: Map<String, Value>,
    /// Request body: a string is sent as text (`text/plain; charset=utf-8`), anything
    /// else as JSON (`application/json`), unless `headers` sets `content-type`.
    #[serde(default)]
    body: Option<Value>,
    /// Give up after this many milliseconds (connect, first byte, between bytes and
    /// overall). The step's `timeout` always applies as well.
    #[serde(default)]
    timeout_ms: Option<u64>,
    /// Turn every non-2xx status into a step error (5xx and 408 retryable, other
    /// statuses fatal). By default a non-2xx response is returned as data.
    #[serde(default)]
    fail_on_status: bool,
    /// Treat 429 and 503 as retryable errors that wait at least the server's
    /// `Retry-After` (default true). When false they are data like any other status
    /// (unless `fail_on_status`).
    #[serde(default = "default_true")]
    retry_on_status: bool,
}

fn default_method() -> String {
    "GET".to_string()
}

fn default_true() -> bool {
    true
}

/// The response, as data.
#[derive(Serialize, JsonSchema)]
struct RequestOutput {
    /// HTTP status code.
    status: u16,
    /// Response headers, names lowercase; repeated headers joined with `", "`.
    headers: BTreeMap<String, String>,
    /// The body: parsed JSON when the content type is JSON (or unlabelled/unknown and
    /// the body is a JSON object or array), otherwise text (invalid UTF-8 replaced).
    /// An empty body is `""`.
    body: Value,
}

fn request(_ctx: &Context, input: RequestInput) -> Result<RequestOutput> {
    let method = input.method.trim().to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(Error::invalid_input(format!(
            "method {:?} is not an HTTP method",
            input.method
        )));
    }
    if !omniflow_sdk::http::is_http_url(&input.url) {
        return Err(Error::invalid_input(format!(
            "url {:?} must be an absolute http:// or https:// URL",
            input.url
        )));
    }
    let url = with_query(&input.url, &input.query)?;

    let mut req = omniflow_sdk::http::Request::new(method.clone(), url.clone());
    let mut has_content_type = false;
    for (name, value) in &input.headers {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(Error::invalid_input(format!(
                "header name {name:?} is not valid"
            )));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(Error::invalid_input(format!(
                "header {name:?} has a line break or NUL in its value"
            )));
        }
        has_content_type |= name.eq_ignore_ascii_case("content-type");
        req = req.header(name, value);
    }
    match input.body {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            if !has_content_type {
                req = req.header("content-type", "text/plain; charset=utf-8");
            }
            req = req.body(text.into_bytes());
        }
        Some(json) => {
            if !has_content_type {
                req = req.header("content-type", "application/json");
            }
            let bytes = serde_json::to_vec(&json)
                .map_err(|e| Error::invalid_input(format!("body: {e}")))?;
            req = req.body(bytes);
        }
    }
    match input.timeout_ms {
        Some(0) => return Err(Error::invalid_input("timeout_ms must be at least 1")),
        Some(ms) => req = req.timeout(Duration::from_millis(ms)),
        None => {}
    }

    let response = req.send().map_err(http_error)?;
    log::info(format!(
        "{method} {url} -> HTTP {} ({} bytes)",
        response.status,
        response.body.len()
    ));

    if input.retry_on_status && matches!(response.status, 429 | 503) {
        let message = status_message(&method, &url, &response);
        return Err(match response.retry_after() {
            Some(after) => Error::retry_after(message, after),
            None => Error::retryable(message),
        });
    }
    if input.fail_on_status && !response.is_success() {
        let message = status_message(&method, &url, &response);
        return Err(if response.status >= 500 || response.status == 408 {
            match response.retry_after() {
                Some(after) => Error::retry_after(message, after),
                None => Error::retryable(message),
            }
        } else {
            Error::fatal(message)
        });
    }

    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &response.headers {
        headers
            .entry(name.to_ascii_lowercase())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.clone());
    }
    let body = decode_body(&response);
    Ok(RequestOutput {
        status: response.status,
        headers,
        body,
    })
}

/// A bad URL is the input's fault; the rest as the SDK classifies it (a denial
/// or a body over the host's cap is fatal, a transport failure retryable).
fn http_error(err: HttpError) -> Error {
    match err {
        HttpError::InvalidUrl(_) => Error::invalid_input(err.to_string()),
        other => Error::from(other),
    }
}

fn status_message(method: &str, url: &str, response: &Response) -> String {
    let text = response.text();
    let snippet: String = text.chars().take(300).collect();
    let ellipsis = if snippet.len() < text.len() {
        "…"
    } else {
        ""
    };
    format!(
        "{method} {url} returned HTTP {}: {snippet}{ellipsis}",
        response.status
    )
}

fn decode_body(response: &Response) -> Value {
    if response.body.is_empty() {
        return Value::String(String::new());
    }
    let content_type = response
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = content_type.split(';').next().unwrap_or("").trim();
    let labelled_json = mime == "application/json" || mime.ends_with("+json");
    let text_like = mime.starts_with("text/") || mime.ends_with("xml");
    let looks_structured = matches!(
        response.body.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    );
    if (labelled_json || (!text_like && looks_structured))
        && let Ok(value) = serde_json::from_slice::<Value>(&response.body)
    {
        return value;
    }
    Value::String(response.text())
}

/// RFC 9110 `tchar`: what a method or header name may contain.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `url` with `query` appended (before any `#fragment`).
fn with_query(url: &str, query: &Map<String, Value>) -> Result<String> {
    let mut pairs = Vec::new();
    for (key, value) in query {
        let values: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for value in values {
            let text = match value {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    return Err(Error::invalid_input(format!(
                        "query.{key}: expected a string, number, boolean, null or an array of those"
                    )));
                }
            };
            pairs.push(format!("{}={}", encode(key), encode(&text)));
        }
    }
    if pairs.is_empty() {
        return Ok(url.to_string());
    }
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let separator = match base.find('?') {
        None => "?",
        Some(_) if base.ends_with('?') || base.ends_with('&') => "",
        Some(_) => "&",
    };
    let mut out = format!("{base}{separator}{}", pairs.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    Ok(out)
}

/// Percent-encode everything but RFC 3986 unreserved characters, keeping
/// `${secret:NAME}` placeholders intact so the host can substitute them.
fn encode(text: &str) -> String {
    const PLACEHOLDER: &str = "${secret:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix(PLACEHOLDER)
            && let Some(end) = after.find('}')
            && end > 0
            && after[..end]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            let len = PLACEHOLDER.len() + end + 1;
            out.push_str(&rest[..len]);
            rest = &rest[len..];
            continue;
        }
        let ch = rest.chars().next().unwrap_or_default();
        let mut buf = [0u8; 4];
        for &b in ch.encode_utf8(&mut buf).as_bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        rest = &rest[ch.len_utf8()..];
    }
    out
}

omniflow_sdk::export_piece!(
    Piece::new(
        "http-request",
        env!("CARGO_PKG_VERSION"),
        "Send an HTTP request to a granted destination and return status, headers and body"
    )
    .action(
        "request",
        "Send one HTTP request; non-2xx responses are data unless fail_on_status",
        request
    )
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_percent_encoded_and_keeps_placeholders() {
        let query: Map<String, Value> = serde_json::from_value(json!({
            "q": "a b&c=d/é",
            "n": 3,
            "flag": true,
            "skip": null,
            "tag": ["x", "y"],
            "key": "${secret:API_KEY}",
        }))
        .unwrap();
        assert_eq!(
            with_query("https://h.example/p?x=1#frag", &query).unwrap(),
            "https://h.example/p?x=1&flag=true&key=${secret:API_KEY}&n=3&q=a%20b%26c%3Dd%2F%C3%A9&tag=x&tag=y#frag"
        );
        assert_eq!(
            with_query("https://h.example", &Map::new()).unwrap(),
            "https://h.example"
        );
        assert_eq!(encode("${secret:}"), "%24%7Bsecret%3A%7D");
        assert!(
            with_query(
                "https://h",
                &serde_json::from_value(json!({"o": {}})).unwrap()
            )
            .is_err()
        );
    }
}
