//! Our client for OpenAI-compatible chat completions, in four parts, each
//! using its library in view:
//!
//! - `wire.rs`: the request and chunk types (serde; chunks lenient, see
//!   there why not async-openai's);
//! - `transport.rs`: the POST (reqwest, or `http1.rs`'s connection driven
//!   on the reply's own task for plain `http://`), `Retry-After`, a
//!   refusal's body;
//! - `decode.rs`: the stream's body capped per line and per event, its
//!   server-sent events by `sse.rs` (tested against `eventsource-stream`),
//!   chunks by serde;
//! - `errors.rs`: what a failure says (async-openai's error envelope and
//!   error type), without keys or URLs.
//!
//! A request's own state (its status, `Retry-After`, body) flows through
//! return values: nothing is kept per task. The demo model, the tests'
//! fake provider and OpenAI all go through this one path.

mod decode;
mod errors;
mod http1;
mod sse;
mod transport;
mod wire;

pub use errors::{shown, shown_without_urls, stream_error, StartError};
pub use wire::*;

use crate::model::DEMO_MODEL;
use crate::server::config::{BotConfig, Config};

pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// A bot's provider (cheap to clone: a connection pool handle).
#[derive(Clone)]
pub struct Provider {
    http: reqwest::Client,
    /// `{base_url}/chat/completions`.
    endpoint: String,
    key: String,
    model: String,
    base_url: String,
    reasoning_effort: Option<String>,
    max_tokens: u32,
    /// The cap on a line, and on an event, of the stream's body.
    max_line: usize,
    /// Plain `http://` on a connection the reply's task drives (`http1.rs`).
    http1: bool,
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
        Self {
            http: reqwest::Client::new(),
            endpoint: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            key,
            model,
            base_url,
            reasoning_effort: bot.reasoning_effort.clone(),
            max_tokens: bot.max_tokens,
            max_line: config.limits.max_provider_line_bytes,
            http1: config.lanes.http1,
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
        let response =
            transport::send(&self.http, &self.endpoint, &self.key, &request, self.http1).await?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = transport::retry_after(&response);
            let body = transport::error_body(response).await?;
            return Err(errors::refused(status, &body, retry_after));
        }
        Ok(decode::chunks(transport::body(response), self.max_line))
    }
}
