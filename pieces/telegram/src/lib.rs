//! `telegram`: send messages through the Telegram Bot API.
//!
//! The bot token never enters the piece: the request goes to
//! `{base_url}/bot${secret:TELEGRAM_BOT_TOKEN}/sendMessage` and the host
//! places the value when the step grants the secret to that destination:
//!
//! ```json
//! "grants": { "http": [{ "host": "https://api.telegram.org", "secrets": ["TELEGRAM_BOT_TOKEN"] }] }
//! ```
//!
//! Telegram's `{"ok": false, "error_code": 429, "parameters": {"retry_after": N}}`
//! is retryable after N seconds, 5xx is retryable, any other refusal is fatal
//! with Telegram's description. Works as an `on_failure` / `on_success`
//! handler: e.g. `"text": "run {{ run.id }} failed: {{ trigger.error }}"`.

use std::time::Duration;

use omniflow_sdk::http::{HttpError, Request, Response};
use omniflow_sdk::prelude::*;
use omniflow_sdk::serde_json;

const DEFAULT_BASE: &str = "https://api.telegram.org";
/// `{base}` + this + `/sendMessage`.
const TOKEN_PATH: &str = "/bot${secret:TELEGRAM_BOT_TOKEN}";
/// Telegram rejects longer messages.
const MAX_TEXT_CHARS: usize = 4096;

/// A chat: numeric id (`-1001234567890`) or `@channelusername`.
#[derive(Deserialize, Serialize, JsonSchema, Debug, Clone)]
#[serde(untagged)]
enum ChatId {
    /// Numeric chat id.
    Id(i64),
    /// `@channelusername`, or a numeric id written as text.
    Name(String),
}

/// Telegram's formatting modes.
#[derive(Deserialize, Serialize, JsonSchema, Debug, Clone, Copy)]
enum ParseMode {
    /// `MarkdownV2`
    MarkdownV2,
    /// `HTML`
    #[serde(rename = "HTML")]
    Html,
    /// Legacy `Markdown`
    Markdown,
}

/// Input of `send-message`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SendMessageInput {
    /// Target chat: numeric id or `@channelusername`.
    chat_id: ChatId,
    /// Message text (longer than 4096 characters is cut, with `…`).
    text: String,
    /// `MarkdownV2`, `HTML` or `Markdown`; plain text when absent.
    #[serde(default)]
    parse_mode: Option<ParseMode>,
    /// Send silently.
    #[serde(default)]
    disable_notification: Option<bool>,
    /// Bot API base URL (default `https://api.telegram.org`); must be granted with
    /// the `TELEGRAM_BOT_TOKEN` secret.
    #[serde(default)]
    base_url: Option<String>,
    /// Request timeout in milliseconds (the step's `timeout` always applies).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// The sent message.
#[derive(Serialize, JsonSchema)]
struct SendMessageOutput {
    /// Telegram's id of the new message.
    message_id: i64,
    /// The numeric id of the chat it went to.
    chat_id: i64,
}

fn send_message(_ctx: &Context, input: SendMessageInput) -> Result<SendMessageOutput> {
    if input.text.trim().is_empty() {
        return Err(Error::invalid_input("text must not be empty"));
    }
    if let ChatId::Name(name) = &input.chat_id
        && name.trim().is_empty()
    {
        return Err(Error::invalid_input("chat_id must not be empty"));
    }
    let base = base_url(input.base_url.as_deref())?;
    let text = truncate(&input.text, MAX_TEXT_CHARS);
    let mut body = json!({ "chat_id": input.chat_id, "text": text });
    if let Some(mode) = input.parse_mode {
        body["parse_mode"] = json!(mode);
    }
    if let Some(silent) = input.disable_notification {
        body["disable_notification"] = json!(silent);
    }
    let mut request = Request::post(format!("{base}{TOKEN_PATH}/sendMessage")).json(&body);
    match input.timeout_ms {
        Some(0) => return Err(Error::invalid_input("timeout_ms must be at least 1")),
        Some(ms) => request = request.timeout(Duration::from_millis(ms)),
        None => {}
    }
    let response = request.send().map_err(http_error)?;
    let output = read_reply(&response)?;
    log::info(format!(
        "sent message {} to chat {}",
        output.message_id, output.chat_id
    ));
    Ok(output)
}

fn base_url(given: Option<&str>) -> Result<String> {
    omniflow_sdk::http::base_url(given, DEFAULT_BASE).map_err(Error::invalid_input)
}

/// At most `max` characters, the last one `…` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    log::warn(format!("text is longer than {max} characters; cut"));
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn http_error(err: HttpError) -> Error {
    match err {
        HttpError::InvalidUrl(_) => Error::invalid_input(err.to_string()),
        other => Error::from(other),
    }
}

/// Telegram's `{ok, result | error_code, description, parameters}` → output or error.
fn read_reply(response: &Response) -> Result<SendMessageOutput> {
    let status = response.status;
    let Ok(json) = serde_json::from_slice::<Value>(&response.body) else {
        let snippet: String = response.text().chars().take(300).collect();
        let message = format!("Telegram answered HTTP {status} without JSON: {snippet}");
        return Err(if status == 429 || status >= 500 {
            match response.retry_after() {
                Some(wait) => Error::retry_after(message, wait),
                None => Error::retryable(message),
            }
        } else {
            Error::fatal(message)
        });
    };
    if json.get("ok") == Some(&Value::Bool(true)) {
        let message_id = json.pointer("/result/message_id").and_then(Value::as_i64);
        let chat_id = json.pointer("/result/chat/id").and_then(Value::as_i64);
        return match (message_id, chat_id) {
            (Some(message_id), Some(chat_id)) => Ok(SendMessageOutput {
                message_id,
                chat_id,
            }),
            _ => Err(Error::fatal(format!(
                "Telegram answered ok without a message id: {}",
                json.to_string().chars().take(300).collect::<String>()
            ))),
        };
    }
    let code = json
        .get("error_code")
        .and_then(Value::as_u64)
        .unwrap_or(u64::from(status));
    let description = json
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("no description");
    let message = format!("Telegram refused the message (error {code}): {description}");
    let retry_after = json
        .pointer("/parameters/retry_after")
        .and_then(Value::as_f64)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .or_else(|| response.retry_after());
    Err(match (code, retry_after) {
        (429, Some(wait)) => Error::retry_after(message, wait),
        (429, None) => Error::retryable(message),
        (500.., Some(wait)) => Error::retry_after(message, wait),
        (500.., None) => Error::retryable(message),
        _ => Error::fatal(message),
    })
}

omniflow_sdk::export_piece!(
    Piece::new(
        "telegram",
        env!("CARGO_PKG_VERSION"),
        "Send Telegram messages with a bot (token placed by the host)"
    )
    .action(
        "send-message",
        "Send a text message to a chat",
        send_message
    )
    .http_destination(DEFAULT_BASE)
    .secret("TELEGRAM_BOT_TOKEN")
);

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: Value) -> Result<SendMessageOutput> {
        read_reply(&Response {
            status,
            headers: Vec::new(),
            body: body.to_string().into_bytes(),
        })
    }

    #[test]
    fn telegram_answers_map_to_outputs_and_errors() {
        let ok = reply(
            200,
            json!({ "ok": true, "result": { "message_id": 5, "chat": { "id": -100 } } }),
        )
        .unwrap();
        assert_eq!((ok.message_id, ok.chat_id), (5, -100));
        let limited = reply(
            429,
            json!({ "ok": false, "error_code": 429, "description": "Too Many Requests: retry after 9",
                    "parameters": { "retry_after": 9 } }),
        )
        .err()
        .unwrap();
        assert_eq!(
            limited.kind(),
            ErrorKind::Retryable {
                retry_after: Some(Duration::from_secs(9))
            }
        );
        let refused = reply(
            403,
            json!({ "ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user" }),
        )
        .err()
        .unwrap();
        assert_eq!(refused.kind(), ErrorKind::Fatal);
        assert!(refused.message().contains("bot was blocked"));
        let gateway = read_reply(&Response {
            status: 502,
            headers: Vec::new(),
            body: b"<html>".to_vec(),
        });
        assert_eq!(
            gateway.err().map(|e| e.kind()),
            Some(ErrorKind::Retryable { retry_after: None })
        );
    }
}
