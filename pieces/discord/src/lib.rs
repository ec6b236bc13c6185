//! `discord`: post a message through a Discord webhook.
//!
//! The webhook URL's id and token never enter the piece: the request goes to
//! `{base_url}/api/webhooks/${secret:DISCORD_WEBHOOK_ID}/${secret:DISCORD_WEBHOOK_TOKEN}?wait=true`
//! and the host places both values when the step grants them:
//!
//! ```json
//! "grants": { "http": [{ "host": "https://discord.com",
//!                        "secrets": ["DISCORD_WEBHOOK_ID", "DISCORD_WEBHOOK_TOKEN"] }] }
//! ```
//!
//! A 429 (`{"retry_after": 1.5}`) is retryable after that wait, 5xx is
//! retryable, anything else is fatal with Discord's message. Mentions
//! (`@everyone`, users, roles) are not pinged unless `allow_mentions` is set,
//! so text from a model or a failed run cannot ping a whole server. Works as
//! an `on_failure` / `on_success` handler:
//! `"content": "run {{ run.id }} failed: {{ trigger.error }}"`.

use std::time::Duration;

use omniflow_sdk::http::{HttpError, Request, Response};
use omniflow_sdk::prelude::*;
use omniflow_sdk::serde_json;

const DEFAULT_BASE: &str = "https://discord.com";
/// `{base}` + this.
const WEBHOOK_PATH: &str =
    "/api/webhooks/${secret:DISCORD_WEBHOOK_ID}/${secret:DISCORD_WEBHOOK_TOKEN}?wait=true";
/// Discord rejects longer content.
const MAX_CONTENT_CHARS: usize = 2000;

/// Input of `post`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PostInput {
    /// Message text (longer than 2000 characters is cut, with `…`).
    content: String,
    /// Override the webhook's display name.
    #[serde(default)]
    username: Option<String>,
    /// Override the webhook's avatar.
    #[serde(default)]
    avatar_url: Option<String>,
    /// Let `@everyone`, `@here`, user and role mentions ping (default false).
    #[serde(default)]
    allow_mentions: bool,
    /// Discord base URL (default `https://discord.com`); must be granted with the
    /// `DISCORD_WEBHOOK_ID` and `DISCORD_WEBHOOK_TOKEN` secrets.
    #[serde(default)]
    base_url: Option<String>,
    /// Request timeout in milliseconds (the step's `timeout` always applies).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// The posted message.
#[derive(Serialize, JsonSchema)]
struct PostOutput {
    /// Discord's id of the new message, when it returned one.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    /// HTTP status of the webhook call (200, or 204 without a message body).
    status: u16,
}

fn post(_ctx: &Context, input: PostInput) -> Result<PostOutput> {
    if input.content.trim().is_empty() {
        return Err(Error::invalid_input("content must not be empty"));
    }
    let base = omniflow_sdk::http::base_url(input.base_url.as_deref(), DEFAULT_BASE)
        .map_err(Error::invalid_input)?;
    let mut body = json!({ "content": truncate(&input.content, MAX_CONTENT_CHARS) });
    if let Some(username) = &input.username {
        body["username"] = json!(username);
    }
    if let Some(avatar) = &input.avatar_url {
        body["avatar_url"] = json!(avatar);
    }
    if !input.allow_mentions {
        body["allowed_mentions"] = json!({ "parse": [] });
    }
    let mut request = Request::post(format!("{base}{WEBHOOK_PATH}")).json(&body);
    match input.timeout_ms {
        Some(0) => return Err(Error::invalid_input("timeout_ms must be at least 1")),
        Some(ms) => request = request.timeout(Duration::from_millis(ms)),
        None => {}
    }
    let response = request.send().map_err(|err| match err {
        HttpError::InvalidUrl(_) => Error::invalid_input(err.to_string()),
        other => Error::from(other),
    })?;
    let output = read_reply(&response)?;
    log::info(format!(
        "posted to the webhook: HTTP {}{}",
        output.status,
        output
            .id
            .as_deref()
            .map(|id| format!(", message {id}"))
            .unwrap_or_default()
    ));
    Ok(output)
}

/// At most `max` characters, the last one `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    log::warn(format!("content is longer than {max} characters; cut"));
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn read_reply(response: &Response) -> Result<PostOutput> {
    let status = response.status;
    let json: Option<Value> = serde_json::from_slice(&response.body).ok();
    if response.is_success() {
        let id = json
            .as_ref()
            .and_then(|j| j.get("id"))
            .and_then(|id| match id {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
        return Ok(PostOutput { id, status });
    }
    let detail = json
        .as_ref()
        .and_then(|j| j.get("message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| response.text().chars().take(300).collect());
    let message = format!("Discord refused the post (HTTP {status}): {detail}");
    let wait = json
        .as_ref()
        .and_then(|j| j.get("retry_after"))
        .and_then(Value::as_f64)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .or_else(|| response.retry_after());
    Err(match (status, wait) {
        (429 | 500.., Some(wait)) => Error::retry_after(message, wait),
        (429 | 500.., None) => Error::retryable(message),
        _ => Error::fatal(message),
    })
}

omniflow_sdk::export_piece!(
    Piece::new(
        "discord",
        env!("CARGO_PKG_VERSION"),
        "Post messages to a Discord webhook (webhook id and token placed by the host)"
    )
    .action("post", "Post a message through the webhook", post)
    .http_destination(DEFAULT_BASE)
    .secret("DISCORD_WEBHOOK_ID")
    .secret("DISCORD_WEBHOOK_TOKEN")
);

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Result<PostOutput> {
        read_reply(&Response {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn discord_answers_map_to_outputs_and_errors() {
        let ok = reply(200, r#"{"id":"123","content":"x"}"#).unwrap();
        assert_eq!((ok.id.as_deref(), ok.status), (Some("123"), 200));
        let empty = reply(204, "").unwrap();
        assert_eq!((empty.id, empty.status), (None, 204));
        let limited = reply(
            429,
            r#"{"message":"You are being rate limited.","retry_after":1.5}"#,
        );
        assert_eq!(
            limited.err().map(|e| e.kind()),
            Some(ErrorKind::Retryable {
                retry_after: Some(Duration::from_millis(1500))
            })
        );
        let unknown = reply(404, r#"{"message":"Unknown Webhook","code":10015}"#)
            .err()
            .unwrap();
        assert_eq!(unknown.kind(), ErrorKind::Fatal);
        assert!(unknown.message().contains("Unknown Webhook"));
    }
}
