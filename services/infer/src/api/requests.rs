//! OpenAI's request bodies for `/v1/completions` and `/v1/chat/completions`, and their
//! validation into one [`Decoding`].
//!
//! Fields this server does not implement are accepted at their defaults and refused otherwise
//! (`unsupported_parameter`), never silently ignored; fields it does not know are ignored, as
//! OpenAI clients add new optional ones over time.

use serde::Deserialize;
use utoipa::ToSchema;

use super::error::OpenAiError;
use crate::configuration::ServingConfig;
use crate::generation::Sampling;

/// A string, or an array holding one string.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// One stop sequence or up to four.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with token usage before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// Sampling and length fields both endpoints share.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct CommonFields {
    /// Most tokens to generate (default and limit from configuration).
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    /// 0 to 2; 0 is greedy. Default 1.
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
    /// Greater than 0, at most 1. Default 1.
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f64>,
    /// Only 1 is supported.
    pub n: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub stop: Option<Stop>,
    /// The same seed, model, prompt and parameters give the same answer.
    pub seed: Option<u64>,
    /// Only 0 is supported.
    pub presence_penalty: Option<f64>,
    /// Only 0 is supported.
    pub frequency_penalty: Option<f64>,
    /// Not supported (must be absent or empty).
    #[schema(value_type = Option<Object>)]
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    /// An end-user id; recorded nowhere (the API key names the caller).
    pub user: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct CompletionRequest {
    /// `<base>` or `<base>/<adapter>`: model ids or names.
    pub model: String,
    pub prompt: Prompt,
    #[serde(flatten)]
    pub common: CommonFields,
    /// Not supported (must be absent or null).
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<serde_json::Value>,
    /// Not supported (must be absent or false).
    pub echo: Option<bool>,
    /// Only 1 is supported.
    pub best_of: Option<u32>,
    /// Not supported (must be absent or null).
    pub suffix: Option<String>,
}

/// A chat message's content: a string, or text parts.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ContentPart {
    /// Only `text`.
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub common: CommonFields,
    /// The newer name of `max_tokens`; wins when both are given.
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u32>,
    /// Not supported (must be absent or false).
    pub logprobs: Option<bool>,
}

/// A validated request: what to decode and how to answer.
#[derive(Debug, Clone)]
pub struct Decoding {
    pub model: String,
    pub prompt: String,
    pub max_tokens: usize,
    pub stop: Vec<Vec<u8>>,
    pub sampling: Sampling,
    pub stream: bool,
    pub include_usage: bool,
}

const MAX_STOP_SEQUENCES: usize = 4;
/// Chat answers end where the model starts writing the next turn.
const CHAT_TURN_STOPS: [&str; 2] = ["\nuser:", "\nsystem:"];

impl CompletionRequest {
    pub fn validate(self, serving: &ServingConfig) -> Result<Decoding, OpenAiError> {
        if self.logprobs.as_ref().is_some_and(|value| !value.is_null()) {
            return Err(OpenAiError::unsupported("logprobs", "logprobs are not supported"));
        }
        if self.echo == Some(true) {
            return Err(OpenAiError::unsupported("echo", "echo is not supported"));
        }
        if self.best_of.is_some_and(|best_of| best_of != 1) {
            return Err(OpenAiError::unsupported("best_of", "only best_of 1 is supported"));
        }
        if self.suffix.is_some() {
            return Err(OpenAiError::unsupported("suffix", "suffix is not supported"));
        }
        let prompt = match self.prompt {
            Prompt::One(prompt) => prompt,
            Prompt::Many(mut prompts) if prompts.len() == 1 => prompts.remove(0),
            Prompt::Many(_) => return Err(OpenAiError::unsupported("prompt", "send one prompt per request")),
        };
        decoding(self.model, prompt, self.common, None, &[], serving)
    }
}

impl ChatCompletionRequest {
    pub fn validate(self, serving: &ServingConfig) -> Result<Decoding, OpenAiError> {
        if self.logprobs == Some(true) {
            return Err(OpenAiError::unsupported("logprobs", "logprobs are not supported"));
        }
        let prompt = chat_prompt(&self.messages)?;
        decoding(self.model, prompt, self.common, self.max_completion_tokens, &CHAT_TURN_STOPS, serving)
    }
}

/// The chat template: one `<role>: <content>` line per message, then `assistant:` for the
/// model to continue. Small models trained on plain text follow it as well as they follow any.
pub fn chat_prompt(messages: &[ChatMessage]) -> Result<String, OpenAiError> {
    if messages.is_empty() {
        return Err(OpenAiError::invalid("messages", "send at least one message"));
    }
    let mut prompt = String::new();
    for message in messages {
        if !matches!(message.role.as_str(), "system" | "developer" | "user" | "assistant") {
            return Err(OpenAiError::unsupported("messages", format!("role {:?} is not supported", message.role)));
        }
        let content = match &message.content {
            None => String::new(),
            Some(Content::Text(text)) => text.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(part_text)) => text.push_str(part_text),
                        _ => return Err(OpenAiError::unsupported("messages", "only text content parts are supported")),
                    }
                }
                text
            }
        };
        let role = if message.role == "developer" { "system" } else { message.role.as_str() };
        prompt.push_str(role);
        prompt.push_str(": ");
        prompt.push_str(&content);
        prompt.push('\n');
    }
    prompt.push_str("assistant:");
    Ok(prompt)
}

fn decoding(
    model: String,
    prompt: String,
    common: CommonFields,
    max_completion_tokens: Option<u32>,
    implicit_stops: &[&str],
    serving: &ServingConfig,
) -> Result<Decoding, OpenAiError> {
    if model.trim().is_empty() {
        return Err(OpenAiError::invalid("model", "name a model"));
    }
    if prompt.len() > serving.max_prompt_bytes {
        return Err(OpenAiError::invalid("prompt", format!("the prompt exceeds {} bytes", serving.max_prompt_bytes)));
    }
    let max_tokens = max_completion_tokens.or(common.max_tokens).unwrap_or(serving.default_max_tokens);
    if max_tokens == 0 || max_tokens > serving.max_tokens_limit {
        return Err(OpenAiError::invalid("max_tokens", format!("max_tokens must be between 1 and {}", serving.max_tokens_limit)));
    }
    let temperature = common.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(OpenAiError::invalid("temperature", "temperature must be between 0 and 2"));
    }
    let top_p = common.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(OpenAiError::invalid("top_p", "top_p must be greater than 0 and at most 1"));
    }
    if common.n.is_some_and(|n| n != 1) {
        return Err(OpenAiError::unsupported("n", "only n = 1 is supported"));
    }
    for (param, penalty) in [("presence_penalty", common.presence_penalty), ("frequency_penalty", common.frequency_penalty)] {
        if penalty.is_some_and(|penalty| penalty != 0.0) {
            return Err(OpenAiError::unsupported(param, format!("{param} is not supported")));
        }
    }
    if common.logit_bias.as_ref().is_some_and(|bias| !bias.is_empty()) {
        return Err(OpenAiError::unsupported("logit_bias", "logit_bias is not supported"));
    }
    let mut stop: Vec<Vec<u8>> = match common.stop {
        None => Vec::new(),
        Some(Stop::One(stop)) => vec![stop.into_bytes()],
        Some(Stop::Many(stops)) => stops.into_iter().map(String::into_bytes).collect(),
    };
    if stop.len() > MAX_STOP_SEQUENCES || stop.iter().any(Vec::is_empty) {
        return Err(OpenAiError::invalid("stop", format!("up to {MAX_STOP_SEQUENCES} non-empty stop sequences")));
    }
    stop.extend(implicit_stops.iter().map(|stop| stop.as_bytes().to_vec()));
    let stream = common.stream.unwrap_or(false);
    if common.stream_options.is_some() && !stream {
        return Err(OpenAiError::invalid("stream_options", "stream_options needs stream: true"));
    }
    Ok(Decoding {
        model,
        prompt,
        max_tokens: max_tokens as usize,
        stop,
        // Without a seed, one is drawn: the event records nothing that would replay it, and
        // OpenAI's answers without a seed are not reproducible either.
        sampling: Sampling { temperature, top_p, seed: common.seed.unwrap_or_else(rand::random) },
        stream,
        include_usage: common.stream_options.is_some_and(|options| options.include_usage),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serving() -> ServingConfig {
        ServingConfig {
            max_batch_size: 1,
            decode_threads: 1,
            default_max_tokens: 16,
            max_tokens_limit: 64,
            max_prompt_bytes: 100,
            adapter_cache_entries: 4,
            pinned_adapters: Vec::new(),
            keep_transcripts: false,
        }
    }

    fn completion(body: serde_json::Value) -> Result<Decoding, OpenAiError> {
        serde_json::from_value::<CompletionRequest>(body).expect("parses").validate(&serving())
    }

    fn code(result: Result<Decoding, OpenAiError>) -> String {
        result.expect_err("refused").body().error.code
    }

    #[test]
    fn defaults_apply_and_bad_values_are_refused_with_their_param() {
        let decoding = completion(serde_json::json!({"model": "en", "prompt": "Hi", "seed": 7})).expect("valid");
        assert_eq!((decoding.max_tokens, decoding.sampling.temperature, decoding.sampling.seed), (16, 1.0, 7));
        assert_eq!(code(completion(serde_json::json!({"model": "en", "prompt": "Hi", "max_tokens": 65}))), "invalid_parameter");
        assert_eq!(code(completion(serde_json::json!({"model": "en", "prompt": "Hi", "temperature": 2.5}))), "invalid_parameter");
        assert_eq!(code(completion(serde_json::json!({"model": "en", "prompt": "Hi", "top_p": 0}))), "invalid_parameter");
        assert_eq!(code(completion(serde_json::json!({"model": "en", "prompt": "Hi", "n": 2}))), "unsupported_parameter");
        assert_eq!(
            code(completion(serde_json::json!({"model": "en", "prompt": "Hi", "stop": ["a", "b", "c", "d", "e"]}))),
            "invalid_parameter"
        );
        assert_eq!(code(completion(serde_json::json!({"model": "en", "prompt": ["a", "b"]}))), "unsupported_parameter");
        assert_eq!(code(completion(serde_json::json!({"model": "en", "prompt": "x".repeat(101)}))), "invalid_parameter");
        let unknown = completion(serde_json::json!({"model": "en", "prompt": "Hi", "some_future_field": 1}));
        assert!(unknown.is_ok(), "unknown fields are ignored");
    }

    #[test]
    fn chat_messages_become_one_prompt_that_stops_at_the_next_turn() {
        let request: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
            "model": "en",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}]}
            ],
            "max_completion_tokens": 5,
            "max_tokens": 9
        }))
        .expect("parses");
        let decoding = request.validate(&serving()).expect("valid");
        assert_eq!(decoding.prompt, "system: Be brief.\nuser: Hello\nassistant:");
        assert_eq!(decoding.max_tokens, 5);
        assert!(decoding.stop.contains(&b"\nuser:".to_vec()));
        let image: ChatCompletionRequest = serde_json::from_value(serde_json::json!({
            "model": "en", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
        }))
        .expect("parses");
        assert_eq!(code(image.validate(&serving())), "unsupported_parameter");
    }
}
