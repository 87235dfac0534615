//! What goes to a provider and what comes back, as JSON: our request and
//! our chunk types. Chunks are lenient on purpose: every field optional,
//! so a provider that omits `id`, `created` or `model` (async-openai's
//! `CreateChatCompletionStreamResponse` requires them) still streams, and a
//! reasoning model's thinking (`reasoning_content` / `reasoning`, which
//! that type has no field for) is kept.

use std::pin::Pin;

use async_openai::error::OpenAIError;
use futures::Stream;
use serde::{Deserialize, Serialize};

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

/// A started stream's chunks (see `decode.rs` for where it ends).
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, OpenAIError>> + Send>>;

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
