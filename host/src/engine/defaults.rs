//! Process-wide defaults the engine puts into what it runs: the `llm`
//! piece's provider order and Ollama base URL (`USE_OLLAMA`, `OLLAMA_URL`).
//!
//! A piece cannot read the host's environment, so the engine fills these
//! into the *rendered input* of a built-in `llm` step (or handler) that
//! leaves them out; the step record shows the input as the piece got it. A
//! default URL is not a grant: the step must still grant it (see
//! ARCHITECTURE.md, Decisions).

use serde_json::{Value, json};

/// The name of the built-in piece these defaults are for.
const LLM_PIECE: &str = "llm";

/// Defaults of `llm` steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LlmDefaults {
    /// `providers` of steps that name none: `Some(true)` = `ollama`, then
    /// `huggingface`; `Some(false)` = `huggingface`; `None` = the piece's
    /// own default (`ollama`).
    pub use_ollama: Option<bool>,
    /// `base_url` of `ollama` providers that give none.
    pub ollama_url: Option<String>,
}

impl LlmDefaults {
    /// Whether there is anything to fill in.
    fn is_empty(&self) -> bool {
        self.use_ollama.is_none() && self.ollama_url.is_none()
    }

    /// An `ollama` provider entry with the default URL when one is set.
    fn ollama(&self) -> Value {
        match &self.ollama_url {
            Some(url) => json!({ "name": "ollama", "base_url": url }),
            None => json!("ollama"),
        }
    }

    /// `input` of a step of piece `piece` with these defaults filled in:
    /// only for the built-in `llm` piece and an object input; a
    /// `providers` the input names is kept (its `ollama` entries without
    /// `base_url` get the default URL).
    pub fn fill(&self, piece: &str, mut input: Value) -> Value {
        if piece != LLM_PIECE || self.is_empty() {
            return input;
        }
        let Some(object) = input.as_object_mut() else {
            return input;
        };
        match object.get_mut("providers") {
            None => {
                let providers = match self.use_ollama {
                    Some(true) => vec![self.ollama(), json!("huggingface")],
                    Some(false) => vec![json!("huggingface")],
                    None => vec![self.ollama()],
                };
                object.insert("providers".into(), Value::Array(providers));
            }
            Some(Value::Array(providers)) if self.ollama_url.is_some() => {
                for provider in providers.iter_mut() {
                    match provider {
                        Value::String(name) if name == "ollama" => *provider = self.ollama(),
                        Value::Object(entry)
                            if entry.get("name").and_then(Value::as_str) == Some("ollama")
                                && entry.get("base_url").is_none_or(Value::is_null) =>
                        {
                            if let Some(url) = &self.ollama_url {
                                entry.insert("base_url".into(), json!(url));
                            }
                        }
                        _ => {}
                    }
                }
            }
            Some(_) => {}
        }
        input
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llm_defaults_fill_only_what_the_step_left_out() {
        let none = LlmDefaults::default();
        let input = json!({ "prompt": "hi" });
        assert_eq!(none.fill("llm", input.clone()), input);
        let on = LlmDefaults {
            use_ollama: Some(true),
            ollama_url: Some("http://gpu:11434".into()),
        };
        assert_eq!(
            on.fill("llm", input.clone())["providers"],
            json!([{ "name": "ollama", "base_url": "http://gpu:11434" }, "huggingface"])
        );
        assert_eq!(on.fill("http-request", input.clone()), input);
        let off = LlmDefaults {
            use_ollama: Some(false),
            ollama_url: None,
        };
        assert_eq!(
            off.fill("llm", input.clone())["providers"],
            json!(["huggingface"])
        );
        // A step's own order is kept; its ollama entries get the URL.
        let own = json!({ "providers": ["huggingface", "ollama", { "name": "ollama", "base_url": "http://x:1" }] });
        assert_eq!(
            on.fill("llm", own)["providers"],
            json!(["huggingface", { "name": "ollama", "base_url": "http://gpu:11434" }, { "name": "ollama", "base_url": "http://x:1" }])
        );
        let url_only = LlmDefaults {
            use_ollama: None,
            ollama_url: Some("http://gpu:11434".into()),
        };
        assert_eq!(
            url_only.fill("llm", input)["providers"],
            json!([{ "name": "ollama", "base_url": "http://gpu:11434" }])
        );
    }
}
