//! Our client for OpenAI-compatible chat completions, wrapping async-openai.
//!
//! Requests and stream chunks use our own lenient types (async-openai's
//! bring-your-own-types mode): real providers add, omit and repeat fields,
//! and a reply must not fail because a chunk has a shape the typed model
//! rejects. async-openai still does the HTTP, the SSE parsing and the
//! provider's error mapping, so the demo model, the tests' fake provider and
//! OpenAI all go through this one path.

use std::pin::Pin;

use async_openai::{config::OpenAIConfig, error::OpenAIError, Client};
use futures::Stream;
use serde::{Deserialize, Serialize};

use super::config::Config;
use crate::model::DEMO_MODEL;

pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

#[derive(Clone)]
pub struct Provider {
    client: Client<OpenAIConfig>,
    model: String,
    base_url: String,
}

#[derive(Debug, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<PromptMessage>,
    pub stream: bool,
    pub stream_options: StreamOptions,
}

#[derive(Debug, Serialize)]
pub struct StreamOptions {
    pub include_usage: bool,
}

#[derive(Debug, Serialize)]
pub struct PromptMessage {
    pub role: &'static str,
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
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
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ChunkUsage {
    #[serde(default)]
    pub prompt_tokens: i64,
    #[serde(default)]
    pub completion_tokens: i64,
}

pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, OpenAIError>> + Send>>;

impl Provider {
    /// The provider the config names: OpenAI, any compatible `OPENAI_BASE_URL`,
    /// or (with neither key nor URL) the demo model this server itself serves
    /// at `self_base_url`.
    pub fn from_config(config: &Config, self_base_url: &str) -> Self {
        let (base_url, key, model) = if config.uses_demo() {
            (
                self_base_url.to_owned(),
                "demo".to_owned(),
                DEMO_MODEL.to_owned(),
            )
        } else {
            (
                config
                    .openai_base_url
                    .clone()
                    .unwrap_or_else(|| OPENAI_BASE_URL.into()),
                config
                    .openai_api_key
                    .as_ref()
                    .map(|k| k.0.clone())
                    .unwrap_or_default(),
                config.bot.model.clone(),
            )
        };
        let client = Client::with_config(
            OpenAIConfig::new()
                .with_api_base(base_url.trim_end_matches('/'))
                .with_api_key(key),
        );
        Self {
            client,
            model,
            base_url,
        }
    }

    /// The model replies are asked of (and labelled with).
    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Starts a streamed completion (`stream: true`, usage included).
    pub async fn stream(&self, messages: Vec<PromptMessage>) -> Result<ChunkStream, OpenAIError> {
        let request = ChatRequest {
            model: self.model.clone(),
            messages,
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
        };
        self.client.chat().create_stream_byot(request).await
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
