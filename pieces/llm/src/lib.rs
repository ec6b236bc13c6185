//! `llm`: chat and text generation through Ollama or Hugging Face.
//!
//! `providers` lists where to try, in order (default `["ollama"]`). Each entry
//! is a name or `{ "name", "base_url", "model" }`:
//!
//! | provider | request | default base URL | default model |
//! |---|---|---|---|
//! | `ollama` | `POST {base}/api/chat` / `/api/generate`, `stream: false` | `http://127.0.0.1:11434` | `llama3.2` |
//! | `huggingface` | `POST {base}/v1/chat/completions` (OpenAI-compatible Inference Providers router), `authorization: Bearer ${secret:HUGGINGFACE_TOKEN}` | `https://router.huggingface.co` | `meta-llama/Llama-3.1-8B-Instruct` |
//! | `huggingface-legacy` | `POST {base}/models/{model}` with `{inputs, parameters}`, same header | `https://api-inference.huggingface.co` | `meta-llama/Llama-3.1-8B-Instruct` |
//!
//! A piece cannot read the host's environment: the host fills in `USE_OLLAMA` / `OLLAMA_URL`
//! (input without `providers`, `ollama` without `base_url`), or the workflow sets `base_url`.
//! The model is the provider entry's `model`, else the input's `model`, else
//! the provider's default.
//!
//! Errors: 429 is retryable after `Retry-After` (60 s when absent); 503 is
//! retryable after Hugging Face's `estimated_time` (a model loading) or
//! `Retry-After`; other 5xx and transport failures are retryable; other
//! statuses and unreadable responses are fatal. Any failure moves on to the
//! next provider; when all fail the error lists each, is retryable if any
//! was, and waits the longest wait any provider asked for.
//!
//! The Hugging Face token is a placeholder the host fills; the piece never
//! sees it.

use std::time::Duration;

use omniflow_sdk::http::{HttpError, Request, Response};
use omniflow_sdk::prelude::*;
use omniflow_sdk::serde_json;

const OLLAMA_BASE: &str = "http://127.0.0.1:11434";
const HF_ROUTER_BASE: &str = "https://router.huggingface.co";
const HF_LEGACY_BASE: &str = "https://api-inference.huggingface.co";
const OLLAMA_MODEL: &str = "llama3.2";
const HF_MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
const HF_AUTHORIZATION: &str = "Bearer ${secret:HUGGINGFACE_TOKEN}";
/// Wait after a 429 without `Retry-After`.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// A provider backend.
#[derive(Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum ProviderName {
    /// Ollama's native API (`/api/chat`, `/api/generate`).
    Ollama,
    /// Hugging Face Inference Providers router (OpenAI-compatible chat completions).
    Huggingface,
    /// The legacy Hugging Face Inference API (`/models/{model}`).
    HuggingfaceLegacy,
}

impl ProviderName {
    fn as_str(self) -> &'static str {
        match self {
            ProviderName::Ollama => "ollama",
            ProviderName::Huggingface => "huggingface",
            ProviderName::HuggingfaceLegacy => "huggingface-legacy",
        }
    }

    fn default_base(self) -> &'static str {
        match self {
            ProviderName::Ollama => OLLAMA_BASE,
            ProviderName::Huggingface => HF_ROUTER_BASE,
            ProviderName::HuggingfaceLegacy => HF_LEGACY_BASE,
        }
    }

    fn default_model(self) -> &'static str {
        match self {
            ProviderName::Ollama => OLLAMA_MODEL,
            ProviderName::Huggingface | ProviderName::HuggingfaceLegacy => HF_MODEL,
        }
    }
}

/// A provider: its name, or an object overriding its base URL and model.
#[derive(Deserialize, JsonSchema, Clone, Debug)]
#[serde(untagged)]
enum ProviderSpec {
    /// `"ollama"`, `"huggingface"` or `"huggingface-legacy"`.
    Name(ProviderName),
    /// `{ "name": "ollama", "base_url": "http://gpu-box:11434", "model": "mistral" }`
    Entry(ProviderEntry),
}

/// The object form of a provider.
#[derive(Deserialize, JsonSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    /// Which backend.
    name: ProviderName,
    /// Base URL (scheme, host, port, optional path prefix). Must be granted to the step.
    #[serde(default)]
    base_url: Option<String>,
    /// Model for this provider (overrides the input's `model`).
    #[serde(default)]
    model: Option<String>,
}

fn default_providers() -> Vec<ProviderSpec> {
    vec![ProviderSpec::Name(ProviderName::Ollama)]
}

/// Who wrote a chat message.
#[derive(Deserialize, Serialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Role {
    /// Instructions.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

/// One chat message.
#[derive(Deserialize, Serialize, JsonSchema, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct Message {
    /// `system`, `user` or `assistant`.
    role: Role,
    /// The text.
    content: String,
}

/// Input of `chat`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ChatInput {
    /// The conversation so far, oldest first.
    #[serde(default)]
    messages: Vec<Message>,
    /// Shorthand: one more user message appended after `messages`.
    #[serde(default)]
    prompt: Option<String>,
    /// A system prompt put before the conversation.
    #[serde(default)]
    system: Option<String>,
    /// Providers to try, in order (default `["ollama"]`).
    #[serde(default = "default_providers")]
    providers: Vec<ProviderSpec>,
    /// Model for providers that do not set their own.
    #[serde(default)]
    model: Option<String>,
    /// Sampling temperature (0 = deterministic).
    #[serde(default)]
    temperature: Option<f64>,
    /// Upper bound on generated tokens.
    #[serde(default)]
    max_tokens: Option<u32>,
    /// Per-provider request timeout in milliseconds (the step's `timeout` always applies).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Input of `generate`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct GenerateInput {
    /// The prompt to complete.
    prompt: String,
    /// A system prompt.
    #[serde(default)]
    system: Option<String>,
    /// Providers to try, in order (default `["ollama"]`).
    #[serde(default = "default_providers")]
    providers: Vec<ProviderSpec>,
    /// Model for providers that do not set their own.
    #[serde(default)]
    model: Option<String>,
    /// Sampling temperature (0 = deterministic).
    #[serde(default)]
    temperature: Option<f64>,
    /// Upper bound on generated tokens.
    #[serde(default)]
    max_tokens: Option<u32>,
    /// Per-provider request timeout in milliseconds (the step's `timeout` always applies).
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// What the model said.
#[derive(Serialize, JsonSchema, Debug)]
struct LlmOutput {
    /// The generated text.
    text: String,
    /// The model that answered (as reported by the provider when it says).
    model: String,
    /// The provider that answered.
    provider: String,
    /// Prompt + completion tokens, when the provider reports them.
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens_used: Option<u64>,
}

/// What to ask.
enum Task {
    Chat(Vec<Message>),
    Generate(String),
}

/// One call, whatever the action.
struct Call {
    task: Task,
    system: Option<String>,
    providers: Vec<ProviderSpec>,
    model: Option<String>,
    temperature: Option<f64>,
    max_tokens: Option<u32>,
    timeout: Option<Duration>,
}

/// A provider resolved for this call.
struct Target {
    name: ProviderName,
    base: String,
    model: String,
}

fn chat(_ctx: &Context, input: ChatInput) -> Result<LlmOutput> {
    let mut messages = input.messages;
    if let Some(prompt) = input.prompt {
        messages.push(Message {
            role: Role::User,
            content: prompt,
        });
    }
    if messages.is_empty() {
        return Err(Error::invalid_input(
            "chat needs `messages` (a non-empty list) or a `prompt`",
        ));
    }
    run(Call {
        task: Task::Chat(messages),
        system: input.system,
        providers: input.providers,
        model: input.model,
        temperature: input.temperature,
        max_tokens: input.max_tokens,
        timeout: timeout(input.timeout_ms)?,
    })
}

fn generate(_ctx: &Context, input: GenerateInput) -> Result<LlmOutput> {
    run(Call {
        task: Task::Generate(input.prompt),
        system: input.system,
        providers: input.providers,
        model: input.model,
        temperature: input.temperature,
        max_tokens: input.max_tokens,
        timeout: timeout(input.timeout_ms)?,
    })
}

fn timeout(ms: Option<u64>) -> Result<Option<Duration>> {
    match ms {
        Some(0) => Err(Error::invalid_input("timeout_ms must be at least 1")),
        other => Ok(other.map(Duration::from_millis)),
    }
}

fn run(call: Call) -> Result<LlmOutput> {
    if call.providers.is_empty() {
        return Err(Error::invalid_input(
            "providers must list at least one provider",
        ));
    }
    if let Some(t) = call.temperature
        && !(t.is_finite() && t >= 0.0)
    {
        return Err(Error::invalid_input(format!(
            "temperature must be a number ≥ 0 (got {t})"
        )));
    }
    if call.max_tokens == Some(0) {
        return Err(Error::invalid_input("max_tokens must be at least 1"));
    }
    let targets = call
        .providers
        .iter()
        .map(|spec| resolve(spec, call.model.as_deref()))
        .collect::<Result<Vec<_>>>()?;

    let mut failures: Vec<Error> = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        match ask(target, &call) {
            Ok(output) => return Ok(output),
            Err(err) => {
                let err = in_context(&err, target);
                let next = targets
                    .get(i + 1)
                    .map(|t| format!("; trying {}", t.name.as_str()))
                    .unwrap_or_default();
                log::warn(format!("{}{next}", err.message()));
                failures.push(err);
            }
        }
    }
    Err(combine(failures))
}

fn resolve(spec: &ProviderSpec, model: Option<&str>) -> Result<Target> {
    let (name, base, own_model) = match spec {
        ProviderSpec::Name(name) => (*name, None, None),
        ProviderSpec::Entry(entry) => (
            entry.name,
            entry.base_url.as_deref(),
            entry.model.as_deref(),
        ),
    };
    let base = omniflow_sdk::http::base_url(base, name.default_base())
        .map_err(|e| Error::invalid_input(format!("{}: {e}", name.as_str())))?;
    let model = own_model
        .or(model)
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .unwrap_or(name.default_model())
        .to_string();
    if name == ProviderName::HuggingfaceLegacy && !is_model_path(&model) {
        return Err(Error::invalid_input(format!(
            "huggingface-legacy: model {model:?} is not a Hugging Face model id (owner/name)"
        )));
    }
    Ok(Target { name, base, model })
}

/// A model id safe to put in a URL path: `owner/name`, letters, digits, `-_.`.
fn is_model_path(model: &str) -> bool {
    model.split('/').all(|part| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    })
}

/// `err` with `"{provider} ({model}): "` in front of its message, same kind.
fn in_context(err: &Error, target: &Target) -> Error {
    let message = format!(
        "{} ({}): {}",
        target.name.as_str(),
        target.model,
        err.message()
    );
    match err.kind() {
        ErrorKind::InvalidInput => Error::invalid_input(message),
        ErrorKind::Fatal => Error::fatal(message),
        ErrorKind::Retryable {
            retry_after: Some(wait),
        } => Error::retry_after(message, wait),
        ErrorKind::Retryable { retry_after: None } => Error::retryable(message),
    }
}

/// One failure per provider (each message names it) → the step's error.
fn combine(mut failures: Vec<Error>) -> Error {
    if failures.len() == 1 {
        return failures
            .pop()
            .unwrap_or_else(|| Error::fatal("no provider"));
    }
    let message = format!(
        "all providers failed: {}",
        failures
            .iter()
            .map(Error::message)
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mut retryable = false;
    let mut wait: Option<Duration> = None;
    for err in &failures {
        if let ErrorKind::Retryable { retry_after } = err.kind() {
            retryable = true;
            wait = wait.max(retry_after);
        }
    }
    match (retryable, wait) {
        (true, Some(wait)) => Error::retry_after(message, wait),
        (true, None) => Error::retryable(message),
        _ if failures.iter().all(|e| e.kind() == ErrorKind::InvalidInput) => {
            Error::invalid_input(message)
        }
        _ => Error::fatal(message),
    }
}

fn ask(target: &Target, call: &Call) -> Result<LlmOutput> {
    let (url, body) = request_body(target, call);
    let mut request = Request::post(url).json(&body);
    if target.name != ProviderName::Ollama {
        request = request.header("authorization", HF_AUTHORIZATION);
    }
    if let Some(timeout) = call.timeout {
        request = request.timeout(timeout);
    }
    let response = request.send().map_err(|err| match err {
        HttpError::InvalidUrl(_) => Error::invalid_input(err.to_string()),
        other => Error::from(other),
    })?;
    if !response.is_success() {
        return Err(status_error(target, &response));
    }
    let json: Value = response.json()?;
    let output = parse_reply(target, &json).ok_or_else(|| {
        let text: String = response.text().chars().take(300).collect();
        Error::fatal(format!("unexpected response: {text}"))
    })?;
    log::info(format!(
        "{} ({}) answered with {} characters{}",
        output.provider,
        output.model,
        output.text.chars().count(),
        output
            .tokens_used
            .map(|t| format!(", {t} tokens"))
            .unwrap_or_default()
    ));
    Ok(output)
}

/// The system prompt followed by the conversation.
fn chat_messages(call: &Call) -> Vec<Message> {
    let mut messages = Vec::new();
    if let Some(system) = &call.system {
        messages.push(Message {
            role: Role::System,
            content: system.clone(),
        });
    }
    match &call.task {
        Task::Chat(conversation) => messages.extend(conversation.iter().cloned()),
        Task::Generate(prompt) => messages.push(Message {
            role: Role::User,
            content: prompt.clone(),
        }),
    }
    messages
}

fn request_body(target: &Target, call: &Call) -> (String, Value) {
    let base = &target.base;
    match target.name {
        ProviderName::Ollama => {
            let mut options = serde_json::Map::new();
            if let Some(t) = call.temperature {
                options.insert("temperature".into(), json!(t));
            }
            if let Some(n) = call.max_tokens {
                options.insert("num_predict".into(), json!(n));
            }
            let mut body = match &call.task {
                Task::Chat(_) => json!({
                    "model": target.model,
                    "messages": chat_messages(call),
                    "stream": false,
                }),
                Task::Generate(prompt) => {
                    let mut body =
                        json!({ "model": target.model, "prompt": prompt, "stream": false });
                    if let Some(system) = &call.system {
                        body["system"] = json!(system);
                    }
                    body
                }
            };
            if !options.is_empty() {
                body["options"] = Value::Object(options);
            }
            let path = match call.task {
                Task::Chat(_) => "/api/chat",
                Task::Generate(_) => "/api/generate",
            };
            (format!("{base}{path}"), body)
        }
        ProviderName::Huggingface => {
            let mut body = json!({
                "model": target.model,
                "messages": chat_messages(call),
                "stream": false,
            });
            if let Some(t) = call.temperature {
                body["temperature"] = json!(t);
            }
            if let Some(n) = call.max_tokens {
                body["max_tokens"] = json!(n);
            }
            (format!("{base}/v1/chat/completions"), body)
        }
        ProviderName::HuggingfaceLegacy => {
            let inputs = match &call.task {
                Task::Generate(prompt) => match &call.system {
                    Some(system) => format!("{system}\n\n{prompt}"),
                    None => prompt.clone(),
                },
                Task::Chat(_) => transcript(&chat_messages(call)),
            };
            let mut parameters = json!({ "return_full_text": false });
            if let Some(t) = call.temperature {
                parameters["temperature"] = json!(t);
            }
            if let Some(n) = call.max_tokens {
                parameters["max_new_tokens"] = json!(n);
            }
            (
                format!("{base}/models/{}", target.model),
                json!({ "inputs": inputs, "parameters": parameters }),
            )
        }
    }
}

/// A conversation as one prompt for text-generation models.
fn transcript(messages: &[Message]) -> String {
    let mut text = String::new();
    for m in messages {
        let who = match m.role {
            Role::System => "System",
            Role::User => "User",
            Role::Assistant => "Assistant",
        };
        text.push_str(&format!("{who}: {}\n", m.content));
    }
    text.push_str("Assistant:");
    text
}

fn parse_reply(target: &Target, json: &Value) -> Option<LlmOutput> {
    let reported_model = |v: &Value| {
        v.get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .unwrap_or(&target.model)
            .to_string()
    };
    let (text, model, tokens_used) = match target.name {
        ProviderName::Ollama => {
            let text = json
                .pointer("/message/content")
                .or_else(|| json.get("response"))
                .and_then(Value::as_str)?;
            let prompt = json.get("prompt_eval_count").and_then(Value::as_u64);
            let completion = json.get("eval_count").and_then(Value::as_u64);
            let tokens = match (prompt, completion) {
                (None, None) => None,
                (p, c) => Some(p.unwrap_or(0) + c.unwrap_or(0)),
            };
            (text.to_string(), reported_model(json), tokens)
        }
        ProviderName::Huggingface => {
            let text = json
                .pointer("/choices/0/message/content")
                .and_then(Value::as_str)?;
            let tokens = json.pointer("/usage/total_tokens").and_then(Value::as_u64);
            (text.to_string(), reported_model(json), tokens)
        }
        ProviderName::HuggingfaceLegacy => {
            let text = json
                .pointer("/0/generated_text")
                .or_else(|| json.get("generated_text"))
                .and_then(Value::as_str)?;
            (text.to_string(), target.model.clone(), None)
        }
    };
    Some(LlmOutput {
        text,
        model,
        provider: target.name.as_str().to_string(),
        tokens_used,
    })
}

/// A non-2xx answer → retryable (with the right wait) or fatal.
fn status_error(target: &Target, response: &Response) -> Error {
    let json: Option<Value> = serde_json::from_slice(&response.body).ok();
    let detail = json
        .as_ref()
        .and_then(|j| {
            j.pointer("/error/message")
                .or_else(|| j.get("error"))
                .or_else(|| j.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| response.text().chars().take(300).collect());
    let status = response.status;
    let message = format!("HTTP {status}: {detail}");
    let estimated = json
        .as_ref()
        .and_then(|j| j.get("estimated_time"))
        .and_then(Value::as_f64)
        .and_then(|s| Duration::try_from_secs_f64(s).ok());
    match status {
        429 => Error::retry_after(
            message,
            response.retry_after().unwrap_or(DEFAULT_RATE_LIMIT_WAIT),
        ),
        503 => match estimated.or_else(|| response.retry_after()) {
            Some(wait) => Error::retry_after(
                format!("{message} (retry in {} s)", wait.as_secs_f64()),
                wait,
            ),
            None => Error::retryable(message),
        },
        408 | 500..=599 => match response.retry_after() {
            Some(wait) => Error::retry_after(message, wait),
            None => Error::retryable(message),
        },
        401 | 403 if target.name != ProviderName::Ollama => Error::fatal(format!(
            "{message} (is the HUGGINGFACE_TOKEN secret set and granted to {}?)",
            target.base
        )),
        _ => Error::fatal(message),
    }
}

omniflow_sdk::export_piece!(
    Piece::new(
        "llm",
        env!("CARGO_PKG_VERSION"),
        "Chat and text generation with Ollama or Hugging Face, with provider fallback"
    )
    .action(
        "chat",
        "Answer a conversation (messages and/or prompt, optional system prompt)",
        chat
    )
    .action("generate", "Complete a prompt", generate)
    .http_destination(OLLAMA_BASE)
    .http_destination(HF_ROUTER_BASE)
    .http_destination(HF_LEGACY_BASE)
    .secret("HUGGINGFACE_TOKEN")
);

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: ProviderName) -> Target {
        Target {
            name,
            base: "http://127.0.0.1:1".into(),
            model: "m/x".into(),
        }
    }

    fn response(status: u16, headers: &[(&str, &str)], body: Value) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_string().into_bytes(),
        }
    }

    fn wait(err: &Error) -> Option<Duration> {
        match err.kind() {
            ErrorKind::Retryable { retry_after } => retry_after,
            other => panic!("not retryable: {other:?} {}", err.message()),
        }
    }

    #[test]
    fn models_resolve_from_entry_then_input_then_default() {
        let spec: ProviderSpec =
            serde_json::from_value(json!({ "name": "ollama", "base_url": "http://h:1/" })).unwrap();
        let t = resolve(&spec, None).unwrap();
        assert_eq!(
            (t.base.as_str(), t.model.as_str()),
            ("http://h:1", "llama3.2")
        );
        assert_eq!(resolve(&spec, Some("mistral")).unwrap().model, "mistral");
        let spec: ProviderSpec =
            serde_json::from_value(json!({ "name": "huggingface", "model": "a/b" })).unwrap();
        let t = resolve(&spec, Some("mistral")).unwrap();
        assert_eq!((t.base.as_str(), t.model.as_str()), (HF_ROUTER_BASE, "a/b"));
        let spec: ProviderSpec = serde_json::from_value(json!("huggingface-legacy")).unwrap();
        assert_eq!(resolve(&spec, None).unwrap().model, HF_MODEL);
        assert!(resolve(&spec, Some("../../admin")).is_err());
        assert!(serde_json::from_value::<ProviderSpec>(json!("openai")).is_err());
        let spec: ProviderSpec =
            serde_json::from_value(json!({ "name": "ollama", "base_url": "ftp://h" })).unwrap();
        assert_eq!(
            resolve(&spec, None).err().map(|e| e.kind()),
            Some(ErrorKind::InvalidInput)
        );
    }

    #[test]
    fn statuses_map_to_the_right_waits() {
        let hf = target(ProviderName::Huggingface);
        let loading = response(
            503,
            &[],
            json!({ "error": "Model m/x is currently loading", "estimated_time": 20.5 }),
        );
        let err = status_error(&hf, &loading);
        assert_eq!(wait(&err), Some(Duration::from_millis(20_500)));
        assert!(err.message().contains("currently loading"));
        let limited = response(
            429,
            &[("retry-after", "7")],
            json!({ "error": "slow down" }),
        );
        assert_eq!(
            wait(&status_error(&hf, &limited)),
            Some(Duration::from_secs(7))
        );
        let limited = response(429, &[], json!({}));
        assert_eq!(
            wait(&status_error(&hf, &limited)),
            Some(DEFAULT_RATE_LIMIT_WAIT)
        );
        let busy = response(503, &[], json!({ "error": "busy" }));
        assert_eq!(
            wait(&status_error(&target(ProviderName::Ollama), &busy)),
            None
        );
        let denied = response(401, &[], json!({ "error": { "message": "bad token" } }));
        let err = status_error(&hf, &denied);
        assert_eq!(err.kind(), ErrorKind::Fatal);
        assert!(err.message().contains("bad token") && err.message().contains("HUGGINGFACE_TOKEN"));
    }

    #[test]
    fn combined_failures_are_retryable_if_any_is_and_wait_the_longest() {
        let err = combine(vec![
            in_context(&Error::retryable("refused"), &target(ProviderName::Ollama)),
            Error::retry_after("loading", Duration::from_secs(3)),
            in_context(
                &Error::fatal("denied"),
                &target(ProviderName::HuggingfaceLegacy),
            ),
        ]);
        assert_eq!(wait(&err), Some(Duration::from_secs(3)));
        assert!(err.message().contains("ollama (m/x): refused; loading; "));
        assert!(err.message().contains("huggingface-legacy (m/x): denied"));
        let err = combine(vec![Error::fatal("a"), Error::invalid_input("b")]);
        assert_eq!(err.kind(), ErrorKind::Fatal);
        let single = combine(vec![Error::invalid_input("x")]);
        assert_eq!(single, Error::invalid_input("x"));
        let waited = in_context(
            &Error::retry_after("x", Duration::from_secs(2)),
            &target(ProviderName::Huggingface),
        );
        assert_eq!(wait(&waited), Some(Duration::from_secs(2)));
        assert_eq!(waited.message(), "huggingface (m/x): x");
    }

    #[test]
    fn replies_are_read_per_provider() {
        let ollama = target(ProviderName::Ollama);
        let out = parse_reply(
            &ollama,
            &json!({ "model": "llama3.2", "message": { "content": "hi" }, "eval_count": 2 }),
        )
        .unwrap();
        assert_eq!((out.text.as_str(), out.tokens_used), ("hi", Some(2)));
        let out = parse_reply(&ollama, &json!({ "response": "gen" })).unwrap();
        assert_eq!(
            (out.text.as_str(), out.model.as_str(), out.tokens_used),
            ("gen", "m/x", None)
        );
        let legacy = target(ProviderName::HuggingfaceLegacy);
        let out = parse_reply(&legacy, &json!([{ "generated_text": "more" }])).unwrap();
        assert_eq!(out.text, "more");
        assert!(parse_reply(&legacy, &json!({ "error": "x" })).is_none());
        assert!(
            parse_reply(
                &target(ProviderName::Huggingface),
                &json!({ "choices": [] })
            )
            .is_none()
        );
    }

    #[test]
    fn conversations_become_one_prompt_for_the_legacy_api() {
        let messages = [
            Message {
                role: Role::System,
                content: "be brief".into(),
            },
            Message {
                role: Role::User,
                content: "hi".into(),
            },
        ];
        assert_eq!(
            transcript(&messages),
            "System: be brief\nUser: hi\nAssistant:"
        );
    }
}
