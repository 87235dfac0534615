//! Our client for OpenAI-compatible chat completions, wrapping async-openai.
//!
//! Requests and stream chunks use our own lenient types (async-openai's
//! bring-your-own-types mode): real providers add, omit and repeat fields,
//! and a reply must not fail because a chunk has a shape the typed model
//! rejects. async-openai still does the HTTP and the provider's error
//! mapping, so the demo model, the tests' fake provider and OpenAI all go
//! through this one path. A started stream's body is decoded on the reply's
//! own task, with the SSE decoder async-openai uses and its rules
//! (`[DONE]` ends, `keepalive` events are skipped): async-openai would
//! forward every chunk through a task of its own, one more hand-off between
//! threads for each token (see `decode`, tested against async-openai's).

use std::{
    cell::Cell,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_openai::{
    config::OpenAIConfig, error::OpenAIError, middleware::HttpRequestFactory, Client,
};
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::model::DEMO_MODEL;
use crate::server::config::{BotConfig, Config};

pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

#[derive(Clone)]
pub struct Provider {
    client: Client<OpenAIConfig>,
    model: String,
    base_url: String,
    reasoning_effort: Option<String>,
    max_tokens: u32,
    /// The cap on a line, and on an event, of the stream's body.
    max_line: usize,
}

#[derive(Debug, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<PromptMessage>,
    pub stream: bool,
    pub stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// The output cap for ordinary models ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// ... and for reasoning models (OpenAI's o-series refuse `max_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// The tools the model may call (left out when it has none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
}

/// A tool as the model is told of it (`{"type": "function", ...}`).
#[derive(Clone, Debug, Serialize)]
pub struct ToolDefinition {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionDefinition,
}

#[derive(Clone, Debug, Serialize)]
pub struct FunctionDefinition {
    pub name: String,
    pub description: String,
    /// A JSON Schema of the arguments.
    pub parameters: serde_json::Value,
}

#[derive(Debug, Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PromptMessage {
    pub role: &'static str,
    /// Null for an assistant turn that only called tools.
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The calls an assistant turn made.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<PromptToolCall>,
    /// The call a `tool` message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl PromptMessage {
    pub fn text(role: &'static str, content: String) -> Self {
        Self {
            role,
            content: Some(content),
            ..Self::default()
        }
    }
}

/// A call as an assistant turn in the prompt carries it.
#[derive(Clone, Debug, Serialize)]
pub struct PromptToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: PromptFunction,
}

#[derive(Clone, Debug, Serialize)]
pub struct PromptFunction {
    pub name: String,
    pub arguments: String,
}

/// One `data:` chunk of a streamed completion; every field optional.
#[derive(Debug, Default, Deserialize)]
pub struct Chunk {
    #[serde(default)]
    pub choices: Vec<ChoiceDelta>,
    #[serde(default)]
    pub usage: Option<ChunkUsage>,
    /// Some providers report failures inside a 200 stream.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ChoiceDelta {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    /// A reasoning model's thinking: DeepSeek, llama.cpp and vLLM name it
    /// `reasoning_content`, OpenRouter and Groq `reasoning`.
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub reasoning: Option<String>,
    /// Fragments of tool calls, tied together by `index`.
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A fragment of a tool call: the first carries its id and name, the rest
/// pieces of its arguments (some providers repeat `"id": ""` on those).
#[derive(Debug, Default, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

impl Delta {
    /// The thinking this delta carries, under either name.
    pub fn thinking(&mut self) -> Option<String> {
        self.reasoning_content
            .take()
            .filter(|t| !t.is_empty())
            .or_else(|| self.reasoning.take().filter(|t| !t.is_empty()))
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ChunkUsage {
    #[serde(default)]
    pub prompt_tokens: i64,
    #[serde(default)]
    pub completion_tokens: i64,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<i64>,
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, OpenAIError>> + Send>>;

/// Why a completion could not start.
#[derive(Debug)]
pub struct StartError {
    /// The provider's words (or the connection's), safe to show.
    pub message: String,
    /// The HTTP status, when the provider answered.
    pub status: Option<u16>,
    /// The provider's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl StartError {
    /// Rate limits and server errors are worth another attempt.
    pub fn retryable(&self) -> bool {
        self.status
            .is_some_and(|s| s == 429 || (500..600).contains(&s))
    }
}

tokio::task_local! {
    /// The `Retry-After` of the last response our HTTP service saw in this
    /// task: async-openai's error keeps only the status and body.
    static RETRY_AFTER: Cell<Option<Duration>>;
}

tokio::task_local! {
    /// A started stream's response, kept by our HTTP service for `decode`
    /// (async-openai gets the same status with an empty body).
    static STREAM_BODY: std::cell::RefCell<Option<reqwest::Response>>;
}

tokio::task_local! {
    /// Set by our HTTP service when a line of this request's stream passed
    /// the cap (async-openai passes body errors on as bare text).
    static OVERSIZED_LINE: Arc<AtomicUsize>;
}

/// The longest `Retry-After` taken as it is: a larger (or infinite) one is
/// this, which is past any idle timeout, so the reply fails saying so.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses `Retry-After` in seconds (HTTP dates are treated as absent),
/// clamped to [`MAX_RETRY_AFTER`]: the header is the provider's, any number.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds = value.trim().parse::<f64>().ok().filter(|s| *s >= 0.0)?;
    Some(Duration::try_from_secs_f64(seconds).map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

impl Provider {
    /// The provider a bot uses: its own `base_url`, else OpenAI or any
    /// compatible `OPENAI_BASE_URL`, or (with no key and no URL anywhere)
    /// the demo model this server itself serves at `self_base_url`.
    pub fn for_bot(config: &Config, bot: &BotConfig, self_base_url: &str) -> Self {
        let key = |secret: Option<&crate::server::config::Secret>| {
            secret.map_or_else(|| "none".to_owned(), |k| k.0.clone())
        };
        let (base_url, key, model) = match &bot.base_url {
            // A bot's own endpoint gets only its own key.
            Some(url) => (url.clone(), key(bot.api_key.as_ref()), bot.model.clone()),
            None if config.uses_demo() => (
                self_base_url.to_owned(),
                "demo".to_owned(),
                DEMO_MODEL.to_owned(),
            ),
            None => (
                config
                    .openai_base_url
                    .clone()
                    .unwrap_or_else(|| OPENAI_BASE_URL.into()),
                key(config.openai_api_key.as_ref()),
                bot.model.clone(),
            ),
        };
        let http = reqwest::Client::new();
        let max_line = config.limits.max_provider_line_bytes;
        // Our HTTP service: plain reqwest, noting `Retry-After` for the
        // caller, with the body's lines capped.
        let service = tower::service_fn(move |factory: HttpRequestFactory| {
            let http = http.clone();
            async move {
                let request = factory.build().await?;
                let response = if super::provider_http::applies(&request) {
                    super::provider_http::send(request)
                        .await
                        .map_err(|e| OpenAIError::Boxed(Box::new(e)))?
                } else {
                    http.execute(request).await.map_err(OpenAIError::Reqwest)?
                };
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let _ = RETRY_AFTER.try_with(|slot| slot.set(retry_after));
                let oversized = OVERSIZED_LINE.try_with(Arc::clone).ok();
                let response = super::provider_body::cap_lines(response, max_line, oversized);
                if !response.status().is_success() {
                    return Ok::<_, OpenAIError>(response); // async-openai reads the error
                }
                let status = response.status();
                // (Only `stream` starts requests, within the slot's scope.)
                let _ = STREAM_BODY.try_with(|slot| slot.borrow_mut().replace(response));
                let mut empty = axum::http::Response::new(reqwest::Body::from(""));
                *empty.status_mut() = status;
                Ok(reqwest::Response::from(empty))
            }
        });
        let client = Client::with_config(
            OpenAIConfig::new()
                .with_api_base(base_url.trim_end_matches('/'))
                .with_api_key(key),
        )
        .with_http_service(service);
        Self {
            client,
            model,
            base_url,
            reasoning_effort: bot.reasoning_effort.clone(),
            max_tokens: bot.max_tokens,
            max_line,
        }
    }

    /// The model replies are asked of (and labelled with).
    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Starts a streamed completion (`stream: true`, usage included),
    /// offering `tools`.
    pub async fn stream(
        &self,
        messages: Vec<PromptMessage>,
        tools: Vec<ToolDefinition>,
    ) -> Result<ChunkStream, StartError> {
        let request = ChatRequest {
            model: self.model.clone(),
            messages,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            reasoning_effort: self.reasoning_effort.clone(),
            max_tokens: self.reasoning_effort.is_none().then_some(self.max_tokens),
            max_completion_tokens: self.reasoning_effort.is_some().then_some(self.max_tokens),
            tools,
        };
        let chat = self.client.chat();
        let oversized = Arc::new(AtomicUsize::new(0));
        let max_line = self.max_line;
        let (result, retry_after, body) = RETRY_AFTER
            .scope(
                Cell::new(None),
                OVERSIZED_LINE.scope(
                    oversized.clone(),
                    STREAM_BODY.scope(std::cell::RefCell::new(None), async {
                        let result: Result<ChunkStream, OpenAIError> =
                            chat.create_stream_byot(request).await;
                        (
                            result,
                            RETRY_AFTER.with(Cell::get),
                            STREAM_BODY.with(|slot| slot.borrow_mut().take()),
                        )
                    }),
                ),
            )
            .await;
        // async-openai's stream of the empty body ends at once: ours reads
        // the real one.
        let result = result.and_then(|_| {
            body.map(super::provider_body::decode).ok_or_else(|| {
                OpenAIError::InvalidArgument("the provider's stream went missing".into())
            })
        });
        result
            .map(|chunks| -> ChunkStream {
                // A body cut by the line cap fails saying so (our own error,
                // the one `InvalidArgument` a started stream can carry).
                Box::pin(futures::StreamExt::map(chunks, move |item| match item {
                    Err(_) if oversized.load(Ordering::Relaxed) > 0 => {
                        let what = match oversized.load(Ordering::Relaxed) {
                            2 => "an event",
                            _ => "a line",
                        };
                        Err(OpenAIError::InvalidArgument(format!(
                            "The provider sent {what} longer than {max_line} bytes; the reply \
                             was ended."
                        )))
                    }
                    other => other,
                }))
            })
            .map_err(|e| {
                let mut error = start_error(e, retry_after);
                error.message = shown(&error.message);
                error
            })
    }
}

/// A failure to start, in words (not yet made safe to show).
fn start_error(e: OpenAIError, retry_after: Option<Duration>) -> StartError {
    match e {
        OpenAIError::ApiError(api) => StartError {
            message: format!(
                "The provider refused the request ({}): {}",
                api.status_code,
                readable_error(&api.api_error.message)
            ),
            status: Some(api.status_code.as_u16()),
            retry_after,
        },
        OpenAIError::Reqwest(e) => StartError {
            message: format!("Could not reach the provider: {}", without_url(&e)),
            status: None,
            retry_after: None,
        },
        // Our own connection's (`provider_http`).
        OpenAIError::Boxed(e) if e.is::<std::io::Error>() => StartError {
            message: format!("Could not reach the provider: {}", with_causes(e.as_ref())),
            status: None,
            retry_after: None,
        },
        other => StartError {
            message: format!("The provider's answer could not be read: {other}"),
            status: None,
            retry_after: None,
        },
    }
}

/// Longest provider error shown on a reply, in characters.
const MAX_SHOWN_CHARS: usize = 300;

/// A provider's words as a reply may show them: anything that looks like a
/// key (`sk-...`, or any long run of key characters) replaced, and cut to
/// [`MAX_SHOWN_CHARS`]. Errors quote what they were sent, keys included.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_SHOWN_CHARS * 4));
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let looks_like_key = run.len() >= 32
            || ((run.starts_with("sk-") || run.starts_with("sk_")) && run.len() > 6);
        if looks_like_key {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
        if out.chars().count() > MAX_SHOWN_CHARS * 2 {
            break;
        }
    }
    flush(&mut run, &mut out);
    if out.chars().count() > MAX_SHOWN_CHARS {
        out.chars().take(MAX_SHOWN_CHARS).chain(['…']).collect()
    } else {
        out
    }
}

/// [`shown`], with every URL (anything from `scheme://` to the next space,
/// its query string and credentials included) replaced by `[url]`: for
/// errors of services whose addresses may carry secrets (MCP servers).
pub fn shown_without_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_SHOWN_CHARS * 4));
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The scheme: the letters (and + - .) right before `://`.
        let scheme_start = rest[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let end = rest[at..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')'))
            .map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..scheme_start]);
        out.push_str("[url]");
        rest = &rest[end..];
        if out.len() > MAX_SHOWN_CHARS * 8 {
            break;
        }
    }
    out.push_str(rest);
    shown(&out)
}

/// The words of a provider's error. Some answers (5xx above all) reach us
/// as their raw body: an OpenAI error envelope (`{"error": {"message":
/// ...}}`), a bare `{"message": ...}`, or text; the message is taken out of
/// the envelope, and anything else is cut to a readable length.
pub fn readable_error(raw: &str) -> String {
    const MAX_CHARS: usize = 300;
    let parsed: Option<serde_json::Value> = serde_json::from_str(raw.trim()).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .and_then(|m| m.as_str())
    });
    let text = message.unwrap_or(raw).trim();
    if text.chars().count() > MAX_CHARS {
        text.chars().take(MAX_CHARS).chain(['…']).collect()
    } else {
        text.to_owned()
    }
}

/// A reqwest error's words without the URL (which may carry credentials).
pub fn without_url(e: &reqwest::Error) -> String {
    let mut words = String::from(if e.is_connect() {
        "connection failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    });
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        words.push_str(": ");
        words.push_str(&cause.to_string());
        source = cause.source();
    }
    words
}

/// An error's words followed by its causes' (each once).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut words = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !words.contains(&text) {
            words.push_str(": ");
            words.push_str(&text);
        }
        source = cause.source();
    }
    words
}

/// A failure after the stream started, in words safe to show.
pub fn stream_error(e: &OpenAIError) -> String {
    if let OpenAIError::InvalidArgument(ours) = e {
        return ours.clone();
    }
    shown(&stream_error_words(e))
}

fn stream_error_words(e: &OpenAIError) -> String {
    match e {
        OpenAIError::JSONDeserialize(err, _) => {
            format!("The provider sent a malformed chunk: {err}")
        }
        OpenAIError::StreamError(err) => {
            format!("The provider's stream broke: {}", with_causes(err.as_ref()))
        }
        OpenAIError::Reqwest(e) => format!("The provider's stream broke: {}", without_url(e)),
        OpenAIError::ApiError(api) => {
            format!(
                "The provider reported an error: {}",
                readable_error(&api.api_error.message)
            )
        }
        other => format!("The provider's stream failed: {other}"),
    }
}

/// An author name as the `name` field allows (`^[A-Za-z0-9_-]{1,64}$`).
pub fn prompt_name(author: &str) -> Option<String> {
    let name: String = author
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    (!name.trim_matches('_').is_empty()).then_some(name)
}

#[cfg(test)]
mod retry_after_tests {
    use super::{parse_retry_after, MAX_RETRY_AFTER};
    use std::time::Duration;

    #[test]
    fn any_number_is_clamped_never_a_panic() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        for huge in ["inf", "+inf", "1e20", "18446744073709551616", "1.8e308"] {
            assert_eq!(parse_retry_after(huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
        for bad in [
            "-1",
            "-inf",
            "NaN",
            "nan",
            "",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse_retry_after(bad), None, "{bad}");
        }
    }
}

#[cfg(test)]
mod readable_error_tests {
    use super::readable_error;

    #[test]
    fn envelopes_give_their_message() {
        assert_eq!(
            readable_error(
                r#"{"error":{"message":"The engine is overloaded","type":"server_error"}}"#
            ),
            "The engine is overloaded"
        );
        assert_eq!(readable_error(r#"{"message":"busy"}"#), "busy");
        assert_eq!(readable_error(r#"{"error":"busy"}"#), "busy");
        assert_eq!(readable_error("Bad Gateway"), "Bad Gateway");
        assert_eq!(readable_error(&"x".repeat(1000)).chars().count(), 301);
    }

    #[test]
    fn urls_are_never_shown() {
        let text = super::shown_without_urls(
            "Send request: error sending request for url (http://127.0.0.1:9/mcp?token=s3cr3t&x=1): \
             connection refused; see https://user:pw@example.com/x",
        );
        assert!(
            !text.contains("s3cr3t") && !text.contains("pw@") && !text.contains("127.0.0.1"),
            "{text}"
        );
        assert_eq!(
            text,
            "Send request: error sending request for url ([url]): connection refused; see [url]"
        );
        assert_eq!(
            super::shown_without_urls("no address here"),
            "no address here"
        );
        assert_eq!(super::shown_without_urls("://x"), "[url]");
        assert!(
            super::shown_without_urls(&"http://a ".repeat(10_000))
                .chars()
                .count()
                <= 301
        );
    }

    #[test]
    fn keys_are_never_shown_and_errors_are_cut() {
        let text = super::shown(
            "Incorrect API key provided: sk-proj-abcDEF123_456. You can find your API key at \
             https://platform.openai.com/account/api-keys.",
        );
        assert!(!text.contains("sk-proj"), "{text}");
        assert!(!text.contains("abcDEF123"), "{text}");
        assert!(
            text.contains("Incorrect API key provided: [redacted]"),
            "{text}"
        );
        assert!(text.contains("api-keys"), "ordinary words stay: {text}");
        let long = super::shown(&format!("token {} end", "a".repeat(40)));
        assert_eq!(long, "token [redacted] end");
        assert_eq!(super::shown(&"word ".repeat(1000)).chars().count(), 301);
    }
}
